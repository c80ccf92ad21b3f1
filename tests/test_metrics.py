"""The challenge SDR on hand-computed cases, summaries, and length alignment."""
import math

import numpy as np
import pytest
import torch

from labelnoise.audio import AudioError
from labelnoise.evaluation import align, format_table
from labelnoise.metrics import EPS, sdr, summarize


@pytest.fixture
def signal():
    rng = np.random.default_rng(0)
    return rng.standard_normal((2, 1000)).astype(np.float32)


def energy(x):
    return float(np.square(x.astype(np.float64)).sum())


def test_identical_estimate_is_capped_by_eps(signal):
    value = sdr(signal, signal)
    assert value == pytest.approx(10 * math.log10((energy(signal) + EPS) / EPS))
    assert 90 < value < 110  # about 2000 / 1e-7: large but finite


def test_silence():
    zeros = np.zeros((2, 500), dtype=np.float32)
    assert sdr(zeros, zeros) == 0.0
    est = np.full((2, 500), 0.01, dtype=np.float32)
    # sum est^2 = 1000 * 1e-4 = 0.1
    assert sdr(zeros, est) == pytest.approx(10 * math.log10(EPS / (0.1 + EPS)))
    # A silent estimate of a real signal scores 0 dB.
    assert sdr(est, zeros) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("gain", [0.5, 0.9, 2.0, -1.0])
def test_scaled_estimate(signal, gain):
    e = energy(signal)
    expected = 10 * math.log10((e + EPS) / ((1 - gain) ** 2 * e + EPS))
    assert sdr(signal, gain * signal) == pytest.approx(expected, rel=1e-6)
    assert sdr(signal, 0.5 * signal) == pytest.approx(20 * math.log10(2), rel=1e-6)


def test_sums_over_channels_and_samples_and_keeps_sources(signal):
    # Error only in the second channel: the sums run over both channels together.
    est = signal.copy()
    est[1] += 0.1
    expected = 10 * math.log10((energy(signal) + EPS) / (1000 * 0.01 + EPS))
    assert sdr(signal, est) == pytest.approx(expected, rel=1e-5)
    stacked = np.stack([signal, signal])
    values = sdr(stacked, np.stack([est, 0.5 * signal]))
    assert values.shape == (2,)
    assert values[0] == pytest.approx(expected, rel=1e-5)
    assert values[1] == pytest.approx(20 * math.log10(2), rel=1e-6)
    assert sdr(torch.from_numpy(signal), torch.from_numpy(est)) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="differ in shape"):
        sdr(signal, signal[:, :10])


def test_summarize_mean_and_median_over_tracks():
    sources = ["drums", "bass"]
    scores = {"a": {"drums": 1.0, "bass": 3.0},    # track mean 2
              "b": {"drums": 4.0, "bass": 6.0},    # track mean 5
              "c": {"drums": 10.0, "bass": 20.0}}  # track mean 15
    summary = summarize(scores, sources)
    assert summary["tracks"] == 3
    assert summary["mean"] == pytest.approx(22 / 3)
    assert summary["median"] == 5.0
    assert summary["per_source"]["drums"] == {"mean": 5.0, "median": 4.0}
    assert summary["per_source"]["bass"]["mean"] == pytest.approx(29 / 3)
    table = format_table({"sources": sources, "scores": {k: {**v, "mean": sum(v.values()) / 2}
                                                         for k, v in scores.items()},
                          "summary": summary})
    assert table.splitlines()[-1].split() == ["median", "4.000", "6.000", "5.000"]


def test_align_crops_a_few_samples_and_refuses_the_rest(signal):
    ref, est, diff = align(signal, signal[:, :997], "est/x/drums.wav")
    assert diff == 3 and ref.shape == est.shape == (2, 997)
    with pytest.raises(AudioError, match="est/x/drums.wav: 1 channels where 2 expected"):
        align(signal, signal[:1], "est/x/drums.wav")
    with pytest.raises(AudioError, match="500 samples where 1000 expected"):
        align(signal, signal[:, :500], "est/x/drums.wav", max_length_diff=100)
