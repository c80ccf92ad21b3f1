"""Batched pitch and tempo changes in torch: a phase vocoder plus FFT resampling.

This is the ``vocoder`` backend of the Repitch augmentation. Rubber Band costs
about 0.7 CPU-s per 11 s stem, which no CPU pool can pay at the rate a GPU
trains; these functions run on whatever device the batch lives on, every item
with its own pitch and tempo.

How a change of ``semitones`` and ``tempo`` (a speed factor, 1.1 = 10 % faster)
is made, per row, in one STFT and one ISTFT (``f = 2 ** (semitones / 12)``):

1. analysis frames of ``n_in`` samples are read where output frame j
   (centred on output sample ``j * out_hop``) finds its content: input
   sample ``j * out_hop * tempo``;
2. phase vocoder: each bin's frequency comes from the phase change between
   consecutive analysis frames; phases are accumulated at that frequency
   times ``f`` and locked to the spectral peak each bin belongs to;
3. each frame goes back through an inverse FFT of ``n_out`` points, which
   resamples it by ``n_in / n_out ~= f`` (the pitch change), and frames are
   overlap-added ``out_hop`` apart.

Sizes come from :func:`frame_sizes` (fast FFT lengths, pitch within 1 cent).
Rows that share a pitch share sizes, so a batch is processed in at most one
group per distinct semitone value. Everything runs in float32 (autocast off).

    >>> y = repitch(wav, semitones=torch.tensor([2., -1.]), tempo=torch.tensor([1.05, 0.9]))
"""
from __future__ import annotations

import functools
import math

import torch

__all__ = ["time_stretch", "pitch_shift", "repitch", "frame_sizes", "default_n_fft"]

N_FFT = 2048  # ~46 ms at 44.1 kHz: long enough for bass partials, short enough for drums
TWO_PI = 2 * math.pi


def default_n_fft(samplerate: int) -> int:
    """The power of two nearest to 46 ms at ``samplerate`` (2048 at 44.1 kHz)."""
    return 2 ** round(math.log2(N_FFT * samplerate / 44100))


def time_stretch(wav: torch.Tensor, rate, *, length: int | None = None,
                 n_fft: int = N_FFT, hop: int | None = None) -> torch.Tensor:
    """Change the speed of ``wav (..., T)`` by ``rate`` (2.0 = twice as fast) keeping the pitch.

    ``rate`` is a number or a tensor broadcastable to ``wav.shape[:-1]`` (one
    rate per row). The output has ``length`` samples, by default
    ``int(T / max(rate))`` (the longest every row fills with real audio).
    """
    return repitch(wav, 0.0, rate, length=length, n_fft=n_fft, hop=hop)


def pitch_shift(wav: torch.Tensor, semitones, *, n_fft: int = N_FFT,
                hop: int | None = None) -> torch.Tensor:
    """Shift the pitch of ``wav (..., T)`` by ``semitones`` (per row or one number), same length."""
    return repitch(wav, semitones, 1.0, length=wav.shape[-1], n_fft=n_fft, hop=hop)


def repitch(wav: torch.Tensor, semitones, tempo, *, length: int | None = None,
            n_fft: int = N_FFT, hop: int | None = None) -> torch.Tensor:
    """Shift pitch by ``semitones`` and change speed by the factor ``tempo``, per row.

    ``wav`` is ``(..., T)``; ``semitones`` and ``tempo`` are numbers or tensors
    broadcastable to ``wav.shape[:-1]``. Returns ``(..., length)`` float32 on
    ``wav``'s device; ``length`` defaults to ``int(T / max(tempo))``. A row
    asking for more than its content gives silence past the end. ``hop`` is
    the analysis hop at unchanged pitch (``n_fft // 4`` by default).
    """
    if wav.dim() < 1:
        raise ValueError(f"repitch: expected a tensor (..., T), got shape {tuple(wav.shape)}")
    hop = n_fft // 4 if hop is None else hop
    if not 0 < hop <= n_fft // 2:
        raise ValueError(f"repitch: hop {hop} must be in [1, n_fft / 2 = {n_fft // 2}]")
    lead, T = wav.shape[:-1], wav.shape[-1]
    rows = wav.reshape(-1, T).float()
    device = rows.device
    semis = torch.as_tensor(semitones, dtype=torch.float32).to(device).broadcast_to(lead).reshape(-1)
    tempo = torch.as_tensor(tempo, dtype=torch.float32).to(device).broadcast_to(lead).reshape(-1)
    if semis.numel() and not bool((tempo > 0).all()):
        raise ValueError(f"repitch: tempo factors must be > 0, got {tempo.tolist()}")
    if length is None:
        length = int(T / float(tempo.max())) if tempo.numel() else T
    out = rows.new_zeros(rows.shape[0], length)
    if rows.shape[0] == 0 or length == 0:
        return out.reshape(*lead, length)

    # Rows asking for no change are copied: the vocoder would only blur them.
    identity = (semis == 0) & (tempo == 1)
    keep = min(length, T)
    out[identity, :keep] = rows[identity, :keep]
    todo = ~identity
    # On a CPU, two rows (one stereo stem) at a time keep the spectrogram
    # temporaries in cache: a whole batch's would be paged in and out.
    chunk = None if device.type != "cpu" else 2
    with torch.autocast(device_type=device.type, enabled=False):
        # One pass per distinct pitch: the synthesis frame length depends on it.
        for semi in torch.unique(semis[todo]).tolist():
            group = (todo & (semis == semi)).nonzero().flatten()
            for part in group.split(chunk or group.numel()):
                out[part] = _repitch_rows(rows[part], semi, tempo[part], length, n_fft, hop)
    return out.reshape(*lead, length)


