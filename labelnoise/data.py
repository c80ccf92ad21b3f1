"""Training datasets over indexed stems, and the sampler that shards them.

- ``TrackDataset`` (Part 1): aligned segments of the four stems of one track,
  ``segment`` seconds every ``stride`` seconds (the demucs Wavset grid: the
  last segment of a track may run past its end and is zero-padded; a track
  shorter than a segment gives one zero-padded item).
- ``PoolDataset`` (Part 2): each source drawn on its own: a random file of
  its pool, a random start on a ``grid``-second grid; silent files are left
  out of the pools.

Items depend only on ``(seed, epoch, index)``; the sampler gives each DDP
rank a disjoint shard of indices, and DataLoader workers split a rank's
indices, so no two processes see the same item. Every read is a seek of one
segment (the metadata gives lengths; no file is scanned per item). Mono
stems become stereo and stems at another sample rate are resampled (soxr)
on read; the metadata records both. Files the indexer refused (unreadable,
truncated, NaN/Inf samples, more than two channels) are skipped and counted
in a warning; a pool that auto_filter did not finish writing is refused
(``labelnoise.provenance``).
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch

from . import SOURCES
from .audio import AudioError, read_audio, resample
from .metadata import load_metadata
from .provenance import check_pool_finished

log = logging.getLogger(__name__)


def item_rngs(seed: int, epoch: int, index: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Two independent generators of one item: what to read, and the item_transform's."""
    pick, transform = np.random.SeedSequence([seed, epoch, index]).spawn(2)
    return np.random.default_rng(pick), np.random.default_rng(transform)


class _StemReader:
    """Reads a window of one stem at the dataset's rate, converting rate and channels."""

    def __init__(self, root: Path, samplerate: int, channels: int = 2):
        self.root = root
        self.samplerate = samplerate
        self.channels = channels

    def length(self, entry: dict) -> int:
        """Frames of the stem at the dataset's rate."""
        return entry["frames"] * self.samplerate // entry["samplerate"]

    def read(self, rel: str, entry: dict, start: int, frames: int) -> np.ndarray:
        """``frames`` frames from ``start`` (dataset rate), zero-padded past the stem's end.

        Only the part before the stem's indexed end is read; a shorter read
        than the metadata promises means the file changed since indexing.
        """
        path = self.root / rel
        avail = max(0, min(frames, self.length(entry) - start))
        out = np.zeros((self.channels, frames), np.float32)
        if avail == 0:
            return out
        try:
            wav, want = self._read(path, entry, start, avail)
        except AudioError as exc:
            raise AudioError(f"{exc}; if it changed since it was indexed, re-run create_metadata.py") from None
        if wav.shape[-1] < want:
            raise AudioError(f"{path}: has fewer frames than its metadata says "
                             f"({entry['frames']}); the file changed, re-run create_metadata.py")
        out[:, :wav.shape[-1]] = wav
        return out

    def _read(self, path: Path, entry: dict, start: int, avail: int) -> tuple[np.ndarray, int]:
        rate = entry["samplerate"]
        if rate == self.samplerate:
            wav = read_audio(path, start=start, frames=avail, channels=self.channels)
            want = avail
        else:
            # Read the same span at the file's rate (plus a margin), then resample.
            fstart = start * rate // self.samplerate
            fframes = min(entry["frames"] - fstart, math.ceil(avail * rate / self.samplerate) + 2)
            wav = read_audio(path, start=fstart, frames=fframes, channels=self.channels)
            want = fframes
            if wav.shape[-1] == want:
                wav = resample(wav, rate, self.samplerate)[:, :avail]
                want = wav.shape[-1]
        return wav, want


