"""``train.compile`` on a CPU: Inductor compiles the network between the STFT and the iSTFT
(HTDemucs.compile_network), the STFT stays eager, and a compiled train step equals the eager one.

The model is the smallest HTDemucs that still has every kind of layer (one
encoder and decoder layer per branch, the Transformer). The time goes to
Inductor's C++ build: with its defaults, 50 kernels of vectorised C++, one
g++ each, some 80 s of CPU; built as below, 2 files and about 40 s.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch._dynamo
import torch._inductor.config
from torch._dynamo.utils import counters

from labelnoise.model import spec as model_spec
from labelnoise.config import load_config
from labelnoise.synth import generate
from labelnoise.trainer import EXIT_PREEMPTED, Trainer, TrainingError

ROOT = Path(__file__).resolve().parents[1]
STEP1 = ROOT / "configs" / "tiny" / "step1.yaml"
DEMO_STEP1 = ROOT / "configs" / "demo" / "step1.yaml"
# One encoder/decoder layer per branch, one DConv layer, one Transformer layer, 2 items of 1 s.
SMALLEST = ("model.depth=1", "model.dconv_depth=1", "optim.batch_size=2", "augment.remix.group_size=2",
            "data.items_per_epoch=4", "augment.repitch.proba=0", "optim.epochs=1")
# Compiled against eager, float32: reassociated sums differ in the last bits.
RTOL = 1e-4


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate(out, tracks=2, seconds=2.0, noise_rate=0.25, seed=0, samplerate=16000, progress=False)
    return out


def one_step(root: Path, synth: Path, monkeypatch, *extra: str) -> dict:
    """Metrics, estimate, gradients and where the STFT ran, of a run's first step."""
    cfg = load_config(STEP1, [f"run.root={root}", f"data.root={synth}", *SMALLEST, *extra])
    seen = {"spectral_compiled": []}
    for name in ("stft", "istft"):
        original = getattr(model_spec, name)

        def wrapped(*args, _original=original, **kwargs):
            seen["spectral_compiled"].append(torch.compiler.is_compiling())
            return _original(*args, **kwargs)
        monkeypatch.setattr(model_spec, name, wrapped)
    trainer = Trainer(cfg)

    def keep_estimate(module, inputs, out):  # returns None: the output goes on unchanged
        seen.setdefault("estimate", out.detach().clone())
    trainer.model.register_forward_hook(keep_estimate)
    step = trainer.optimizer.step

    def record_grads(*args, **kwargs):
        seen["grads"] = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
        return step(*args, **kwargs)
    trainer.optimizer.step = record_grads
    assert trainer.run(stop_after=1) == EXIT_PREEMPTED
    seen["metrics"] = json.loads((root / "step1" / "metrics.jsonl").read_text().splitlines()[0])
    seen["names"] = [n for n, _ in trainer.model.named_parameters()]
    monkeypatch.undo()
    return seen


def test_compiled_train_step_equals_eager(tmp_path, synth, monkeypatch):
    eager = one_step(tmp_path / "eager", synth, monkeypatch)
    torch._dynamo.reset()
    counters.clear()
    # Inductor's CPU path, built for speed of building: scalar kernels, all in the one C++ file
    # of the wrapper, compiled in this process (40 s of CPU against 80 s by default, 2 cores).
    with torch._inductor.config.patch({"cpp.vec_isa_ok": False, "cpp_wrapper": True, "compile_threads": 1}):
        compiled = one_step(tmp_path / "compiled", synth, monkeypatch, "train.compile=true")
    # Inductor compiled the network in one graph, with no graph break; the STFT/iSTFT ran eagerly.
    assert counters["stats"]["unique_graphs"] >= 1
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert compiled["spectral_compiled"] and not any(compiled["spectral_compiled"])
    assert not any(eager["spectral_compiled"])
    # Compiling in place keeps the parameter names (checkpoints, DDP, the EMA).
    assert compiled["names"] == eager["names"]
    torch.testing.assert_close(compiled["estimate"], eager["estimate"], rtol=RTOL, atol=1e-6)
    assert compiled["grads"].keys() == eager["grads"].keys()
    for name, grad in eager["grads"].items():
        torch.testing.assert_close(compiled["grads"][name], grad, rtol=RTOL, atol=1e-7, msg=name)
    assert compiled["metrics"]["loss"] == pytest.approx(eager["metrics"]["loss"], rel=RTOL)
    assert compiled["metrics"]["grad_norm"] == pytest.approx(eager["metrics"]["grad_norm"], rel=RTOL)


def test_compile_names_a_network_that_cannot(tmp_path):
    cfg = load_config(DEMO_STEP1, [f"run.root={tmp_path}", "train.compile=true"])  # MaskNet
    with pytest.raises(TrainingError, match="train.compile: model.arch 'masknet' has no compile_network"):
        Trainer(cfg)
