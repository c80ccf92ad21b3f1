"""separate.py and evaluate.py end to end on generated audio, with a small checkpoint."""
import json
import logging
import math

import numpy as np
import pytest
import soundfile as sf
import torch
from demucs.htdemucs import HTDemucs as DemucsHTDemucs

import evaluate
import separate
from labelnoise import SOURCES
from labelnoise.audio import read_audio
from labelnoise.checkpoint import load_model
from labelnoise.evaluation import evaluate_dirs, evaluate_model, load_track
from labelnoise.inference import apply

RATE = 8000
SMALL = dict(channels=8, depth=2, nfft=512, t_layers=1, t_heads=2, dconv_comp=4,
             segment=0.5, samplerate=RATE)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A demucs-package checkpoint (a format load_model reads) of a small HTDemucs."""
    torch.manual_seed(0)
    model = DemucsHTDemucs(sources=list(SOURCES), **SMALL)
    args, kwargs = model._init_args_kwargs
    path = tmp_path_factory.mktemp("model") / "small.th"
    torch.save({"klass": DemucsHTDemucs, "args": args, "kwargs": kwargs,
                "state": model.state_dict(), "training_args": {}}, path)
    return path


def tone(channels, frames, seed):
    rng = np.random.default_rng(seed)
    return (0.2 * rng.standard_normal((channels, frames))).astype(np.float32)


def write(path, wav, rate, subtype="FLOAT"):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wav.T, rate, subtype=subtype)


@pytest.fixture
def test_set(tmp_path):
    """Two tracks: ``a`` with mixture.wav, ``b`` without (the mixture is the stem sum)."""
    root = tmp_path / "test"
    for i, name in enumerate(["a", "b"]):
        stems = {s: tone(2, 5000, seed=10 * i + k) for k, s in enumerate(SOURCES)}
        for s, wav in stems.items():
            write(root / name / f"{s}.wav", wav, RATE)
        if name == "a":
            write(root / name / "mixture.wav", sum(stems.values()), RATE)
    return root


def test_separate_end_to_end(tmp_path, model_file, caplog):
    inputs = tmp_path / "in"
    song = tone(2, 9000, seed=1)
    write(inputs / "song.wav", song, RATE)
    write(inputs / "mono.flac", tone(1, 6000, seed=2), RATE, subtype="PCM_16")
    write(inputs / "hi.ogg", tone(2, 52_800, seed=3), 48_000, subtype="VORBIS")
    write(inputs / "three.wav", tone(3, 4000, seed=4), RATE)
    (inputs / "bad.wav").write_text("not audio at all")
    files = [inputs / n for n in ("song.wav", "bad.wav", "mono.flac", "missing.wav", "hi.ogg",
                                  "three.wav")]
    out = tmp_path / "out"
    with caplog.at_level(logging.ERROR):
        rc = separate.main([str(model_file), *map(str, files), "--out", str(out), "--jobs", "2"])
    assert rc == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    for name, why in [("bad.wav", "not readable as audio"), ("missing.wav", "file not found"),
                      ("three.wav", "has 3 channels")]:
        assert sum(name in e and why in e for e in errors) == 1, errors
    assert not (out / "bad").exists() and not (out / "three").exists()

    for name, rate, frames in [("song", RATE, 9000), ("mono", RATE, 6000), ("hi", 48_000, 52_800)]:
        for source in SOURCES:
            meta = sf.info(str(out / name / f"{source}.wav"))
            assert (meta.samplerate, meta.channels, meta.frames) == (rate, 2, frames)
            assert meta.subtype == "PCM_16"
    # The written stems are the in-memory separation, up to 16-bit rounding.
    expected = apply(load_model(model_file), torch.from_numpy(song)).numpy()
    for k, source in enumerate(SOURCES):
        got = read_audio(out / "song" / f"{source}.wav")
        assert np.abs(got - np.clip(expected[k], -1, 1)).max() < 1e-4


def test_separate_float32_and_mixture_naming(test_set, tmp_path, model_file):
    out = tmp_path / "est"
    rc = separate.main([str(model_file), str(test_set / "a" / "mixture.wav"), "--out", str(out),
                        "--float32", "--shifts", "1", "--seed", "3", "--batch-size", "2"])
    assert rc == 0
    # <track>/mixture.wav is named after its folder, ready for evaluate.py.
    assert sorted(p.name for p in (out / "a").iterdir()) == sorted(f"{s}.wav" for s in SOURCES)
    assert sf.info(str(out / "a" / "vocals.wav")).subtype == "FLOAT"


def test_evaluate_dirs_cli(test_set, tmp_path, capsys):
    est = tmp_path / "est"
    for track in ("a", "b"):
        for source in SOURCES:
            ref = read_audio(test_set / track / f"{source}.wav")
            if track == "b" and source == "bass":
                ref = ref[:, :-3]  # a few samples short: cropped and reported
            write(est / track / f"{source}.wav", 0.5 * ref, RATE)
    json_path, csv_path = tmp_path / "r.json", tmp_path / "r.csv"
    rc = evaluate.main([str(test_set), str(est), "--json", str(json_path), "--csv", str(csv_path)])
    assert rc == 0
    report = json.loads(json_path.read_text())
    half = 20 * math.log10(2)  # an estimate at half the level: 6.02 dB
    for track in ("a", "b"):
        for source in SOURCES:
            assert report["scores"][track][source] == pytest.approx(half, abs=1e-4)
    assert report["aligned"] == {"b": {"bass": 3}}
    assert report["summary"]["mean"] == pytest.approx(half, abs=1e-4)
    assert report["summary"]["median"] == pytest.approx(half, abs=1e-4)
    table = capsys.readouterr().out
    assert table.splitlines()[0].split() == ["track", *SOURCES, "mean"]
    assert csv_path.read_text().splitlines()[0] == "track,drums,bass,other,vocals,mean"
    assert len(csv_path.read_text().splitlines()) == 3

    # Only some sources.
    report = evaluate_dirs(test_set, est, ["vocals"])
    assert list(report["scores"]["a"]) == ["vocals", "mean"]


def test_evaluate_errors_name_the_file(test_set, tmp_path, caplog):
    est = tmp_path / "est"
    for track in ("a", "b"):
        for source in SOURCES:
            write(est / track / f"{source}.wav", read_audio(test_set / track / f"{source}.wav"), RATE)
    write(est / "b" / "other.wav", tone(1, 5000, seed=9), RATE)  # mono estimate of a stereo stem
    with caplog.at_level(logging.ERROR):
        assert evaluate.main([str(test_set), str(est)]) == 1
    assert any("b/other.wav: 1 channels where 2 expected" in r.getMessage() for r in caplog.records)
    (est / "b" / "other.wav").unlink()
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert evaluate.main([str(test_set), str(est)]) == 1
    assert any("b/other.wav: file not found" in r.getMessage() for r in caplog.records)


def test_separate_and_evaluate_in_one_go(test_set, tmp_path, model_file):
    # No mixture.wav in track b: its mixture is the sum of the stems.
    track = load_track(test_set / "b")
    stems = [read_audio(test_set / "b" / f"{s}.wav") for s in SOURCES]
    assert np.allclose(track.mix, sum(stems), atol=1e-6)

    json_path = tmp_path / "sdr.json"
    out = tmp_path / "est"
    rc = evaluate.main(["--model", str(model_file), "--tracks", str(test_set), "--json", str(json_path),
                        "--out", str(out), "--float32", "--device", "cpu"])
    assert rc == 0
    report = json.loads(json_path.read_text())
    assert sorted(report["scores"]) == ["a", "b"]
    # Scoring the written estimates gives the same figures.
    again = evaluate_dirs(test_set, out)
    for name in ("a", "b"):
        for source in [*SOURCES, "mean"]:
            assert again["scores"][name][source] == pytest.approx(report["scores"][name][source], abs=1e-4)
    # And it is the model's separation: recompute one score by hand.
    model = load_model(model_file)
    est = apply(model, torch.from_numpy(read_audio(test_set / "a" / "mixture.wav")))
    ref = read_audio(test_set / "a" / "vocals.wav").astype(np.float64)
    diff = ref - est[3].numpy()
    by_hand = 10 * math.log10((np.square(ref).sum() + 1e-7) / (np.square(diff).sum() + 1e-7))
    assert report["scores"]["a"]["vocals"] == pytest.approx(by_hand, abs=1e-3)
    # Validation reuses the same function on tracks held in memory.
    in_memory = evaluate_model(model, [track], sources=["bass", "vocals"])
    assert in_memory["scores"]["b"]["bass"] == pytest.approx(report["scores"]["b"]["bass"], abs=1e-4)
