"""Data augmentation: batch modules on the training device, and Repitch with two backends.

Batch augmentations act on ``wav (B, S, C, T)`` (items, sources, channels,
samples) where the batch lives, only in training mode (``module.train()``),
as demucs' do. Each draws its randomness from a ``torch.Generator`` given to
the constructor or to ``forward`` (the global RNG when neither is):

    Shift(44100)            random start per stem (or per item), output T - shift
    FlipChannels()          swap left and right, per stem
    FlipSign()              multiply by -1, per stem
    Scale(1.0, 0.25, 1.25)  gain uniform in [min, max] per stem, with proba per batch
    Remix(1.0, 4)           permute each source across the items of a group of 4

Repitch (pitch in whole semitones, tempo a Gaussian % change) cuts every item
to ``int((1 - max_tempo / 100) * T)`` samples, repitched or not, so items
stack. Two backends, chosen by ``build_repitch(backend, ...)``:

- ``rubberband``: :class:`RubberbandRepitch`, per item in the data loader,
  Rubber Band in process through ``pedalboard.time_stretch``;
- ``vocoder``: :class:`VocoderRepitch`, the whole batch on the device with
  the torch phase vocoder of :mod:`labelnoise.vocoder`.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .vocoder import default_n_fft, repitch

__all__ = ["Shift", "FlipChannels", "FlipSign", "Scale", "Remix", "remix_permutation",
           "RubberbandRepitch", "VocoderRepitch", "build_repitch", "repitch_length", "BACKENDS"]


def _check_batch(wav: torch.Tensor, name: str) -> None:
    if wav.dim() != 4:
        raise ValueError(f"{name}: expected wav of shape (batch, sources, channels, time), "
                         f"got {tuple(wav.shape)}")


def _uniform(shape, generator: torch.Generator | None, device) -> torch.Tensor:
    """Uniform [0, 1) floats on ``device``, drawn from ``generator`` where it lives."""
    if generator is None:
        return torch.rand(shape, device=device)
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def _randint(high: int, shape, generator: torch.Generator | None, device) -> torch.Tensor:
    if generator is None:
        return torch.randint(high, shape, device=device)
    return torch.randint(high, shape, generator=generator, device=generator.device).to(device)


class _BatchAugment(nn.Module):
    """Holds the optional generator; ``forward(wav, generator=None)`` may override it."""

    def __init__(self, generator: torch.Generator | None = None):
        super().__init__()
        self.generator = generator

    def _gen(self, generator):
        return self.generator if generator is None else generator


class Shift(_BatchAugment):
    """Start each stem at a random offset in ``[0, shift)``; the output has ``T - shift`` samples.

    With ``same`` one offset per item (its stems stay aligned). In eval mode
    the output is the first ``T - shift`` samples.
    """

    def __init__(self, shift: int = 44100, same: bool = False, generator=None):
        super().__init__(generator)
        self.shift = int(shift)
        self.same = same

    def forward(self, wav: torch.Tensor, generator=None) -> torch.Tensor:
        _check_batch(wav, "Shift")
        B, S, C, T = wav.shape
        if self.shift <= 0:
            return wav
        if T <= self.shift:
            raise ValueError(f"Shift: {T} samples is not more than the shift of {self.shift}")
        length = T - self.shift
        if not self.training:
            return wav[..., :length]
        offsets = _randint(self.shift, (B, 1 if self.same else S, 1, 1), self._gen(generator), wav.device)
        index = torch.arange(length, device=wav.device) + offsets.expand(B, S, C, 1)
        return wav.gather(3, index)


class FlipChannels(_BatchAugment):
    """Swap the two channels of each stem with probability 1/2 (stereo only)."""

    def forward(self, wav: torch.Tensor, generator=None) -> torch.Tensor:
        _check_batch(wav, "FlipChannels")
        B, S, C, T = wav.shape
        if not self.training or C != 2:
            return wav
        flip = _randint(2, (B, S, 1, 1), self._gen(generator), wav.device).bool()
        return torch.where(flip, wav.flip(2), wav)


class FlipSign(_BatchAugment):
    """Multiply each stem by -1 with probability 1/2."""

    def forward(self, wav: torch.Tensor, generator=None) -> torch.Tensor:
        _check_batch(wav, "FlipSign")
        B, S = wav.shape[:2]
        if not self.training:
            return wav
        signs = _randint(2, (B, S, 1, 1), self._gen(generator), wav.device).to(wav.dtype)
        return wav * (2 * signs - 1)


class Scale(_BatchAugment):
    """With probability ``proba`` (one draw per batch), scale each stem by a gain uniform in [min, max]."""

    def __init__(self, proba: float = 1.0, min: float = 0.25, max: float = 1.25, generator=None):
        super().__init__(generator)
        self.proba, self.min, self.max = proba, min, max

    def forward(self, wav: torch.Tensor, generator=None) -> torch.Tensor:
        _check_batch(wav, "Scale")
        B, S = wav.shape[:2]
        gen = self._gen(generator)
        if not self.training or float(_uniform((), gen, "cpu")) >= self.proba:
            return wav
        gains = self.min + (self.max - self.min) * _uniform((B, S, 1, 1), gen, wav.device)
        return wav * gains.to(wav.dtype)


def remix_permutation(batch: int, sources: int, group_size: int | None = 4,
                      generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Which item each stem comes from after a remix: ``perm (batch, sources)``.

    Items are split into consecutive groups of ``group_size`` (the whole batch
    when None or 0); in every group each source is permuted independently, so
    output item ``b`` takes source ``s`` from input item ``perm[b, s]``, an
    item of the same group. Groups keep the chance that two stems of one song
    meet again the same whatever the number of GPUs.
    """
    group = group_size or batch
    if batch % group:
        raise ValueError(f"Remix: batch size {batch} is not divisible by the group size {group}")
    groups = batch // group
    keys = _uniform((groups, group, sources), generator, device)
    order = keys.argsort(dim=1)  # a uniform random permutation per (group, source)
    starts = (torch.arange(groups, device=order.device) * group)[:, None, None]
    return (order + starts).reshape(batch, sources)


