"""Indexing both layouts, every irregular case, incremental re-runs, the CLI."""
import json

import numpy as np
import pytest
import soundfile as sf

import create_metadata
from labelnoise import SOURCES, metadata
from labelnoise.metadata import default_metadata_path, index_dataset, load_metadata

SR = 8000


def _tone(seconds=2.0, channels=2, sr=SR, amp=0.3, freq=220.0):
    t = np.arange(int(seconds * sr)) / sr
    x = amp * np.sin(2 * np.pi * freq * t)
    return np.stack([x] * channels, axis=1).astype(np.float32)


def _write(path, data, sr=SR, subtype="PCM_16"):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, sr, subtype=subtype)


@pytest.fixture
def irregular(tmp_path):
    """Track folders covering every irregular case."""
    root = tmp_path / "tracks"
    cases = {
        "ok": {},
        "silent": {"vocals": np.zeros((2 * SR, 2), np.float32)},
        "quiet": {"vocals": _tone(amp=1e-4)},  # mean|x| ~ -86 dB: silent by the -80 dB rule
        "mono": {"bass": _tone(channels=1)},
        "rate": {"other": (_tone(sr=16000), 16000)},
        "pcm24": {"drums": (_tone(), SR, "PCM_24")},
        "float": {"drums": (_tone(amp=1.5), SR, "FLOAT")},
        "short": {s: _tone(seconds=0.25) for s in SOURCES},
    }
    for track, special in cases.items():
        for s in SOURCES:
            spec = special.get(s, _tone(freq=110 * (1 + SOURCES.index(s))))
            data, sr, subtype = (spec + (SR, "PCM_16")[len(spec) - 1:]) if isinstance(spec, tuple) else (spec, SR, "PCM_16")
            _write(root / track / f"{s}.wav", data, sr, subtype)
        _write(root / track / "mixture.wav", _tone())
    for s in ("drums", "bass", "other"):  # no vocals
        _write(root / "missing" / f"{s}.wav", _tone())
    for s in SOURCES:
        _write(root / "broken" / f"{s}.wav", _tone())
    (root / "broken" / "drums.wav").write_bytes(b"RIFF this is not a wav file at all")
    (root / "broken" / "bass.wav").write_bytes(b"")
    _write(root / "broken" / "other.wav", np.zeros((0, 2), np.float32))
    _write(root / "broken" / "vocals.wav", np.zeros((SR, 3), np.float32))
    (root / "notes").mkdir()  # not a track: no stems
    (root / "notes" / "readme.txt").write_text("hello")
    (root / "ok" / ".vocals.wav.tmp.123.wav").write_bytes(b"partial")  # an atomic write in progress
    return root


def test_tracks_layout_every_irregular_case(irregular):
    meta = index_dataset(irregular, workers=2, progress=False)
    assert meta["layout"] == "tracks" and meta["complete"]
    files = meta["files"]
    assert set(files) == set(SOURCES)
    ok = files["drums"]["ok/drums.wav"]
    assert (ok["frames"], ok["samplerate"], ok["channels"], ok["silent"], ok["track"]) == (2 * SR, SR, 2, False, "ok")
    assert ok["size"] > 0 and ok["mtime"] > 0
    assert files["vocals"]["silent/vocals.wav"]["silent"] is True
    assert files["vocals"]["quiet/vocals.wav"]["silent"] is True
    assert files["vocals"]["ok/vocals.wav"]["silent"] is False
    assert files["bass"]["mono/bass.wav"]["channels"] == 1
    assert files["other"]["rate/other.wav"]["samplerate"] == 16000
    assert files["other"]["rate/other.wav"]["frames"] == 32000
    assert files["drums"]["pcm24/drums.wav"]["subtype"] == "PCM_24"
    assert files["drums"]["float/drums.wav"]["subtype"] == "FLOAT"
    assert files["drums"]["short/drums.wav"]["frames"] == SR // 4
    # Unreadable files: skipped with a reason naming the file; the rest of the track stays.
    errors = meta["errors"]
    assert set(errors) == {"broken/drums.wav", "broken/bass.wav", "broken/other.wav", "broken/vocals.wav"}
    assert "not readable" in errors["broken/drums.wav"] and "broken/drums.wav" in errors["broken/drums.wav"]
    assert "empty" in errors["broken/bass.wav"]
    assert "no audio frames" in errors["broken/other.wav"]
    assert "3 channels" in errors["broken/vocals.wav"]
    assert meta["missing"] == {"missing": ["vocals"]}
    # Hidden temp files, mixtures and folders without stems are not indexed.
    assert not any("tmp" in p or "mixture" in p or p.startswith("notes") for s in files.values() for p in s)
    summary = meta["summary"]
    assert summary["errors"] == 4 and summary["tracks_missing_stems"] == 1
    assert summary["per_source"]["vocals"]["silent"] == 2
    assert summary["per_source"]["bass"]["mono"] == 1
    assert summary["per_source"]["other"]["samplerates"] == {"16000": 1, str(SR): 8}


