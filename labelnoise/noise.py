"""Label noise: which stems of a track are wrong, how, and the stems as written with their labels.

The kinds (``NOISE_KINDS``) and their labels are described in
``labelnoise.synth``, which draws a plan per track (``draw_noise``) and
applies it to the clean stems of either render backend (``noisy_track``);
``misgroup`` is applied by ``labelnoise.sampled.misgroup``, the one backend
with several recordings per stem.
"""
from __future__ import annotations

import math

import numpy as np

from . import SOURCES

NOISE_KINDS = ("bleed", "swap", "other_song", "silent", "partial", "misgroup")


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


def kind_weights(kinds: dict | None, unavailable=()) -> np.ndarray:
    """Weights over NOISE_KINDS; kinds not named keep weight 1 (0 for the ``unavailable`` ones)."""
    weights = {k: 0.0 if k in unavailable else 1.0 for k in NOISE_KINDS}
    for name, w in (kinds or {}).items():
        if name not in weights:
            raise ValueError(f"unknown noise kind {name!r}; expected one of {NOISE_KINDS}")
        if w < 0:
            raise ValueError(f"noise kind {name!r} has a negative weight {w}")
        if w > 0 and name in unavailable:
            raise ValueError(f"noise kind {name!r} needs the sampled render backend (render='sampled')")
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
    spare = {s: list(recordings[s][:]) for s in receivers} if recordings else {}
    plan = {}
    for s in SOURCES:
        kind = drawn[s]
        if kind is None:
            continue
        allowed = weights.copy()
        if tracks < 2:
            allowed[NOISE_KINDS.index("other_song")] = 0
        if not receivers:
            allowed[NOISE_KINDS.index("silent")] = 0
        donors = [d for d in spare if len(spare[d]) > 1]
        if not donors:
            allowed[NOISE_KINDS.index("misgroup")] = 0
        if allowed[NOISE_KINDS.index(kind)] == 0:
            if allowed.sum() == 0:
                continue  # nothing applies: the stem stays clean
            kind = NOISE_KINDS[rng.choice(len(NOISE_KINDS), p=allowed / allowed.sum())]
        entry = {"kind": kind}
        if kind == "silent":
            entry["moved_to"] = receivers.pop(int(rng.integers(len(receivers))))
        elif kind == "misgroup":
            donor = donors[int(rng.integers(len(donors)))]
            entry.update({"from": donor, "recording": spare[donor].pop(int(rng.integers(len(spare[donor]))))})
        plan[s] = entry
    return plan


def noisy_track(index, tracks, names, clean, plan, rng, sr, source_of, leak_of=None):
    """Apply the plan to the clean sources: the stems as written, and their labels.

    ``source_of(track, source)``: the clean source of another track;
    ``leak_of(wav, rng)``: how a bleeding source sounds in this stem (default: as it is)."""
    n = clean.shape[-1]
    stems = clean.copy()
    labels = {s: {"noisy": False, "kind": None} for s in SOURCES}
    others = lambda s: [o for o in SOURCES if o != s]  # noqa: E731
    for s, entry in plan.items():
        k = SOURCES.index(s)
        kind = entry["kind"]
        label = {"noisy": True, "kind": kind}
        if kind == "bleed":
            o = others(s)[rng.integers(3)]
            level = float(rng.uniform(-20, -6))
            own, src = clean[k], clean[SOURCES.index(o)]
            if leak_of is not None:
                src = leak_of(src, rng)
            leak = src * (10 ** (level / 20) * rms(own) / max(rms(src), 1e-12))
            room = 0.95 - float(np.abs(own).max())
            if np.abs(leak).max() > room:  # keep 16-bit stems unclipped
                leak *= room / float(np.abs(leak).max())
            stems[k] = own + leak
            label.update(source=o, level_db=round(20 * math.log10(rms(leak) / rms(own)), 3))
        elif kind == "swap":
            o = others(s)[rng.integers(3)]
            stems[k] = clean[SOURCES.index(o)]
            label.update(holds=o)
        elif kind == "other_song":
            j = int(rng.integers(tracks - 1))
            j = j + 1 if j >= index else j
            stems[k] = source_of(j, s)
            label.update(track=names[j])
        elif kind == "partial":
            o = others(s)[rng.integers(3)]
            dur = rng.uniform(0.3, 0.7) * n
            a = int(rng.uniform(0, n - dur))
            b = int(a + dur)
            fade = min(int(0.01 * sr), max(1, (b - a) // 4))
            mask = np.zeros(n, np.float32)
            mask[a:b] = 1.0
            ramp = np.linspace(0, 1, fade, dtype=np.float32)
            mask[a:a + fade] = ramp
            mask[b - fade:b] = ramp[::-1]
            stems[k] = clean[k] * (1 - mask) + clean[SOURCES.index(o)] * mask
            label.update(holds=o, start=round(a / sr, 4), end=round(b / sr, 4))
        labels[s] = label
    # Moves last, so a receiver (drawn clean) gets exactly the moved content.
    for s, entry in plan.items():
        if entry["kind"] != "silent":
            continue
        k, r = SOURCES.index(s), SOURCES.index(entry["moved_to"])
        stems[r] = stems[r] + clean[k]
        stems[k] = 0.0
        labels[s]["moved_to"] = entry["moved_to"]
        labels[entry["moved_to"]] = {
            "noisy": True, "kind": "bleed", "source": s, "via": "silent",
            "level_db": round(20 * math.log10(rms(clean[k]) / max(rms(clean[r]), 1e-12)), 3)}
    return stems, labels
