"""The bass and other stems' recordings: bass lines on the chord roots, keys, guitars, pads and strings.

Each instrument picks a pattern that suits the song's style; chords are
voiced close to the previous chord (voice leading), guitars strum their
strings a few milliseconds apart, pads swell with the expression controller.
"""
from __future__ import annotations

import numpy as np

from .melody import lead_part
from .music import Part, Song, active_sections, bars_of, humanize

BASSES = {32: "acoustic bass", 33: "finger bass", 34: "pick bass", 35: "fretless bass", 36: "slap bass",
          38: "synth bass", 39: "synth bass 2"}
STYLE_BASSES = {"rock": (33, 34), "pop": (33, 34, 35, 38), "dance": (38, 39), "funk": (36, 33, 34),
                "ballad": (32, 33, 35), "shuffle": (32, 33)}
STYLE_BASS_LINES = {"rock": ("eighths", "root_fifth"), "pop": ("eighths", "syncopated", "root_fifth"),
                    "dance": ("octaves", "offbeat"), "funk": ("syncopated",), "ballad": ("sustain", "root_fifth"),
                    "shuffle": ("walking",)}
# program -> (name, instrument class)
KEYS = {0: ("grand piano", "piano"), 1: ("bright piano", "piano"), 2: ("electric grand", "piano"),
        4: ("electric piano", "electric piano"), 5: ("fm piano", "electric piano"), 7: ("clavinet", "clavinet"),
        16: ("drawbar organ", "organ"), 17: ("percussive organ", "organ"), 18: ("rock organ", "organ")}
GUITARS = {24: ("nylon guitar", "acoustic guitar"), 25: ("steel guitar", "acoustic guitar"),
           26: ("jazz guitar", "electric guitar"), 27: ("clean guitar", "electric guitar"),
           28: ("muted guitar", "electric guitar"), 29: ("overdriven guitar", "distorted guitar"),
           30: ("distortion guitar", "distorted guitar")}
SUSTAINED = {48: ("strings", "strings"), 49: ("slow strings", "strings"), 50: ("synth strings", "strings"),
             89: ("warm pad", "pad"), 90: ("polysynth pad", "pad"), 92: ("bowed pad", "pad"),
             94: ("halo pad", "pad"), 95: ("sweep pad", "pad"), 61: ("brass section", "brass")}


def _pick(rng, options):
    options = list(options)
    return options[int(rng.integers(len(options)))]


# ---------------------------------------------------------------- bass

def _bass_bar(song: Song, rng, bar: int, line: str) -> list:
    """(step, length in steps, key) of one bar of a bass line."""
    root = song.root_key(bar, 28)
    nxt = song.root_key(bar + 1, 28)
    fifth, octave = root + 7, root + 12
    approach = nxt + (-1 if rng.random() < 0.5 else 1)
    if line == "eighths":
        notes = [(s, 1.8, root) for s in range(0, 16, 2)]
        if rng.random() < 0.5:
            notes[-1] = (14, 1.8, approach)
    elif line == "root_fifth":
        notes = [(0, 3.6, root), (4, 3.6, fifth if rng.random() < 0.6 else octave), (8, 3.6, root), (12, 3.6, fifth)]
    elif line == "octaves":
        notes = [(s, 1.2, root if s % 4 == 0 else octave) for s in range(0, 16, 2)]
    elif line == "offbeat":
        notes = [(s, 1.5, root) for s in (2, 6, 10, 14)]
    elif line == "syncopated":
        steps = _pick(rng, ((0, 3, 6, 8, 10, 14), (0, 3, 7, 10, 12), (0, 2, 6, 9, 11, 14)))
        notes = [(s, 1.0, _pick(rng, (root, root, fifth, octave))) for s in steps]
    elif line == "sustain":
        notes = [(0, 7.5, root), (8, 7.5, root if rng.random() < 0.6 else fifth)]
    else:  # walking quarters: root, chord tones, a step into the next root
        third = song.chord_keys(bar, root + 3, root + 4) or [root + 4]
        notes = [(0, 3.8, root), (4, 3.8, third[0]), (8, 3.8, fifth), (12, 3.8, approach)]
    return notes


