"""The torch phase vocoder: pitch and tempo move by the asked amounts, batches agree with rows."""
import math

import numpy as np
import pytest
import torch
from spectral import peak_freq

from labelnoise import vocoder
from labelnoise.vocoder import frame_sizes, pitch_shift, repitch, time_stretch

SR = 44100


def sine(freq, seconds=2.0, amp=0.5):
    t = torch.arange(int(seconds * SR)) / SR
    return amp * torch.sin(2 * math.pi * freq * t)


def clicks(period, seconds=3.0):
    x = torch.zeros(int(seconds * SR))
    x[period // 2::period] = 1.0
    return x



def click_period(y, guess):
    """Mean spacing of a click train: slope of click position against click number.

    The vocoder places each click to within about a hop, so single spacings
    jitter; the fit over all clicks does not.
    """
    env = np.convolve(np.abs(np.asarray(y, dtype=np.float64)), np.ones(256) / 256, mode="same")
    found, start = [], 0
    while start < len(env):
        seg = env[start:start + int(guess)]
        at = start + int(seg.argmax())
        if env[at] > 0.1 * env.max():
            found.append(at)
        start = at + int(0.5 * guess)
    found = np.array(found)
    assert len(found) >= 5, f"found only {len(found)} clicks"
    return np.polyfit(np.arange(len(found)), found, 1)[0]


@pytest.mark.parametrize("semitones", [-6, -2, 1, 3, 6])
def test_pitch_moves_by_the_semitone_ratio(semitones):
    y = pitch_shift(sine(440.0), semitones)
    assert y.shape == (2 * SR,)
    # Skip the edges, where the first and last frames straddle the padding.
    got = peak_freq(y[4096:-4096])
    assert got == pytest.approx(440.0 * 2 ** (semitones / 12), rel=2e-3)
    assert y[4096:-4096].pow(2).mean().sqrt() == pytest.approx(0.5 / math.sqrt(2), rel=0.05)


@pytest.mark.parametrize("rate", [0.88, 1.12])
def test_time_stretch_keeps_pitch_and_moves_clicks(rate):
    tone = time_stretch(sine(1000.0), rate)
    assert tone.shape == (int(2 * SR / rate),)
    assert peak_freq(tone[4096:-4096]) == pytest.approx(1000.0, rel=2e-3)
    period = 11025  # 4 clicks a second
    y = time_stretch(clicks(period), rate)
    assert click_period(y, period / rate) == pytest.approx(period / rate, rel=0.015)


def test_repitch_moves_pitch_and_tempo_together():
    semis, tempo = 4, 1.1
    y = repitch(sine(330.0), semis, tempo)
    assert y.shape == (int(2 * SR / tempo),)
    assert peak_freq(y[4096:-4096]) == pytest.approx(330.0 * 2 ** (4 / 12), rel=2e-3)
    period = 11025
    y = repitch(clicks(period), -3, 0.9)
    assert click_period(y, period / 0.9) == pytest.approx(period / 0.9, rel=0.015)


def test_batch_with_per_row_parameters_matches_rows_one_by_one():
    gen = torch.Generator().manual_seed(0)
    wav = 0.1 * torch.randn(3, 2, SR, generator=gen)
    semis = torch.tensor([[2.0], [0.0], [-5.0]])
    tempo = torch.tensor([[1.05], [0.92], [1.1]])
    out = repitch(wav, semis, tempo, length=30000)
    assert out.shape == (3, 2, 30000) and out.dtype == torch.float32
    for i in range(3):
        alone = repitch(wav[i], float(semis[i]), float(tempo[i]), length=30000)
        torch.testing.assert_close(out[i], alone, atol=1e-5, rtol=1e-4)


def test_rows_asking_no_change_are_copied_exactly():
    wav = torch.randn(2, 5000)
    out = repitch(wav, torch.tensor([0.0, 1.0]), 1.0, length=4000)
    assert torch.equal(out[0], wav[0, :4000])
    assert not torch.allclose(out[1], wav[1, :4000], atol=1e-3)


def test_float32_out_under_autocast_and_for_half_inputs():
    wav = sine(500.0, 0.5).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = repitch(wav, 2, 1.05)
    assert out.dtype == torch.float32
    assert peak_freq(out[4096:-4096].float()) == pytest.approx(500 * 2 ** (2 / 12), rel=5e-3)


def test_bad_tempo_is_an_error():
    with pytest.raises(ValueError, match="tempo"):
        repitch(torch.randn(1000), 0, 0.0)


@pytest.mark.parametrize("semitones", range(-12, 13))
def test_frame_sizes_are_fast_even_and_within_a_cent(semitones):
    n_in, n_out = frame_sizes(float(semitones))
    assert 0.75 * 2048 <= n_in <= 2048 and n_in % 2 == 0 and n_out % 2 == 0
    assert n_in / n_out == pytest.approx(2 ** (semitones / 12), rel=6e-4)
    for n in (n_in, n_out):
        for p in (2, 3, 5, 7, 11, 13):
            while n % p == 0:
                n //= p
        assert n == 1


@pytest.mark.parametrize("semitones, tempo", [(-6, 1.12), (5, 0.88), (0, 1.05)])
def test_pitch_and_tempo_of_a_sine_in_a_stereo_batch(semitones, tempo):
    """Both channels of a stem, shifted at once: pitch within 0.3 %, level kept, channels equal."""
    x = sine(523.25, 3.0).expand(2, -1)
    y = repitch(x, semitones, tempo)
    assert y.shape == (2, int(3 * SR / tempo))
    torch.testing.assert_close(y[0], y[1])
    got = peak_freq(y[0, 4096:-4096])
    assert got == pytest.approx(523.25 * 2 ** (semitones / 12), rel=3e-3)
    assert y[0, 4096:-4096].pow(2).mean().sqrt() == pytest.approx(0.5 / math.sqrt(2), rel=0.05)


def test_stereo_channels_keep_their_own_content():
    """One phase computation per stem: each channel still carries its own sine, at its own level."""
    x = torch.stack([sine(440.0, 3.0, amp=0.5), sine(660.0, 3.0, amp=0.2)])
    y = repitch(x, 3, 1.05, stereo=True)
    assert y.shape == (2, int(3 * SR / 1.05))
    f = 2 ** (3 / 12)
    for ch, (freq, amp) in enumerate([(440.0, 0.5), (660.0, 0.2)]):
        mid = y[ch, 4096:-4096]
        assert peak_freq(mid) == pytest.approx(freq * f, rel=3e-3)
        assert mid.pow(2).mean().sqrt() == pytest.approx(amp / math.sqrt(2), rel=0.05)
    # The other channel's tone does not leak in: under 1 % of the level.
    spec = [np.abs(np.fft.rfft(y[ch, 4096:-4096].numpy() * np.hanning(y.shape[1] - 8192))) for ch in (0, 1)]
    hz = np.fft.rfftfreq(y.shape[1] - 8192, 1 / SR)
    near = lambda freq: np.abs(hz - freq * f) < 20
    assert spec[0][near(660.0)].max() < 0.01 * spec[0][near(440.0)].max()
    assert spec[1][near(440.0)].max() < 0.01 * spec[1][near(660.0)].max()


def test_stereo_image_is_kept():
    """A source panned left stays left: channels keep their gain ratio, silence stays silent."""
    gen = torch.Generator().manual_seed(1)
    src = 0.1 * torch.randn(2 * SR, generator=gen)
    panned = torch.stack([src, 0.3 * src])
    y = repitch(panned, -4, 0.93, stereo=True)
    torch.testing.assert_close(y[1], 0.3 * y[0], atol=1e-6, rtol=1e-4)
    hard_left = torch.stack([src, torch.zeros_like(src)])
    y = repitch(hard_left, 2, 1.1, stereo=True)
    assert y[0].abs().max() > 0.1 and torch.equal(y[1], torch.zeros_like(y[1]))


def test_stereo_of_equal_channels_matches_mono():
    x = sine(523.25, 1.0)
    mono = repitch(x, 5, 0.95)
    stereo = repitch(x.expand(2, -1), 5, 0.95, stereo=True)
    torch.testing.assert_close(stereo, mono.expand(2, -1), atol=1e-5, rtol=1e-4)


def test_stereo_batch_matches_items_one_by_one():
    gen = torch.Generator().manual_seed(0)
    wav = 0.1 * torch.randn(3, 2, SR, generator=gen)
    semis = torch.tensor([[2.0], [2.0], [-5.0]])
    tempo = torch.tensor([[1.05], [0.92], [1.0]])
    out = repitch(wav, semis, tempo, length=30000, stereo=True)
    for i in range(3):
        alone = repitch(wav[i], float(semis[i]), float(tempo[i]), length=30000, stereo=True)
        torch.testing.assert_close(out[i], alone, atol=1e-5, rtol=1e-4)


def test_stereo_needs_one_pitch_per_item():
    with pytest.raises(ValueError, match="same for every channel"):
        repitch(torch.randn(2, 5000), torch.tensor([1.0, 2.0]), 1.0, stereo=True)


def test_frame_steps_carry_the_phase(monkeypatch):
    """Frames in steps of 7 (the running phase carried ten times an item) give what one step gives."""
    wav = 0.1 * torch.randn(2, 2, SR, generator=torch.Generator().manual_seed(3))
    monkeypatch.setattr(vocoder, "FRAMES_PER_STEP", 100_000)
    whole = repitch(wav, torch.tensor([[3.0], [-4.0]]), torch.tensor([[1.07], [0.9]]), stereo=True)
    monkeypatch.setattr(vocoder, "FRAMES_PER_STEP", 7)
    steps = repitch(wav, torch.tensor([[3.0], [-4.0]]), torch.tensor([[1.07], [0.9]]), stereo=True)
    torch.testing.assert_close(steps, whole, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("frames", [64, 100_000])
def test_whole_group_pass_matches_items_one_by_one(monkeypatch, frames):
    """The GPU's way (all items of a pitch at once, frames gathered at per-item hops) on a CPU."""
    monkeypatch.setattr(vocoder, "BATCH_FRAMES_PER_STEP", frames)
    wav = 0.1 * torch.randn(3, 2, SR, generator=torch.Generator().manual_seed(4))
    tempo = torch.tensor([1.1, 0.93, 1.0])
    group = torch.tensor([0, 2])
    at_once, one_by_one = torch.zeros(3, 2, 40000), torch.zeros(3, 2, 40000)
    vocoder._repitch_group(wav, group, 2.0, tempo, 40000, 2048, 682, at_once, one_by_one=False)
    vocoder._repitch_group(wav, group, 2.0, tempo, 40000, 2048, 682, one_by_one, one_by_one=True)
    torch.testing.assert_close(at_once, one_by_one, atol=1e-5, rtol=1e-4)
    assert at_once[0].abs().max() > 0.05 and torch.equal(at_once[1], torch.zeros(2, 40000))


def test_pitch_up_drops_what_would_pass_nyquist():
    """19 kHz up 5 semitones is 25.4 kHz: gone, not folded back to 18.7 kHz; 1 kHz moves as asked."""
    y = pitch_shift(sine(1000.0) + sine(19000.0), 5)[4096:-4096].numpy()
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    hz = np.fft.rfftfreq(len(y), 1 / SR)
    assert peak_freq(y) == pytest.approx(1000.0 * 2 ** (5 / 12), rel=2e-3)
    folded = SR - 19000.0 * 2 ** (5 / 12)
    assert spec[np.abs(hz - folded) < 300].max() < 3e-3 * spec.max()  # folded back it would be ~1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    wav = 0.1 * torch.randn(4, 2, SR)
    semis = torch.tensor([[1.0], [-2.0], [0.0], [6.0]])
    tempo = torch.tensor([[1.1], [0.9], [1.05], [1.0]])
    cpu = repitch(wav, semis, tempo, length=40000)
    gpu = repitch(wav.cuda(), semis.cuda(), tempo.cuda(), length=40000)
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-3, rtol=1e-3)
