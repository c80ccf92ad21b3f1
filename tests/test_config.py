"""Stage configs: the extends chain, overrides, unknown keys by name, every config builds its model."""
from pathlib import Path

import pytest
import yaml

from labelnoise.config import ConfigError, build_model, load_config, run_dir, run_path, save_config

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
STAGES = ["step1", "step2", "step3", "joint360", "vocals", "bass", "drums", "other_trunc", "other"]


def n_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("stage", STAGES)
def test_every_tiny_stage_loads_and_builds(stage):
    full = load_config(CONFIGS / f"{stage}.yaml")
    tiny = load_config(CONFIGS / "tiny" / f"{stage}.yaml")
    assert full["run"]["name"] == tiny["run"]["name"] == stage
    assert tiny["run"]["root"] == "runs/tiny"
    # the tiny stage keeps its stage's method, only smaller
    for key in ("loss", "trunc_ratio", "weights", "lr"):
        assert tiny["optim"][key] == full["optim"][key], key
    assert tiny["data"]["mode"] == full["data"]["mode"]
    model = build_model(tiny)
    assert n_params(model) < 200_000


@pytest.mark.parametrize("stage, params", [("step1", 26_899_536), ("joint360", 41_984_456), ("other", 41_984_456)])
def test_full_stages_build_p1_and_p2(stage, params):
    assert n_params(build_model(load_config(CONFIGS / f"{stage}.yaml"))) == params


def test_stage_values_follow_the_reference():
    cfg = {s: load_config(CONFIGS / f"{s}.yaml") for s in STAGES}
    assert [cfg[s]["optim"]["trunc_ratio"] for s in ("step1", "step2", "step3")] == [0.7, 0.5, 0.3]
    assert [cfg[s]["optim"]["lr"] for s in ("step1", "step2", "step3")] == [3e-4, 1e-4, 1e-4]
    assert [cfg[s]["optim"]["epochs"] for s in ("step1", "step2", "step3")] == [500, 200, 200]
    assert all(cfg[s]["optim"]["loss"] == "l1_trunc" for s in ("step1", "step2", "step3", "other_trunc", "other"))
    assert all(cfg[s]["optim"]["loss"] == "l1" for s in ("joint360", "vocals", "bass", "drums"))
    assert cfg["step2"]["run"]["init_from"] == "step1" and cfg["step3"]["run"]["init_from"] == "step2"
    assert cfg["vocals"]["run"]["resume_from"] == "joint360" and cfg["other"]["run"]["resume_from"] == "other_trunc"
    extra = {"vocals": 783, "bass": 644, "drums": 84, "other_trunc": 324}
    for stage, more in extra.items():
        assert cfg[stage]["optim"]["epochs"] == 360 + more
    assert cfg["other"]["optim"]["epochs"] == 360 + 324 + 196
    assert cfg["drums"]["optim"]["weights"] == [0.9, 0.05, 0, 0.05]
    assert (cfg["joint360"]["optim"]["batch_size"], cfg["joint360"]["optim"]["accumulate"]) == (2, 16)
    assert (cfg["other_trunc"]["optim"]["batch_size"], cfg["other_trunc"]["optim"]["accumulate"]) == (4, 16)
    assert cfg["joint360"]["data"]["mode"] == "pool" and cfg["joint360"]["data"]["items_per_epoch"] == 32768
    assert cfg["joint360"]["augment"]["repitch"]["max_pitch"] == 6
    assert cfg["joint360"]["augment"]["repitch"]["same_for_all"] is False
    assert cfg["step1"]["augment"]["repitch"]["same_for_all"] is True


def test_overrides_are_typed_and_nested():
    cfg = load_config(CONFIGS / "step2.yaml", ["optim.lr=2e-4", "data.root=/scratch/x", "optim.weights=[0,0,0,1]",
                                              "run.name=try2", "model.channels=32"])
    assert cfg["optim"]["lr"] == 2e-4 and isinstance(cfg["optim"]["lr"], float)
    assert cfg["data"]["root"] == "/scratch/x"
    assert cfg["optim"]["weights"] == [0, 0, 0, 1]
    assert run_dir(cfg) == Path("runs/try2")
    assert cfg["model"]["channels"] == 32