def _bass_line(song: Song, rng, active, line: str, octave_shift: int = 0, legato: float = 1.0) -> list:
    notes = []
    for bar in bars_of(song, active):
        for step, length, key in _bass_bar(song, rng, bar, line):
            start = song.at(bar, step)
            notes.append((start, length * song.beat / 4 * legato, key + 12 * octave_shift,
                          95 if step % 4 == 0 else 82))
    return notes


def bass_parts(song: Song, rng) -> list[Part]:
    program = int(_pick(rng, STYLE_BASSES[song.style]))
    line = _pick(rng, STYLE_BASS_LINES[song.style])
    legato = float(rng.uniform(0.55, 1.0))
    parts = [Part(name=BASSES[program], cls="synth bass" if program >= 38 else "bass", stem="bass",
                  program=program, main=True,
                  notes=humanize(_bass_line(song, rng, [True] * len(song.sections), line, legato=legato), rng))]
    if rng.random() < 0.35:
        # A second bass: a synth sub holding the roots, or the line doubled an octave up, in some sections.
        sub = program < 38 and rng.random() < 0.6
        second = 38 if sub else int(_pick(rng, (33, 34, 35)))
        active = active_sections(song, rng, main=False)
        notes = _bass_line(song, rng, active, "sustain" if sub else line, octave_shift=0 if sub else 1)
        parts.append(Part(name=BASSES[second] + (" sub" if sub else " double"),
                          cls="synth bass" if sub else "bass", stem="bass", program=second,
                          notes=humanize(notes, rng)))
    return parts


# ---------------------------------------------------------------- chords

def voicing(song: Song, bar: int, low: int, high: int, size: int, prev: list[int] | None) -> list[int]:
    """``size`` neighbouring chord tones in [low, high], the closest to the previous voicing (voice leading)."""
    keys = song.chord_keys(bar, low, high)
    options = [keys[i:i + size] for i in range(max(1, len(keys) - size + 1))]
    target = np.mean(prev) if prev else (low + high) / 2
    return min(options, key=lambda v: abs(np.mean(v) - target))


def _chords(song: Song, active, low, high, size, hits, vel=(75, 60)) -> list:
    """Voiced chords at ``hits`` = (step, length in steps) of every active bar; accents on the beat."""
    notes, prev = [], None
    for bar in bars_of(song, active):
        prev = voicing(song, bar, low, high, size, prev)
        for step, length in hits:
            for key in prev:
                notes.append((song.at(bar, step), length * song.beat / 4, key, vel[0] if step % 4 == 0 else vel[1]))
    return notes


def keys_part(song: Song, rng, main: bool) -> Part:
    program = int(_pick(rng, KEYS))
    name, cls = KEYS[program]
    active = active_sections(song, rng, main)
    pattern = _pick(rng, ("block", "half", "stabs", "arpeggio", "syncopated") if song.style != "ballad"
                    else ("half", "arpeggio"))
    if pattern == "arpeggio":
        notes, every = [], 2 if rng.random() < 0.6 else 1
        shape = _pick(rng, ((0, 1, 2, 3), (0, 1, 2, 3, 2, 1), (0, 2, 1, 3)))
        for bar in bars_of(song, active):
            keys = song.chord_keys(bar, 52, 79)[:6]
            for i, step in enumerate(range(0, 16, every)):
                key = keys[shape[i % len(shape)] % len(keys)]
                notes.append((song.at(bar, step), every * song.beat / 4 * 1.5, key, 72 if step % 4 == 0 else 60))
    else:
        hits = {"block": [(s, 3.5) for s in (0, 4, 8, 12)], "half": [(0, 7.8), (8, 7.8)],
                "stabs": [(s, 1.0) for s in (2, 6, 10, 14)],
                "syncopated": [(0, 2.8), (3, 2.8), (6, 3.8), (10, 1.8), (12, 3.8)]}[pattern]
        notes = _chords(song, active, 53, 76, 3 if rng.random() < 0.6 else 4, hits)
        if cls == "piano" and pattern in ("block", "half"):  # the left hand's root
            notes += [(song.at(b, 0), song.bar_seconds * 0.95, song.root_key(b, 36), 70) for b in bars_of(song, active)]
    return Part(name=name, cls=cls, stem="other", program=program, main=main, notes=humanize(notes, rng))


