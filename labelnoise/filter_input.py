"""What the filter feeds the separator: a stem read, checked for silence, pitch-raised and sped up.

``read_ahead`` reads and shifts the next stems in a thread while the separator
runs on the current one.
"""
from __future__ import annotations

import dataclasses
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterator, Sequence

import numpy as np

from .audio import AudioError, read_audio
from .stem_record import Stem
from .silence import is_silent


def shift_stem(wav: np.ndarray, samplerate: int, key: float, speed: float) -> np.ndarray:
    """Pitch ``+key`` semitones and tempo x ``speed``/100 of ``(C, T)`` audio: ``(C, ~T * 100 / speed)``.

    This is exactly what the filter feeds the separator. Rubber Band's R2
    engine (pedalboard ``high_quality=False``), formants not preserved, as the
    original's command line did; the channels are stretched together, which
    keeps the stereo image (the command line stretches them apart, so its
    output is not sample-identical to this). ``key=0, speed=100`` returns a copy.
    """
    import pedalboard  # imported here: only the filter needs it

    wav = np.ascontiguousarray(wav, dtype=np.float32)
    if wav.ndim != 2:
        raise ValueError(f"shift_stem: expected audio of shape (channels, frames), got {wav.shape}")
    if speed <= 0:
        raise ValueError(f"shift_stem: speed must be positive (percent), got {speed}")
    if key == 0 and speed == 100:
        return wav.copy()
    return pedalboard.time_stretch(wav, float(samplerate), stretch_factor=speed / 100,
                                   pitch_shift_in_semitones=float(key), high_quality=False,
                                   preserve_formants=False)


@dataclasses.dataclass
class Prepared:
    stem: Stem
    wav: np.ndarray | None       # the stem as read; None if unreadable
    shifted: np.ndarray | None   # what the separator gets; None if silent
    error: str | None = None


def prepare(st: Stem, samplerate: int, channels: int, key: float, speed: float,
            skip_bad: bool) -> Prepared:
    try:
        wav = read_audio(st.path, samplerate=samplerate, channels=channels)
    except AudioError as exc:
        if not skip_bad:
            raise
        return Prepared(st, None, None, str(exc))
    if wav.shape[-1] == 0:
        if not skip_bad:
            raise AudioError(f"{st.path}: holds no samples")
        return Prepared(st, None, None, f"{st.path}: holds no samples")
    if is_silent(wav):
        return Prepared(st, wav, None)
    return Prepared(st, wav, shift_stem(wav, samplerate, key, speed))


def read_ahead(items: Sequence, load: Callable, depth: int) -> Iterator:
    """``load(item)`` for each item, up to ``depth`` items ahead in a thread (0: inline).

    Reading and pitch-shifting the next stems then overlaps the separator's
    run on the current one (on a GPU, the CPU work can hide behind the model's).
    """
    if depth <= 0:
        for item in items:
            yield load(item)
        return
    with ThreadPoolExecutor(1) as pool:
        queue: list[Future] = []
        for item in items:
            queue.append(pool.submit(load, item))
            if len(queue) > depth:
                yield queue.pop(0).result()
        while queue:
            yield queue.pop(0).result()
