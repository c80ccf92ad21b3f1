"""Melodies: the sung-like vocals stem and an instrumental lead of the other stem.

A melody is phrases of one or two bars with rests between them (breaths);
notes walk the scale by steps and land on chord tones on the strong beats,
a phrase ends on a longer chord tone. The vocals sing it with General MIDI
voices (Choir Aahs, Voice Oohs, Synth Voice) and the gestures of a singer:
scoops into phrase starts, vibrato that sets in on long notes, swells of
expression; a second vocal recording may add harmonies in the choruses.
"""
from __future__ import annotations

import math

import numpy as np

from .music import Part, Song, active_sections, humanize

VOICES = {52: ("choir aahs", "choir"), 53: ("voice oohs", "voice"), 54: ("synth voice", "synth voice")}
LEADS = {73: ("flute", "flute"), 71: ("clarinet", "clarinet"), 65: ("alto sax", "saxophone"),
         66: ("tenor sax", "saxophone"), 56: ("trumpet", "trumpet"), 80: ("square lead", "synth lead"),
         81: ("saw lead", "synth lead"), 11: ("vibraphone", "mallets"), 12: ("marimba", "mallets")}
# Rhythm cells in beats; a phrase is filled with them.
CELLS = ((1, 1, 1, 1), (1.5, 0.5, 1, 1), (0.5, 0.5, 1, 2), (2, 1, 1), (1, 0.5, 0.5, 2), (0.5, 0.5, 0.5, 0.5, 2),
         (3, 1), (1, 1, 2), (0.5, 1, 0.5, 2), (0.5, 0.5, 0.5, 0.5, 1, 1), (0.75, 0.25, 0.5, 0.5, 2))
BEND_CENTRE = 8192
BEND_PER_CENT = 8192 / 200  # General MIDI's default bend range: +-2 semitones


def _is_chord_tone(song: Song, bar: int, degree: int) -> bool:
    return (degree - song.chord(bar)) % 7 in (0, 2, 4)