class Remix(_BatchAugment):
    """With probability ``proba`` (per batch), rebuild items from the stems of others in their group.

    ``forward(wav, return_perm=True)`` also returns ``perm (B, S)``: output
    item ``b``'s source ``s`` is input item ``perm[b, s]``'s (the identity
    when not remixed), so training can follow where each stem came from.
    """

    def __init__(self, proba: float = 1.0, group_size: int | None = 4, generator=None):
        super().__init__(generator)
        self.proba, self.group_size = proba, group_size

    def forward(self, wav: torch.Tensor, generator=None, return_perm: bool = False):
        _check_batch(wav, "Remix")
        B, S, C, T = wav.shape
        gen = self._gen(generator)
        if self.training and float(_uniform((), gen, "cpu")) < self.proba:
            perm = remix_permutation(B, S, self.group_size, gen, wav.device)
            wav = wav.gather(0, perm[:, :, None, None].expand(B, S, C, T))
        else:
            perm = torch.arange(B, device=wav.device)[:, None].expand(B, S)
        return (wav, perm) if return_perm else wav


def repitch_length(length: int, max_tempo: float = 12) -> int:
    """Samples left after Repitch: ``int((1 - max_tempo / 100) * length)`` (0.88 x at 12 %)."""
    return int((1 - 0.01 * max_tempo) * length)


class _RepitchParams:
    """The draw shared by both backends (demucs' RepitchedWrapper semantics)."""

    def __init__(self, samplerate: int, *, proba: float = 0.2, max_pitch: int = 2,
                 max_tempo: float = 12, tempo_std: float = 5, same_for_all: bool = True,
                 fast: bool = True):
        if not 0 <= max_tempo < 100:
            raise ValueError(f"Repitch: max_tempo must be in [0, 100) %, got {max_tempo}")
        self.samplerate = int(samplerate)
        self.proba = proba
        self.max_pitch = int(max_pitch)
        self.max_tempo = max_tempo
        self.tempo_std = tempo_std
        self.same_for_all = same_for_all
        self.fast = fast

    def extra_repr(self) -> str:
        return (f"samplerate={self.samplerate}, proba={self.proba}, max_pitch={self.max_pitch}, "
                f"max_tempo={self.max_tempo}, tempo_std={self.tempo_std}, "
                f"same_for_all={self.same_for_all}")


