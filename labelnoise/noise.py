"""Label noise: which stems of a track are wrong, how, and the stems as written with their labels.

``KINDS`` registers every kind of label noise, in the order weights and
draws use: how a track's plan draws it (``applies``, ``plan``), how it is
made (``make`` on one stem, then ``finish`` for the kinds that move content
between stems), which render backends can make it (``renders``), and whether
a filter that judges each stem alone can see it (``blind``,
``blind_below_db``; labelnoise.filter_report). Adding a kind is one entry
here (and its words in labelnoise.synth's docstring, which describes the
labels). ``labelnoise.synth`` draws a plan per track (``draw_noise``) and
applies it to the clean stems of either render backend (``noisy_track``);
``misgroup`` is made by ``labelnoise.sampled.misgroup``, the one backend with
several recordings per stem.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from . import SOURCES


@dataclass
class Draw:
    """What a track offers the noise kinds while its plan is drawn (``draw_noise``)."""
    rng: np.random.Generator
    tracks: int                        # in the set: another song's stem needs two
    receivers: list[str]               # clean stems that can take a silent stem's content
    spare: dict[str, list[int]] = field(default_factory=dict)   # per clean stem: its recordings not yet moved

    @property
    def donors(self) -> list[str]:
        """Clean stems that can give a recording and keep one of their own."""
        return [d for d in self.spare if len(self.spare[d]) > 1]


@dataclass
class NoisyTrack:
    """One track while its plan is applied (``noisy_track``): the clean stems, the stems as written, the labels."""
    index: int
    tracks: int
    names: list[str]
    clean: np.ndarray                  # (4, C, T), SOURCES order
    stems: np.ndarray                  # what is written; starts as a copy of clean
    labels: dict[str, dict]
    rng: np.random.Generator
    samplerate: int
    source_of: Callable                # (track index, source) -> another track's clean source
    leak_of: Callable | None           # (wav, rng) -> how a bleeding source sounds in this stem


@dataclass(frozen=True)
class NoiseKind:
    """One kind of label noise: how a plan draws it, how it is made, and what a one-stem filter sees of it."""
    make: Callable | None = None       # (track, stem, label): write the stem, add the label's fields
    finish: Callable | None = None     # (track, stem, plan entry): after every make, for content moved between stems
    applies: Callable[[Draw], bool] = lambda draw: True   # else the stem draws again among those that apply
    plan: Callable[[Draw], dict] | None = None   # the plan entry's fields drawn with the kind
    renders: tuple[str, ...] | None = None       # the render backends that can make it; None: every one
    blind: bool = False                # a filter judging one stem alone cannot tell it from a clean stem
    blind_below_db: float | None = None          # ... when its level_db is below this


def _others(s: str) -> list[str]:
    return [o for o in SOURCES if o != s]


def _bleed(track: NoisyTrack, s: str, label: dict) -> None:
    k = SOURCES.index(s)
    o = _others(s)[track.rng.integers(3)]
    level = float(track.rng.uniform(-20, -6))
    own, src = track.clean[k], track.clean[SOURCES.index(o)]
    if track.leak_of is not None:
        src = track.leak_of(src, track.rng)
    leak = src * (10 ** (level / 20) * rms(own) / max(rms(src), 1e-12))
    room = 0.95 - float(np.abs(own).max())
    if np.abs(leak).max() > room:  # keep 16-bit stems unclipped
        leak *= room / float(np.abs(leak).max())
    track.stems[k] = own + leak
    label.update(source=o, level_db=round(20 * math.log10(rms(leak) / rms(own)), 3))


def _swap(track: NoisyTrack, s: str, label: dict) -> None:
    o = _others(s)[track.rng.integers(3)]
    track.stems[SOURCES.index(s)] = track.clean[SOURCES.index(o)]
    label.update(holds=o)


def _other_song(track: NoisyTrack, s: str, label: dict) -> None:
    j = int(track.rng.integers(track.tracks - 1))
    j = j + 1 if j >= track.index else j
    track.stems[SOURCES.index(s)] = track.source_of(j, s)
    label.update(track=track.names[j])


def _partial(track: NoisyTrack, s: str, label: dict) -> None:
    k, rng, sr = SOURCES.index(s), track.rng, track.samplerate
    n = track.clean.shape[-1]
    o = _others(s)[rng.integers(3)]
    dur = rng.uniform(0.3, 0.7) * n
    a = int(rng.uniform(0, n - dur))
    b = int(a + dur)
    fade = min(int(0.01 * sr), max(1, (b - a) // 4))
    mask = np.zeros(n, np.float32)
    mask[a:b] = 1.0
    ramp = np.linspace(0, 1, fade, dtype=np.float32)
    mask[a:a + fade] = ramp
    mask[b - fade:b] = ramp[::-1]
    track.stems[k] = track.clean[k] * (1 - mask) + track.clean[SOURCES.index(o)] * mask
    label.update(holds=o, start=round(a / sr, 4), end=round(b / sr, 4))


def _silent_receiver(draw: Draw) -> dict:
    return {"moved_to": draw.receivers.pop(int(draw.rng.integers(len(draw.receivers))))}


def _move_silent(track: NoisyTrack, s: str, entry: dict) -> None:
    """The stem's content goes to its receiver (drawn clean), which is then labelled a bleed of it."""
    k, r = SOURCES.index(s), SOURCES.index(entry["moved_to"])
    clean = track.clean
    track.stems[r] = track.stems[r] + clean[k]
    track.stems[k] = 0.0
    track.labels[s]["moved_to"] = entry["moved_to"]
    track.labels[entry["moved_to"]] = {
        "noisy": True, "kind": "bleed", "source": s, "via": "silent",
        "level_db": round(20 * math.log10(rms(clean[k]) / max(rms(clean[r]), 1e-12)), 3)}


