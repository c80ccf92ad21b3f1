"""The model card written beside a final bag, from a hand-made run folder."""
import json

import numpy as np
import pytest
import soundfile as sf
import yaml

from labelnoise import SOURCES
from labelnoise.model_card import card, main, write_card


def scores(per_source: dict, tracks=3, **extra) -> dict:
    mean = sum(per_source.values()) / len(per_source)
    return {"sources": SOURCES, "summary": {"tracks": tracks, "mean": mean, "median": mean - 0.1,
                                            "per_source": {s: {"mean": v, "median": v} for s, v in per_source.items()}},
            **extra}


@pytest.fixture
def runs(tmp_path):
    data = tmp_path / "data"
    for track in ("t0", "t1"):
        for s in SOURCES:
            (data / track).mkdir(parents=True, exist_ok=True)
            sf.write(str(data / track / f"{s}.wav"), np.zeros((800, 2), np.float32), 8000)
    runs = tmp_path / "runs"
    stages = {"step1": {"optim": {"loss": "l1_trunc", "trunc_ratio": 0.7, "lr": 3e-4, "epochs": 300},
                        "data": {"mode": "tracks", "root": str(data)}, "model": {"arch": "htdemucs"}},
              "joint360": {"optim": {"loss": "l1", "lr": 1e-4, "epochs": 360}, "run": {"init_from": "step3"},
                           "data": {"mode": "pool", "root": str(tmp_path / "pool")}, "model": {"arch": "htdemucs"}},
              "vocals": {"optim": {"loss": "l1", "lr": 1e-4}, "run": {"resume_from": "joint360"},
                         "data": {"mode": "pool", "root": str(tmp_path / "pool2")}, "model": {"arch": "htdemucs"}}}
    for name, config in stages.items():
        (runs / name).mkdir(parents=True)
        (runs / name / "config.yaml").write_text(yaml.safe_dump(config))
    (runs / "vocals" / "heldout_sdr.json").write_text(json.dumps({"references": {
        "vocals": {"mean": 7.25, "tracks": 2}, "drums": {"mean": None, "tracks": 0}}}))
    (runs / "joint360" / "heldout_sdr.json").write_text(json.dumps({"references": {
        s: {"mean": 5.5, "tracks": 2} for s in SOURCES}}))
    (runs / "joint360" / "test_sdr.json").write_text(json.dumps(scores({s: 6.0 for s in SOURCES})))
    (runs / "final_test_sdr.json").write_text(json.dumps(scores(
        {"drums": 6.1, "bass": 6.2, "other": 5.3, "vocals": 7.4},
        test_set={"folder": str(tmp_path / "test"), "tracks": 3, "digest": "abcdef0123456789"})))
    (runs / "final.yaml").write_text(
        "models: [joint360/model.th, vocals/model.th]\n"
        "weights:\n  - [1, 1, 1, 0]\n  - [0, 0, 0, 1]\n"
        "choices:\n"
        "  drums: {model: joint360, why: \"best on held-out tracks: 5.50 dB\"}\n"
        "  bass: {model: joint360, why: \"best on held-out tracks: 5.50 dB\"}\n"
        "  other: {model: joint360, why: \"best on held-out tracks: 5.50 dB\"}\n"
        "  vocals: {model: vocals, why: \"best on held-out tracks: 7.25 dB\", warning: \"thin pool: 3 of 8\"}\n")
    pool = tmp_path / "pool"
    pool.mkdir()
    (pool / "selection.json").write_text(json.dumps({
        "rule": "fixed 20 dB", "thresholds": {s: 20.0 for s in SOURCES},
        "counts": {s: {"total": 8, "kept": k, "held_out": 1} for s, k in zip(SOURCES, (6, 7, 5, 3))}}))
    return runs


def test_card_from_the_files_without_a_manifest(runs):
    path = write_card(runs)
    assert path == runs / "final.md"
    text = path.read_text()
    assert text.startswith(f"# Model card: {runs / 'final.yaml'}")
    # The system: each source's model, why and the warning.
    assert "| vocals | `vocals/model.th` | best on held-out tracks: 7.25 dB | thin pool: 3 of 8 |" in text
    assert "| drums | `joint360/model.th` |" in text
    # Scores: the bag's test SDR, each model's held-out / test per source.
    assert "challenge SDR 6.25 dB mean" in text and "digest `abcdef0123456789`" in text
    assert "| `vocals/model.th` | n/a / n/a | n/a / n/a | n/a / n/a | 7.25 / n/a |" in text
    assert "| `joint360/model.th` | 5.50 / 6.00 |" in text
    # Data: the training folder of the track-mode stage, with its identity.
    assert f"training data: `{runs.parent / 'data'}`: 2 tracks, digest `" in text
    # Filtering, found beside the stages (no manifest): kept counts and thresholds per source.
    assert "| vocals | 3 | 8 | 20.00 | 1 |" in text and "rule fixed 20 dB" in text
    # Stages and their configs; the code.
    assert "| step1 | `htdemucs` | `tracks` |" in text and "| 0.7 |" in text
    assert "`joint360`" in text and "commit:" in text


def test_card_follows_the_manifest(runs, tmp_path):
    manifest = {"settings": {}, "data": {"train": str(tmp_path / "data"), "clean": None, "test": "data/test"},
                "stages": [{"name": "step1", "model": str(runs / "step1" / "model.th"), "selection": None,
                            "command": ["python", "train.py", "configs/step1.yaml"]},
                           {"name": "select_pretrain3", "model": None, "selection": str(tmp_path / "pool"),
                            "command": ["python", "auto_filter.py", "pretrain3", "6", "200", "20"]}]}
    (runs / "pipeline.json").write_text(json.dumps(manifest))
    text = card(runs)
    assert "test set: `data/test`" in text
    assert f"`select_pretrain3` ({tmp_path / 'pool'})" in text
    assert "python train.py configs/step1.yaml\npython auto_filter.py pretrain3 6 200 20" in text
    assert "| vocals |" not in text.split("## Training stages")[1]  # only the manifest's stages


def test_missing_pieces_are_said_so(tmp_path, capsys):
    runs = tmp_path / "runs"
    runs.mkdir()
    assert main([str(runs)]) == 1
    assert "final.yaml: no final bag to describe" in capsys.readouterr().err
    (runs / "final.yaml").write_text("models: [m/model.th]\n")
    text = card(runs)
    assert "No test score of the bag" in text and "nothing recorded about the filter" in text
    assert "training data: not recorded" in text