def _smooth_sizes(lo: int, hi: int, primes=(2, 3, 5, 7, 11, 13)) -> list[int]:
    """Sorted lengths in ``[lo, hi]`` with no prime factor above 13 (fast FFT sizes)."""
    sizes = [1]
    for p in primes:
        sizes = [n * p ** k for n in sizes for k in range(int(math.log(hi / n, p)) + 1)]
    return sorted(n for n in sizes if lo <= n <= hi)


@functools.lru_cache(maxsize=256)
def frame_sizes(semitones: float, n_fft: int = N_FFT, tol: float = 6e-4) -> tuple[int, int]:
    """``(n_in, n_out)``: analysis and synthesis frame lengths for a pitch change.

    Synthesis frames are resampled analysis frames: the inverse FFT of an
    ``n_in``-point spectrum at size ``n_out`` plays it ``n_in / n_out`` times
    faster and higher, the pitch factor. Both lengths have no prime factor
    above 13 (a 1722-point FFT, 2 x 3 x 7 x 41, is 4x slower than a
    1728-point one), ``n_in`` is the longest such in ``[0.75, 1] x n_fft``
    and the ratio is within ``tol`` (6e-4 = 1 cent) of ``2 ** (semitones / 12)``.
    """
    ratio = 2.0 ** (semitones / 12)
    # Even lengths only: odd real FFTs are about twice as slow.
    outs = {n for n in _smooth_sizes(1, int(n_fft / ratio) + 2) if n % 2 == 0}
    for n_in in reversed([n for n in _smooth_sizes(int(0.75 * n_fft), n_fft) if n % 2 == 0]):
        guess = round(n_in / ratio)
        for n_out in (guess, guess - 1, guess + 1):
            if n_out in outs and abs(n_in / n_out / ratio - 1) <= tol:
                return n_in, n_out
    return n_fft, max(1, round(n_fft / ratio))  # exact, at a slower size