class _Base(torch.utils.data.Dataset):
    def __init__(self, root_or_metadata, sources, segment, samplerate, seed, item_transform):
        self.meta = load_metadata(root_or_metadata)
        self.root = Path(self.meta["root"])
        check_pool_finished(self.root)
        self.sources = tuple(sources)
        unknown = [s for s in self.sources if s not in self.meta["files"]]
        if unknown:
            raise ValueError(f"{self.root}: metadata has no source(s) {unknown}; it has {list(self.meta['files'])}")
        self.segment = segment
        self.samplerate = samplerate
        self.length = int(round(segment * samplerate))
        self.seed = seed
        self.epoch = 0
        self.item_transform = item_transform
        self.reader = _StemReader(self.root, samplerate)
        if self.meta.get("errors"):
            log.warning("%s: %d unusable file(s) skipped (listed with the reason in the metadata's errors; "
                        "create_metadata.py prints them): %s", self.root, len(self.meta["errors"]),
                        "; ".join(list(self.meta["errors"].values())[:3]))
        if self.meta.get("uneven"):
            log.warning("%s: %d track(s) with stems of unequal length are read up to their shortest stem: %s",
                        self.root, len(self.meta["uneven"]), ", ".join(list(self.meta["uneven"])[:5]))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _finish(self, stems: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        if self.item_transform is not None:
            stems = self.item_transform(stems, rng)
        return torch.from_numpy(np.ascontiguousarray(stems, dtype=np.float32))

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        pick, transform = item_rngs(self.seed, self.epoch, index)
        info = self._item(index, pick)
        stems = np.stack([self.reader.read(i["file"], self._entry(s, i["file"]), i["start"], self.length)
                          for s, i in info.items()])
        return self._finish(stems, transform)

    def item_info(self, index: int) -> dict:
        """What item ``index`` of the current epoch holds: ``{source: {"track", "file", "start"}}``.

        ``file`` is relative to the dataset root, ``start`` in frames at the
        dataset's sample rate (before any item_transform).
        """
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        return self._item(index, item_rngs(self.seed, self.epoch, index)[0])

    def _entry(self, source: str, rel: str) -> dict:
        return self.meta["files"][source][rel]


class TrackDataset(_Base):
    """Aligned segments of all sources of one track.

    ``items_per_epoch=None``: one epoch is every segment once (the sampler
    shuffles). An int: an epoch is that many items, drawn by a per-epoch
    permutation of all segments (repeated when more items than segments).
    Tracks missing a stem are skipped (counted in a warning).
    """

    def __init__(self, root_or_metadata, *, sources=SOURCES, segment: float = 11.0, stride: float = 1.0,
                 samplerate: int = 44100, items_per_epoch: int | None = None, seed: int = 0,
                 item_transform=None):
        super().__init__(root_or_metadata, sources, segment, samplerate, seed, item_transform)
        self.stride = int(round(stride * samplerate))
        if self.stride <= 0 or self.length <= 0:
            raise ValueError(f"segment and stride must be > 0 (got {segment}, {stride})")
        by_track: dict[str, dict[str, str]] = {}
        for s in self.sources:
            for rel, e in self.meta["files"][s].items():
                by_track.setdefault(e["track"], {})[s] = rel
        self.tracks, skipped = [], []
        for name in sorted(by_track):
            (self.tracks if len(by_track[name]) == len(self.sources) else skipped).append(name)
        if skipped:
            log.warning("%s: %d track(s) without all of %s skipped: %s", self.root, len(skipped),
                        "/".join(self.sources), ", ".join(skipped[:10]) + (" ..." if len(skipped) > 10 else ""))
        if not self.tracks:
            raise ValueError(f"{self.root}: no track has all of {self.sources}")
        self.files = [by_track[t] for t in self.tracks]
        # A track is as long as its shortest stem (at the dataset's rate).
        self.track_length = np.array([min(self.reader.length(self._entry(s, f[s])) for s in self.sources)
                                      for f in self.files])
        # The demucs Wavset grid: ceil((duration - segment) / stride) + 1 segments.
        n = np.maximum(0, -(-(self.track_length - self.length) // self.stride)) + 1
        self.segments_per_track = n
        self.offsets = np.concatenate([[0], np.cumsum(n)])
        self.num_segments = int(self.offsets[-1])
        short = int((self.track_length < self.length).sum())
        if short:
            log.info("%s: %d track(s) shorter than a %.1f s segment give one zero-padded item",
                     self.root, short, segment)
        self.items_per_epoch = items_per_epoch
        self._perm_cache: dict = {}

    def __len__(self) -> int:
        return self.num_segments if self.items_per_epoch is None else int(self.items_per_epoch)

    def _segment_of(self, index: int) -> int:
        if self.items_per_epoch is None:
            return index
        block, pos = divmod(index, self.num_segments)
        key = (self.seed, self.epoch, block)
        if key not in self._perm_cache:
            self._perm_cache = {key: np.random.default_rng([self.seed, self.epoch, block, 1])
                                .permutation(self.num_segments)}
        return int(self._perm_cache[key][pos])

    def _locate(self, index: int) -> tuple[int, int]:
        """(track number, start frame) of item ``index``."""
        seg = self._segment_of(index)
        t = int(np.searchsorted(self.offsets, seg, side="right")) - 1
        return t, (seg - int(self.offsets[t])) * self.stride

    def _item(self, index: int, rng) -> dict:
        t, start = self._locate(index)
        track, files = self.tracks[t], self.files[t]
        return {s: {"track": track, "file": files[s], "start": start} for s in self.sources}

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        transform = item_rngs(self.seed, self.epoch, index)[1]
        t, start = self._locate(index)
        # Past the shortest stem every stem is zero, so the stems stay aligned.
        frames = min(self.length, int(self.track_length[t]) - start)
        stems = np.zeros((len(self.sources), 2, self.length), np.float32)
        for k, s in enumerate(self.sources):
            rel = self.files[t][s]
            stems[k, :, :frames] = self.reader.read(rel, self._entry(s, rel), start, frames)
        return self._finish(stems, transform)


class PoolDataset(_Base):
    """Each source from its own pool: random file, random start on a ``grid`` s grid.

    Files shorter than a segment start at 0 and are zero-padded. Silent
    files (metadata ``silent``) are not drawn.
    """

    def __init__(self, root_or_metadata, *, sources=SOURCES, segment: float = 11.0, samplerate: int = 44100,
                 items_per_epoch: int = 32768, seed: int = 0, grid: float = 1.0, item_transform=None):
        super().__init__(root_or_metadata, sources, segment, samplerate, seed, item_transform)
        self.grid = int(round(grid * samplerate))
        if self.grid <= 0 or self.length <= 0:
            raise ValueError(f"segment and grid must be > 0 (got {segment}, {grid})")
        self.items_per_epoch = int(items_per_epoch)
        self.pools = {}
        for s in self.sources:
            entries = self.meta["files"][s]
            pool = [rel for rel, e in entries.items() if not e["silent"]]
            if len(pool) < len(entries):
                log.info("%s: %d silent %s file(s) left out of the pool", self.root, len(entries) - len(pool), s)
            if not pool:
                raise ValueError(f"{self.root}: the {s} pool has no non-silent file")
            # Number of grid starts per file: a segment must fit, else start 0 only.
            lengths = np.array([self.reader.length(entries[rel]) for rel in pool])
            self.pools[s] = (pool, np.maximum(0, lengths - self.length) // self.grid + 1)

    def __len__(self) -> int:
        return self.items_per_epoch

    def _item(self, index: int, rng) -> dict:
        info = {}
        for s in self.sources:
            pool, starts = self.pools[s]
            j = int(rng.integers(len(pool)))
            rel = pool[j]
            info[s] = {"track": self._entry(s, rel)["track"], "file": rel,
                       "start": int(rng.integers(starts[j])) * self.grid}
        return info


class EpochSampler(torch.utils.data.Sampler):
    """This rank's disjoint share of a (shuffled) epoch.

    The epoch's order is a permutation seeded by ``(seed, epoch)``, the same
    on every rank; rank ``r`` takes positions ``r, r + world_size, ...``. The
    tail that does not divide evenly is dropped, so every rank runs the same
    number of steps. ``set_epoch`` also sets the dataset's epoch.
    """

    def __init__(self, dataset, *, rank: int = 0, world_size: int = 1, shuffle: bool = True, seed: int = 0):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} not in [0, {world_size})")
        self.dataset = dataset
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.dataset) // self.world_size

    def __iter__(self):
        n = len(self) * self.world_size
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.dataset))[:n]
        else:
            order = np.arange(n)
        return iter(order[self.rank::self.world_size].tolist())