class RubberbandRepitch(_RepitchParams):
    """Repitch one item in the data loader with Rubber Band, in process (``pedalboard``).

    ``same_for_all`` (Part 1): with probability ``proba`` per item, one pitch
    and tempo for all its stems. Otherwise (Part 2): the draw is per stem.
    Pitch is a uniform integer in ``[-max_pitch, max_pitch]`` semitones; the
    tempo changes by ``gauss(0, tempo_std)`` % clipped to ``+/- max_tempo``.
    ``fast`` selects Rubber Band's R2 engine (the CLI's ``--fast``), else R3.
    Formants are not preserved, as with the CLI's defaults.

    Call: ``(stems (S, C, T) float32, rng: np.random.Generator) -> (S, C, int(0.88 T))``
    (numpy in, numpy out; a torch tensor in gives a torch tensor out).
    """

    def draw(self, sources: int, rng: np.random.Generator):
        """``(apply (S,) bool, semitones (S,) int, tempo (S,) % float)`` for one item."""
        n = 1 if self.same_for_all else sources
        apply = rng.random(n) < self.proba
        semis = rng.integers(-self.max_pitch, self.max_pitch + 1, size=n)
        tempo = np.clip(rng.normal(0.0, self.tempo_std, size=n), -self.max_tempo, self.max_tempo)
        if self.same_for_all:
            apply, semis, tempo = (np.repeat(a, sources) for a in (apply, semis, tempo))
        return apply, semis, tempo

    def __call__(self, stems, rng: np.random.Generator):
        import pedalboard  # imported here: only loader workers of this backend need it

        as_torch = isinstance(stems, torch.Tensor)
        wav = stems.numpy() if as_torch else np.asarray(stems)
        if wav.ndim != 3:
            raise ValueError(f"RubberbandRepitch: expected stems of shape (sources, channels, time), "
                             f"got {wav.shape}")
        S, C, T = wav.shape
        out_len = repitch_length(T, self.max_tempo)
        out = np.array(wav[..., :out_len], dtype=np.float32)
        for s, (apply, semi, tempo) in enumerate(zip(*self.draw(S, rng))):
            if not apply or (semi == 0 and tempo == 0):
                continue
            moved = pedalboard.time_stretch(
                np.ascontiguousarray(wav[s], dtype=np.float32), float(self.samplerate),
                stretch_factor=1 + 0.01 * float(tempo), pitch_shift_in_semitones=float(semi),
                high_quality=not self.fast, preserve_formants=False)
            n = min(out_len, moved.shape[-1])  # never short at |tempo| <= max_tempo; be safe
            out[s, :, :n] = moved[:, :n]
            out[s, :, n:] = 0
        return torch.from_numpy(out) if as_torch else out


class VocoderRepitch(_RepitchParams, nn.Module):
    """Repitch a batch ``(B, S, C, T)`` on its device with the torch phase vocoder.

    Same draw as :class:`RubberbandRepitch` (``fast`` is accepted so configs
    can switch backends, and ignored). Returns ``(B, S, C, int(0.88 T))``;
    in eval mode it only cuts.
    """

    def __init__(self, samplerate: int, *, generator: torch.Generator | None = None, **params):
        nn.Module.__init__(self)
        _RepitchParams.__init__(self, samplerate, **params)
        self.generator = generator
        self.n_fft = default_n_fft(self.samplerate)

    def draw(self, batch: int, sources: int, generator=None):
        """``(apply, semitones, tempo %)``, each ``(batch, sources)`` on the generator's device (CPU)."""
        gen = self.generator if generator is None else generator
        n = 1 if self.same_for_all else sources
        apply = _uniform((batch, n), gen, "cpu") < self.proba
        semis = _randint(2 * self.max_pitch + 1, (batch, n), gen, "cpu") - self.max_pitch
        normal = (torch.randn((batch, n)) if gen is None else
                  torch.randn((batch, n), generator=gen, device=gen.device).cpu())
        tempo = (normal * self.tempo_std).clamp(-self.max_tempo, self.max_tempo)
        return tuple(t.expand(batch, sources) for t in (apply, semis, tempo))

    def forward(self, wav: torch.Tensor, generator=None) -> torch.Tensor:
        _check_batch(wav, "VocoderRepitch")
        B, S, C, T = wav.shape
        out_len = repitch_length(T, self.max_tempo)
        out = wav[..., :out_len].clone()
        if not self.training:
            return out
        apply, semis, tempo = self.draw(B, S, generator)
        apply = apply & ((semis != 0) | (tempo != 0))
        if not bool(apply.any()):
            return out
        mask = apply.to(wav.device)
        moved = repitch(wav[mask], semis[apply].float()[:, None].to(wav.device),
                        (1 + 0.01 * tempo[apply])[:, None].to(wav.device),
                        length=out_len, n_fft=self.n_fft, stereo=True)  # one phase per stem
        out[mask] = moved.to(out.dtype)
        return out


BACKENDS = {"rubberband": RubberbandRepitch, "vocoder": VocoderRepitch}


def build_repitch(backend: str, samplerate: int, **params):
    """The Repitch of ``backend`` (``rubberband`` or ``vocoder``) with the config's parameters."""
    if backend not in BACKENDS:
        raise ValueError(f"Repitch: unknown backend {backend!r}; choose one of {sorted(BACKENDS)}")
    return BACKENDS[backend](samplerate, **params)
