"""Datasets over both layouts: alignment, conversion on read, reproducibility, DDP sharding."""
import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from labelnoise import SOURCES, synth
from labelnoise.audio import AudioError, read_audio
from labelnoise.data import EpochSampler, PoolDataset, TrackDataset, item_rngs
from labelnoise.metadata import index_dataset

SR = 8000


def _write(path, data, sr=SR, subtype="PCM_16"):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, sr, subtype=subtype)


def _ramp(seconds, k, channels=2, sr=SR):
    # A distinct, position-revealing signal per source: reading the wrong span shows.
    t = np.arange(int(round(seconds * sr))) / sr
    x = 0.1 * np.sin(2 * np.pi * (100 + 50 * k) * t) + 0.001 * t
    return np.stack([x * (1 + 0.1 * c) for c in range(channels)], axis=1).astype(np.float32)


@pytest.fixture(scope="module")
def tracks(tmp_path_factory):
    root = tmp_path_factory.mktemp("tracks")
    for name, seconds in (("a", 3.5), ("b", 2.0), ("c", 0.6)):
        for k, s in enumerate(SOURCES):
            _write(root / name / f"{s}.wav", _ramp(seconds, k))
    for k, s in enumerate(SOURCES[:3]):
        _write(root / "novocals" / f"{s}.wav", _ramp(2.0, k))
    return root


@pytest.fixture(scope="module")
def synth_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    synth.generate(root, tracks=4, seconds=3.0, noise_rate=0.0, seed=2, samplerate=SR, progress=False)
    return root


