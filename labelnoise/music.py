"""Songs the sampled backend plays: a key, a tempo, a chord progression, an arrangement, and the parts.

``compose(seed, index, seconds)`` draws one track's song and its recordings
(``Part``: a General MIDI program and its notes and controller moves), from
the seed alone. A part belongs to one stem (``SOURCES``) and one instrument
class (``"piano"``, ``"guitar"``, ``"kit"``, ``"choir"`` ...); the notes come
from ``labelnoise.grooves`` (drums, percussion), ``labelnoise.accompaniment``
(bass, keys, guitar, pads) and ``labelnoise.melody`` (vocals, leads).

Times are in seconds; a 16th-note grid (``Song.at``) with swing carries
every part, the bars follow the progression, and the track is cut into
sections of four bars, each a verse or a chorus: secondary parts play in
some sections only, the main part of each stem in all of them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from . import SOURCES

MAJOR = (0, 2, 4, 5, 7, 9, 11)
MINOR = (0, 2, 3, 5, 7, 8, 10)
# Scale degrees (0 = tonic) of common progressions, one chord a bar.
PROGRESSIONS = {
    "major": ((0, 4, 5, 3), (0, 5, 3, 4), (5, 3, 0, 4), (0, 3, 4, 3), (1, 4, 0, 0), (0, 3, 0, 4), (3, 0, 4, 5),
              (0, 2, 3, 4)),
    "minor": ((0, 5, 2, 6), (0, 3, 4, 0), (0, 6, 5, 6), (0, 5, 3, 4), (0, 2, 6, 3), (0, 3, 6, 2)),
}
# Style -> tempo range (BPM) and swing (0 straight .. 1 a full triplet shuffle).
STYLES = {"rock": ((100, 150), 0.0), "pop": ((88, 128), 0.0), "dance": ((118, 132), 0.0),
          "funk": ((90, 115), 0.15), "ballad": ((66, 86), 0.0), "shuffle": ((88, 120), 1.0)}
SECTION_BARS = 4


@dataclass
class Song:
    """What every part of one track shares."""
    style: str
    bpm: float
    key: int                 # tonic pitch class, 0 = C
    minor: bool
    progression: tuple[int, ...]
    bars: int
    swing: float
    sections: list[str]      # "verse" / "chorus", one per SECTION_BARS bars

    @property
    def beat(self) -> float:
        return 60.0 / self.bpm

    @property
    def bar_seconds(self) -> float:
        return 4 * self.beat

    @property
    def scale(self) -> tuple[int, ...]:
        return MINOR if self.minor else MAJOR

    def at(self, bar: int, step: float) -> float:
        """Seconds at 16th-note ``step`` (0..16) of ``bar``; the off-beat 8ths swung late."""
        t = (bar * 16 + step) * self.beat / 4
        if int(step) == step and int(step) % 4 == 2:
            t += self.swing * self.beat / 6
        return t

    def section(self, bar: int) -> int:
        return bar // SECTION_BARS

    def chord(self, bar: int) -> int:
        """Scale degree of the chord root in ``bar``."""
        return self.progression[bar % len(self.progression)]

    def note(self, degree: int, octave: int) -> int:
        """MIDI key of scale ``degree`` (any integer) in ``octave`` (4 holds middle C)."""
        up, step = divmod(degree, 7)
        return 12 * (octave + 1 + up) + self.key + self.scale[step]

    def chord_keys(self, bar: int, low: int, high: int, seventh: bool = False) -> list[int]:
        """Every key in [low, high] of the bar's chord (a triad, or with its seventh)."""
        root = self.chord(bar)
        classes = {(self.key + self.scale[(root + d) % 7]) % 12 for d in ((0, 2, 4, 6) if seventh else (0, 2, 4))}
        return [k for k in range(low, high + 1) if k % 12 in classes]

    def root_key(self, bar: int, low: int) -> int:
        """The lowest key >= ``low`` of the bar's chord root."""
        pc = (self.key + self.scale[self.chord(bar) % 7]) % 12
        return low + (pc - low) % 12

    def in_scale(self, key: int) -> bool:
        return (key - self.key) % 12 in self.scale


