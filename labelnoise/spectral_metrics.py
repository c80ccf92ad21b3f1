"""The spectral metrics of Music-Source-Separation-Training (MSST), written from their definitions.

Each takes one source's reference and estimate ``(C, T)`` and returns a score
where higher is better; MSST's parameters are kept (its ``metrics.py``):

- ``l1_freq``: ``100 / (1 + 10 * mean | |STFT(est)| - |STFT(ref)| |)``, STFT of
  2048 bins every 1024 samples, rectangular window (MSST calls ``torch.stft``
  without one).
- ``aura_stft``: ``100 / (1 + 10 * L)`` with L auraloss' STFTLoss (1024-point
  Hann STFT every 256 samples): spectral convergence ``||Y - X||_F / ||Y||_F``
  plus the mean ``|log X - log Y|``, magnitudes ``sqrt(max(|S|^2, 1e-8))``, X
  the reference's and Y the estimate's, in MSST's argument order.
- ``aura_mrstft``: the same over three resolutions (1024/256, 2048/512,
  4096/1024), each on a 128-band mel scale after an A-weighting FIR of 101 taps
  (auraloss' perceptual weighting; its design needs scipy), averaged.
- ``bleedless`` and ``fullness``: 4096-point Hann STFTs every 1024 samples
  (zero padded), 512 mel bands, in dB (20 log10, floor 1e-10, each signal cut
  80 dB below its own peak); of ``est_dB - ref_dB``, the mean of the positive
  values P and of the negative values N give ``bleedless = 100 / (1 + P)``
  (energy the estimate has that the reference lacks) and ``fullness = 100 /
  (1 - N)`` (what it misses).

MSST fixes the sample rate of the mel scales and the A-weighting at 44.1 kHz;
here they follow the audio's rate (the same figures at 44.1 kHz). MSST's
``log_wmse`` is not offered: it rests on torch-log-wmse's measured filter
response (a data file), not on a formula.
"""
from __future__ import annotations

import math

import numpy as np
import torch

MEL_BANDS_MRSTFT = 128
RESOLUTIONS = ((1024, 256), (2048, 512), (4096, 1024))
A_WEIGHTING_TAPS = 101


def _tensor(x) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32)


def _magnitude(x: torch.Tensor, n_fft: int, hop: int, window: torch.Tensor, pad_mode="reflect",
               eps: float | None = None) -> torch.Tensor:
    spec = torch.stft(x, n_fft, hop, window=window, return_complex=True, pad_mode=pad_mode)
    if eps is None:
        return spec.abs()
    return torch.sqrt(torch.clamp(spec.real ** 2 + spec.imag ** 2, min=eps))


def l1_freq(reference, estimate, samplerate: int) -> float:
    ref, est = _tensor(reference), _tensor(estimate)
    window = torch.ones(2048)  # rectangular, as torch.stft without a window
    loss = 10 * (_magnitude(est, 2048, 1024, window) - _magnitude(ref, 2048, 1024, window)).abs().mean()
    return 100 / (1 + float(loss))


def _stft_loss(ref: torch.Tensor, est: torch.Tensor, n_fft: int, hop: int, bank: torch.Tensor | None = None):
    window = torch.hann_window(n_fft)
    x = _magnitude(ref, n_fft, hop, window, eps=1e-8)
    y = _magnitude(est, n_fft, hop, window, eps=1e-8)
    if bank is not None:
        x, y = bank @ x, bank @ y
    convergence = torch.linalg.vector_norm(y - x) / torch.linalg.vector_norm(y)
    return convergence + (torch.log(x) - torch.log(y)).abs().mean()


def aura_stft(reference, estimate, samplerate: int) -> float:
    loss = _stft_loss(_tensor(reference), _tensor(estimate), 1024, 256)
    return 100 / (1 + 10 * float(loss))


