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
   ``out_hop`` makes the shorter of the two frame lengths overlap 3 times
   (``n_fft / hop``), the longer one more;
2. phase vocoder: each bin's frequency comes from the phase change between
   consecutive analysis frames; output phases advance at that frequency
   times ``f`` and are locked to the spectral peak each bin belongs to. All
   this only decides one rotation per bin, applied to the analysis spectrum
   as a complex product (no magnitudes, one atan2, one cos and sin per bin);
   with ``stereo=True`` it is computed once from the channels' sum and turns
   every channel, which keeps the stereo image and halves the phase work.
   Bins that would land above the output's Nyquist (pitch up) are dropped
   before any of it;
3. each frame goes back through an inverse FFT of ``n_out`` points, which
   resamples it by ``n_in / n_out ~= f`` (the pitch change), and frames are
   overlap-added ``out_hop`` apart.

Sizes come from :func:`frame_sizes` (fast FFT lengths, pitch within 1 cent).
Rows that share a pitch share sizes, so a batch is processed in at most one
group per distinct semitone value. Frames go through buffers reused from step
to step (see :func:`_repitch_group`): on a GPU all items of a group at once,
``BATCH_FRAMES_PER_STEP`` frames per step; on a CPU one item at a time,
``FRAMES_PER_STEP`` frames per step. Samples and spectra are
float32 (autocast off); only per-frame and per-bin phase offsets are reduced
mod 2 pi in float64.

