"""bf16 autocast on the CPU through the code path CUDA takes: a train step and the filter.

``train.bf16_on_cpu=true`` puts the trainer's CPU step under
``torch.autocast("cpu", dtype=torch.bfloat16)``, the same context a CUDA step
runs in; the filter's ``precision="bf16"`` does the same for inference. Each
run is checked against its float32 twin: the network really ran in bf16, the
STFT and the iSTFT ran in float32 with autocast off, the loss is float32, and
the results are finite and close. Tiny model, 16 kHz.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from labelnoise.model import spec as model_spec
from labelnoise.config import build_model, load_config
from labelnoise.filtering import run_filter
from labelnoise.synth import generate
from labelnoise.trainer import EXIT_PREEMPTED, Trainer

ROOT = Path(__file__).resolve().parents[1]
STEP1 = ROOT / "configs" / "tiny" / "step1.yaml"
RATE = 16000
# Stated tolerances, bf16 against float32 (bf16 keeps 8 bits of mantissa, ~0.4 % per rounding).
# Measured on a 2-core x86 CPU, 2026-12-01: 0.27 %, 0.006 %, 0.08 %, 0.013 dB; bounds 7x to 80x that.
ESTIMATE_RTOL = 0.02      # ||estimate_bf16 - estimate_fp32|| / ||estimate_fp32||, one train step
LOSS_RTOL = 0.005         # the step's loss
GRAD_NORM_RTOL = 0.02     # the step's gradient norm
VOLUME_ATOL_DB = 0.1      # each filter output volume


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate(out, tracks=4, seconds=3.0, noise_rate=0.25, seed=0, samplerate=RATE, progress=False)
    return out


class Spy:
    """Records what the STFT/iSTFT, the first conv and the loss see during a run."""

    def __init__(self, monkeypatch):
        self.spectral, self.conv, self.loss = [], [], []
        for name in ("stft", "istft"):
            original = getattr(model_spec, name)

            def wrapped(z, *args, _original=original, _name=name, **kwargs):
                out = _original(z, *args, **kwargs)
                self.spectral.append((_name, z.dtype, out.dtype, torch.is_autocast_enabled(z.device.type)))
                return out
            monkeypatch.setattr(model_spec, name, wrapped)

    def watch(self, network: torch.nn.Module):
        """Record the first conv's output dtype; returns the hook's handle."""
        return network.encoder[0].conv.register_forward_hook(lambda m, i, out: self.conv.append(out.dtype))

    def wrap_loss(self, trainer: Trainer) -> None:
        compute = trainer.criterion._loss

        def loss(estimate, sources):
            out = compute(estimate, sources)
            self.loss.append((estimate.dtype, out.loss.dtype, torch.is_autocast_enabled(estimate.device.type),
                              estimate.detach().clone()))
            return out
        trainer.criterion._loss = loss

    def check_spectral_float32(self) -> None:
        assert {name for name, *_ in self.spectral} == {"stft", "istft"}
        for name, dtype_in, dtype_out, autocast_on in self.spectral:
            assert dtype_in in (torch.float32, torch.complex64), (name, dtype_in)
            assert dtype_out in (torch.float32, torch.complex64), (name, dtype_out)
            assert not autocast_on, f"{name} ran under autocast"


def one_step(tmp_path: Path, synth: Path, monkeypatch, *extra: str) -> tuple[dict, Spy]:
    cfg = load_config(STEP1, [f"run.root={tmp_path}", f"data.root={synth}", "optim.epochs=1",
                              "augment.repitch.proba=0", *extra])
    spy = Spy(monkeypatch)
    trainer = Trainer(cfg)
    spy.watch(trainer.model)
    spy.wrap_loss(trainer)
    assert trainer.run(stop_after=1) == EXIT_PREEMPTED
    metrics = [json.loads(line) for line in (tmp_path / "step1" / "metrics.jsonl").read_text().splitlines()]
    monkeypatch.undo()
    return metrics[0], spy


def test_train_step_in_bf16_on_cpu_is_close_to_float32(tmp_path, synth, monkeypatch):
    fp32, spy32 = one_step(tmp_path / "fp32", synth, monkeypatch, "train.precision=float32")
    bf16, spy16 = one_step(tmp_path / "bf16", synth, monkeypatch, "train.precision=bf16", "train.bf16_on_cpu=true")
    # The network ran in bf16 (autocast reached the convolutions), the float32 run did not.
    assert spy16.conv and set(spy16.conv) == {torch.bfloat16}
    assert set(spy32.conv) == {torch.float32}
    spy16.check_spectral_float32()
    # The loss is float32 and so is the estimate handed to it.
    [(estimate_dtype, loss_dtype, autocast_on, estimate16)] = spy16.loss
    assert estimate_dtype == torch.float32 and loss_dtype == torch.float32 and not autocast_on
    estimate32 = spy32.loss[0][-1]
    assert torch.isfinite(estimate16).all()
    rel = float((estimate16 - estimate32).norm() / estimate32.norm())
    assert rel < ESTIMATE_RTOL, rel
    assert not bf16["skipped"] and bf16["loss"] == pytest.approx(fp32["loss"], rel=LOSS_RTOL)
    assert bf16["grad_norm"] == pytest.approx(fp32["grad_norm"], rel=GRAD_NORM_RTOL)


def test_bf16_precision_stays_off_on_cpu_by_default(tmp_path, synth, monkeypatch):
    # The base config asks for bf16, which a CPU run leaves at float32 unless told.
    record, spy = one_step(tmp_path, synth, monkeypatch)
    assert set(spy.conv) == {torch.float32} and not record["skipped"]


def test_filter_in_bf16_on_cpu_is_close_to_float32(tmp_path, monkeypatch):
    data = tmp_path / "data"
    generate(data, tracks=1, seconds=2.0, noise_rate=0.5, seed=1, samplerate=RATE, progress=False)
    torch.manual_seed(0)
    network = build_model(load_config(STEP1, ["model.segment=1"]))
    volumes = {}
    for precision in ("float32", "bf16"):
        spy = Spy(monkeypatch)
        hook = spy.watch(network)
        out = tmp_path / precision
        summary = run_filter(data, out, network, key=6, speed=200, shifts=0, precision=precision,
                             device="cpu", progress=False, prefetch=0)
        assert summary.done == 4
        volumes[precision] = {(r["track"], r["stem"]): r["volumes"]
                              for r in map(json.loads, (out / "volumes.jsonl").read_text().splitlines())}
        if precision == "bf16":
            assert set(spy.conv) == {torch.bfloat16}
            spy.check_spectral_float32()
        else:
            assert set(spy.conv) == {torch.float32}
        monkeypatch.undo()
        hook.remove()
    assert volumes["bf16"].keys() == volumes["float32"].keys()
    for key, fp32 in volumes["float32"].items():
        for source, level in fp32.items():
            got = volumes["bf16"][key][source]
            assert abs(got - level) < VOLUME_ATOL_DB, (key, source, got, level)