def aura_mrstft(reference, estimate, samplerate: int) -> float:
    taps = torch.from_numpy(a_weighting_fir(samplerate).astype(np.float32)).view(1, 1, -1)
    # auraloss filters with conv1d (a correlation with the taps), zero padded to the same length.
    ref, est = (torch.nn.functional.conv1d(_tensor(x)[:, None], taps, padding=A_WEIGHTING_TAPS // 2)[:, 0]
                for x in (reference, estimate))
    losses = [_stft_loss(ref, est, n_fft, hop, torch.from_numpy(mel_bank(samplerate, n_fft, MEL_BANDS_MRSTFT)))
              for n_fft, hop in RESOLUTIONS]
    return 100 / (1 + 10 * float(sum(losses) / len(losses)))


def _decibels(mel: torch.Tensor, top_db: float = 80.0) -> torch.Tensor:
    db = 20 * torch.log10(torch.clamp(mel, min=1e-10))
    return torch.maximum(db, db.max() - top_db)


def bleed_and_fullness(reference, estimate, samplerate: int) -> tuple[float, float]:
    """(bleedless, fullness) of one source."""
    bank = torch.from_numpy(mel_bank(samplerate, 4096, 512))
    window = torch.hann_window(4096)
    ref_db, est_db = (_decibels(bank @ _magnitude(_tensor(x), 4096, 1024, window, pad_mode="constant"))
                      for x in (reference, estimate))
    diff = est_db - ref_db
    above, below = diff[diff > 0], diff[diff < 0]
    mean_above = float(above.mean()) if above.numel() else 0.0
    mean_below = float(below.mean()) if below.numel() else 0.0
    return 100 / (mean_above + 1), 100 / (1 - mean_below)


def bleedless(reference, estimate, samplerate: int) -> float:
    return bleed_and_fullness(reference, estimate, samplerate)[0]


def fullness(reference, estimate, samplerate: int) -> float:
    return bleed_and_fullness(reference, estimate, samplerate)[1]


# ---------------------------------------------------------------- filters

def hz_to_mel(hz):
    """Slaney's mel scale (librosa's default): linear to 1 kHz (15 mel), logarithmic above (27 mel per x6.4)."""
    hz = np.asarray(hz, dtype=np.float64)
    step = math.log(6.4) / 27
    return np.where(hz < 1000, hz / (200 / 3), 15 + np.log(np.maximum(hz, 1e-12) / 1000) / step)


def mel_to_hz(mel):
    mel = np.asarray(mel, dtype=np.float64)
    step = math.log(6.4) / 27
    return np.where(mel < 15, mel * (200 / 3), 1000 * np.exp(step * (mel - 15)))


def mel_bank(samplerate: int, n_fft: int, bands: int) -> np.ndarray:
    """``(bands, n_fft // 2 + 1)`` triangles on the Slaney scale from 0 Hz to Nyquist, each of area 1 in Hz
    (Slaney normalisation): librosa's ``filters.mel`` with its defaults."""
    bins = np.linspace(0, samplerate / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(samplerate / 2), bands + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins - lower) / (centre - lower)
    falling = (upper - bins) / (upper - centre)
    bank = np.maximum(0, np.minimum(rising, falling)) * (2 / (upper - lower))
    return bank.astype(np.float32)


def a_weighting_fir(samplerate: int, taps: int = A_WEIGHTING_TAPS) -> np.ndarray:
    """auraloss' A-weighting FIR: the analog A-weighting (IEC 61672 poles at 20.6, 107.7, 737.9 and
    12194 Hz, +2 dB at 1 kHz) made digital by the bilinear transform, its response on 512
    frequencies fitted by least squares with ``taps`` taps."""
    try:
        import scipy.signal
    except ImportError:
        raise ValueError("aura_mrstft needs scipy for its A-weighting filter: pip install scipy") from None
    f1, f2, f3, f4, gain_1k = 20.598997, 107.65265, 737.86223, 12194.217, 1.9997
    numerator = [(2 * np.pi * f4) ** 2 * 10 ** (gain_1k / 20), 0, 0, 0, 0]
    denominator = np.polymul(np.polymul([1, 4 * np.pi * f4, (2 * np.pi * f4) ** 2],
                                        [1, 4 * np.pi * f1, (2 * np.pi * f1) ** 2]),
                             np.polymul([1, 2 * np.pi * f3], [1, 2 * np.pi * f2]))
    b, a = scipy.signal.bilinear(numerator, denominator, fs=samplerate)
    freqs, response = scipy.signal.freqz(b, a, worN=512, fs=samplerate)
    return scipy.signal.firls(taps, freqs, np.abs(response), fs=samplerate)