def phrases(song: Song, rng, active, low: int, high: int, density: float) -> list[list]:
    """Phrases of (start_s, dur_s, key) notes in the active sections, between keys ``low`` and ``high``."""
    beat = song.beat
    beats_total = song.bars * 4
    degree = None
    out = []
    t = float(rng.choice([0, 0.5, 1]))  # some songs start on a pickup
    while t < beats_total:
        bar = int(t // 4)
        if not active[song.section(bar)]:
            t = (bar + 1) * 4
            continue
        length = 4 if rng.random() < 0.5 else 8
        end = min(t + length - float(rng.choice([0.5, 1, 1.5, 2])), beats_total)
        notes = []
        while t < end:
            cell = CELLS[int(rng.integers(len(CELLS)))]
            if density < 1:
                cell = [d * 2 for d in cell] if rng.random() > density else cell
            for d in cell:
                if t >= end:
                    break
                d = min(d, end - t)
                bar = int(t // 4)
                strong = t % 2 == 0
                if degree is None:
                    degree = song.chord(bar) + 7 * int(rng.integers(0, 2))
                else:
                    degree += int(rng.choice([-2, -1, -1, 0, 1, 1, 2, 3, -3]))
                if strong and not _is_chord_tone(song, bar, degree):
                    degree += 1 if _is_chord_tone(song, bar, degree + 1) else -1
                key = song.note(degree, 4)
                while key > high:
                    degree -= 7
                    key = song.note(degree, 4)
                while key < low:
                    degree += 7
                    key = song.note(degree, 4)
                notes.append([t * beat, d * beat, key])
                t += d
        if notes:
            # The phrase ends on a chord tone, held.
            last = notes[-1]
            bar = min(int(last[0] / beat // 4), song.bars - 1)
            keys = song.chord_keys(bar, low, high)
            if keys:
                last[2] = min(keys, key=lambda k: abs(k - last[2]))
            out.append([tuple(n) for n in notes])
        t = end + float(rng.choice([0.5, 1, 1.5, 2]))  # a breath
    return out


def _sing(notes: list, rng, vibrato: bool) -> list:
    """The controller moves of a singer: a scoop into a phrase's first note, vibrato and a swell on long notes."""
    controls = []
    rate = float(rng.uniform(4.8, 6.2))
    depth = float(rng.uniform(18, 40))  # cents
    for i, (start, dur, _key, _vel) in enumerate(notes):
        if i and start == notes[i - 1][0]:
            continue  # a chord: one gesture for all its notes
        first = i == 0 or notes[i - 1][0] + notes[i - 1][1] < start - 0.05
        controls.append((start, "bend", BEND_CENTRE, 0))
        if first and rng.random() < 0.6:  # from a little below, over about 80 ms
            for j in range(5):
                cents = -80 * (1 - j / 4)
                controls.append((start + 0.02 * j, "bend", int(BEND_CENTRE + cents * BEND_PER_CENT), 0))
        controls.append((start, "cc", 11, 80))
        if dur > 0.35:
            onset = start + min(0.25, dur / 3)
            steps = int((dur - (onset - start)) / 0.01)
            for j in range(steps):
                t = onset + 0.01 * j
                grow = min(1.0, j / 30)
                if vibrato:
                    cents = depth * grow * math.sin(2 * math.pi * rate * (t - onset))
                    controls.append((t, "bend", int(BEND_CENTRE + cents * BEND_PER_CENT), 0))
                if j % 5 == 0:
                    controls.append((t, "cc", 11, int(80 + 30 * grow)))
    return controls


def lead_vocal(song: Song, rng) -> Part:
    program = int(rng.choice(list(VOICES), p=(0.45, 0.4, 0.15)))
    name, cls = VOICES[program]
    low = int(rng.choice([53, 57, 60]))  # a lower or a higher voice
    ps = phrases(song, rng, [True] * len(song.sections), low, low + 16, density=float(rng.uniform(0.75, 1.0)))
    notes = []
    for phrase in ps:
        vel = float(rng.uniform(80, 110))
        # Legato: each note reaches a little into the next one.
        notes += [(s, d + 0.03, k, vel - 8 * (j == len(phrase) - 1)) for j, (s, d, k) in enumerate(phrase)]
    notes = humanize(notes, rng, timing=0.012)
    return Part(name=name, cls=cls, stem="vocals", program=program, main=True, notes=notes,
                controls=_sing(notes, rng, vibrato=True))


def harmony_vocal(song: Song, rng, lead: Part) -> Part:
    """A second voice in the choruses (or a random section): the lead a third or a sixth lower, or held chords."""
    program = int(rng.choice([52, 53]))
    name, cls = VOICES[program]
    active = [s == "chorus" for s in song.sections]
    if not any(active):
        active = active_sections(song, rng, main=False)
    in_section = [n for n in lead.notes if active[song.section(min(int(n[0] / song.bar_seconds), song.bars - 1))]]
    notes = []
    if rng.random() < 0.6 and in_section:
        below = int(rng.choice([2, 5]))  # scale steps: a third or a sixth
        for start, dur, key, vel in in_section:
            k, steps = key, 0
            while steps < below:  # walk down the scale
                k -= 1
                steps += song.in_scale(k)
            notes.append((start, dur, k, vel - 15))
    else:
        prev = None
        for bar in range(song.bars):
            if not active[song.section(bar)]:
                continue
            keys = song.chord_keys(bar, 55, 74)
            options = [keys[i:i + 3] for i in range(max(1, len(keys) - 2))]
            prev = min(options, key=lambda v: abs(np.mean(v) - (np.mean(prev) if prev else 64)))
            notes += [(song.at(bar, 0), song.bar_seconds * 0.97, k, 70) for k in prev]
    notes = humanize(notes, rng, timing=0.01)
    return Part(name=name + " harmony", cls=cls, stem="vocals", program=program, notes=notes,
                controls=_sing(notes, rng, vibrato=False))


def vocal_parts(song: Song, rng) -> list[Part]:
    lead = lead_vocal(song, rng)
    return [lead, harmony_vocal(song, rng, lead)] if rng.random() < 0.5 else [lead]


def lead_part(song: Song, rng) -> Part:
    """An instrumental line of the other stem, in a register of its own and busier than the vocals."""
    program = int(rng.choice(list(LEADS)))
    name, cls = LEADS[program]
    active = active_sections(song, rng, main=False, p=0.5)
    low = int(rng.choice([62, 67, 72]))
    notes = []
    for phrase in phrases(song, rng, active, low, low + 14, density=1.0):
        notes += [(s, d * 0.9, k, 85) for s, d, k in phrase]
    notes = humanize(notes, rng)
    wind = cls in ("flute", "clarinet", "saxophone", "trumpet")
    return Part(name=name, cls=cls, stem="other", program=program, notes=notes,
                controls=_sing(notes, rng, vibrato=True) if wind else [])
