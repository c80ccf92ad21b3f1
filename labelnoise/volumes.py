"""The filter's arithmetic and its record format, shared by ``filter.py`` and ``auto_filter.py``.

The filter runs the model on one stem ``X`` (pitch-raised and sped up) and
measures each of the four outputs; ``auto_filter`` calls ``X`` clean when its
own output is much louder than the loudest of the other three:

    volume_db(out) = 20 log10(sum |out|)            over all samples and channels
    margin_db      = volume_db(out[X]) - max(volume_db(out[Y]), Y != X)
    clean          = margin_db > threshold           (every output <= -80 dB: no decision)

A stem is silent (labelnoise.silence), and not run through the model, when
``20 log10(mean |x|) < -80`` (its own audio stands in for all four outputs).

``volumes.jsonl`` holds one JSON object per line and (track, stem)::

    {"track": "t000", "stem": "vocals", "silent": false, "seconds": 20.0,
     "volumes": {"drums": 12.3, "bass": 8.1, "other": 15.0, "vocals": 41.7}}

A volume of an all-zero output is ``-Infinity`` (Python's json reads it back).
Records also hold the same volumes per window of ``WINDOW_SECONDS`` of the
shifted audio, and the input's own volume per window: a stem that holds
another source for part of the track shows it there, where a volume over
the whole stem averages it away::

    "windows": {"seconds": 1.0, "input": [30.1, ...], "volumes": {"drums": [11.0, ...], ...}}

``leaks_db`` reads the same windows the other way round: how loud each other
output gets against the stem's own (``labelnoise.leaks`` compares that with
the rest of the source's stems).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import naming
from .silence import SILENT_DB, db

WINDOW_SECONDS = 1.0   # of the shifted audio: 2 s of the stem at the filter's 200 % speed
# A stem's margin over its windows: this low percentile of them (a stem that holds another source for 30 %
# of the track shows it), over the windows where the stem plays (within ACTIVE_DB of its loudest).
WINDOW_QUANTILE = 20.0
ACTIVE_DB = 30.0


def volume_db(wav: np.ndarray) -> float:
    """``20 log10(sum |out|)`` over all samples and channels of one output."""
    return db(float(np.abs(np.asarray(wav, dtype=np.float64)).sum()))


def margin_db(volumes: dict[str, float], stem: str) -> float | None:
    """Own volume minus the loudest other; None when every output is at or below -80 dB."""
    if all(v <= SILENT_DB for v in volumes.values()):
        return None
    others = max(v for source, v in volumes.items() if source != stem)
    own = volumes[stem]
    if own == others:  # also -inf == -inf; keeps inf - inf (nan) out
        return 0.0
    return own - others


def _active_windows(rec: dict, active_db: float) -> list[dict[str, float]] | None:
    """The output volumes of each window where a record's input plays (within ``active_db`` of its
    loudest window); None without windows."""
    windows = rec.get("windows")
    if not windows:
        return None
    inputs = np.asarray(windows["input"], dtype=np.float64)
    loudest = inputs.max() if inputs.size else -math.inf
    return [{s: v[i] for s, v in windows["volumes"].items()}
            for i, level in enumerate(inputs) if level > loudest - active_db]


def _percentile(values: list[float], quantile: float) -> float | None:
    """A percentile where an infinite value (an all-zero output) sorts where it belongs: at an end."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return None if not values else float(min(values))
    clipped = np.clip(np.asarray(values, dtype=np.float64), min(finite) - 1.0, max(finite) + 1.0)
    return float(np.percentile(clipped, quantile))


def window_margin(rec: dict, quantile: float = WINDOW_QUANTILE, active_db: float = ACTIVE_DB) -> float | None:
    """The ``quantile`` (percent) of a record's margins per window, over the windows where its input
    plays (within ``active_db`` of its loudest window); None without windows or a margin in them."""
    active = _active_windows(rec, active_db)
    if active is None:
        return None
    margins = [m for m in (margin_db(w, rec["stem"]) for w in active) if m is not None]
    return _percentile(margins, quantile)