def test_pool_layout(tmp_path):
    root = tmp_path / "pool"
    for s in SOURCES:
        for track in ("a", "b"):
            _write(root / "train" / s / f"{track}.wav", _tone())
    _write(root / "train" / "vocals" / "quiet.wav", np.zeros((SR, 2), np.float32))
    meta = index_dataset(root, progress=False)
    assert meta["layout"] == "pool"
    assert sorted(meta["files"]["drums"]) == ["train/drums/a.wav", "train/drums/b.wav"]
    assert meta["files"]["vocals"]["train/vocals/quiet.wav"]["silent"]
    assert meta["files"]["bass"]["train/bass/b.wav"]["track"] == "b"


def test_empty_dataset_is_a_clear_error(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(ValueError, match="no stems found"):
        index_dataset(tmp_path, progress=False)
    with pytest.raises(FileNotFoundError, match="not found"):
        index_dataset(tmp_path / "nope", progress=False)


def test_incremental_reuses_unchanged_entries(irregular, tmp_path, monkeypatch):
    out = tmp_path / "meta.json"
    first = index_dataset(irregular, out=out, progress=False)
    assert json.loads(out.read_text())["files"] == first["files"]
    calls = []
    real = metadata.index_file
    monkeypatch.setattr(metadata, "index_file", lambda p: calls.append(p) or real(p))
    # Change one file: only it (and the unreadable ones) are read again.
    _write(irregular / "ok" / "bass.wav", _tone(seconds=3.0))
    second = index_dataset(irregular, out=out, progress=False)
    reread = sorted(p.relative_to(irregular).as_posix() for p in calls)
    assert reread == ["broken/bass.wav", "broken/drums.wav", "broken/other.wav", "broken/vocals.wav",
                      "ok/bass.wav"]
    assert second["files"]["bass"]["ok/bass.wav"]["frames"] == 3 * SR
    indexed = sum(c["files"] for c in first["summary"]["per_source"].values())
    assert indexed == 8 * 4 + 3 and second["summary"]["reused"] == indexed - 1
    assert second["files"]["drums"] == first["files"]["drums"]


def test_interrupted_index_still_writes_what_it_has(irregular, tmp_path, monkeypatch):
    out = tmp_path / "meta.json"
    real = metadata.index_file

    def flaky(path):
        if path.parent.name == "short":
            raise KeyboardInterrupt
        return real(path)

    monkeypatch.setattr(metadata, "index_file", flaky)
    with pytest.raises(KeyboardInterrupt):
        index_dataset(irregular, out=out, workers=1, progress=False)
    partial = json.loads(out.read_text())
    assert partial["complete"] is False
    assert "ok/drums.wav" in partial["files"]["drums"]
    monkeypatch.setattr(metadata, "index_file", real)
    full = index_dataset(irregular, out=out, progress=False)
    assert full["complete"] and full["summary"]["reused"] > 0


def test_load_metadata_forms(irregular, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("LABELNOISE_METADATA_DIR", str(tmp_path / "meta"))
    meta = index_dataset(irregular, progress=False)
    assert load_metadata(meta) is meta
    with caplog.at_level("INFO", logger="labelnoise.metadata"):
        assert load_metadata(irregular)["files"] == meta["files"]  # no metadata.json: indexed in memory
    # The message says where an index was looked for, and how to write the one training reads.
    said = caplog.records[-1].getMessage()
    assert str(irregular / "metadata.json") in said and str(default_metadata_path(irregular)) in said
    assert f"python create_metadata.py {irregular} writes the second" in said
    before = sorted(p.name for p in irregular.rglob("*"))
    create_metadata.main([str(irregular), "--workers", "2"])
    assert sorted(p.name for p in irregular.rglob("*")) == before, "the dataset is never written to"
    assert default_metadata_path(irregular).is_file()
    assert default_metadata_path(irregular).parent == tmp_path / "meta"
    assert load_metadata(irregular)["files"] == meta["files"]
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        load_metadata(bad)
    bad.write_text('{"hello": 1}')
    with pytest.raises(ValueError, match="create_metadata"):
        load_metadata(bad)


def test_cli_reports_and_never_crashes_on_bad_files(irregular, tmp_path, caplog):
    out = tmp_path / "m.json"
    assert create_metadata.main([str(irregular), "--out", str(out)]) == 0
    meta = json.loads(out.read_text())
    assert len(meta["errors"]) == 4
    text = caplog.text
    assert "broken/drums.wav" in text and "track missing has no vocals" in text
    assert create_metadata.main([str(tmp_path / "nope")]) == 1
