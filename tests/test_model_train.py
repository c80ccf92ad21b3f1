"""Training behaviour of our HTDemucs: it learns, every parameter gets a
gradient, dropout acts only in train mode, and the training length is kept."""
from __future__ import annotations

from fractions import Fraction

import torch

from labelnoise import SOURCES
from labelnoise.model import HTDemucs
from labelnoise.model.htdemucs import HTDemucs as DirectImport

SMALL = dict(channels=8, depth=3, nfft=1024, t_layers=2, t_heads=4)
SR = 44100


def toy_batch(batch: int = 2, length: int = 22_050, seed: int = 0):
    """Sources of distinct character (noise bursts, low tone, high tone, chirp-ish)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(length) / SR
    sources = torch.zeros(batch, len(SOURCES), 2, length)
    for b in range(batch):
        f0 = 80 + 40 * b
        sources[b, 0] = torch.randn(2, length, generator=g) * (torch.sin(2 * torch.pi * 4 * t) > 0.9)
        sources[b, 1] = 0.5 * torch.sin(2 * torch.pi * f0 * t)
        sources[b, 2] = 0.3 * torch.sin(2 * torch.pi * 8 * f0 * t + b)
        sources[b, 3] = 0.3 * torch.sin(2 * torch.pi * (400 + 600 * t) * t)
    return sources.sum(dim=1), sources


def test_both_import_paths_give_the_same_class():
    assert HTDemucs is DirectImport


def test_l1_loss_decreases_with_adam():
    torch.manual_seed(0)
    model = HTDemucs(SOURCES, **SMALL).train()
    mix, sources = toy_batch(length=11_025)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    losses = []
    for _ in range(25):
        loss = (model(mix) - sources).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert all(torch.isfinite(torch.tensor(losses)))
    assert last < 0.8 * first, losses


def test_every_parameter_gets_a_gradient_with_p2_features():
    torch.manual_seed(0)
    model = HTDemucs(SOURCES, **SMALL, bottom_channels=24, dconv_mode=3,
                     t_dropout=0.02).train()
    mix, sources = toy_batch(batch=1, length=8_000)
    (model(mix) - sources).abs().mean().backward()
    missing = [n for n, p in model.named_parameters()
               if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())


def test_dropout_only_in_train_mode():
    torch.manual_seed(0)
    model = HTDemucs(SOURCES, **SMALL, t_dropout=0.5, segment=0.25)
    # Layer scales start at 1e-4, which would hide the transformer: open them up.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma_1.scale") or name.endswith("gamma_2.scale"):
                p.fill_(1.0)
    mix = torch.randn(1, 2, 11_025)
    model.train()
    a, b = model(mix), model(mix)
    assert not torch.allclose(a, b)
    model.eval()
    with torch.no_grad():
        c, d = model(mix), model(mix)
    assert torch.equal(c, d)


def test_training_length_is_recorded_and_used_in_eval():
    model = HTDemucs(SOURCES, **SMALL, segment=10)
    model.train()
    model(torch.randn(1, 2, 11_025))
    assert model.segment == Fraction(11_025, SR)
    assert model.valid_length(5_000) == 11_025
    model.eval()
    with torch.no_grad():
        short = torch.randn(1, 2, 5_000)
        out = model(short)
        padded = model(torch.nn.functional.pad(short, (0, 11_025 - 5_000)))
    assert out.shape == (1, 4, 2, 5_000)
    # The short input is run padded to the training length, then cropped.
    assert torch.allclose(out, padded[..., :5_000], atol=1e-6)


def test_bf16_autocast_forward_and_backward_on_cpu():
    torch.manual_seed(0)
    model = HTDemucs(SOURCES, **SMALL).train()
    mix, sources = toy_batch(batch=1, length=11_025)
    with torch.no_grad():
        full = model(mix)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = model(mix)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    rel = (out - full).norm() / full.norm()
    assert rel < 0.05, rel.item()
    (out - sources).abs().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
