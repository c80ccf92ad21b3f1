"""evaluate.py's metrics: cSDR against museval's BSS-eval v4, aura_stft against auraloss, the rest analytically."""
import csv
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import evaluate
from labelnoise import SOURCES, spectral_metrics
from labelnoise.track_metrics import METRICS, csdr, framewise_sdr, parse_metrics, si_sdr
from tests.test_separate_evaluate import RATE, test_set, tone, write  # noqa: F401 (test_set: a fixture)


def museval_metrics():
    # museval's package __init__ imports musdb, whose stempeg refuses to load without ffmpeg: load its
    # metrics module (numpy and scipy only) by itself.
    location = importlib.util.find_spec("museval").submodule_search_locations[0]
    spec = importlib.util.spec_from_file_location("museval_metrics", Path(location) / "metrics.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def museval_sdr(references, estimates, rate):
    # What museval.evaluate(..., win=rate, hop=rate, mode="v4") runs, on (sources, samples, channels);
    # the median over the frames as museval's aggregate (nanmedian).
    sdr, _, _, _, _ = museval_metrics().bss_eval(
        np.moveaxis(references, 1, 2), np.moveaxis(estimates, 1, 2), window=rate, hop=rate,
        compute_permutation=False, framewise_filters=False, bsseval_sources_version=False)
    return sdr, np.nanmedian(sdr, axis=1)


def noisy_case(seed, sources=3, seconds=3.6, rate=2000):
    rng = np.random.default_rng(seed)
    refs = rng.standard_normal((sources, 2, int(seconds * rate)))
    ests = refs + rng.uniform(0.1, 0.8, (sources, 1, 1)) * rng.standard_normal(refs.shape)
    # Some leakage of the next source, as a separator leaves.
    ests = ests + 0.3 * np.roll(refs, 1, axis=0)
    return refs, ests, rate


@pytest.mark.parametrize("seed", [0, 1])
def test_csdr_equals_museval(seed):
    refs, ests, rate = noisy_case(seed)
    frames, medians = museval_sdr(refs, ests, rate)
    assert frames.shape == (3, 3)  # 3.6 s: three whole frames, the partial one dropped
    assert np.allclose(framewise_sdr(refs, ests, rate), frames, atol=1e-6)
    assert np.allclose(csdr(refs, ests, rate), medians, atol=1e-6)


def test_csdr_silent_frames_and_short_tracks_as_museval():
    refs, ests, rate = noisy_case(2, seconds=4.0)
    refs[1, :, rate:2 * rate] = 0  # a source silent in frame 1: the frame counts for no source
    ests[0, :, 3 * rate:] = 0      # an estimate silent in frame 3
    frames, medians = museval_sdr(refs, ests, rate)
    ours = framewise_sdr(refs, ests, rate)
    assert np.isnan(frames[:, 1]).all() and np.isnan(frames[:, 3]).all()
    assert np.array_equal(np.isnan(ours), np.isnan(frames))
    assert np.allclose(ours[~np.isnan(ours)], frames[~np.isnan(frames)], atol=1e-6)
    assert np.allclose(csdr(refs, ests, rate), medians, atol=1e-6)
    short = (refs[..., :1500], ests[..., :1500])  # shorter than a frame: one frame of the whole track
    assert np.allclose(csdr(*short, rate), museval_sdr(*short, rate)[1], atol=1e-6)


def test_csdr_of_a_track_without_a_frame_is_undefined():
    refs, ests, rate = noisy_case(3, seconds=2.0)
    refs[0] = 0
    assert np.isnan(csdr(refs, ests, rate)).all()


def test_si_sdr_is_scale_invariant_and_matches_its_definition():
    rng = np.random.default_rng(4)
    ref = rng.standard_normal((1, 2, 4000))
    noise = rng.standard_normal((1, 2, 4000))
    noise -= (noise * ref).sum() / (ref * ref).sum() * ref  # orthogonal to the reference
    est = 0.5 * ref + 0.1 * noise
    # est = a * ref + n with n orthogonal: SI-SDR = 10 log10(|a ref|^2 / |n|^2)
    want = 10 * math.log10((0.5 ** 2 * (ref ** 2).sum()) / ((0.1 * noise) ** 2).sum())
    assert si_sdr(ref, est, 8000)[0] == pytest.approx(want, abs=1e-6)
    assert si_sdr(ref, 7 * est, 8000)[0] == pytest.approx(want, abs=1e-6)


def test_aura_stft_equals_auraloss():
    import auraloss.freq
    rng = np.random.default_rng(5)
    ref = rng.standard_normal((2, 6000)).astype(np.float32)
    est = (ref + 0.3 * rng.standard_normal(ref.shape)).astype(np.float32)
    # MSST: STFTLoss(w_log_mag=1, w_lin_mag=0, w_sc=1), called (reference, estimate).
    loss = auraloss.freq.STFTLoss(w_log_mag=1.0, w_lin_mag=0.0, w_sc=1.0)(
        torch.from_numpy(ref)[None], torch.from_numpy(est)[None])
    assert spectral_metrics.aura_stft(ref, est, 44100) == pytest.approx(100 / (1 + 10 * float(loss)), rel=1e-5)


def test_a_weighting_fir_equals_auralosss():
    import auraloss.perceptual
    fir = auraloss.perceptual.FIRFilter(filter_type="aw", fs=44100)
    assert np.allclose(spectral_metrics.a_weighting_fir(44100), fir.fir.weight.data.numpy().ravel(), atol=1e-6)


def test_mel_bank_is_slaneys():
    assert spectral_metrics.hz_to_mel(1000.0) == pytest.approx(15.0)
    assert spectral_metrics.mel_to_hz(spectral_metrics.hz_to_mel([200.0, 3000.0, 15000.0])) == pytest.approx(
        [200.0, 3000.0, 15000.0])
    bank = spectral_metrics.mel_bank(44100, 4096, 64)
    bin_hz = 44100 / 4096
    # Slaney normalisation: each triangle has area 1 in Hz (wide ones sampled finely enough to tell).
    assert np.allclose(bank[10:].sum(axis=1) * bin_hz, 1.0, atol=0.02)
    # Adjacent triangles cross at half height of their shared slope: their peaks sit on the mel grid.
    edges = spectral_metrics.mel_to_hz(np.linspace(0, spectral_metrics.hz_to_mel(22050.0), 66))
    peaks = bank.argmax(axis=1) * bin_hz
    assert np.all(np.abs(peaks - edges[1:-1]) <= bin_hz)


def test_l1_freq_from_frames_by_hand():
    rng = np.random.default_rng(6)
    ref = rng.standard_normal((2, 9000)).astype(np.float32)
    est = (ref * 0.7).astype(np.float32)

    def magnitudes(x):  # rectangular 2048-sample frames every 1024, reflect-padded by 1024 (torch.stft's centre)
        padded = np.pad(x, ((0, 0), (1024, 1024)), mode="reflect")
        starts = range(0, padded.shape[-1] - 2048 + 1, 1024)
        return np.abs(np.stack([np.fft.rfft(padded[:, s:s + 2048], axis=-1) for s in starts], axis=-1))

    loss = 10 * np.abs(magnitudes(est) - magnitudes(ref)).mean()
    assert spectral_metrics.l1_freq(ref, est, 44100) == pytest.approx(100 / (1 + loss), rel=1e-4)


def test_bleedless_and_fullness_of_louder_and_quieter_estimates():
    rng = np.random.default_rng(7)
    ref = rng.standard_normal((2, 20000)).astype(np.float32)
    assert spectral_metrics.bleed_and_fullness(ref, ref, 44100) == (100.0, 100.0)
    six = 20 * math.log10(2)  # an estimate twice as loud is 6.02 dB above everywhere: all "bleed"
    bleed, full = spectral_metrics.bleed_and_fullness(ref, 2 * ref, 44100)
    assert bleed == pytest.approx(100 / (1 + six), rel=1e-4) and full == 100.0
    bleed, full = spectral_metrics.bleed_and_fullness(ref, ref / 2, 44100)
    assert bleed == 100.0 and full == pytest.approx(100 / (1 + six), rel=1e-4)


def test_every_metric_runs_on_a_track():
    rng = np.random.default_rng(8)
    refs = rng.standard_normal((2, 2, 12000)).astype(np.float32) * 0.1
    ests = refs + 0.05 * rng.standard_normal(refs.shape).astype(np.float32)
    for name, metric in METRICS.items():
        values = metric(refs, ests, 16000)
        assert values.shape == (2,) and np.isfinite(values).all(), name


def test_parse_metrics_names_the_problem():
    assert parse_metrics("sdr, csdr,sdr") == ["sdr", "csdr"]
    with pytest.raises(ValueError, match="--metrics snr: unknown; the metrics are sdr, csdr"):
        parse_metrics("snr")
    with pytest.raises(ValueError, match="log_wmse.*not offered"):
        parse_metrics("log_wmse")


def test_evaluate_cli_several_metrics(test_set, tmp_path, capsys):  # noqa: F811
    est = tmp_path / "est"
    for track in ("a", "b"):
        for k, source in enumerate(SOURCES):
            write(est / track / f"{source}.wav", tone(2, 5000, seed=100 + k) * 0.5, RATE)
    rc = evaluate.main([str(test_set), str(est), "--metrics", "sdr,csdr,si_sdr",
                        "--json", str(tmp_path / "s.json"), "--csv", str(tmp_path / "s.csv")])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "sdr:" in printed and "csdr:" in printed and "si_sdr:" in printed
    report = json.loads((tmp_path / "s.json").read_text())
    assert report["metric"] == "sdr" and list(report["metrics"]) == ["sdr", "csdr", "si_sdr"]
    assert report["scores"] == report["metrics"]["sdr"]["scores"]
    rows = list(csv.reader((tmp_path / "s.csv").open()))
    assert rows[0] == ["track", "metric", *SOURCES, "mean"]
    assert sorted((r[0], r[1]) for r in rows[1:]) == sorted(
        (t, m) for t in ("a", "b") for m in ("sdr", "csdr", "si_sdr"))
    # 5000 samples at 8 kHz: one frame, so cSDR is that frame's plain SDR of each source.
    csdr_a = report["metrics"]["csdr"]["scores"]["a"]
    sdr_a = report["metrics"]["sdr"]["scores"]["a"]
    assert all(csdr_a[s] == pytest.approx(sdr_a[s], abs=1e-4) for s in SOURCES)
