"""The metrics ``evaluate.py --metrics`` reports, by name, for all sources of one track at once.

- ``sdr``: the challenge SDR (``labelnoise.metrics.sdr``), the default.
- ``csdr``: museval's BSS-eval v4 SDR as the MUSDB18 literature reports it
  (SiSEC 2018, "cSDR"): the median over 1 s frames. In v4's image mode the
  distortion is ``e_spat + e_interf + e_artif``, which adds up to ``est - ref``
  whatever the projection filters, so a frame's SDR is
  ``10 log10(sum ref^2 / sum (ref - est)^2)`` over its samples and channels
  (infinite for an exact estimate). As museval: frames are 1 s windows
  without overlap (a last partial window is dropped; a track shorter than 1 s
  is one frame); a frame where any source's reference or estimate is silent
  (its channel sum zero throughout) has no value; the median skips those, and
  a track without a valid frame has no score (``None``).
- ``si_sdr``: scale-invariant SDR, ``a = <est, ref> / <ref, ref>``,
  ``10 log10(|a ref|^2 / |a ref - est|^2)`` over samples and channels.
- ``l1_freq``, ``aura_stft``, ``aura_mrstft``, ``bleedless``, ``fullness``:
  MSST's spectral scores (``labelnoise.spectral_metrics``), higher is better.

Each function takes references and estimates ``(S, C, T)`` and the sample
rate and returns one value per source (``nan`` where undefined).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from . import spectral_metrics
from .metrics import sdr as challenge_sdr

FRAME_SECONDS = 1.0
EPS = 1e-12


def sdr(references, estimates, samplerate: int) -> np.ndarray:
    return np.atleast_1d(challenge_sdr(references, estimates))


def framewise_sdr(references, estimates, samplerate: int, seconds: float = FRAME_SECONDS) -> np.ndarray:
    """``(S, frames)``: BSS-eval v4 SDR per 1 s frame, ``nan`` in frames where a source is silent."""
    ref, est = np.asarray(references, np.float64), np.asarray(estimates, np.float64)
    length = ref.shape[-1]
    window = int(seconds * samplerate)
    frames = length // window if window < length else 1
    out = np.full((ref.shape[0], frames), np.nan)
    for t in range(frames):
        span = slice(t * window, t * window + window) if window < length else slice(0, length)
        r, e = ref[..., span], est[..., span]
        if _any_silent(r) or _any_silent(e):
            continue
        num = np.square(r).sum(axis=(-2, -1))
        den = np.square(r - e).sum(axis=(-2, -1))
        with np.errstate(divide="ignore"):
            out[:, t] = np.where(den > 0, 10 * np.log10(num / np.where(den > 0, den, 1)), np.inf)
    return out


def _any_silent(sources: np.ndarray) -> bool:
    # museval's test: a source whose channel sum is zero at every sample.
    return bool(np.any(np.all(sources.sum(axis=-2) == 0, axis=-1)))


def csdr(references, estimates, samplerate: int) -> np.ndarray:
    frames = framewise_sdr(references, estimates, samplerate)
    out = np.full(frames.shape[0], np.nan)
    for k, row in enumerate(frames):
        valid = row[~np.isnan(row)]
        if valid.size:
            out[k] = np.median(valid)
    return out


def si_sdr(references, estimates, samplerate: int) -> np.ndarray:
    ref, est = np.asarray(references, np.float64), np.asarray(estimates, np.float64)
    scale = (ref * est).sum(axis=(-2, -1), keepdims=True) / (np.square(ref).sum(axis=(-2, -1), keepdims=True) + EPS)
    target = scale * ref
    return 10 * np.log10((np.square(target).sum(axis=(-2, -1)) + EPS) /
                         (np.square(target - est).sum(axis=(-2, -1)) + EPS))


def _per_source(score: Callable) -> Callable:
    def run(references, estimates, samplerate: int) -> np.ndarray:
        return np.array([score(r, e, samplerate) for r, e in zip(references, estimates)], dtype=np.float64)
    run.__doc__ = score.__doc__
    return run


METRICS: dict[str, Callable] = {
    "sdr": sdr, "csdr": csdr, "si_sdr": si_sdr,
    **{name: _per_source(getattr(spectral_metrics, name))
       for name in ("l1_freq", "aura_stft", "aura_mrstft", "bleedless", "fullness")},
}
NOT_OFFERED = {"log_wmse": "MSST's log_wmse rests on torch-log-wmse's measured filter response (a data file), "
                           "not on a formula; it is not offered"}


def parse_metrics(text: str) -> list[str]:
    """``"sdr,csdr"`` -> ``["sdr", "csdr"]``; an unknown name is a ValueError listing the known ones."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ValueError("--metrics is empty; the metrics are " + ", ".join(METRICS))
    for name in names:
        if name in NOT_OFFERED:
            raise ValueError(f"--metrics {name}: {NOT_OFFERED[name]}")
        if name not in METRICS:
            raise ValueError(f"--metrics {name}: unknown; the metrics are " + ", ".join(METRICS))
    return list(dict.fromkeys(names))


def compute(names, references, estimates, samplerate: int) -> dict[str, list[float | None]]:
    """``{metric: [value per source]}``, ``None`` where a value is undefined (JSON has no NaN)."""
    out = {}
    for name in names:
        values = METRICS[name](references, estimates, samplerate)
        out[name] = [None if np.isnan(v) else float(v) for v in values]
    return out