def _misgroup_donor(draw: Draw) -> dict:
    donors = draw.donors
    donor = donors[int(draw.rng.integers(len(donors)))]
    return {"from": donor, "recording": draw.spare[donor].pop(int(draw.rng.integers(len(draw.spare[donor]))))}


KINDS: dict[str, NoiseKind] = {
    # The line between loud bleed, which the filter should catch, and quiet bleed, which it cannot hear.
    "bleed": NoiseKind(make=_bleed, blind_below_db=-12.0),
    "swap": NoiseKind(make=_swap),
    # A perfect separator puts another song's stem of the right source in its own slot.
    "other_song": NoiseKind(make=_other_song, applies=lambda draw: draw.tracks >= 2, blind=True),
    "silent": NoiseKind(finish=_move_silent, applies=lambda draw: bool(draw.receivers), plan=_silent_receiver),
    "partial": NoiseKind(make=_partial),
    # Made by labelnoise.sampled.misgroup: it moves a recording, and the sine backend has one per stem.
    "misgroup": NoiseKind(applies=lambda draw: bool(draw.donors), plan=_misgroup_donor, renders=("sampled",)),
}
NOISE_KINDS = tuple(KINDS)


def unavailable(render: str) -> tuple[str, ...]:
    """The kinds the render backend ``render`` cannot make."""
    return tuple(k for k, kind in KINDS.items() if kind.renders is not None and render not in kind.renders)


def parse_kinds(text: str | None) -> dict | None:
    """``"swap=2,other_song=2"`` -> ``{"swap": 2.0, "other_song": 2.0}``."""
    if not text:
        return None
    kinds = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"--kinds: expected KIND=WEIGHT, got {part!r}")
        try:
            kinds[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"--kinds: weight of {name!r} is not a number: {value!r}") from None
    return kinds


def kind_weights(kinds: dict | None, render: str) -> np.ndarray:
    """Weights over NOISE_KINDS; kinds not named keep weight 1 (0 for those ``render`` cannot make)."""
    weights = {k: 0.0 if k in unavailable(render) else 1.0 for k in NOISE_KINDS}
    for name, w in (kinds or {}).items():
        if name not in weights:
            raise ValueError(f"unknown noise kind {name!r}; expected one of {NOISE_KINDS}")
        if w < 0:
            raise ValueError(f"noise kind {name!r} has a negative weight {w}")
        if w > 0 and name in unavailable(render):
            renders = KINDS[name].renders
            raise ValueError(f"noise kind {name!r} needs the {' or '.join(renders)} render backend "
                             f"(render={renders[0]!r})")
        weights[name] = float(w)
    w = np.array([weights[k] for k in NOISE_KINDS])
    if w.sum() <= 0:
        raise ValueError("all noise kind weights are zero")
    return w


def rms(x: np.ndarray) -> float:
    # float32 pairwise summation: accurate enough, and no BLAS threads spinning.
    x = np.asarray(x, dtype=np.float32)
    return math.sqrt(float(np.square(x).sum()) / max(x.size, 1))


def draw_noise(rng, noise_rate, weights, tracks, recordings=None) -> dict:
    """Decide which stems are noisy and of what kind (before any audio is made).

    ``recordings``: per stem, the indices of its recordings (sampled backend), for ``misgroup``."""
    drawn = {}
    for s in SOURCES:
        noisy = rng.random() < noise_rate
        kind = NOISE_KINDS[rng.choice(len(NOISE_KINDS), p=weights / weights.sum())]
        drawn[s] = kind if noisy else None
    # A kind that cannot apply is drawn again among those that can.
    receivers = [s for s in SOURCES if drawn[s] is None]
    # A misgroup takes a recording from a clean stem that keeps at least one of its own.
    draw = Draw(rng, tracks, receivers, {s: list(recordings[s][:]) for s in receivers} if recordings else {})
    plan = {}
    for s in SOURCES:
        kind = drawn[s]
        if kind is None:
            continue
        allowed = weights.copy()
        for i, name in enumerate(NOISE_KINDS):
            if not KINDS[name].applies(draw):
                allowed[i] = 0
        if allowed[NOISE_KINDS.index(kind)] == 0:
            if allowed.sum() == 0:
                continue  # nothing applies: the stem stays clean
            kind = NOISE_KINDS[rng.choice(len(NOISE_KINDS), p=allowed / allowed.sum())]
        entry = {"kind": kind}
        if KINDS[kind].plan is not None:
            entry.update(KINDS[kind].plan(draw))
        plan[s] = entry
    return plan


def noisy_track(index, tracks, names, clean, plan, rng, sr, source_of, leak_of=None):
    """Apply the plan to the clean sources: the stems as written, and their labels.

    ``source_of(track, source)``: the clean source of another track;
    ``leak_of(wav, rng)``: how a bleeding source sounds in this stem (default: as it is)."""
    track = NoisyTrack(index, tracks, names, clean, clean.copy(), {s: {"noisy": False, "kind": None} for s in SOURCES},
              rng, sr, source_of, leak_of)
    for s, entry in plan.items():
        label = {"noisy": True, "kind": entry["kind"]}
        make = KINDS[entry["kind"]].make
        if make is not None:
            make(track, s, label)
        track.labels[s] = label
    # Moves last, so a receiver (drawn clean) gets exactly the moved content.
    for s, entry in plan.items():
        finish = KINDS[entry["kind"]].finish
        if finish is not None:
            finish(track, s, entry)
    return track.stems, track.labels
