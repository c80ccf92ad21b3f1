"""Spectrogram front end and back end of HTDemucs.

``spectrogram(x, nfft)`` turns a waveform ``(..., T)`` into a complex
spectrogram ``(..., nfft // 2, ceil(T / hop))`` with ``hop = nfft // 4``, and
``inverse_spectrogram(z, length)`` undoes it. The framing is arranged so that
frame ``k`` is centred on sample ``k * hop + hop / 2``: the frequency branch
then lines up with the time branch, whose convolutions divide the length by
exactly the same strides. Both run in float32 even under autocast, because a
bf16 STFT loses the precision the whole model rests on.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def pad_reflect(x: torch.Tensor, left: int, right: int) -> torch.Tensor:
    """Reflect-pad the last dimension, also for inputs shorter than the padding.

    ``F.pad(mode='reflect')`` needs the input longer than each side's padding;
    for short inputs we first add just enough zeros (right side first) so the
    reflection is defined. The original samples stay at ``[left:left + T]``.
    """
    length = x.shape[-1]
    widest = max(left, right)
    if length <= widest:
        extra = widest - length + 1
        extra_right = min(right, extra)
        extra_left = extra - extra_right
        x = F.pad(x, (extra_left, extra_right))
        left, right = left - extra_left, right - extra_right
    return F.pad(x, (left, right), mode="reflect")


def _float32(t: torch.Tensor) -> torch.Tensor:
    if t.is_complex():
        return t.to(torch.complex64)
    return t.float()


def stft(x: torch.Tensor, nfft: int, hop: int) -> torch.Tensor:
    """Normalised, centred Hann STFT of ``(..., T)`` -> ``(..., nfft//2 + 1, frames)``."""
    *lead, length = x.shape
    flat = x.reshape(-1, length)
    z = torch.stft(
        flat, nfft, hop,
        window=torch.hann_window(nfft, device=x.device, dtype=flat.dtype),
        win_length=nfft, normalized=True, center=True,
        return_complex=True, pad_mode="reflect",
    )
    return z.view(*lead, z.shape[-2], z.shape[-1])


def istft(z: torch.Tensor, hop: int, length: int) -> torch.Tensor:
    """Inverse of :func:`stft`: ``(..., F, frames)`` -> ``(..., length)``."""
    *lead, freqs, frames = z.shape
    nfft = 2 * freqs - 2
    flat = z.reshape(-1, freqs, frames)
    x = torch.istft(
        flat, nfft, hop,
        window=torch.hann_window(nfft, device=z.device, dtype=flat.real.dtype),
        win_length=nfft, normalized=True, length=length, center=True,
    )
    return x.view(*lead, x.shape[-1])


def spectrogram(x: torch.Tensor, nfft: int) -> torch.Tensor:
    """Waveform ``(..., T)`` -> complex ``(..., nfft // 2, ceil(T / hop))``.

    The Nyquist bin is dropped so the frequency count is a power of two, and
    the two edge frames on each side (which only see padding) are cut.
    """
    hop = nfft // 4
    frames = math.ceil(x.shape[-1] / hop)
    # 1.5 hops each side, plus the right tail up to a whole number of hops:
    # the STFT then yields frames + 4 frames, and frames 2..frames+2 are ours.
    side = hop // 2 * 3
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = _float32(x)
        x = pad_reflect(x, side, side + frames * hop - x.shape[-1])
        z = stft(x, nfft, hop)
    return z[..., :-1, 2:2 + frames]


def inverse_spectrogram(z: torch.Tensor, length: int) -> torch.Tensor:
    """Complex ``(..., F, frames)`` from :func:`spectrogram` -> waveform ``(..., length)``."""
    hop = z.shape[-2] // 2  # nfft // 4 with nfft = 2 * F
    side = hop // 2 * 3
    with torch.autocast(device_type=z.device.type, enabled=False):
        z = _float32(z)
        # Restore the Nyquist bin and the two edge frames each side as zeros.
        z = F.pad(z, (2, 2, 0, 1))
        padded = hop * math.ceil(length / hop) + 2 * side
        x = istft(z, hop, padded)
    return x[..., side:side + length]