def test_track_items_are_aligned_seeks(tracks):
    ds = TrackDataset(tracks, segment=1.0, stride=0.5, samplerate=SR)
    # demucs grid: ceil((dur - seg) / stride) + 1 -> a: 6, b: 3, c (short): 1; novocals skipped.
    assert ds.tracks == ["a", "b", "c"]
    assert list(ds.segments_per_track) == [6, 3, 1]
    assert len(ds) == 10
    for index in range(len(ds)):
        info = ds.item_info(index)
        x = ds[index]
        assert x.shape == (4, 2, SR) and x.dtype == torch.float32
        track = info["drums"]["track"]
        assert all(i["track"] == track and i["start"] == info["drums"]["start"] for i in info.values())
        start = info["drums"]["start"]
        for k, s in enumerate(SOURCES):
            ref = read_audio(tracks / track / f"{s}.wav")[:, start:start + SR]
            np.testing.assert_array_equal(x[k, :, :ref.shape[1]].numpy(), ref)
            assert not x[k, :, ref.shape[1]:].any()  # zero padding past the end
    assert ds.item_info(5)["vocals"] == {"track": "a", "file": "a/vocals.wav", "start": 5 * SR // 2}


def test_track_dataset_on_the_pool_layout_and_sources_subset(tmp_path):
    for k, s in enumerate(SOURCES):
        _write(tmp_path / "train" / s / "t1.wav", _ramp(2.0, k))
    _write(tmp_path / "train" / "bass" / "only_bass.wav", _ramp(2.0, 1))
    ds = TrackDataset(tmp_path, segment=1.0, stride=1.0, samplerate=SR)
    assert ds.tracks == ["t1"] and len(ds) == 2
    bass = TrackDataset(tmp_path, sources=("bass",), segment=1.0, stride=1.0, samplerate=SR)
    assert bass.tracks == ["only_bass", "t1"] and bass[0].shape == (1, 2, SR)
    with pytest.raises(ValueError, match="no source"):
        TrackDataset(tmp_path, sources=("piano",), segment=1.0, samplerate=SR)


def test_mono_and_other_rate_are_converted_on_read(tmp_path):
    t = np.arange(2 * 16000) / 16000
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    _write(tmp_path / "x" / "drums.wav", tone[:, None], 16000)  # mono, 16 kHz
    for s in SOURCES[1:]:
        _write(tmp_path / "x" / f"{s}.wav", _ramp(2.0, 1))
    meta = index_dataset(tmp_path, progress=False)
    ds = TrackDataset(meta, segment=1.0, stride=1.0, samplerate=SR)
    assert len(ds) == 2
    x = ds[1].numpy()
    drums = x[0]
    np.testing.assert_array_equal(drums[0], drums[1])  # mono -> both channels
    # 440 Hz is still 440 Hz at the dataset's rate, and the level is kept.
    spectrum = np.abs(np.fft.rfft(drums[0]))
    assert abs(np.fft.rfftfreq(SR, 1 / SR)[spectrum.argmax()] - 440) <= 1
    assert abs(np.abs(drums[0, 100:-100]).max() - 0.5) < 0.02


def test_pool_items_use_a_grid_and_skip_silent_files(tmp_path):
    for k, s in enumerate(SOURCES):
        for name, seconds in (("long", 5.0), ("short", 0.5)):
            _write(tmp_path / "train" / s / f"{name}.wav", _ramp(seconds, k))
    _write(tmp_path / "train" / "vocals" / "silent.wav", np.zeros((3 * SR, 2), np.float32))
    ds = PoolDataset(tmp_path, segment=2.0, samplerate=SR, items_per_epoch=64, grid=1.0, seed=3)
    assert len(ds) == 64
    tracks_seen, starts = set(), set()
    for index in range(64):
        info = ds.item_info(index)
        x = ds[index].numpy()
        for k, s in enumerate(SOURCES):
            i = info[s]
            assert i["track"] != "silent"
            assert i["start"] % SR == 0 and i["start"] + 2 * SR <= max(5 * SR, 2 * SR)
            if i["track"] == "short":
                assert i["start"] == 0 and not x[k, :, SR // 2:].any()
            ref = read_audio(tmp_path / i["file"])[:, i["start"]:i["start"] + 2 * SR]
            np.testing.assert_array_equal(x[k, :, :ref.shape[1]], ref)
            tracks_seen.add(i["track"])
            starts.add(i["start"])
        if len({i["track"] for i in info.values()}) > 1:
            tracks_seen.add("mixed")
    assert tracks_seen == {"long", "short", "mixed"}  # sources drawn independently
    assert starts == {0, SR, 2 * SR, 3 * SR}


def test_items_depend_only_on_seed_epoch_index(synth_set):
    make = lambda seed: PoolDataset(synth_set, segment=1.0, samplerate=SR, items_per_epoch=8, seed=seed)  # noqa: E731
    a, b, c = make(0), make(0), make(1)
    order = [5, 1, 7, 0]
    first = [a[i] for i in order]
    for i, x in zip(order, first):
        assert torch.equal(b[i], x)
    assert not all(torch.equal(c[i], x) for i, x in zip(order, first))
    a.set_epoch(1)
    assert not all(torch.equal(a[i], x) for i, x in zip(order, first))
    a.set_epoch(0)
    assert torch.equal(a[5], first[0])
    # Tracks with items_per_epoch: a permutation per epoch, every segment once per pass.
    tr = TrackDataset(synth_set, segment=1.0, stride=1.0, samplerate=SR, items_per_epoch=10, seed=4)
    assert tr.num_segments == 12 and len(tr) == 10
    segs = [(tr.item_info(i)["drums"]["track"], tr.item_info(i)["drums"]["start"]) for i in range(10)]
    assert len(set(segs)) == 10
    tr.set_epoch(1)
    assert [(tr.item_info(i)["drums"]["track"], tr.item_info(i)["drums"]["start"]) for i in range(10)] != segs


def test_item_transform_gets_the_items_rng(synth_set):
    calls = []

    def transform(stems, rng):
        calls.append(rng.random())
        assert stems.dtype == np.float32 and stems.shape == (4, 2, SR)
        return stems[..., : int(0.88 * SR)] * 2

    ds = TrackDataset(synth_set, segment=1.0, samplerate=SR, item_transform=transform, seed=9)
    plain = TrackDataset(synth_set, segment=1.0, samplerate=SR, seed=9)
    x = ds[3]
    assert x.shape == (4, 2, int(0.88 * SR))
    torch.testing.assert_close(x, plain[3][..., : int(0.88 * SR)] * 2)
    ds[3]
    assert calls[0] == calls[1] == item_rngs(9, 0, 3)[1].random()


class _Indexed(torch.utils.data.Dataset):
    """Wraps a dataset so a batch says which indices and which process made it."""

    def __init__(self, ds):
        self.ds = ds

    def set_epoch(self, epoch):
        self.ds.set_epoch(epoch)

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, index):
        info = torch.utils.data.get_worker_info()
        return index, info.id if info else -1, self.ds[index]


def test_two_ranks_two_workers_see_disjoint_items(synth_set):
    ds = _Indexed(PoolDataset(synth_set, segment=0.5, samplerate=SR, items_per_epoch=22, seed=1))
    seen = {}
    for rank in range(2):
        sampler = EpochSampler(ds, rank=rank, world_size=2, seed=7)
        sampler.set_epoch(3)
        loader = torch.utils.data.DataLoader(ds, batch_size=2, sampler=sampler, num_workers=2)
        for indices, workers, batch in loader:
            for i, w, x in zip(indices.tolist(), workers.tolist(), batch):
                assert i not in seen
                seen[i] = (rank, w)
                ds.ds.set_epoch(3)
                assert torch.equal(x, ds.ds[i])  # the worker saw epoch 3 too
    assert len(seen) == 22  # 22 items / 2 ranks: nothing dropped, nothing twice
    assert {v for v in seen.values()} == {(r, w) for r in range(2) for w in range(2)}
    # Shuffled per epoch, same permutation on every rank.
    s0 = EpochSampler(ds, rank=0, world_size=2, seed=7)
    s0.set_epoch(3)
    first = list(s0)
    s0.set_epoch(4)
    assert list(s0) != first and sorted(first) == sorted(i for i, v in seen.items() if v[0] == 0)
    assert len(EpochSampler(ds, rank=1, world_size=3)) == 7  # the uneven tail is dropped
    with pytest.raises(ValueError):
        EpochSampler(ds, rank=2, world_size=2)


def test_stale_metadata_is_a_clear_error(tmp_path):
    for k, s in enumerate(SOURCES):
        _write(tmp_path / "t" / f"{s}.wav", _ramp(2.0, k))
    meta = index_dataset(tmp_path, progress=False)
    _write(tmp_path / "t" / "bass.wav", _ramp(0.5, 1))  # shrank after indexing
    ds = TrackDataset(meta, segment=1.0, stride=1.0, samplerate=SR)
    with pytest.raises(AudioError, match="t/bass.wav.*create_metadata"):
        ds[1]
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_synth_ground_truth_through_item_info(tmp_path):
    # What training will do: the labels of the stems an item came from.
    labels = json.loads(synth.generate(tmp_path, tracks=3, seconds=2.0, noise_rate=0.5, seed=8,
                                       samplerate=SR, progress=False).read_text())
    ds = PoolDataset(tmp_path, segment=1.0, samplerate=SR, items_per_epoch=6)
    for index in range(len(ds)):
        for s, i in ds.item_info(index).items():
            assert isinstance(labels[i["track"]][s]["noisy"], bool)
    assert math.isclose(len(ds), 6)
