"""What an optimizer step measured, summed over its micro-batches and every rank, and an epoch's sum of its steps.

One float64 vector with named slots per step, so a step costs one all_reduce whatever it measures::

    stats = StepStats(sources, labelled=True)
    stats.add(loss_output, finite=True, noisy=noisy)   # once per micro-batch
    stats.flag("stop", signal_seen)                     # flags: > 0 after the sum means "on some rank"
    stats.all_reduce()
    stats.summary()   # {"loss": ..., "loss_per_source": {...}, "kept": {...}, "noisy_entries": {...}}

On data with ground-truth noise labels (labelnoise.synth) the step also counts
the (item, source) entries truncation dropped and kept, and how many of each
were noisy. Only the counts are written (``noisy_entries``); a share is
derived from them where it is shown (labelnoise.report_stats.noisy_share),
and readers that pool steps add the counts up (report_stats.noisy_shares).
"""
from __future__ import annotations

import torch

from . import distributed
from .losses import LossOutput

# (name, size in sources or 1): micro-batches, those with a non-finite loss or estimate, their
# summed loss, per source loss and kept fraction, the noisy-entry counts, and two flags.
_LAYOUT = (("bad", 1), ("batches", 1), ("loss", 1), ("per_source", "S"), ("kept", "S"),
           ("noisy_dropped", 1), ("dropped", 1), ("noisy_kept", 1), ("kept_n", 1), ("stop", 1), ("save", 1))


def _slots(n_sources: int) -> dict[str, slice]:
    slots, at = {}, 0
    for name, size in _LAYOUT:
        size = n_sources if size == "S" else size
        slots[name] = slice(at, at + size)
        at += size
    return slots


class StepStats:
    """Sums of one step (or, added up, of an epoch's steps); ``labelled``: the data has noise labels."""

    def __init__(self, sources: list[str], labelled: bool, sums: torch.Tensor | None = None):
        self.sources, self.labelled = list(sources), labelled
        self.slots = _slots(len(self.sources))
        last = self.slots[_LAYOUT[-1][0]].stop
        self.sums = torch.zeros(last, dtype=torch.float64) if sums is None else sums

    def __add__(self, other: "StepStats") -> "StepStats":
        return StepStats(self.sources, self.labelled, self.sums + other.sums)

    def _add(self, name: str, value) -> None:
        self.sums[self.slots[name]] += value

    def add(self, out: LossOutput, finite: bool, noisy: torch.Tensor | None) -> None:
        """One micro-batch's loss output; ``noisy``: (B, S) bool, which of its stems are noisy."""
        self._add("batches", 1)
        self._add("bad", 0 if finite else 1)
        self._add("loss", out.loss.item() if finite else 0.0)
        self._add("per_source", out.per_source.cpu().double().nan_to_num(0.0))
        self._add("kept", out.kept.cpu().double())
        if noisy is not None:
            keep = out.keep.cpu()
            self._add("noisy_dropped", float((noisy & ~keep).sum()))
            self._add("dropped", float((~keep).sum()))
            self._add("noisy_kept", float((noisy & keep).sum()))
            self._add("kept_n", float(keep.sum()))

    def flag(self, name: str, value: bool) -> None:
        self.sums[self.slots[name]] = 1.0 if value else 0.0

    def raised(self, name: str) -> bool:
        """A flag set on some rank, or (``"bad"``) a non-finite micro-batch on some rank."""
        return float(self.sums[self.slots[name]]) > 0

    def all_reduce(self) -> None:
        distributed.all_reduce(self.sums)

    def _value(self, name: str) -> float:
        return float(self.sums[self.slots[name]])

    def summary(self) -> dict:
        """Means of the sums: loss (over finite micro-batches), per source loss and kept fraction, noisy entries."""
        good = max(1.0, self._value("batches") - self._value("bad"))
        n = max(1.0, self._value("batches"))
        sums, sl = self.sums, self.slots
        out = {"loss": self._value("loss") / good,
               "loss_per_source": dict(zip(self.sources, (sums[sl["per_source"]] / n).tolist())),
               "kept": dict(zip(self.sources, (sums[sl["kept"]] / n).tolist()))}
        if self.labelled:
            out["noisy_entries"] = {"noisy_dropped": int(self._value("noisy_dropped")),
                                    "dropped": int(self._value("dropped")),
                                    "noisy_kept": int(self._value("noisy_kept")), "kept": int(self._value("kept_n"))}
        return out


class NoiseLabels:
    """Which stems of a batch are noisy, from a synthetic set's labels: {track: {source: {"noisy": bool, ...}}}."""

    def __init__(self, labels: dict, dataset, sources: list[str]):
        self.labels, self.dataset, self.sources = labels, dataset, list(sources)

    def of(self, indices: list[int]) -> torch.Tensor:
        """(B, S) bool for the dataset items ``indices``."""
        rows = []
        for index in indices:
            info = self.dataset.item_info(index)
            rows.append([self.labels.get(info[s]["track"], {}).get(s, {}).get("noisy", False) for s in self.sources])
        return torch.tensor(rows, dtype=torch.bool)
