"""TensorBoard (and W&B) mirrors of metrics.jsonl: the same values at the same steps; off, or a config error, without the package."""
from __future__ import annotations

import json
import logging
import sys
import types
from pathlib import Path

import pytest

from labelnoise import metric_log
from labelnoise.config import ConfigError, load_config
from labelnoise.report_stats import noisy_share
from labelnoise.trainer import Trainer
from tests.test_train import synth  # noqa: F401 (a fixture: 4 tracks x 3 s, 16 kHz)

ROOT = Path(__file__).resolve().parents[1]
STEP1 = ROOT / "configs" / "tiny" / "step1.yaml"


def train(tmp_path, synth, *extra) -> Path:
    cfg = load_config(STEP1, [f"run.root={tmp_path}", f"data.root={synth}", "optim.epochs=2", *extra])
    assert Trainer(cfg).run() == 0
    metric_log.close()
    return tmp_path / cfg["run"]["name"]


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def fake_wandb(monkeypatch):
    """A stand-in for the wandb package (not a test dependency) that records what it is asked."""
    calls = []

    class Run:
        def log(self, values, step):
            calls.append(("log", step, values))

        def finish(self):
            calls.append(("finish",))

    def init(**kwargs):
        calls.append(("init", kwargs))
        return Run()

    fake = types.ModuleType("wandb")
    fake.init = init
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    real = metric_log.importlib.util.find_spec
    monkeypatch.setattr(metric_log.importlib.util, "find_spec",
                        lambda name: object() if name == "wandb" else real(name))
    return calls


def test_tensorboard_and_wandb_mirror_metrics_jsonl(tmp_path, synth, fake_wandb):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = train(tmp_path, synth, "run.tensorboard=true", "run.wandb=true")
    events = EventAccumulator(str(run))
    events.Reload()
    steps = [r for r in records(run) if r["kind"] == "step"]
    epochs = [r for r in records(run) if r["kind"] == "epoch"]
    assert len(steps) == 6 and len(epochs) == 2

    def series(tag):
        return [(e.step, e.value) for e in events.Scalars(tag)]

    assert series("step/loss") == [(r["step"], pytest.approx(r["loss"], rel=1e-6)) for r in steps]
    assert series("step/lr") == [(r["step"], pytest.approx(r["lr"], rel=1e-6)) for r in steps]
    assert series("step/kept/vocals") == [(r["step"], pytest.approx(r["kept"]["vocals"])) for r in steps]
    # The synthetic data's noise labels: the noisy shares among dropped and kept stems.
    shares = [(r["step"], pytest.approx(noisy_share(r)["kept"])) for r in steps
              if noisy_share(r)["kept"] is not None]
    assert shares and series("step/noisy_share/kept") == shares
    assert series("epoch/loss") == [(r["step"], pytest.approx(r["loss"], rel=1e-6)) for r in epochs]

    # W&B: offline unless WANDB_MODE says otherwise, files under the run dir, one run per run dir.
    (_, init), *logs, finish = fake_wandb
    assert init["mode"] == "offline" and init["dir"] == str(run) and init["resume"] == "allow"
    assert init["config"]["run"]["wandb"] is True and finish == ("finish",)
    assert [(step, values["step/loss"]) for _, step, values in logs if "step/loss" in values] == \
        [(r["step"], r["loss"]) for r in steps]


def test_scalars_flatten_a_validation_record():
    record = {"kind": "valid", "epoch": 2, "step": 6, "sdr": 3.5, "skipped": False, "x": None,
              "summary": {"mean": 3.5, "per_source": {"vocals": {"mean": 4.0}}}}
    assert metric_log.scalars(record) == {"valid/sdr": 3.5, "valid/summary/mean": 3.5,
                                          "valid/summary/per_source/vocals/mean": 4.0}


@pytest.fixture
def without(monkeypatch):
    """Make a package look uninstalled (find_spec says None for a name mapped to None in sys.modules)."""
    def hide(name):
        monkeypatch.setitem(sys.modules, name, None)
    return hide


def test_auto_without_the_package_is_off_with_one_info_line(tmp_path, without, caplog):
    without("tensorboard")
    with caplog.at_level(logging.INFO, logger="labelnoise.metric_log"):
        writer = metric_log.MetricLog({"run": {"tensorboard": "auto", "wandb": False}}, tmp_path, first_step=1)
        writer.write({"kind": "step", "step": 1, "loss": 0.5})
    said = [r.getMessage() for r in caplog.records if r.name == "labelnoise.metric_log"]
    assert said == ["run.tensorboard auto: the tensorboard package is not installed (pip install "
                    "'mdx-labelnoise[tensorboard]'); metrics go to metrics.jsonl only"]
    assert writer.tensorboard is None and not list(tmp_path.iterdir())


@pytest.mark.parametrize("key", ["tensorboard", "wandb"])
def test_true_without_the_package_is_a_config_error(tmp_path, without, key):
    without(key)
    with pytest.raises(ConfigError, match=rf"run.{key} is true but the {key} package is not installed"):
        load_config(STEP1, [f"run.root={tmp_path}", f"run.{key}=true"])


def test_a_word_other_than_auto_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="run.tensorboard must be auto, true or false, got 'yes please'"):
        load_config(STEP1, [f"run.root={tmp_path}", "run.tensorboard=yes please"])
