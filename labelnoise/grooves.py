"""The drums stem's recordings: a kit playing a groove with fills, and hand percussion.

Both play General MIDI percussion (bank 128, channel 10); a groove is a bar
of 16 steps per instrument, varied bar by bar, with a fill at the end of
every section and a crash on the next downbeat.
"""
from __future__ import annotations


from .fluid import DRUM_BANK
from .music import Part, Song, active_sections, bars_of, humanize

KICK, SIDE_STICK, SNARE, CLAP = 36, 37, 38, 39
HAT, PEDAL_HAT, OPEN_HAT, CRASH, RIDE, CRASH2 = 42, 44, 46, 49, 51, 57
TOMS = (50, 48, 47, 45, 43, 41)  # high to low
# GM drum kits (bank 128 programs); a SoundFont without one falls back to the standard kit (labelnoise.sampled).
KITS = {0: "standard kit", 8: "room kit", 16: "power kit", 24: "electronic kit", 25: "808 kit",
        32: "jazz kit", 40: "brush kit"}
STYLE_KITS = {"rock": (0, 8, 16), "pop": (0, 8, 24), "dance": (24, 25, 0), "funk": (0, 8, 32),
              "ballad": (0, 32, 40), "shuffle": (0, 32, 40)}
# Steps (of 16) per style: kick, snare, hats (8ths or 16ths).
GROOVES = {
    "rock": ((0, 8, 10), (4, 12), 2), "pop": ((0, 7, 8), (4, 12), 2), "dance": ((0, 4, 8, 12), (4, 12), 1),
    "funk": ((0, 3, 7, 10), (4, 12), 1), "ballad": ((0, 10), (4, 12), 2), "shuffle": ((0, 8, 11), (4, 12), 2),
}
# Hand percussion: (GM key, steps of the bar, velocity)
PERCUSSION = {
    "shaker": (82, tuple(range(16)), 60), "maracas": (70, tuple(range(0, 16, 2)), 70),
    "tambourine": (54, (4, 12), 85), "tambourine 8ths": (54, tuple(range(0, 16, 2)), 65),
    "congas": (63, (3, 6, 7, 11, 14, 15), 80), "low conga": (64, (0, 8, 10), 85),
    "bongos": (60, (2, 6, 10, 14), 75), "cowbell": (56, (0, 4, 8, 12), 70),
    "claves": (75, (0, 3, 6, 10, 12), 80), "woodblock": (76, (2, 5, 10, 13), 70), "triangle": (81, (0, 8), 70),
    "cabasa": (69, tuple(range(1, 16, 2)), 55),
}


def _fill(song: Song, rng, bar: int) -> tuple[int, list]:
    """The last one or two beats of ``bar``: 16ths on snare and toms, down the kit, louder to the end.

    Returns the step the fill starts at and its notes."""
    beats = 2 if rng.random() < 0.4 else 1
    start = 16 - 4 * beats
    kind = rng.integers(3)
    notes = []
    for i, step in enumerate(range(start, 16)):
        if kind == 0:  # snare roll
            key = SNARE
        elif kind == 1:  # toms from high to low
            key = TOMS[min(len(TOMS) - 1, i * len(TOMS) // (16 - start))]
        else:  # snare and toms alternating
            key = SNARE if i % 2 == 0 else TOMS[min(len(TOMS) - 1, i // 2)]
        if rng.random() < 0.85:
            notes.append((song.at(bar, step), 0.1, key, 70 + 40 * i / (16 - start)))
    return start, notes


def kit_part(song: Song, rng) -> Part:
    program = int(rng.choice(STYLE_KITS[song.style]))
    kicks, snares, hat_step = GROOVES[song.style]
    halftime = song.style in ("rock", "ballad") and rng.random() < 0.25
    if halftime:
        snares = (8,)
    snare_key = SIDE_STICK if song.style == "ballad" and rng.random() < 0.5 else (
        CLAP if song.style == "dance" and rng.random() < 0.5 else SNARE)
    extra_kick = float(rng.uniform(0.0, 0.15))
    ghost = float(rng.uniform(0.05, 0.25)) if song.style in ("funk", "pop", "shuffle") else 0.0
    open_on_offbeat = song.style == "dance" or rng.random() < 0.2
    notes = []
    for bar in range(song.bars):
        chorus = song.sections[song.section(bar)] == "chorus"
        last_of_section = (bar + 1) % 4 == 0 or bar == song.bars - 1
        fill_from, fill = _fill(song, rng, bar) if last_of_section and bar < song.bars - 1 else (16, [])
        if bar % 4 == 0 and (bar > 0 or rng.random() < 0.5):
            notes.append((song.at(bar, 0), 1.0, CRASH if rng.random() < 0.7 else CRASH2, 100))
        cymbal = RIDE if chorus and rng.random() < 0.35 else HAT
        for step in range(16):
            t = song.at(bar, step)
            if step >= fill_from:
                continue
            if step in kicks or (step % 2 == 0 and rng.random() < extra_kick):
                notes.append((t, 0.1, KICK, 100 if step % 4 == 0 else 85))
            if step in snares:
                notes.append((t, 0.1, snare_key, 105))
            elif ghost and step % 2 == 1 and rng.random() < ghost:
                notes.append((t, 0.05, SNARE, 35))
            if step % hat_step == 0:
                if open_on_offbeat and step % 4 == 2:
                    notes.append((t, 0.2, OPEN_HAT, 80))
                else:
                    accent = 90 if step % 4 == 0 else (70 if step % 2 == 0 else 55)
                    notes.append((t, 0.05, cymbal, accent))
        notes += fill
    return Part(name=KITS[program], cls="kit", stem="drums", program=program, bank=DRUM_BANK, main=True,
                notes=humanize(notes, rng, timing=0.003))


def percussion_part(song: Song, rng) -> Part:
    names = list(PERCUSSION)
    chosen = [names[i] for i in rng.choice(len(names), size=int(rng.integers(1, 4)), replace=False)]
    active = active_sections(song, rng, main=False, p=0.7)
    notes = []
    for name in chosen:
        key, steps, vel = PERCUSSION[name]
        for bar in bars_of(song, active):
            for step in steps:
                if rng.random() < 0.92:
                    accent = 1.15 if step % 4 == 0 else 1.0
                    notes.append((song.at(bar, step), 0.1, key, vel * accent))
    return Part(name=" + ".join(chosen), cls="percussion", stem="drums", program=0, bank=DRUM_BANK,
                notes=humanize(notes, rng, timing=0.006, velocity=10))


def drum_parts(song: Song, rng) -> list[Part]:
    parts = [kit_part(song, rng)]
    if rng.random() < 0.6:
        parts.append(percussion_part(song, rng))
    return parts
