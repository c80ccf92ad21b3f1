"""When a stem is silent: one rule for the dataset index and the filter.

A stem is silent when ``20 log10(mean |x|) < -80``, the mean over all samples
and channels (the original filter's rule). The filter (labelnoise.filtering)
does not run the model on a silent stem, its own audio stands for the four
outputs; the index (labelnoise.metadata) marks it ``silent`` and training
draws no segment from it. Each measures the audio it has: the index the file
as stored, streamed in blocks; the filter the stem as read at the model's
sample rate.
"""
from __future__ import annotations

import math

import numpy as np

SILENT_DB = -80.0


def db(value: float) -> float:
    """``20 log10(value)``; -inf for zero (an all-zero signal)."""
    return 20 * math.log10(value) if value > 0 else -math.inf


def mean_level_db(total_abs: float, count: int) -> float:
    """The rule's measure from a running sum of ``|x|`` over ``count`` samples (-inf for none)."""
    return db(total_abs / count) if count else -math.inf


def level_db(wav: np.ndarray) -> float:
    """``20 log10(mean |x|)`` of one stem's audio."""
    return db(float(np.abs(np.asarray(wav, dtype=np.float64)).mean()))


def is_silent_level(level: float) -> bool:
    return level < SILENT_DB


def is_silent(wav: np.ndarray) -> bool:
    return is_silent_level(level_db(wav))
