"""Reconstruction losses with loss truncation (the quantile mask of Part 1).

Per item and source the loss is averaged over channels and time, giving
``l`` of shape (B, S). Truncation computes one threshold per source, the
``trunc_ratio`` quantile (linear interpolation) of a ranking score, and zeroes
the entries whose score lies above it; the mean over the batch still divides
by B. Then the weighted mean over sources::

    l = l.masked_fill(score > score.quantile(C, dim=0), 0).mean(0)
    loss = (l * w).sum() / w.sum()

With B = 4: C = 0.7 drops the largest 1 of 4 per source, 0.5 drops 2, 0.3 drops 3.

Choices beyond the original:
- ``trunc_by="relative"`` ranks entries by their loss divided by the target's
  mean absolute level, so quiet stems are not kept merely for being quiet
  (with Scale augmentation, absolute L1 ranks items by loudness).
- ``trunc_scope="global"`` takes the quantile over the scores gathered from
  every DDP rank, so C means the same with 2 items or 32; ``"running"`` over the
  last ``trunc_window`` scores per source (loss truncation's original variant).

The keywords are the config's ``optim`` keys: ``ReconstructionLoss.from_config(cfg["optim"])``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

KINDS = ("l1", "mse")  # the per-entry loss; a ``_trunc`` suffix adds truncation
LOSSES = (*KINDS, *(f"{kind}_trunc" for kind in KINDS))
# The config's optim keys that are this loss's keywords, under the same names.
CONFIG_KEYS = ("loss", "trunc_ratio", "weights", "trunc_scope", "trunc_by", "trunc_window")
SCOPES = ("local", "global", "running")
TRUNC_BY = ("absolute", "relative")
# Keeps relative scores finite for silent targets (their score is then the loss itself x 1e8).
_LEVEL_EPS = 1e-8


@dataclass
class LossOutput:
    loss: torch.Tensor        # scalar, what backward() is called on
    per_source: torch.Tensor  # (S,) masked mean over the batch, before weighting
    kept: torch.Tensor        # (S,) fraction of the batch kept by the mask (1 without truncation)
    keep: torch.Tensor        # (B, S) bool, the mask itself


def entry_losses(estimate: torch.Tensor, sources: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """Loss per (item, source): mean over every dim after the first two -> (B, S)."""
    if estimate.shape != sources.shape:
        raise ValueError(f"estimate {tuple(estimate.shape)} and sources {tuple(sources.shape)} differ in shape")
    if kind not in KINDS:
        raise ValueError(f"loss kind {kind!r} is not one of {KINDS}")
    diff = estimate.float() - sources.float()
    per_sample = diff.abs() if kind == "l1" else diff.square()
    return per_sample.flatten(2).mean(-1)


def _gather(scores: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's (B, S) scores along the batch (ranks may hold different B)."""
    world = dist.get_world_size()
    sizes = [torch.zeros(1, dtype=torch.long, device=scores.device) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([scores.shape[0]], device=scores.device))
    biggest = int(max(s.item() for s in sizes))
    padded = torch.zeros(biggest, scores.shape[1], dtype=scores.dtype, device=scores.device)
    padded[: scores.shape[0]] = scores
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(n.item())] for p, n in zip(parts, sizes)])


class ReconstructionLoss:
    """The training loss of every stage; holds the running window when ``trunc_scope="running"``."""

    def __init__(self, loss: str = "l1", trunc_ratio: float = 0.7, weights=None, trunc_scope: str = "local",
                 trunc_by: str = "absolute", trunc_window: int = 256):
        if loss not in LOSSES:
            raise ValueError(f"loss {loss!r} is not one of {LOSSES}")
        if trunc_scope not in SCOPES:
            raise ValueError(f"truncation scope {trunc_scope!r} is not one of {SCOPES}")
        if trunc_by not in TRUNC_BY:
            raise ValueError(f"trunc_by {trunc_by!r} is not one of {TRUNC_BY}")
        if not 0.0 <= trunc_ratio <= 1.0:
            raise ValueError(f"trunc_ratio must lie in [0, 1], got {trunc_ratio}")
        self.kind = loss.removesuffix("_trunc")
        self.truncate = loss.endswith("_trunc")
        self.trunc_ratio = trunc_ratio
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float32)
        self.scope = trunc_scope
        self.trunc_by = trunc_by
        self.window = trunc_window
        self._history: torch.Tensor | None = None  # (<= window, S) past scores for scope="running"

    @classmethod
    def from_config(cls, optim: dict) -> "ReconstructionLoss":
        """The loss a config's ``optim`` section describes (its keys are the keywords)."""
        return cls(**{key: optim[key] for key in CONFIG_KEYS})

    def state_dict(self) -> dict:
        """What a checkpoint keeps: the running window (None outside ``trunc_scope="running"``)."""
        return {"history": self._history}

    def load_state_dict(self, state: dict) -> None:
        self._history = state["history"]

    def _scores(self, losses: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
        if self.trunc_by == "absolute":
            return losses.detach()
        level = sources.detach().float().abs().flatten(2).mean(-1)
        return losses.detach() / (level + _LEVEL_EPS)

    def _threshold(self, scores: torch.Tensor) -> torch.Tensor:
        if self.scope == "global" and dist.is_available() and dist.is_initialized():
            pool = _gather(scores)
        elif self.scope == "running":
            past = self._history if self._history is not None else scores[:0]
            pool = torch.cat([past.to(scores.device), scores])[-self.window:]
            self._history = pool
        else:
            pool = scores
        return pool.quantile(self.trunc_ratio, dim=0)

    def __call__(self, estimate: torch.Tensor, sources: torch.Tensor) -> LossOutput:
        # Float32 whatever the caller's autocast (the inputs are cast up in entry_losses): bf16
        # keeps 3 significant digits, too few for the per-entry losses the quantile ranks.
        with torch.autocast(device_type=estimate.device.type, enabled=False):
            return self._loss(estimate, sources)

    def _loss(self, estimate: torch.Tensor, sources: torch.Tensor) -> LossOutput:
        losses = entry_losses(estimate, sources, self.kind)
        if self.truncate:
            scores = self._scores(losses, sources)
            keep = scores <= self._threshold(scores)
            # A non-finite entry is never masked away: the loss must show it, so the step is skipped.
            losses = losses.masked_fill(~keep & torch.isfinite(losses), 0.0)
        else:
            keep = torch.ones_like(losses, dtype=torch.bool)
        per_source = losses.mean(0)
        weights = torch.ones_like(per_source) if self.weights is None else self.weights.to(per_source.device)
        if weights.shape != per_source.shape:
            raise ValueError(f"{weights.numel()} source weights for {per_source.numel()} sources")
        loss = (per_source * weights).sum() / weights.sum()
        return LossOutput(loss, per_source.detach(), keep.float().mean(0), keep)


def reconstruction_loss(estimate, sources, loss="l1_trunc", trunc_ratio=0.7, weights=None, trunc_scope="local",
                        trunc_by="absolute"):
    """Stateless form for the local and global scopes: returns (loss, kept fraction per source)."""
    if trunc_scope == "running":
        raise ValueError("trunc_scope='running' keeps a window across steps: use ReconstructionLoss")
    out = ReconstructionLoss(loss, trunc_ratio, weights, trunc_scope, trunc_by)(estimate, sources)
    return out.loss, out.kept
