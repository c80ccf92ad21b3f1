"""MaskNet, the demo's network: any input length, checkpoints, whole-track inference,
it learns, and the demo stage configs build it and train with it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import train as train_cli
from labelnoise.checkpoint import export_demucs, load_model, save_model
from labelnoise.config import build_model, load_config
from labelnoise.inference import apply
from labelnoise.synth import generate
from labelnoise.trainer import EXIT_DONE
from labelnoise.model import MaskNet

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
SOURCES = ["drums", "bass", "other", "vocals"]
STAGES = ["step1", "step2", "step3", "joint360", "vocals", "bass", "drums", "other_trunc", "other"]


def small(**kwargs) -> MaskNet:
    torch.manual_seed(0)
    return MaskNet(SOURCES, **{"nfft": 256, "hidden": 32, **kwargs})


@pytest.mark.parametrize("length", [1, 37, 255, 256, 1001, 16000])
def test_output_has_the_input_length(length):
    model = small()
    out = model(torch.randn(2, 2, length))
    assert out.shape == (2, 4, 2, length)
    assert torch.isfinite(out).all()


def test_softmax_masks_split_the_mixture_and_sigmoid_masks_need_not():
    mix = torch.randn(1, 2, 3000)
    # Softmax masks sum to one, and the STFT inverts exactly: the estimates add up to the mixture.
    assert torch.allclose(small()(mix).sum(dim=1), mix, atol=1e-4)
    assert not torch.allclose(small(mask="sigmoid")(mix).sum(dim=1), mix, atol=1e-2)


def test_defaults_have_about_a_million_parameters_and_init_follows_the_seed():
    torch.manual_seed(3)
    a = MaskNet(SOURCES)
    torch.manual_seed(3)
    b = MaskNet(SOURCES)
    assert 500_000 <= sum(p.numel() for p in a.parameters()) <= 2_000_000
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert (a.samplerate, a.audio_channels, a.sources) == (16000, 2, SOURCES)
    assert a.init_kwargs["sources"] == SOURCES and a.init_kwargs["nfft"] == 1024


def test_train_and_eval_mode_agree():
    # No dropout and no batch statistics: batch-1 inference sees the network it trained.
    model, mix = small(), torch.randn(3, 2, 4000)
    train_out = model.train()(mix)
    eval_out = model.eval()(mix)
    assert torch.allclose(train_out, eval_out, atol=1e-6)
    assert torch.allclose(model(mix[1:2]), eval_out[1:2], atol=1e-5)


@pytest.mark.parametrize("conv, conv_stride, bins", [(8, 1, 65), (8, 2, 33)])
def test_conv_front_end_strides_in_frequency(conv, conv_stride, bins):
    # nfft 256: 129 bins; the second layer halves them, a first layer strided by 2 halves them before.
    model = small(conv=conv, conv_stride=conv_stride)
    assert model.encode[0].in_features == conv * bins
    mix = torch.randn(2, 2, 1001)
    out = model(mix)
    assert out.shape == (2, 4, 2, 1001) and torch.allclose(out.sum(dim=1), mix, atol=1e-4)
    assert model.init_kwargs["conv_stride"] == conv_stride


@pytest.mark.parametrize("kwargs, message", [
    ({"mask": "relu"}, "mask='relu'"), ({"nfft": 250}, "nfft=250"), ({"hidden": 33}, "hidden=33"),
    ({"conv": 8, "conv_stride": 3}, "conv_stride=3")])
def test_bad_options_fail_by_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MaskNet(SOURCES, **kwargs)


def test_save_load_round_trip_and_no_demucs_export(tmp_path):
    model = small(segment=2.5).eval()
    with torch.no_grad():
        for p in model.parameters():  # not the init: a loaded model must carry trained weights
            p.add_(0.01 * torch.randn_like(p))
    save_model(model, tmp_path / "m.th", epoch=3)
    loaded = load_model(tmp_path / "m.th")
    assert isinstance(loaded, MaskNet) and loaded.init_kwargs == model.init_kwargs
    assert loaded.segment == 2.5 and loaded.nfft == 256
    mix = torch.randn(1, 2, 5000)
    with torch.no_grad():
        assert torch.equal(loaded(mix), model(mix))
    with pytest.raises(TypeError, match="cannot export a MaskNet .* as a demucs package"):
        export_demucs(model, tmp_path / "release", name="demo")
    assert not (tmp_path / "release" / "demo.th").exists()


@pytest.mark.parametrize("mode", ["overlap", "plain"])
def test_inference_separates_a_whole_track(mode):
    model = small(segment=1.0)
    track = torch.randn(2, 3 * 16000 + 123) * 0.1
    out = apply(model, track, mode=mode)
    assert out.shape == (4, 2, track.shape[-1])
    assert torch.isfinite(out).all()
    if mode == "overlap":
        # Every chunk's estimates sum to the chunk; the cross-fade keeps that for the track.
        assert torch.allclose(out.sum(dim=0), track, atol=1e-4)


def test_loss_falls_on_a_toy_batch():
    # Two "sources" a mask can tell apart by frequency: a low and a high sine, random phases and levels.
    torch.manual_seed(0)
    t = torch.arange(8000) / 16000
    phase = torch.rand(8, 2, 2, 1) * 6.28
    level = 0.1 + torch.rand(8, 2, 1, 1)
    freqs = torch.tensor([220.0, 3000.0])[None, :, None, None]
    sources = level * torch.sin(2 * torch.pi * freqs * t + phase)
    model = MaskNet(["low", "high"], nfft=256, hidden=32)
    optim = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        loss = (model(sources.sum(dim=1)) - sources).abs().mean()
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.parametrize("stage", STAGES)
def test_every_demo_stage_loads_and_builds_masknet(stage):
    full = load_config(CONFIGS / f"{stage}.yaml")
    demo = load_config(CONFIGS / "demo" / f"{stage}.yaml")
    assert demo["run"]["name"] == stage and demo["run"]["root"] == "runs/demo"
    # The demo stage keeps its stage's method and chaining, only smaller and on MaskNet.
    for key in ("loss", "trunc_ratio", "trunc_by", "weights"):
        assert demo["optim"][key] == full["optim"][key], key
    # A few hundred steps instead of tens of thousands: every stage's lr about tripled.
    assert 2.99 < demo["optim"]["lr"] / full["optim"]["lr"] < 3.34
    assert demo["data"]["mode"] == full["data"]["mode"]
    assert (demo["run"]["init_from"], demo["run"]["resume_from"]) == (full["run"]["init_from"],
                                                                      full["run"]["resume_from"])
    # The HTDemucs keywords of the real stage (P2's bottom_channels ...) are gone, not merged.
    assert demo["model"]["arch"] == "masknet" and "bottom_channels" not in demo["model"]
    assert demo["model"]["samplerate"] == demo["data"]["samplerate"] == 16000
    assert full["model"]["arch"] == "htdemucs"
    model = build_model(demo)
    assert isinstance(model, MaskNet) and model.sources == SOURCES


def test_demo_fine_tunes_continue_the_joint_counter():
    epochs = {s: load_config(CONFIGS / "demo" / f"{s}.yaml")["optim"]["epochs"] for s in STAGES}
    assert all(epochs[s] > epochs["joint360"] for s in ("vocals", "bass", "drums", "other_trunc"))
    assert epochs["other"] > epochs["other_trunc"]


def test_train_cli_runs_the_demo_step1(tmp_path):
    data = tmp_path / "data"
    generate(data, tracks=2, seconds=2.0, noise_rate=0.5, seed=0, samplerate=16000, progress=False)
    args = [f"run.root={tmp_path / 'runs'}", f"data.root={data}", "optim.epochs=1", "data.items_per_epoch=32"]
    assert train_cli.main([str(CONFIGS / "demo" / "step1.yaml"), *args]) == EXIT_DONE
    run = tmp_path / "runs" / "step1"
    steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in steps if m["kind"] == "step"]
    assert len(steps) == 2  # 32 items in batches of 16
    # C = 0.7 over 16 items per source keeps the 11 smallest losses (the quantile falls between 11th and 12th).
    assert all(abs(v - 11 / 16) < 1e-6 for m in steps for v in m["kept"].values())
    model = load_model(run / "model.th")
    assert isinstance(model, MaskNet) and model.samplerate == 16000
