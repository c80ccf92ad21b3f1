"""The challenge SDR and the summaries the leaderboard reports.

Per track and source: ``10 * log10((sum s^2 + eps) / (sum (s - s_hat)^2 + eps))``
with the sums over all samples and channels and ``eps = 1e-7`` (SDX23). A
track's score is the mean over its sources; a test set's is the mean (and
median) over tracks. This is not museval's BSS-eval SDR (median over 1 s
frames), which gives different figures.
"""
from __future__ import annotations

import statistics
from typing import Mapping, Sequence

import numpy as np
import torch

EPS = 1e-7


def sdr(reference, estimate, eps: float = EPS) -> np.ndarray | float:
    """Challenge SDR in dB, summed over the last two axes ``(channels, time)``.

    Takes numpy arrays or tensors of equal shape; leading axes (batch,
    sources) are kept, so ``(S, C, T)`` gives one value per source. Computed
    in float64. A perfect estimate gives ``10 * log10(energy / eps + 1)``, not
    infinity; silence against silence gives 0.
    """
    ref = _as_float64(reference)
    est = _as_float64(estimate)
    if ref.shape != est.shape:
        raise ValueError(f"reference {ref.shape} and estimate {est.shape} differ in shape")
    if ref.ndim < 2:
        raise ValueError(f"expected (..., channels, time), got shape {ref.shape}")
    num = np.square(ref).sum(axis=(-2, -1)) + eps
    den = np.square(ref - est).sum(axis=(-2, -1)) + eps
    out = 10 * np.log10(num / den)
    return float(out) if out.ndim == 0 else out


def _as_float64(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def summarize(scores: Mapping[str, Mapping[str, float | None]], sources: Sequence[str]) -> dict:
    """Summaries of ``{track: {source: score}}``.

    Returns ``{"tracks": n, "mean": m, "median": md, "per_source": {source:
    {"mean", "median"}}}`` where ``mean``/``median`` are over the tracks'
    source-mean scores. A score may be ``None`` (undefined: cSDR of a track
    without a non-silent frame); summaries skip it (``None`` when nothing is
    left) and ``undefined`` counts the tracks without a mean.
    """
    if not scores:
        raise ValueError("no tracks to summarize")
    track_means = [track_mean(s, sources) for s in scores.values()]
    per_source = {source: _stats([s[source] for s in scores.values()]) for source in sources}
    out = {"tracks": len(scores), **_stats(track_means), "per_source": per_source}
    undefined = sum(m is None for m in track_means)
    if undefined:
        out["undefined"] = undefined
    return out


def _stats(values) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "median": None}
    return {"mean": statistics.fmean(values), "median": statistics.median(values)}


def track_mean(track_scores: Mapping[str, float | None], sources: Sequence[str]) -> float | None:
    """A track's score: the mean over ``sources`` (``None`` if one is undefined)."""
    values = [track_scores[s] for s in sources]
    return None if any(v is None for v in values) else statistics.fmean(values)