def _strum(song: Song, bar: int, step: int, keys: list[int], down: bool, length: float, vel: int) -> list:
    order = keys if down else keys[::-1][:4]
    t = song.at(bar, step)
    return [(t + 0.012 * i, length - 0.012 * i, k, vel - 3 * i) for i, k in enumerate(order)]


def guitar_part(song: Song, rng, main: bool) -> Part:
    heavy = song.style == "rock" and rng.random() < 0.6
    program = int(_pick(rng, (29, 30) if heavy else (24, 25, 26, 27, 28)))
    name, cls = GUITARS[program]
    active = active_sections(song, rng, main)
    eighth = song.beat / 2
    notes = []
    if heavy:  # power chords: root, fifth, octave; palm-muted 8ths or held
        held = rng.random() < 0.4
        for bar in bars_of(song, active):
            root = song.root_key(bar, 40)
            power = [root, root + 7, root + 12]
            for step in ((0, 8) if held else range(0, 16, 2)):
                length = 7.8 * song.beat / 4 if held else eighth * 0.55
                notes += [(song.at(bar, step), length, k, 95 if step % 4 == 0 else 85) for k in power]
    else:
        pattern = _pick(rng, ("strum", "arpeggio", "chops") if program != 28 else ("arpeggio", "chops"))
        strums = _pick(rng, ((0, 4, 6, 10, 12, 14), (0, 6, 8, 12, 14), (0, 4, 8, 10, 12)))
        for bar in bars_of(song, active):
            keys = song.chord_keys(bar, 40, 67)
            keys = [k for k in keys if k >= song.root_key(bar, 40)][:6]
            if pattern == "strum":
                for step in strums:
                    notes += _strum(song, bar, step, keys, step % 4 == 0, eighth * 1.8, 80 if step % 4 == 0 else 65)
            elif pattern == "arpeggio":
                for i, step in enumerate(range(0, 16, 2)):
                    notes.append((song.at(bar, step), eighth * 2.5, keys[(0, 2, 3, 4, 1, 3, 4, 5)[i] % len(keys)], 70))
            else:  # funk chops: short three-note chords on the off-beat 16ths
                top = song.chord_keys(bar, 55, 72)[:3]
                for step in (2, 6, 7, 10, 14):
                    notes += [(song.at(bar, step), 0.06, k, 80) for k in top]
    return Part(name=name, cls=cls, stem="other", program=program, main=main, notes=humanize(notes, rng))


def sustained_part(song: Song, rng) -> Part:
    program = int(_pick(rng, SUSTAINED))
    name, cls = SUSTAINED[program]
    active = active_sections(song, rng, main=False)
    controls = []
    if cls == "brass":
        notes = _chords(song, active, 55, 74, 3, [(0, 1.5), (6, 1.0), (10, 3.0)], vel=(95, 85))
    else:
        notes = _chords(song, active, 48, 76, 4 if rng.random() < 0.5 else 3, [(0, 15.8)], vel=(70, 70))
        # A swell per bar: expression up from soft over the first half, as a string section bows.
        for bar in bars_of(song, active):
            t0 = song.at(bar, 0)
            for i in range(9):
                controls.append((t0 + i * song.bar_seconds / 16, "cc", 11, 60 + 6 * i))
    return Part(name=name, cls=cls, stem="other", program=program, notes=humanize(notes, rng, timing=0.01),
                controls=controls)


def other_parts(song: Song, rng) -> list[Part]:
    """Two to four recordings: a main keys or guitar part, then others from keys, guitar, pad/strings, a lead."""
    guitar_first = rng.random() < (0.7 if song.style in ("rock", "shuffle") else 0.4)
    parts = [guitar_part(song, rng, main=True) if guitar_first else keys_part(song, rng, main=True)]
    extra = []
    if rng.random() < 0.6:
        extra.append(keys_part(song, rng, main=False) if guitar_first else guitar_part(song, rng, main=False))
    if rng.random() < 0.65:
        extra.append(sustained_part(song, rng))
    if rng.random() < 0.4:
        extra.append(lead_part(song, rng))
    if not extra:
        extra.append(sustained_part(song, rng))
    return parts + extra
