"""Apply a separation model, or a bag of models, to a whole track.

Two ways to cut a track into pieces the model can take:

- ``mode="overlap"`` (the default, what ``demucs.apply.apply_model`` does):
  segments of the model's segment length every ``(1 - overlap)`` segments,
  each given its real neighbouring audio as context up to the model's valid
  length (zeros past the track's ends), blended with triangular weights; with
  ``shifts > 0`` the track is also delayed by random offsets of up to 0.5 s and
  the delayed estimates averaged. Same model and input, ``shifts=0``: equal to
  ``apply_model`` to float precision.
- ``mode="plain"`` (the original's second filter): the input is normalised by
  the mean and standard deviation of its mono mix, cut into back-to-back chunks
  of ``segment`` seconds (the last zero-padded), and the estimates are scaled
  back.

A model is any ``nn.Module`` with ``sources``, ``samplerate``,
``audio_channels``, ``segment`` (seconds) and ``forward((B, C, T)) -> (B, S, C, T)``;
a ``labelnoise.bag.Bag`` mixes several with per-source weights. Chunks are
batched on ``device``; the result lands on the input's device.
"""
from __future__ import annotations

import contextlib
import random
from typing import Sequence

import torch
import torch.nn.functional as F
from .progress import bar as progress_bar
from torch import nn

from .bag import Bag

MODES = ("overlap", "plain")
PRECISIONS = ("float32", "bf16")
MAX_SHIFT_SECONDS = 0.5


def apply(model: nn.Module, mix: torch.Tensor, *, segment: float | None = None,
          overlap: float = 0.25, shifts: int = 0, batch_size: int | None = None,
          device: str | torch.device | None = None, progress: bool = False,
          precision: str = "float32", mode: str = "overlap",
          rng: random.Random | None = None, standardize: bool = False) -> torch.Tensor:
    """Separate ``mix`` ``(C, T)`` or ``(B, C, T)`` into ``(S, C, T)`` / ``(B, S, C, T)``.

    ``segment`` (seconds) overrides the model's (a bag's own ``segment:`` comes
    next); it may not exceed what a model with ``use_train_segment`` accepts.
    ``rng`` draws the shift offsets (``None``: the ``random`` module, so
    ``random.seed(n)`` makes a run repeatable, as with ``apply_model``).
    ``precision="bf16"`` runs the models under bf16 autocast (meant for CUDA).
    ``standardize`` separates ``(mix - mean) / std`` of the mono mix over the
    whole track and scales the estimates back, as the demucs CLI does (plain
    mode always does).
    ``batch_size`` chunks go through the model at once; by default 1 on CPU
    (bigger batches measured no faster there) and 4 elsewhere.
    Every model is moved to ``device`` (default: the input's) and run in eval
    mode; its train/eval flag is restored afterwards.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    device = torch.device(device) if device is not None else mix.device
    if batch_size is None:
        batch_size = 1 if device.type == "cpu" else 4
    if shifts < 0 or batch_size < 1:
        raise ValueError(f"need shifts >= 0 and batch_size >= 1, got {shifts} and {batch_size}")
    if mode == "plain" and shifts:
        raise ValueError("plain mode has no shifts; use mode='overlap' for shifts > 0")
    if mix.dim() not in (2, 3):
        raise ValueError(f"mix must be (channels, time) or (batch, channels, time), got {tuple(mix.shape)}")
    unbatched = mix.dim() == 2
    if unbatched:
        mix = mix[None]
    if mix.shape[1] != model.audio_channels:
        raise ValueError(f"mix has {mix.shape[1]} channels, the model takes {model.audio_channels}")
    if mix.shape[-1] == 0:
        raise ValueError("mix is empty (0 samples)")
    mix = mix.float()

    if isinstance(model, Bag):
        members = list(zip(model.models, model.weights))
        if segment is None:
            segment = model.segment_override
    else:
        members = [(model, None)]
    rng = rng or random
    max_shift = int(MAX_SHIFT_SECONDS * model.samplerate)
    # All offsets are drawn first, model by model, so the progress bar knows
    # its total. (apply_model draws each just before its pass, and demucs'
    # transformer draws from `random` too: equal seeds give different offsets.)
    offsets = [[rng.randint(0, max_shift) for _ in range(shifts)] for _ in members]
    runner = _Runner(device, batch_size, precision)

    if mode == "plain" or standardize:
        mix, mean, std = _normalise(mix)
    total = sum(_count_forwards(m, mix.shape[-1], segment, overlap, offs, max_shift, mode)
                for (m, _), offs in zip(members, offsets))
    with progress_bar(total=total, unit="chunk", disable=not progress, leave=False,
                   desc="separating") as bar:
        runner.bar = bar
        # Bag estimates are summed as they come (one track-sized tensor at a time).
        weighted, total = 0.0, 0.0
        for (member, weights), offs in zip(members, offsets):
            was_training = member.training
            member.to(device).eval()
            try:
                if mode == "plain":
                    out = _apply_plain(member, mix, segment, runner)
                else:
                    out = _apply_shifted(member, mix, segment, overlap, offs, max_shift, runner)
            finally:
                member.train(was_training)
            if weights is None:
                weighted, total = out, 1.0
                continue
            # Per source: the weighted sum over models over the source's total weight.
            w = torch.tensor(weights, dtype=out.dtype, device=out.device)[None, :, None, None]
            weighted = weighted + out * w
            total = total + w
            del out
    estimate = weighted / total if members[0][1] is not None else weighted
    if mode == "plain" or standardize:
        estimate = estimate * std[:, None] + mean[:, None]
    return estimate[0] if unbatched else estimate


class _Runner:
    """Runs batches of chunks through a model on one device, counting progress."""

    def __init__(self, device: torch.device, batch_size: int, precision: str):
        self.device = device
        self.batch_size = batch_size
        self.bf16 = precision == "bf16"
        self.bar = None

    def run(self, model: nn.Module, chunks: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Model outputs for equally long ``chunks`` (each ``(B, C, L)``), in one batch."""
        batch = torch.cat(list(chunks)).to(self.device)
        with torch.no_grad(), self._autocast():
            res = model(batch).float()
        if self.bar is not None:
            self.bar.update(len(chunks))
        return res.to(chunks[0].device).split(chunks[0].shape[0])

    def _autocast(self):
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)