Three overlaps, not the usual four: on synthetic stems scored against an
ideal reference (the same notes made in the new key and tempo,
``bench/vocoder_quality.py``) four scored no better, and three do a quarter
less work at a pitch rise; docs/BENCHMARKS.md has the figures.

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
FRAMES_PER_STEP = 64  # on a CPU, one item at a time: a step's spectra (~0.5 MB each) stay in cache
BATCH_FRAMES_PER_STEP = 8192  # on a GPU, over all items of a pass: ~1 GB of buffers at n_fft 2048


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
    the hop at unchanged pitch (``n_fft // 3`` by default); with a pitch
    change, the shorter of the analysis and synthesis frames keeps the
    overlap ``n_fft / hop``.

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
    hop = n_fft // 3 if hop is None else hop
    if not 0 < hop <= n_fft // 2:
        raise ValueError(f"repitch: hop {hop} must be in [1, n_fft / 2 = {n_fft // 2}]")
    lead, T = wav.shape[:-1], wav.shape[-1]
    C = wav.shape[-2] if stereo else 1
    items = wav.reshape(-1, C, T).float()  # (N, C, T): one phase computation per item
    device = items.device
    semis = torch.as_tensor(semitones, dtype=torch.float32, device=device).broadcast_to(lead).reshape(-1, C)
    tempo = torch.as_tensor(tempo, dtype=torch.float32, device=device).broadcast_to(lead).reshape(-1, C)
    if semis.numel() and not bool((tempo > 0).all()):
        raise ValueError(f"repitch: tempo factors must be > 0, got {tempo.tolist()}")
    if C > 1 and not bool(((semis == semis[:, :1]) & (tempo == tempo[:, :1])).all()):
        raise ValueError("repitch: with stereo=True, semitones and tempo must be the same "
                         "for every channel of an item")
    semis, tempo = semis[:, 0], tempo[:, 0]
    if length is None:
        length = int(T / float(tempo.max())) if tempo.numel() else T
    out = items.new_empty(items.shape[0], C, length)
    if items.shape[0] == 0 or length == 0:
        return out.reshape(*lead, length)

    # Items asking for no change are copied: the vocoder would only blur them.
    identity = (semis == 0) & (tempo == 1)
    keep = min(length, T)
    out[identity, :, :keep] = items[identity, :, :keep]
    out[identity, :, keep:] = 0
    todo = ~identity
    with torch.autocast(device_type=device.type, enabled=False):
        # One pass per distinct pitch: the synthesis frame length depends on it.
        for semi in torch.unique(semis[todo]).tolist():
            group = (todo & (semis == semi)).nonzero().flatten()
            _repitch_group(items, group, semi, tempo, length, n_fft, hop, out)
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
    out_hop = max(1, round(hop * min(n_in, n_out) / n_fft))  # the shorter frame overlaps n_fft / hop times
    blocks = -(-n_out // out_hop)
    ana = torch.hann_window(n_in, device=device)
    # irfft divides by n_out, not by the n_in of the forward FFT: undo the gain of n_in / n_out.
    syn = torch.hann_window(n_out, device=device) / pitch
    return n_in, n_out, out_hop, blocks, pitch, ana, syn


def _repitch_group(items, group, semi: float, tempo, length: int, n_fft: int, hop: int, out,
                   one_by_one: bool | None = None):
    """``items[group] (I, C, T)`` at one pitch, ``tempo[group]``, written to ``out[group] (I, C, length)``.

    One STFT and one ISTFT; the phase work runs once per item, on the sum of
    its C channels (the mid), and its result, one unit rotation per bin,
    turns every channel. Frames go through buffers allocated once per
    group, a step of frames at a time, the running phase carried from step
    to step. On a GPU the whole group is one pass, in steps of
    BATCH_FRAMES_PER_STEP frames over all its items (a bound on memory). On
    a CPU items go one at a time, FRAMES_PER_STEP frames per step: there a
    fresh tensor costs more in page faults than the arithmetic written into
    it, and a step's buffers stay in cache (``one_by_one`` overrides the
    choice of device).
    """
    _, C, T = items.shape
    device = items.device
    one_by_one = device.type == "cpu" if one_by_one is None else one_by_one
    n_in, n_out, out_hop, blocks, pitch, ana, syn = _plan(float(semi), n_fft, hop, device)
    half, F = n_in // 2, n_in // 2 + 1
    # Output frame j is centred on output sample j * out_hop and reads the
    # input around sample j * gap, gap = out_hop * tempo rounded to whole
    # samples (so tempo is kept to within 0.5 / out_hop, under 0.15 %): a
    # constant hop makes the analysis frames a strided view of the input.
    # Frames run until half a frame past `length`; past the input they read zeros.
    J = -(-(length + n_out // 2) // out_hop) + 1
    gaps = (tempo[group].double() * out_hop).round_().clamp_(min=1)  # (items in group,)
    pad_end = max(n_in, int(gaps.max()) * (J - 1) + n_in - T - half)
    if one_by_one:  # slices: views of the input and the output
        steps = [(slice(i, i + 1), gaps[n:n + 1]) for n, i in enumerate(group.tolist())]
    else:
        steps = [(group, gaps)]
    I = 1 if one_by_one else group.numel()
    S = min(J, FRAMES_PER_STEP if one_by_one else max(FRAMES_PER_STEP, BATCH_FRAMES_PER_STEP // I))
    R = I * C
    # Bins past n_out / 2 would land above the output's Nyquist (pitch up):
    # only Fs bins are synthesised, and the phase work covers Fw = Fs + 2,
    # the two more that phase locking reads.
    Fs = min(F, n_out // 2 + 1)
    Fw = min(F, Fs + 2)
    k = torch.arange(Fw, device=device, dtype=torch.float64)

    new = lambda *shape: items.new_empty(*shape)
    padded = items.new_zeros(I, C, half + T + pad_end)  # the input between zeros
    windowed = new(I, C, S, n_in)
    # The mid's real and imaginary parts, row 0 holding the previous step's
    # last frame, contiguous (strided elementwise math is slow on a CPU).
    mid_re, mid_im = new(I, S + 1, Fw), new(I, S + 1, Fw)
    z_re, z_im, dev, total = new(I, S, Fw), new(I, S, Fw), new(I, S, Fw), new(I, S, Fw)
    # Power and rotation between two border bins each, which the peak search
    # of _at_peaks reads: power -1 (below any), rotation 0.
    power, rot = new(I, S, Fw + 2), new(I, S, Fw + 2)
    power[..., 0] = power[..., -1] = -1.0
    rot[..., 0] = rot[..., -1] = 0.0
    peak_buffers = [new(I, S, Fw) for _ in range(3)]
    cos, sin = new(I, S, Fs), new(I, S, Fs)
    turn = items.new_empty(I, S, Fs, dtype=torch.complex64)
    carry = new(I, 1, Fw)  # running sum of dev over the frames before the step
    # Overlap-add target: frame j covers blocks j .. j + blocks - 1 of out_hop samples.
    sums = new(R, J + blocks - 1, out_hop)
    env = _envelope(n_out, out_hop, blocks, J, syn * pitch)
    start = n_out // 2  # frame 0's centre is output sample 0

    for rows, gap in steps:
        g = gap.long()
        padded[..., half:half + T] = items[rows]
        if bool((g == g[0]).all()):
            frames = padded.unfold(-1, n_in, int(g[0]))  # (I, C, >= J, n_in), a view
            frames_at = lambda j0, n: frames[:, :, j0:j0 + n]
        else:  # one view per hop would need a loop: gather the frames instead
            every = padded.unfold(-1, n_in, 1)
            at = torch.arange(I, device=device)[:, None, None], torch.arange(C, device=device)[:, None]
            frames_at = lambda j0, n: every[at[0], at[1], torch.arange(j0, j0 + n, device=device) * g[:, None, None]]

        # The output phase of a bin is its analysis phase plus a rotation `rot`.
        # Phase vocoder: output phases advance at each bin's own frequency times
        # `pitch` over out_hop, analysis phases by that frequency over `gap`; the
        # frequency is the bin centre plus `dev / gap`, dev being the phase change
        # between consecutive analysis frames past the centre's, wrapped to
        # [-pi, pi]. Over frame j, for bin k:
        #   rot_j - rot_{j-1} = [out_hop 2 pi k / n_out + pitch out_hop / gap dev] - [gap 2 pi k / n_in + dev]
        # The bin-centre terms sum to 2 pi k j (out_hop / n_out - gap / n_in),
        # reduced mod 1 in float64 per frame; only (pitch out_hop / gap - 1) dev is summed.
        centre_turn = ((gap[:, None, None] * k / n_in).frac_() * TWO_PI).float()  # (I, 1, Fw), in [0, 2 pi)
        scale = ((pitch * out_hop) / gap - 1).float()[:, None, None]
        frame_turn = torch.arange(J, device=device, dtype=torch.float64) * (out_hop / n_out - gap[:, None] / n_in)
        frame_turn = (frame_turn.frac_() * TWO_PI).float()[..., None]  # (I, J, 1)
        k32 = k.float()
        carry.zero_()
        sums.zero_()

        for j0 in range(0, J, S):
            n = min(S, J - j0)
            sp = torch.fft.rfft(torch.mul(frames_at(j0, n), ana, out=windowed[:, :, :n]), dim=-1)  # (I, C, n, F)
            used = sp[..., :Fw]
            re, im = mid_re[:, 1:n + 1], mid_im[:, 1:n + 1]
            if C == 1:
                re.copy_(used.real[:, 0])
                im.copy_(used.imag[:, 0])
            elif C == 2:
                torch.add(used.real[:, 0], used.real[:, 1], out=re)
                torch.add(used.imag[:, 0], used.imag[:, 1], out=im)
            else:
                torch.sum(used.real, dim=1, out=re)
                torch.sum(used.imag, dim=1, out=im)
            if j0 == 0:  # frame 0 against itself: no phase change
                mid_re[:, 0], mid_im[:, 0] = mid_re[:, 1], mid_im[:, 1]
            pw = power[:, :n]
            torch.mul(re, re, out=pw[..., 1:-1]).addcmul_(im, im)
            # Phase change from frame j-1 to j: the angle of X_j conj(X_{j-1}), in real arithmetic.
            prev_re, prev_im = mid_re[:, :n], mid_im[:, :n]
            zr = torch.mul(re, prev_re, out=z_re[:, :n]).addcmul_(im, prev_im)
            zi = torch.mul(im, prev_re, out=z_im[:, :n]).addcmul_(re, prev_im, value=-1.0)
            d = torch.atan2(zi, zr, out=dev[:, :n]).sub_(centre_turn)  # in (-3 pi, pi]
            d.add_(torch.lt(d, -math.pi, out=zr), alpha=TWO_PI)  # wrapped to [-pi, pi]
            if j0 == 0:
                d[:, 0] = 0
            mid_re[:, 0], mid_im[:, 0] = mid_re[:, n], mid_im[:, n]
            run = torch.cumsum(d, dim=1, out=total[:, :n]).add_(carry)
            carry.copy_(run[:, -1:])
            rt = rot[:, :n]
            torch.mul(run, scale, out=rt[..., 1:-1]).addcmul_(frame_turn[:, j0:j0 + n], k32)  # frame 0: no turn

            # Identity phase locking: each bin keeps its analysis phase offset to
            # the peak it belongs to, so takes that peak's rotation.
            locked = _at_peaks(rt, pw, [b[:, :n] for b in peak_buffers])[..., :Fs]
            tn = torch.complex(torch.cos(locked, out=cos[:, :n]), torch.sin(locked, out=sin[:, :n]),
                               out=turn[:, :n])

            # Inverse FFT at n_out: each frame resampled by `pitch` on the way out,
            # then windowed and overlap-added block by block (out_hop samples each).
            wv = torch.fft.irfft(torch.mul(sp[..., :Fs], tn[:, None]), n=n_out, dim=-1).reshape(R, n, n_out)
            for b in range(blocks):
                cut = slice(b * out_hop, min((b + 1) * out_hop, n_out))
                sums[:, j0 + b:j0 + b + n, :cut.stop - cut.start].addcmul_(wv[:, :, cut], syn[cut])

        normalised = sums.reshape(I, C, -1)[..., start:start + length]
        if one_by_one:  # rows is a slice: divide straight into the output
            torch.div(normalised, env[start:start + length], out=out[rows])
        else:
            out[rows] = normalised / env[start:start + length]


def _envelope(n_out: int, out_hop: int, blocks: int, J: int, window):
    """Sum of the squared window over the overlap-added frames, floored at 1e-3."""
    env = window.new_zeros(J + blocks - 1, out_hop)
    wsq = window ** 2  # analysis window (resampled to n_out: a Hann window of n_out) times synthesis window
    for b in range(blocks):
        cut = slice(b * out_hop, min((b + 1) * out_hop, n_out))
        env[b:b + J, :cut.stop - cut.start] += wsq[cut]
    return env.reshape(-1).clamp_(min=1e-3)


def _at_peaks(xp, powp, buffers, steps: int = 2):
    """``x (R, J, F)`` read at the spectral peak each bin belongs to.

    Both come padded by one bin each side, ``xp (R, J, F + 2)`` and the power
    ``powp`` (padding -1, below any power); ``xp`` is overwritten; three
    ``(R, J, F)`` ``buffers`` hold the intermediates. Every bin looks to its
    louder neighbour (itself at a local maximum of the power); taking that
    neighbour's value ``steps`` times climbs ``steps`` bins, 2 being the
    half-width of a Hann window's main lobe. Selections as 0/1 blends of
    values, not gathers or ``torch.where``: several times faster on a CPU.
    """
    up, stay, toward = buffers
    left, right, centre = powp[..., :-2], powp[..., 2:], powp[..., 1:-1]
    torch.gt(right, left, out=up)  # 0/1 weights, as floats
    torch.le(torch.maximum(left, right, out=stay), centre, out=stay)
    x = xp[..., 1:-1]
    for step in range(steps):
        torch.lerp(xp[..., :-2], xp[..., 2:], up, out=toward)  # 0/1 weights: a select
        x = torch.lerp(toward, x, stay, out=x if step < steps - 1 else toward)
    return x