@pytest.mark.parametrize("override, message", [
    ("optim.lrr=1", "unknown config key 'optim.lrr' (did you mean 'optim.lr'?)"),
    ("nothing.here=1", "unknown config key 'nothing'"),
    ("optim.lr=fast", "'optim.lr' must be a number"),
    ("optim.lr", "expected KEY=VALUE"),
    ("data.samplerate=16000", "model.samplerate 44100 differs from data.samplerate 16000"),
    ("optim.weights=[1,1]", "optim.weights has 2 entries for 4 sources"),
    ("model.chanels=8", "unknown config key 'model.chanels': not a keyword of htdemucs (did you mean 'model.channels'?)"),
])
def test_bad_overrides_fail_by_name(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(CONFIGS / "step1.yaml", [override])
    assert message in str(err.value)


def test_unknown_key_in_a_stage_file_names_the_file(tmp_path):
    (tmp_path / "base.yaml").write_text((CONFIGS / "base.yaml").read_text())
    (tmp_path / "mine.yaml").write_text("extends: base.yaml\noptim:\n  trunc_ration: 0.5\n")
    with pytest.raises(ConfigError, match=r"mine\.yaml: unknown config key 'optim.trunc_ration'"):
        load_config(tmp_path / "mine.yaml")
    (tmp_path / "loop.yaml").write_text("extends: loop2.yaml\n")
    (tmp_path / "loop2.yaml").write_text("extends: loop.yaml\n")
    with pytest.raises(ConfigError, match="extends itself"):
        load_config(tmp_path / "loop.yaml")
    (tmp_path / "orphan.yaml").write_text("optim:\n  lr: 1.0\n")
    with pytest.raises(ConfigError, match="must start at base.yaml"):
        load_config(tmp_path / "orphan.yaml")
    with pytest.raises(ConfigError, match="missing.yaml: file not found"):
        load_config(tmp_path / "missing.yaml")


def test_scientific_notation_is_a_float_in_every_yaml(tmp_path):
    # PyYAML alone (YAML 1.1) reads 1e-4 as the string "1e-4"; users write floats that way.
    assert yaml.safe_load("lr: 1e-4")["lr"] == "1e-4"
    (tmp_path / "base.yaml").write_text((CONFIGS / "base.yaml").read_text())
    (tmp_path / "mine.yaml").write_text("extends: base.yaml\noptim:\n  lr: 1e-4\n  weight_decay: 5E-6\n"
                                        "  betas: [9e-1, 0.999]\n")
    cfg = load_config(tmp_path / "mine.yaml", ["optim.clip_grad=2e0"])
    assert cfg["optim"]["lr"] == 1e-4 and cfg["optim"]["weight_decay"] == 5e-6
    assert cfg["optim"]["betas"] == [0.9, 0.999] and cfg["optim"]["clip_grad"] == 2.0
    # The other readers: bags, model configs.
    from labelnoise.yamlio import load, read_mapping
    (tmp_path / "bag.yaml").write_text("models: [a.th]\nsegment: 1e1\n")
    assert read_mapping(tmp_path / "bag.yaml")["segment"] == 10.0
    assert load("x: 1_000") == {"x": 1000} and load("x: 1e") == {"x": "1e"} and load("x: .5") == {"x": 0.5}


def test_run_paths_and_saved_config_round_trip(tmp_path):
    cfg = load_config(CONFIGS / "tiny" / "step2.yaml", [f"run.root={tmp_path}"])
    assert run_path(cfg, cfg["run"]["init_from"]) == tmp_path / "step1"
    assert run_path(cfg, "/abs/model.th") == Path("/abs/model.th")
    assert run_path(cfg, "other/runs/step1") == Path("other/runs/step1")
    save_config(cfg, tmp_path / "config.yaml")
    assert yaml.safe_load((tmp_path / "config.yaml").read_text()) == cfg


def test_a_file_switching_model_arch_replaces_the_model_section(tmp_path):
    (tmp_path / "base.yaml").write_text((CONFIGS / "base.yaml").read_text())
    (tmp_path / "p2.yaml").write_text("extends: base.yaml\nmodel:\n  bottom_channels: 512\n  dconv_mode: 3\n")
    switch = "model:\n  arch: masknet\n  sources: [drums, bass, other, vocals]\n  samplerate: 44100\n"
    (tmp_path / "mask.yaml").write_text("extends: p2.yaml\n" + switch)
    (tmp_path / "mask_wider.yaml").write_text("extends: mask.yaml\nmodel:\n  hidden: 64\n")
    # Same arch: merged into what is there.
    assert load_config(tmp_path / "p2.yaml")["model"] == {
        "arch": "htdemucs", "sources": ["drums", "bass", "other", "vocals"], "audio_channels": 2,
        "samplerate": 44100, "segment": 44, "bottom_channels": 512, "dconv_mode": 3}
    # Another arch: HTDemucs' keywords (P2's bottom_channels, base's segment ...) are gone.
    expected = {"arch": "masknet", "sources": ["drums", "bass", "other", "vocals"], "samplerate": 44100}
    assert load_config(tmp_path / "mask.yaml")["model"] == expected
    assert load_config(tmp_path / "mask_wider.yaml")["model"] == {**expected, "hidden": 64}
    assert type(build_model(load_config(tmp_path / "mask.yaml"))).__name__ == "MaskNet"
    # A command-line override merges as any other: P2's keywords are not MaskNet's.
    with pytest.raises(ConfigError, match="'model.bottom_channels': not a keyword of masknet"):
        load_config(tmp_path / "p2.yaml", ["model.arch=masknet"])
    # A switch back to HTDemucs starts afresh too, so it must restate what HTDemucs needs.
    (tmp_path / "back.yaml").write_text("extends: mask.yaml\nmodel:\n  arch: htdemucs\n  channels: 8\n")
    with pytest.raises(ConfigError, match="back.yaml: optim.weights has 4 entries for 0 sources"):
        load_config(tmp_path / "back.yaml")