def _segment_length(model: nn.Module, segment: float | None) -> tuple[int, int | None]:
    """(segment length in samples, valid length forced by an explicit segment or None)."""
    if segment is None:
        return int(model.samplerate * model.segment), None
    if segment <= 0:
        raise ValueError(f"segment must be positive, got {segment}")
    length = int(segment * model.samplerate)
    if getattr(model, "use_train_segment", False):
        # HTDemucs in eval mode cannot take more than its training length.
        limit = int(model.segment * model.samplerate)
        if length > limit:
            raise ValueError(f"segment {segment} s is longer than the model's segment "
                             f"{float(model.segment):.2f} s")
    return length, length


def _valid_length(model: nn.Module, forced: int | None, length: int) -> int:
    # The input length the model wants for a chunk of ``length`` samples.
    if forced is not None:
        return forced
    if hasattr(model, "valid_length"):
        return model.valid_length(length)
    return length


def _count_forwards(model, length, segment, overlap, offsets, max_shift, mode) -> int:
    if mode == "plain":
        return -(-length // _plain_length(model, segment))
    seg_len, _ = _segment_length(model, segment)
    stride = max(1, int((1 - overlap) * seg_len))
    if not offsets:
        return len(range(0, length, stride))
    return sum(len(range(0, length + max_shift - off, stride)) for off in offsets)


def _apply_shifted(model, mix, segment, overlap, offsets, max_shift, runner) -> torch.Tensor:
    length = mix.shape[-1]
    if not offsets:
        return _overlap_add(model, mix, 0, length, segment, overlap, runner)
    # Zeros of max_shift on each side; a window starting at ``off`` delays the
    # track by ``max_shift - off`` samples, which the crop below undoes.
    padded = F.pad(mix, (max_shift, max_shift))
    out = 0.0
    for off in offsets:
        est = _overlap_add(model, padded, off, length + max_shift - off, segment, overlap, runner)
        out = out + est[..., max_shift - off:]
    return out / len(offsets)


def _overlap_add(model, src, start, length, segment, overlap, runner) -> torch.Tensor:
    """Estimate of ``src[..., start:start + length]``, seeing ``src`` around it as context."""
    seg_len, forced = _segment_length(model, segment)
    stride = int((1 - overlap) * seg_len)
    if stride < 1:
        raise ValueError(f"segment of {seg_len} samples with overlap {overlap} leaves no stride")
    # Triangle peaking mid-segment, max 1: with overlap < 50 % the cross-fades are linear.
    half = seg_len // 2
    weight = torch.cat([torch.arange(1, half + 1, device=src.device),
                        torch.arange(seg_len - half, 0, -1, device=src.device)])
    weight = weight / weight.max()

    jobs = []  # (offset in window, chunk length, model input length)
    for offset in range(0, length, stride):
        chunk_len = min(length - offset, seg_len)
        jobs.append((offset, chunk_len, _valid_length(model, forced, chunk_len)))

    batch, channels = src.shape[:2]
    out = torch.zeros(batch, len(model.sources), channels, length, device=src.device)
    sum_weight = torch.zeros(length, device=src.device)
    # Chunks are cut and blended one batch at a time, so memory stays at one
    # batch of model inputs and outputs whatever the track length.
    for group in _groups(jobs, runner.batch_size):
        inputs = [_context_slice(src, start + offset, chunk_len, valid)
                  for offset, chunk_len, valid in group]
        for (offset, chunk_len, _), res in zip(group, runner.run(model, inputs)):
            # The chunk sits centred in the model input; cut it back out.
            left = (res.shape[-1] - chunk_len) // 2
            res = res[..., left:left + chunk_len]
            out[..., offset:offset + chunk_len] += weight[:chunk_len] * res
            sum_weight[offset:offset + chunk_len] += weight[:chunk_len]
    return out / sum_weight


def _groups(jobs: list, size: int) -> list[list]:
    """Consecutive runs of at most ``size`` jobs with the same model input length."""
    groups: list[list] = []
    for job in jobs:
        if groups and len(groups[-1]) < size and groups[-1][-1][2] == job[2]:
            groups[-1].append(job)
        else:
            groups.append([job])
    return groups


def _context_slice(src: torch.Tensor, pos: int, length: int, target: int) -> torch.Tensor:
    """``target`` samples of ``src`` centred on ``src[..., pos:pos + length]``, zeros outside."""
    if target < length:
        raise ValueError(f"model valid length {target} is shorter than the chunk ({length})")
    begin = pos - (target - length) // 2
    end = begin + target
    total = src.shape[-1]
    lo, hi = max(0, begin), min(total, end)
    return F.pad(src[..., lo:hi], (lo - begin, end - hi))


def _normalise(mix: torch.Tensor):
    mono = mix.mean(dim=1)
    mean = mono.mean(dim=-1, keepdim=True)[:, None]
    std = mono.std(dim=-1, keepdim=True)[:, None]
    # A silent (or one-sample) track has no spread; leave its scale alone.
    std = torch.where(torch.isfinite(std) & (std > 0), std, torch.ones_like(std))
    return (mix - mean) / std, mean, std


def _plain_length(model, segment) -> int:
    seg_len, _ = _segment_length(model, segment)  # checks the segment
    if segment is not None:
        # Rounded, not truncated: 8.68 s at 44.1 kHz must be 382788 samples.
        seg_len = int(round(segment * model.samplerate))
    return seg_len


def _apply_plain(model, mix, segment, runner) -> torch.Tensor:
    seg_len = _plain_length(model, segment)
    length = mix.shape[-1]
    padded = F.pad(mix, (0, -length % seg_len))
    chunks = padded.split(seg_len, dim=-1)
    outs = []
    for i in range(0, len(chunks), runner.batch_size):
        outs.extend(runner.run(model, chunks[i:i + runner.batch_size]))
    return torch.cat(outs, dim=-1)[..., :length]