@dataclass
class Part:
    """One recording: a General MIDI program on one stem, its notes and controller moves."""
    name: str
    cls: str                 # instrument class, e.g. "piano", "guitar", "kit", "choir"
    stem: str                # one of SOURCES
    program: int             # General MIDI program (0-based); with bank 128, a drum kit
    bank: int = 0
    main: bool = False       # the stem's main part: plays in every section
    notes: list = field(default_factory=list)     # (start_s, dur_s, key, velocity)
    controls: list = field(default_factory=list)  # (time_s, "cc", number, value) or (time_s, "bend", value, 0)

    def span(self) -> tuple[float, float]:
        """First note on to last note off, in seconds (0, 0 without notes)."""
        if not self.notes:
            return 0.0, 0.0
        return min(n[0] for n in self.notes), max(n[0] + n[1] for n in self.notes)


def rng_for(seed: int, index: int, stream: int) -> np.random.Generator:
    # Streams 200.. keep clear of those labelnoise.synth draws for the same (seed, track).
    return np.random.default_rng([seed, index, 200 + stream])


def draw_song(rng: np.random.Generator, seconds: float) -> Song:
    style = str(rng.choice(list(STYLES)))
    (lo, hi), swing = STYLES[style]
    minor = bool(rng.random() < 0.4)
    progs = PROGRESSIONS["minor" if minor else "major"]
    bpm = float(rng.uniform(lo, hi))
    bars = max(1, math.ceil(seconds / (240.0 / bpm)))
    first = int(rng.integers(2))
    sections = [("verse", "chorus")[(first + i) % 2] for i in range(-(-bars // SECTION_BARS))]
    return Song(style=style, bpm=bpm, key=int(rng.integers(12)), minor=minor,
                progression=progs[int(rng.integers(len(progs)))], bars=bars,
                swing=swing * float(rng.uniform(0.6, 1.0)), sections=sections)


def active_sections(song: Song, rng: np.random.Generator, main: bool, p: float = 0.6) -> list[bool]:
    """Which sections a part plays in: all for a main part, else a random non-empty subset."""
    n = len(song.sections)
    if main:
        return [True] * n
    on = [bool(rng.random() < p) for _ in range(n)]
    if not any(on):
        on[int(rng.integers(n))] = True
    return on


def bars_of(song: Song, active: list[bool]) -> list[int]:
    return [b for b in range(song.bars) if active[song.section(b)]]


def humanize(notes, rng: np.random.Generator, timing: float = 0.004, velocity: float = 6.0) -> list:
    """Small timing and velocity deviations, as a player makes; nothing before 0 s."""
    out = []
    for start, dur, key, vel in notes:
        t = max(0.0, start + float(rng.normal(0, timing)))
        v = int(np.clip(round(vel + rng.normal(0, velocity)), 1, 127))
        out.append((t, dur, int(key), v))
    return out


def compose(seed: int, index: int, seconds: float) -> tuple[Song, list[Part]]:
    """Track ``index``'s song and its recordings, in stem order; the same (seed, index) gives the same song."""
    from . import accompaniment, grooves, melody

    song = draw_song(rng_for(seed, index, 0), seconds)
    makers = {"drums": grooves.drum_parts, "bass": accompaniment.bass_parts,
              "other": accompaniment.other_parts, "vocals": melody.vocal_parts}
    parts = []
    for k, stem in enumerate(SOURCES):
        for part in makers[stem](song, rng_for(seed, index, 1 + k)):
            part.stem = stem
            part.notes = [n for n in part.notes if n[0] < seconds]
            if part.notes:
                parts.append(part)
    return song, parts
