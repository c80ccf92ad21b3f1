"""Batched pitch and tempo changes in torch: a phase vocoder plus FFT resampling.

This is the ``vocoder`` backend of the Repitch augmentation. Rubber Band costs
about 0.7 CPU-s per 11 s stem, which no CPU pool can pay at the rate a GPU
trains; these functions run on whatever device the batch lives on, every item
with its own pitch and tempo.

How a change of ``semitones`` and ``tempo`` (a speed factor, 1.1 = 10 % faster)
is made, per row, in one STFT and one ISTFT (``f = 2 ** (semitones / 12)``):

1. analysis frames of ``n_in`` samples are read where output frame j
   (centred on output sample ``j * out_hop``) finds its content: input
   sample ``j * gap``, ``gap = out_hop * tempo`` rounded to whole samples
   (tempo within 0.15 %), so the frames are a strided view of the input;
2. phase vocoder: each bin's frequency comes from the phase change between
   consecutive analysis frames; output phases advance at that frequency
   times ``f`` and are locked to the spectral peak each bin belongs to. All
   this only decides one rotation per bin, applied to the analysis spectrum
   as a complex product (no magnitudes, one atan2, one cos and sin per bin);
   with ``stereo=True`` it is computed once from the channels' sum and turns
   every channel, which keeps the stereo image and halves the phase work;
3. each frame goes back through an inverse FFT of ``n_out`` points, which
   resamples it by ``n_in / n_out ~= f`` (the pitch change), and frames are
   overlap-added ``out_hop`` apart.

Sizes come from :func:`frame_sizes` (fast FFT lengths, pitch within 1 cent).
Rows that share a pitch share sizes, so a batch is processed in at most one
group per distinct semitone value. Samples and spectra are float32 (autocast
off); only per-frame phase offsets are reduced mod 2 pi in float64.

    >>> y = repitch(wav, semitones=torch.tensor([2., -1.]), tempo=torch.tensor([1.05, 0.9]))
    >>> stems = repitch(batch_nct, semis[:, None], tempo[:, None], stereo=True)  # (N, C, T)
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
                 n_fft: int = N_FFT, hop: int | None = None, stereo: bool = False) -> torch.Tensor:
    """Change the speed of ``wav (..., T)`` by ``rate`` (2.0 = twice as fast) keeping the pitch.

    ``rate`` is a number or a tensor broadcastable to ``wav.shape[:-1]`` (one
    rate per row). The output has ``length`` samples, by default
    ``int(T / max(rate))`` (the longest every row fills with real audio).
    """
    return repitch(wav, 0.0, rate, length=length, n_fft=n_fft, hop=hop, stereo=stereo)


def pitch_shift(wav: torch.Tensor, semitones, *, n_fft: int = N_FFT,
                hop: int | None = None, stereo: bool = False) -> torch.Tensor:
    """Shift the pitch of ``wav (..., T)`` by ``semitones`` (per row or one number), same length."""
    return repitch(wav, semitones, 1.0, length=wav.shape[-1], n_fft=n_fft, hop=hop, stereo=stereo)


def repitch(wav: torch.Tensor, semitones, tempo, *, length: int | None = None,
            n_fft: int = N_FFT, hop: int | None = None, stereo: bool = False) -> torch.Tensor:
    """Shift pitch by ``semitones`` and change speed by the factor ``tempo``, per row.

    ``wav`` is ``(..., T)``; ``semitones`` and ``tempo`` are numbers or tensors
    broadcastable to ``wav.shape[:-1]``. Returns ``(..., length)`` float32 on
    ``wav``'s device; ``length`` defaults to ``int(T / max(tempo))``. A row
    asking for more than its content gives silence past the end. ``hop`` is
    the analysis hop at unchanged pitch (``n_fft // 4`` by default).

    With ``stereo`` the dim before time holds the channels of one signal
    (``(..., C, T)``): their phases move by one rotation, computed once from
    the channels' sum, which keeps the stereo image (each channel keeps its
    level and its phase offset to the others) and does the phase work once
    per item instead of once per channel. ``semitones`` and ``tempo`` must
    then be equal across the channels. (A part in opposite phase in two
    channels cancels in the sum; its bins then turn with what else is there.)
    """
    if wav.dim() < (2 if stereo else 1):
        raise ValueError(f"repitch: expected a tensor ({'..., C, ' if stereo else '..., '}T), "
                         f"got shape {tuple(wav.shape)}")
    hop = n_fft // 4 if hop is None else hop
    if not 0 < hop <= n_fft // 2:
        raise ValueError(f"repitch: hop {hop} must be in [1, n_fft / 2 = {n_fft // 2}]")
    lead, T = wav.shape[:-1], wav.shape[-1]
    C = wav.shape[-2] if stereo else 1
    items = wav.reshape(-1, C, T).float()  # (N, C, T): one phase computation per item
    device = items.device
    semis = torch.as_tensor(semitones, dtype=torch.float32).to(device).broadcast_to(lead).reshape(-1, C)
    tempo = torch.as_tensor(tempo, dtype=torch.float32).to(device).broadcast_to(lead).reshape(-1, C)
    if semis.numel() and not bool((tempo > 0).all()):
        raise ValueError(f"repitch: tempo factors must be > 0, got {tempo.tolist()}")
    if C > 1 and not bool(((semis == semis[:, :1]) & (tempo == tempo[:, :1])).all()):
        raise ValueError("repitch: with stereo=True, semitones and tempo must be the same "
                         "for every channel of an item")
    semis, tempo = semis[:, 0], tempo[:, 0]
    if length is None:
        length = int(T / float(tempo.max())) if tempo.numel() else T
    out = items.new_zeros(items.shape[0], C, length)
    if items.shape[0] == 0 or length == 0:
        return out.reshape(*lead, length)

    # Items asking for no change are copied: the vocoder would only blur them.
    identity = (semis == 0) & (tempo == 1)
    keep = min(length, T)
    out[identity, :, :keep] = items[identity, :, :keep]
    todo = ~identity
    # On a CPU, one stereo stem (two rows) at a time keeps the spectrogram
    # temporaries in cache: a whole batch's would be paged in and out.
    chunk = None if device.type != "cpu" else max(1, 2 // C)
    with torch.autocast(device_type=device.type, enabled=False):
        # One pass per distinct pitch: the synthesis frame length depends on it.
        for semi in torch.unique(semis[todo]).tolist():
            group = (todo & (semis == semi)).nonzero().flatten()
            for part in group.split(chunk or group.numel()):
                out[part] = _repitch_items(items[part], semi, tempo[part], length, n_fft, hop)
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
    """``(n_in, n_out, out_hop, blocks, pitch, ana_window, syn_window)`` of one pitch."""
    n_in, n_out = frame_sizes(semitones, n_fft)
    pitch = n_in / n_out
    out_hop = max(1, round(hop * n_out / n_fft))  # the overlap n_fft / hop, kept
    blocks = -(-n_out // out_hop)
    ana = torch.hann_window(n_in, device=device)
    # irfft divides by n_out, not by the n_in of the forward FFT: undo the gain of n_in / n_out.
    syn = torch.hann_window(n_out, device=device) / pitch
    return n_in, n_out, out_hop, blocks, pitch, ana, syn


def _repitch_items(x, semi, tempo, length, n_fft, hop):
    """``x (I, C, T)`` at one pitch, ``tempo (I,)`` -> ``(I, C, length)``: one STFT, one ISTFT.

    The phase work runs once per item, on the sum of its C channels (the
    mid), and its result, one unit rotation per bin, turns every channel.
    """
    I, C, T = x.shape
    device = x.device
    n_in, n_out, out_hop, blocks, pitch, ana, syn = _plan(float(semi), n_fft, hop, device)
    half, F = n_in // 2, n_in // 2 + 1
    # Output frame j is centred on output sample j * out_hop and reads the
    # input around sample j * gap, gap = out_hop * tempo rounded to whole
    # samples (so tempo is kept to within 0.5 / out_hop, under 0.15 %): a
    # constant hop makes the analysis frames a strided view of the input.
    # Frames run until half a frame past `length`; past the input they read zeros.
    J = -(-(length + n_out // 2) // out_hop) + 1
    gap = (tempo.double() * out_hop).round_().clamp_(min=1)  # (I,)
    g = gap.long()
    pad_end = max(n_in, int(g.max()) * (J - 1) + n_in - T - half)
    padded = torch.nn.functional.pad(x, (half, pad_end))
    if bool((g == g[0]).all()):
        frames = padded.unfold(-1, n_in, int(g[0]))[:, :, :J] * ana
    else:  # one view per hop would need a loop: gather the frames instead
        centre = torch.arange(J, device=device) * g[:, None, None]  # (I, 1, J)
        frames = padded.unfold(-1, n_in, 1)[torch.arange(I, device=device)[:, None, None],
                                            torch.arange(C, device=device)[:, None], centre].mul_(ana)
    spec = torch.fft.rfft(frames, dim=-1)  # (I, C, J, F)
    del frames, padded
    # The mid's real and imaginary parts, (I, J, F) each: contiguous, as
    # strided elementwise math is slow on a CPU.
    if C == 1:
        re, im = spec.real[:, 0].contiguous(), spec.imag[:, 0].contiguous()
    elif C == 2:
        re, im = spec.real[:, 0] + spec.real[:, 1], spec.imag[:, 0] + spec.imag[:, 1]
    else:
        re, im = spec.real.sum(dim=1), spec.imag.sum(dim=1)
    # Its power, between two bins of -1 (the peak search in _at_peaks reads neighbours).
    power = re.new_empty(I, J, F + 2)
    power[..., 0] = power[..., -1] = -1.0
    torch.addcmul(re * re, im, im, out=power[..., 1:-1])

    # The output phase of a bin is its analysis phase plus a rotation `rot`.
    # Phase vocoder: output phases advance at each bin's own frequency times
    # `pitch` over out_hop, analysis phases by that frequency over `gap`; the
    # frequency is the bin centre plus `dev / gap`, dev being the phase change
    # between consecutive analysis frames past the centre's, wrapped to
    # (-pi, pi]. Over frame j, for bin k:
    #   rot_j - rot_{j-1} = [out_hop 2 pi k / n_out + pitch out_hop / gap dev] - [gap 2 pi k / n_in + dev]
    # The bin-centre terms sum to 2 pi k j (out_hop / n_out - gap / n_in),
    # reduced mod 1 in float64 per frame; only (pitch out_hop / gap - 1) dev is summed.
    k = torch.arange(F, device=device, dtype=torch.float32)
    # Phase change from frame j-1 to j: the angle of X_j conj(X_{j-1}), in real arithmetic.
    zr = torch.addcmul(re[:, 1:] * re[:, :-1], im[:, 1:], im[:, :-1])
    zi = torch.addcmul(im[:, 1:] * re[:, :-1], re[:, 1:], im[:, :-1], value=-1.0)
    del re, im
    # dev is written into the buffer the running sum over frames is made in
    # (see _cumsum_frames): a zero first frame, padding to whole blocks.
    block = 32
    acc = zr.new_empty(I, -(-J // block) * block, F)
    acc[:, 0] = 0
    acc[:, J:] = 0
    dev = torch.atan2(zi, zr, out=acc[:, 1:J])
    del zr, zi
    gap_turn = ((gap / n_in).frac_() * TWO_PI).float()[:, None, None]  # gap 2 pi / n_in mod 2 pi
    dev.addcmul_(gap_turn, k, value=-1.0)
    dev -= TWO_PI * torch.round(dev * (1 / TWO_PI))
    scale = ((pitch * out_hop) / gap - 1).float()  # (I,): applied inside the running sum
    frame_turn = torch.arange(J, device=device, dtype=torch.float64) * (out_hop / n_out - gap[:, None] / n_in)
    frame_turn = (frame_turn.frac_() * TWO_PI).float()[..., None]  # (I, J, 1)
    # Identity phase locking (_at_peaks) reads rot between two zero bins.
    rot = power.new_empty(I, J, F + 2)
    rot[..., 0] = rot[..., -1] = 0.0
    torch.addcmul(_cumsum_frames(acc, scale, J, block), frame_turn, k, out=rot[..., 1:-1])  # frame 0: no turn
    del dev, acc

    # Identity phase locking: each bin keeps its analysis phase offset to the
    # peak it belongs to, so takes that peak's rotation.
    rot = _at_peaks(rot, power)
    del power
    turn = torch.complex(torch.cos(rot), torch.sin(rot))
    del rot
    spec.mul_(turn[:, None])
    del turn

    # Inverse FFT at n_out: each frame resampled by `pitch` on the way out,
    # then windowed and overlap-added block by block (out_hop samples each).
    wave = torch.fft.irfft(spec, n=n_out, dim=-1)  # (I, C, J, n_out)
    del spec
    R = I * C
    wave = wave.reshape(R, J, n_out)
    buf = wave.new_empty(R, J + blocks - 1, out_hop)
    buf[:, J:] = 0
    env = wave.new_zeros(J + blocks - 1, out_hop)
    # Analysis window (resampled to n_out: a Hann window of n_out) times synthesis window.
    wsq = (syn * pitch) ** 2
    for b in range(blocks):  # frame j covers blocks j .. j + blocks - 1
        cut = slice(b * out_hop, min((b + 1) * out_hop, n_out))
        w = cut.stop - cut.start
        if b == 0:
            buf[:, :J, :w].copy_(wave[:, :, cut]).mul_(syn[cut])
            buf[:, :J, w:] = 0
        else:
            buf[:, b:b + J, :w].addcmul_(wave[:, :, cut], syn[cut])
        env[b:b + J, :w] += wsq[cut]
    del wave
    start = n_out // 2  # frame 0's centre is output sample 0
    buf = buf.reshape(R, -1)[:, start:start + length]
    return buf.div_(env.reshape(-1)[start:start + length].clamp(min=1e-3)).reshape(I, C, length)


def _cumsum_frames(x, scale, J: int, block: int):
    """``scale[r] *`` the running sums over dim 1 of ``x (R, nb * block, F)``, the first ``J``.

    Small triangular matmuls: several times faster than ``cumsum`` on a CPU.
    """
    R, n, F = x.shape
    x = x.reshape(R, n // block, block, F)
    tri = torch.ones(block, block, device=x.device, dtype=x.dtype).tril_()
    y = torch.matmul(tri * scale[:, None, None, None], x)  # running sums inside each block
    carry = y[:, :, -1].cumsum(dim=1)  # each block's total, summed over blocks
    y[:, 1:] += carry[:, :-1, None]
    return y.reshape(R, n, F)[:, :J]


def _at_peaks(xp, powp, steps: int = 2):
    """``x (R, J, F)`` read at the spectral peak each bin belongs to.

    Both come padded by one bin each side, ``xp (R, J, F + 2)`` and the power
    ``powp`` (padding -1, below any power); ``xp`` is overwritten. Every bin
    looks to its louder neighbour (itself at a local maximum of the power);
    taking that neighbour's value ``steps`` times climbs ``steps`` bins, 2
    being the half-width of a Hann window's main lobe. Selections as 0/1
    blends of values, not gathers or ``torch.where``: several times faster on a CPU.
    """
    left, right, centre = powp[..., :-2], powp[..., 2:], powp[..., 1:-1]
    up = torch.gt(right, left, out=torch.empty_like(centre))  # 0/1 weights, as floats
    stay = torch.le(torch.maximum(left, right), centre, out=torch.empty_like(centre))
    x = xp[..., 1:-1]
    for step in range(steps):
        toward = torch.lerp(xp[..., :-2], xp[..., 2:], up)  # 0/1 weights: a select
        x = torch.lerp(toward, x, stay, out=x if step < steps - 1 else toward)
    return x