def leaks_db(rec: dict, quantile: float = 100 - WINDOW_QUANTILE, active_db: float = ACTIVE_DB) -> dict[str, float]:
    """How loud each other output is against the stem's own, ``volume(out[Y]) - volume(out[X])`` in dB:
    the ``quantile`` over the windows where the stem plays (its louder windows, as ``window_margin``
    takes the worse ones), or over the whole stem without windows. Outputs at or below -80 dB on
    both sides count as no leak (0 dB)."""
    stem = rec["stem"]
    active = _active_windows(rec, active_db) or [rec["volumes"]]
    out = {}
    for other in rec["volumes"]:
        if other == stem:
            continue
        diffs = [0.0 if w[other] <= SILENT_DB and w[stem] <= SILENT_DB else w[other] - w[stem] for w in active]
        out[other] = _percentile(diffs, quantile)
    return out


def is_clean(volumes: dict[str, float], stem: str, threshold: float) -> bool | None:
    """The original's rule: margin strictly above ``threshold``; None (skipped) when all outputs are silent."""
    margin = margin_db(volumes, stem)
    return None if margin is None else margin > threshold


def window_volumes(wav: np.ndarray, outputs: dict[str, np.ndarray], samplerate: int,
                   seconds: float = None) -> dict:
    """``volume_db`` of the input and of each output over consecutive windows (the last one shorter)."""
    seconds = WINDOW_SECONDS if seconds is None else seconds
    size = max(1, int(round(seconds * samplerate)))
    length = wav.shape[-1]
    starts = range(0, max(length, 1), size)
    return {"seconds": seconds,
            "input": [volume_db(wav[..., a:a + size]) for a in starts],
            "volumes": {name: [volume_db(out[..., a:a + size]) for a in starts] for name, out in outputs.items()}}


def record(track: str, stem: str, volumes: dict[str, float], *, silent: bool, seconds: float,
           windows: dict | None = None) -> dict:
    rec = {"track": track, "stem": stem, "silent": bool(silent), "seconds": float(seconds),
           "volumes": {k: float(v) for k, v in volumes.items()}}
    if windows is not None:
        rec["windows"] = windows
    return rec


def append_record(handle, rec: dict) -> None:
    """Append one line and push it to disk, so a kill loses at most the line being written."""
    handle.write(json.dumps(rec) + "\n")
    handle.flush()
    os.fsync(handle.fileno())


class RecordFile:
    """A volumes file appended record by record, opened at the first: a run that fails before it leaves none.

    A write that fails (a full disk) closes the file, and removes it when it
    is still empty, so no empty rank file is left to look like a valid one.
    """

    def __init__(self, path: Path):
        self.path, self.handle = path, None

    def append(self, rec: dict) -> None:
        with naming(self.path):
            try:
                self.handle = self.handle or open(self.path, "a")
                append_record(self.handle, rec)
            except OSError:
                self.close(quiet=True)
                if self.path.exists() and self.path.stat().st_size == 0:
                    self.path.unlink()
                raise

    def close(self, quiet: bool = False) -> None:
        handle, self.handle = self.handle, None
        if handle is None:
            return
        try:
            with naming(self.path):
                handle.close()
        except OSError:
            if not quiet:  # after a failed write, closing fails again on the same unwritten buffer
                raise


def read_records(path: str | os.PathLike) -> Iterator[dict]:
    """The complete records of a volumes file; a torn last line (a killed writer) is left out."""
    path = Path(path)
    if not path.exists():
        return
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.endswith("\n"):
                return  # the last line of a killed writer
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}: line {number} is not a JSON record ({exc})") from None
            if not {"track", "stem", "volumes"} <= set(rec):
                raise ValueError(f"{path}: line {number} lacks track, stem or volumes")
            yield rec
