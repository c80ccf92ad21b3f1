"""Batch augmentations (Shift, FlipChannels, FlipSign, Scale, Remix) and both Repitch backends."""
import math

import numpy as np
import pytest
import torch
from spectral import peak_freq

from labelnoise.augment import (FlipChannels, FlipSign, Remix, RubberbandRepitch, Scale, Shift,
                                VocoderRepitch, build_repitch, remix_permutation, repitch_length)

SR = 44100


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def ramp_batch(B=4, S=4, C=2, T=1000):
    """wav[b, s, c, t] = t + 1 (channel 1 negated): every offset and flip is visible."""
    wav = torch.arange(1, T + 1, dtype=torch.float32).expand(B, S, C, T).clone()
    if C > 1:
        wav[:, :, 1] *= -1
    return wav



def sine_stems(freqs, seconds=2.0):
    t = np.arange(int(seconds * SR)) / SR
    return np.stack([np.stack([0.5 * np.sin(2 * np.pi * f * t)] * 2) for f in freqs]).astype(np.float32)


# --- Shift -------------------------------------------------------------------

def test_shift_length_and_offsets_in_range():
    B, S, T, shift = 8, 4, 1000, 100
    out = Shift(shift)(ramp_batch(B, S, 2, T), generator=gen())
    assert out.shape == (B, S, 2, T - shift)
    offsets = out[:, :, 0, 0] - 1  # the ramp's first value tells the start
    assert torch.equal(out[:, :, 0], offsets[..., None] + torch.arange(1, T - shift + 1))
    assert torch.equal(out[:, :, 1], -out[:, :, 0])  # channels move together
    assert offsets.min() >= 0 and offsets.max() < shift
    assert len(offsets.unique()) > 10  # independent per stem
    many = Shift(shift)(ramp_batch(64, 4, 1, T), generator=gen(1))[:, :, 0, 0] - 1
    assert many.min() < 10 and many.max() > shift - 10  # the whole range is used


def test_shift_same_keeps_stems_aligned_and_eval_cuts():
    out = Shift(50, same=True)(ramp_batch(6, 4, 2, 300), generator=gen())
    assert (out[:, :, 0, 0] == out[:, :1, 0, 0]).all()
    module = Shift(50).eval()
    assert torch.equal(module(ramp_batch(2, 4, 2, 300)), ramp_batch(2, 4, 2, 300)[..., :250])


def test_shift_is_reproducible_with_a_generator():
    a = Shift(100, generator=gen(3))(ramp_batch())
    b = Shift(100)(ramp_batch(), generator=gen(3))
    assert torch.equal(a, b)


# --- Flips and Scale -------------------------------------------------------

def test_flip_channels_swaps_whole_stems():
    wav = ramp_batch(16, 4, 2, 50)
    out = FlipChannels()(wav, generator=gen())
    swapped = out[:, :, 0, 0] < 0
    assert torch.equal(out[~swapped], wav[~swapped])
    assert torch.equal(out[swapped], wav[swapped].flip(1))
    assert 0 < swapped.float().mean() < 1