@functools.lru_cache(maxsize=64)
def _plan(semitones: float, n_fft: int, hop: int, device: torch.device):
    """``(n_in, n_out, out_hop, blocks, pitch, ana_window, syn_window, bin_phase)`` of one pitch."""
    n_in, n_out = frame_sizes(semitones, n_fft)
    pitch = n_in / n_out
    out_hop = max(1, round(hop * n_out / n_fft))  # the overlap n_fft / hop, kept
    blocks = -(-n_out // out_hop)
    ana = torch.hann_window(n_in, device=device)
    # irfft divides by n_out, not by the n_in of the forward FFT: undo the gain of n_in / n_out.
    syn = torch.hann_window(n_out, device=device) / pitch
    bins = torch.arange(n_in // 2 + 1, device=device, dtype=torch.float64)
    # Phase advance of bin k over one output hop at the bin's own frequency,
    # reduced mod 2 pi (in float64, so the reduction itself is exact).
    bin_phase = (TWO_PI / n_out * out_hop * bins % TWO_PI).float()
    return n_in, n_out, out_hop, blocks, pitch, ana, syn, bin_phase


def _repitch_rows(rows, semi, tempo, length, n_fft, hop):
    """``rows (R, T)`` at one pitch, ``tempo (R,)`` -> ``(R, length)``: one STFT, one ISTFT."""
    R, T = rows.shape
    device = rows.device
    n_fft, n_out, out_hop, blocks, pitch, ana, syn, bin_phase = _plan(float(semi), n_fft, hop, device)
    half, F = n_fft // 2, n_fft // 2 + 1
    # Output frame j is centred on output sample j * out_hop, and reads the
    # input around sample j * out_hop * tempo; frames run until half a frame
    # past `length`. Centres past the input read the zero padding.
    J = -(-(length + n_out // 2) // out_hop) + 1
    pos = torch.arange(J, device=device, dtype=torch.float32) * out_hop * tempo[:, None]
    centre = pos.round_().long().clamp_(max=T + half)
    padded = torch.nn.functional.pad(rows, (half, n_fft))
    frames = padded.unfold(-1, n_fft, 1)[torch.arange(R, device=device)[:, None], centre]
    spec = torch.fft.rfft(frames.mul_(ana), dim=-1)
    del frames
    re, im = spec.real.contiguous(), spec.imag.contiguous()
    del spec
    mag = torch.hypot(re, im)
    phase = torch.atan2(im, re)
    del re, im

    # Instantaneous frequency of every bin from the phase change between
    # consecutive analysis frames, `gap` samples apart (about out_hop * tempo):
    # deviation from the bin's centre frequency, wrapped to (-pi, pi].
    gap = centre.diff(dim=1).clamp_(min=1).float()[..., None]  # (R, J - 1, 1)
    bin_freq = torch.arange(F, device=device, dtype=torch.float32) * (TWO_PI / n_fft)
    dev = torch.addcmul(phase[:, 1:] - phase[:, :-1], gap, bin_freq, value=-1.0)
    dev -= TWO_PI * torch.round(dev * (1 / TWO_PI))
    # The same frequency, raised by `pitch`, over one output hop.
    step = dev.mul_(pitch * out_hop / gap).add_(bin_phase)
    acc = _cumsum_frames(torch.cat([phase[:, :1], step], dim=1))
    del dev, step

    # Identity phase locking: each bin keeps its analysis phase offset to the
    # peak it belongs to and takes that peak's accumulated phase.
    locked = phase.add_(_at_peaks(acc.sub_(phase), mag))
    del acc
    spec = torch.complex(mag * torch.cos(locked), mag.mul_(torch.sin(locked)))
    del mag, locked, phase

    # Inverse FFT at n_out: each frame resampled by `pitch` on the way out.
    wave = torch.fft.irfft(spec, n=n_out, dim=-1).mul_(syn)
    del spec
    wave = torch.nn.functional.pad(wave, (0, blocks * out_hop - n_out)).reshape(R, J, blocks, out_hop)
    # Analysis window (resampled to n_out: a Hann window of n_out) times synthesis window.
    wsq = torch.nn.functional.pad((syn * pitch) ** 2, (0, blocks * out_hop - n_out)).reshape(blocks, out_hop)
    buf = wave.new_zeros(R, J + blocks - 1, out_hop)
    env = wave.new_zeros(J + blocks - 1, out_hop)
    for b in range(blocks):  # frame j covers blocks j .. j + blocks - 1
        buf[:, b:b + J] += wave[:, :, b]
        env[b:b + J] += wsq[b]
    start = n_out // 2  # frame 0's centre is output sample 0
    buf = buf.reshape(R, -1)[:, start:start + length]
    return buf / env.reshape(-1)[start:start + length].clamp(min=1e-3)


def _cumsum_frames(x, block: int = 32):
    """``cumsum(x, dim=1)`` for ``x (R, J, F)``, as small triangular matmuls (several times faster on a CPU)."""
    R, J, F = x.shape
    nb = -(-J // block)
    x = torch.nn.functional.pad(x, (0, 0, 0, nb * block - J)).reshape(R, nb, block, F)
    tri = torch.ones(block, block, device=x.device, dtype=x.dtype).tril_()
    y = torch.matmul(tri, x)  # running sums inside each block
    carry = y[:, :, -1].cumsum(dim=1)  # each block's total, summed over blocks
    y[:, 1:] += carry[:, :-1, None]
    return y.reshape(R, nb * block, F)[:, :J]


def _at_peaks(x, mag, steps: int = 2):
    """``x (R, J, F)`` read at the spectral peak each bin belongs to.

    Every bin looks to its louder neighbour (itself at a local maximum of
    ``mag``); taking that neighbour's value ``steps`` times climbs ``steps``
    bins, 2 being the half-width of a Hann window's main lobe. Selections as
    0/1 blends of values, not gathers or ``torch.where``: several times faster on a CPU.
    """
    padded = torch.nn.functional.pad(mag, (1, 1), value=-1.0)
    left, right = padded[..., :-2], padded[..., 2:]
    up = (right > left).float()
    stay = (torch.maximum(left, right) <= mag).float()
    for _ in range(steps):
        p = torch.nn.functional.pad(x, (1, 1))
        x = torch.lerp(torch.lerp(p[..., :-2], p[..., 2:], up), x, stay)  # 0/1 weights: a select
    return x
