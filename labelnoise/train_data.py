"""What feeds the training loop: the config's dataset, its batch augmentation, and an epoch's batches.

    dataset = build_dataset(cfg, item_transform)
    item_transform, augment = build_augment(cfg, generator)   # in the loader / on the batch
    for sources, indices in epoch_batches(dataset, sampler, epoch, skip, batch_size, workers):
        ...

The sampler is deterministic, so the main process knows which dataset items each
batch holds (the trainer looks up their noise labels) and a run resumed in the
middle of an epoch skips exactly the items it had consumed.
"""
from __future__ import annotations

import itertools
import signal

import torch
from torch import nn

from .augment import FlipChannels, FlipSign, Remix, Scale, Shift, build_repitch
from .data import EpochSampler, PoolDataset, TrackDataset
from .run_state import TrainingError

# The signals that preempt a run: the trainer saves and exits on them, loader workers ignore them.
PREEMPT_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)


def build_dataset(cfg: dict, item_transform=None):
    """The config's dataset; a data folder or metadata that cannot be used is a TrainingError."""
    try:
        return _dataset(cfg, item_transform)
    except (FileNotFoundError, ValueError) as exc:  # AudioError is a ValueError
        raise TrainingError(f"data: {exc}") from None


def _dataset(cfg: dict, item_transform=None):
    data = cfg["data"]
    source = data["metadata"] if data["metadata"] is not None else data["root"]
    common = dict(sources=cfg["model"]["sources"], segment=data["segment"], samplerate=data["samplerate"],
                  seed=cfg["run"]["seed"], item_transform=item_transform)
    if data["mode"] == "tracks":
        return TrackDataset(source, stride=data["stride"], items_per_epoch=data["items_per_epoch"], **common)
    if data["mode"] == "pool":
        if data["items_per_epoch"] is None:
            raise TrainingError("data.items_per_epoch must be set for data.mode pool (an epoch is that many items)")
        return PoolDataset(source, grid=data["grid"], items_per_epoch=data["items_per_epoch"], **common)
    raise TrainingError(f"data.mode must be 'tracks' or 'pool', got {data['mode']!r}")


def build_augment(cfg: dict, generator: torch.Generator):
    """(item_transform for the loader or None, batch augmentation as a module list)."""
    aug, sr = cfg["augment"], cfg["data"]["samplerate"]
    item_transform, batch = None, []
    repitch = dict(aug["repitch"])
    backend = repitch.pop("backend")
    if repitch["proba"] > 0:
        if backend == "vocoder":
            batch.append(build_repitch(backend, sr, generator=generator, **repitch))
        else:
            item_transform = build_repitch(backend, sr, **repitch)
    # The demucs solver's order: Shift, FlipChannels, FlipSign, Scale, Remix.
    if aug["shift"] > 0:
        batch.append(Shift(int(aug["shift"] * sr), generator=generator))
    if aug["flip"]:
        batch += [FlipChannels(generator=generator), FlipSign(generator=generator)]
    if aug["scale"]["proba"] > 0:
        batch.append(Scale(aug["scale"]["proba"], aug["scale"]["min"], aug["scale"]["max"], generator=generator))
    if aug["remix"]["proba"] > 0:
        group = aug["remix"]["group_size"]
        if group and cfg["optim"]["batch_size"] % group:
            raise TrainingError(f"augment.remix.group_size {group} does not divide optim.batch_size "
                                f"{cfg['optim']['batch_size']}; set augment.remix.proba=0 or change one of them")
        batch.append(Remix(aug["remix"]["proba"], group, generator=generator))
    return item_transform, nn.ModuleList(batch).train()


class _SkipSampler(torch.utils.data.Sampler):
    """An epoch's sampler without its first ``skip`` indices (a run resumed mid-epoch)."""

    def __init__(self, sampler, skip: int):
        self.sampler, self.skip = sampler, skip

    def __iter__(self):
        return itertools.islice(iter(self.sampler), self.skip, None)

    def __len__(self):
        return max(0, len(self.sampler) - self.skip)


def _ignore_preemption(worker_id: int) -> None:
    """Loader workers leave SIGUSR1/SIGTERM to the trainer (SLURM signals every process of a step);
    they end when the trainer shuts its loader down or exits."""
    for s in PREEMPT_SIGNALS:
        signal.signal(s, signal.SIG_IGN)


def epoch_batches(dataset, sampler: EpochSampler, epoch: int, skip: int, batch_size: int, workers: int,
                  pin: bool = False):
    """Epoch ``epoch``'s batches without its first ``skip`` items: (sources, the items' dataset indices) pairs."""
    sampler.set_epoch(epoch)
    sampler = _SkipSampler(sampler, skip)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                                         drop_last=True, worker_init_fn=_ignore_preemption if workers else None,
                                         pin_memory=pin, persistent_workers=False,
                                         prefetch_factor=4 if workers else None)
    indices = list(sampler)
    batches = (indices[k:k + batch_size] for k in range(0, len(indices), batch_size))
    return zip(loader, batches)