def test_flip_sign_is_plus_or_minus_one_per_stem():
    wav = ramp_batch(16, 4, 2, 50)
    out = FlipSign()(wav, generator=gen())
    sign = out[:, :, 0, 0] / wav[:, :, 0, 0]
    assert set(sign.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(out, wav * sign[..., None, None])


def test_scale_gains_per_stem_within_range():
    wav = torch.ones(256, 4, 2, 10)
    out = Scale(1.0, 0.25, 1.25)(wav, generator=gen())
    gains = out[:, :, 0, 0]
    assert torch.equal(out, gains[..., None, None].expand_as(out))
    assert gains.min() >= 0.25 and gains.max() <= 1.25
    assert gains.min() < 0.3 and gains.max() > 1.2
    assert gains.mean().item() == pytest.approx(0.75, abs=0.03)
    assert torch.equal(Scale(proba=0.0)(wav, generator=gen()), wav)


# --- Remix -------------------------------------------------------------------

def test_remix_puts_stems_of_different_tracks_in_one_item():
    B, S = 8, 4
    # Item b's stems all hold the value b: after the remix each stem names its track.
    wav = torch.arange(B, dtype=torch.float32)[:, None, None, None].expand(B, S, 2, 16).clone()
    out, perm = Remix(1.0, group_size=4)(wav, generator=gen(), return_perm=True)
    assert perm.shape == (B, S)
    assert torch.equal(out[:, :, 0, 0].long(), perm)
    for g in range(2):  # each source is a permutation of the items of its group
        block = perm[4 * g:4 * g + 4]
        for s in range(S):
            assert sorted(block[:, s].tolist()) == list(range(4 * g, 4 * g + 4))
    # Over many batches most items mix tracks; all four stems of one track stay
    # together with probability (1/4)^3.
    perms = torch.cat([remix_permutation(B, S, 4, gen(seed)) for seed in range(200)])
    tracks_per_item = torch.tensor([len(set(row.tolist())) for row in perms])
    assert (tracks_per_item > 1).float().mean() > 0.95
    assert (tracks_per_item == 4).any()


def test_remix_identity_when_not_applied_and_bad_group():
    wav = torch.randn(4, 4, 2, 8)
    out, perm = Remix(proba=0.0)(wav, generator=gen(), return_perm=True)
    assert torch.equal(out, wav) and torch.equal(perm, torch.arange(4)[:, None].expand(4, 4))
    out, perm = Remix().eval()(wav, return_perm=True)
    assert torch.equal(out, wav)
    with pytest.raises(ValueError, match="divisible"):
        Remix(group_size=3)(wav)


def test_modules_chain_on_the_global_rng():
    torch.manual_seed(0)
    chain = torch.nn.Sequential(Shift(10), FlipChannels(), FlipSign(), Scale(), Remix())
    assert chain(torch.randn(4, 4, 2, 100)).shape == (4, 4, 2, 90)


# --- Repitch -------------------------------------------------------------------

def test_repitch_length():
    assert repitch_length(485100) == int(0.88 * 485100) == 426888


def test_rubberband_cuts_without_change_when_not_drawn():
    stems = np.random.default_rng(0).standard_normal((4, 2, 20000)).astype(np.float32)
    out = RubberbandRepitch(SR, proba=0.0)(stems, np.random.default_rng(0))
    assert out.shape == (4, 2, repitch_length(20000)) and out.dtype == np.float32
    assert np.array_equal(out, stems[..., :repitch_length(20000)])
    as_torch = RubberbandRepitch(SR, proba=0.0)(torch.from_numpy(stems), np.random.default_rng(0))
    assert isinstance(as_torch, torch.Tensor) and as_torch.shape == (4, 2, repitch_length(20000))


@pytest.mark.parametrize("same", [True, False])
def test_rubberband_moves_pitch_by_the_drawn_semitones(same):
    freqs = [220.0, 330.0, 440.0, 550.0]
    rep = RubberbandRepitch(SR, proba=1.0, max_pitch=6, same_for_all=same)
    apply, semis, tempo = rep.draw(4, np.random.default_rng(5))
    out = rep(sine_stems(freqs), np.random.default_rng(5))  # same seed: the same draw
    assert out.shape == (4, 2, repitch_length(2 * SR))
    assert apply.all() and (np.abs(tempo) <= 12).all()
    if same:
        assert len(set(semis.tolist())) == len(set(tempo.tolist())) == 1
    # Rubber Band's R2 engine (the CLI's --fast) lands a pure tone up to ~40
    # cents off (it locks partials near FFT bins); it must still be the asked
    # semitone to the nearest.
    for s, f in enumerate(freqs):
        got = peak_freq(out[s, 0, 4096:-4096])
        assert 12 * math.log2(got / f) == pytest.approx(semis[s], abs=0.45), (s, got)


def test_rubberband_draw_per_stem_differs_and_respects_ranges():
    rep = RubberbandRepitch(SR, proba=0.2, max_pitch=6, same_for_all=False)
    draws = [rep.draw(4, np.random.default_rng(i)) for i in range(500)]
    apply = np.stack([d[0] for d in draws])
    semis = np.stack([d[1] for d in draws])
    tempo = np.stack([d[2] for d in draws])
    assert apply.mean() == pytest.approx(0.2, abs=0.03)
    assert semis.min() == -6 and semis.max() == 6
    assert np.abs(tempo).max() <= 12 and tempo.std() == pytest.approx(5, rel=0.1)
    assert (semis != semis[:, :1]).any(axis=1).mean() > 0.5  # stems draw on their own
    same = RubberbandRepitch(SR, same_for_all=True)
    for i in range(50):
        a, s, t = same.draw(4, np.random.default_rng(i))
        assert len(set(a)) == len(set(s)) == len(set(t)) == 1


def test_vocoder_repitch_shapes_eval_and_no_op():
    wav = torch.randn(2, 4, 2, 20000)
    module = VocoderRepitch(SR, proba=0.0, generator=gen())
    assert torch.equal(module(wav), wav[..., :repitch_length(20000)])
    module = VocoderRepitch(SR, proba=1.0).eval()
    assert torch.equal(module(wav), wav[..., :repitch_length(20000)])


@pytest.mark.parametrize("same", [True, False])
def test_vocoder_repitch_moves_pitch_by_the_drawn_semitones(same):
    freqs = [220.0, 330.0, 440.0, 550.0]
    wav = torch.from_numpy(np.stack([sine_stems(freqs), sine_stems(freqs[::-1])]))
    rep = VocoderRepitch(SR, proba=1.0, max_pitch=6, same_for_all=same)
    apply, semis, tempo = rep.draw(2, 4, gen(7))
    out = rep(wav, generator=gen(7))
    assert out.shape == (2, 4, 2, repitch_length(2 * SR)) and out.dtype == torch.float32
    assert apply.all()
    if same:
        assert (semis == semis[:, :1]).all() and (tempo == tempo[:, :1]).all()
    else:
        assert (semis != semis[:, :1]).any()
    for b in range(2):
        for s in range(4):
            f = (freqs if b == 0 else freqs[::-1])[s]
            got = peak_freq(out[b, s, 0, 4096:-4096].numpy())
            assert got == pytest.approx(f * 2 ** (semis[b, s].item() / 12), rel=3e-3), (b, s)


def test_vocoder_repitch_moves_tempo_on_clicks():
    period = 11025
    x = torch.zeros(4 * SR)
    x[period // 2::period] = 1.0
    wav = x.expand(1, 1, 2, -1).clone()
    rep = VocoderRepitch(SR, proba=1.0, max_pitch=2, tempo_std=20, max_tempo=12)
    _, semis, tempo = rep.draw(1, 1, gen(2))
    factor = 1 + tempo.item() / 100
    assert abs(factor - 1) > 0.03  # a change the test can see
    out = rep(wav, generator=gen(2))[0, 0, 0].numpy()
    env = np.convolve(np.abs(out), np.ones(256) / 256, mode="same")
    guess, found, start = period / factor, [], 0
    while start < len(env):
        at = start + int(env[start:start + int(guess)].argmax())
        if env[at] > 0.1 * env.max():
            found.append(at)
        start = at + int(0.5 * guess)
    spacing = np.polyfit(np.arange(len(found)), found, 1)[0]
    assert spacing == pytest.approx(period / factor, rel=0.015)


def test_build_repitch():
    assert isinstance(build_repitch("rubberband", SR, proba=0.5), RubberbandRepitch)
    rep = build_repitch("vocoder", SR, max_pitch=6, same_for_all=False, fast=False)
    assert isinstance(rep, VocoderRepitch) and rep.max_pitch == 6 and rep.n_fft == 2048
    with pytest.raises(ValueError, match="unknown backend"):
        build_repitch("soundstretch", SR)
    assert math.isclose(build_repitch("vocoder", 22050).n_fft, 1024)
