"""FluidSynth in-process (ctypes): General MIDI SoundFonts -> stereo float32 audio, one recording at a time.

The sampled render backend (``labelnoise.sampled``) plays every recording of a
track through this module. The SoundFonts come from Debian packages
(``make sounds`` installs ``fluidsynth``, ``fluid-soundfont-gm`` and
``timgm6mb-soundfont``); ``LABELNOISE_SOUNDFONTS`` (paths separated by
``:``) or an explicit list overrides where they are looked for.

Why a fresh synthesizer per recording: a FluidSynth voice keeps some filter
state from the note it played before, so the same notes rendered after other
notes differ by a few 1e-4. A recording rendered in a synthesizer of its own
depends on nothing else, so a seed gives byte-identical files in any order.
The SoundFonts themselves are loaded once per process into a keeper
synthesizer and lent to each fresh one (``fluid_synth_add_sfont``), which
costs well under a millisecond.

Event times are rounded to FluidSynth's 64-frame block (1.45 ms at 44.1 kHz),
the finest step at which it applies an event anyway.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from pathlib import Path

import numpy as np

SOUNDFONT_ENV = "LABELNOISE_SOUNDFONTS"
# Debian's General MIDI SoundFonts (fluid-soundfont-gm, timgm6mb-soundfont), the first the main one.
DEFAULT_SOUNDFONTS = ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/sounds/sf2/TimGM6mb.sf2")
# Where other systems keep a General MIDI SoundFont; the first found serves when no default is there.
FALLBACK_SOUNDFONTS = ("/usr/share/soundfonts/FluidR3_GM.sf2", "/usr/share/soundfonts/FluidR3_GM2-2.sf2",
                       "/usr/share/soundfonts/default.sf2", "/usr/share/sounds/sf2/default-GM.sf2",
                       "/usr/share/sounds/sf3/default-GM.sf3", "/usr/share/sounds/sf3/MuseScore_General.sf3")
INSTALL_HINT = ("install the Debian packages fluidsynth fluid-soundfont-gm timgm6mb-soundfont "
                "(`make sounds` as root, or apt-get install ...)")
BLOCK = 64  # FluidSynth renders and applies events in blocks of this many frames
DRUM_BANK = 128
_DRUM_CHANNEL = 9  # General MIDI channel 10
# Event codes, in the order they apply within one block: offs before ons, so a repeated key retriggers;
# controllers before ons, so a note starts with its expression and bend.
NOTE_OFF, CONTROL, BEND, NOTE_ON = 0, 1, 2, 3


class RenderUnavailable(RuntimeError):
    """FluidSynth or a SoundFont is missing; the message says what to install."""


def find_soundfonts(paths=None) -> tuple[Path, ...]:
    """The SoundFonts to play: ``paths``, else ``$LABELNOISE_SOUNDFONTS``, else those of ``DEFAULT_SOUNDFONTS`` present."""
    if paths is None and os.environ.get(SOUNDFONT_ENV):
        paths = [p for p in os.environ[SOUNDFONT_ENV].split(os.pathsep) if p]
        where = f"${SOUNDFONT_ENV}"
    elif paths is not None:
        where = "the soundfonts argument"
    else:
        found = tuple(Path(p) for p in DEFAULT_SOUNDFONTS if Path(p).is_file())
        found = found or tuple(Path(p) for p in FALLBACK_SOUNDFONTS if Path(p).is_file())[:1]
        if not found:
            raise RenderUnavailable(f"no General MIDI SoundFont found (looked for {', '.join(DEFAULT_SOUNDFONTS)} "
                                    f"and {len(FALLBACK_SOUNDFONTS)} other places); {INSTALL_HINT}, "
                                    f"or set ${SOUNDFONT_ENV}")
        return found
    fonts = tuple(Path(p) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths))
    if not fonts:
        raise RenderUnavailable(f"{where} names no SoundFont")
    for f in fonts:
        if not f.is_file():
            raise RenderUnavailable(f"{f}: SoundFont not found (from {where})")
    return fonts


@functools.lru_cache(maxsize=1)
def _lib() -> ctypes.CDLL:
    name = ctypes.util.find_library("fluidsynth")
    if name is None:
        raise RenderUnavailable(f"libfluidsynth not found; {INSTALL_HINT}")
    lib = ctypes.CDLL(name)
    p, i, d, s = ctypes.c_void_p, ctypes.c_int, ctypes.c_double, ctypes.c_char_p
    for fn, res, args in (
            ("new_fluid_settings", p, []), ("new_fluid_synth", p, [p]), ("delete_fluid_synth", None, [p]),
            ("fluid_settings_setnum", i, [p, s, d]), ("fluid_settings_setint", i, [p, s, i]),
            ("fluid_synth_sfload", i, [p, s, i]), ("fluid_synth_get_sfont_by_id", p, [p, i]),
            ("fluid_synth_add_sfont", i, [p, p]), ("fluid_synth_remove_sfont", i, [p, p]),
            ("fluid_sfont_get_preset", p, [p, i, i]), ("fluid_preset_get_name", s, [p]),
            ("fluid_synth_program_select", i, [p, i, i, i, i]), ("fluid_synth_noteon", i, [p, i, i, i]),
            ("fluid_synth_noteoff", i, [p, i, i]), ("fluid_synth_cc", i, [p, i, i, i]),
            ("fluid_synth_pitch_bend", i, [p, i, i]), ("fluid_synth_write_float", i, [p, i, p, i, i, p, i, i]),
            ("fluid_set_log_function", p, [i, p, p]), ("fluid_version_str", s, [])):
        f = getattr(lib, fn)
        f.restype, f.argtypes = res, args
    # Warnings (a fresh synthesizer has no preset on its channels until one is lent) and chatter off;
    # panics and errors keep FluidSynth's own stderr printer.
    for level in (2, 3, 4):  # FLUID_WARN, FLUID_INFO, FLUID_DBG
        lib.fluid_set_log_function(level, None, None)
    return lib


def version() -> str:
    return _lib().fluid_version_str().decode()


def to_events(notes, controls, samplerate: int) -> list[tuple[int, int, int, int]]:
    """(start_s, dur_s, key, velocity) notes and controls -> sorted (frame, code, a, b) events on the 64-frame grid.

    A control is ``(time_s, "cc", controller, value)`` or ``(time_s, "bend", value, 0)`` (0..16383, centre
    8192). A note lasts at least one block."""
    def frame(t):
        return int(round(t * samplerate / BLOCK)) * BLOCK
    events = []
    # A note-off releases every voice of its key, so a note that overlaps the next one of the same key
    # ends where that one starts (else the later note would be cut by the earlier one's off).
    ordered = sorted((frame(start), frame(start + dur), int(key), int(vel)) for start, dur, key, vel in notes)
    next_on: dict[int, int] = {}
    for on, off, key, vel in reversed(ordered):
        end = max(on + BLOCK, off)
        if key in next_on:
            end = min(end, next_on[key])
        next_on[key] = on
        events.append((on, NOTE_ON, key, vel))
        events.append((end, NOTE_OFF, key, 0))
    for t, kind, number, value in controls:
        events.append((frame(t), BEND if kind == "bend" else CONTROL, int(number), int(value)))
    events.sort()
    return events


class FluidSynth:
    """SoundFonts loaded once; ``render`` plays one recording in a synthesizer of its own."""

    def __init__(self, fonts, samplerate: int = 44100):
        lib = self.lib = _lib()
        self.fonts = tuple(Path(f) for f in fonts)
        self.samplerate = samplerate
        self.settings = lib.new_fluid_settings()
        lib.fluid_settings_setnum(self.settings, b"synth.sample-rate", float(samplerate))
        # Reverb and chorus come from the effects chain (labelnoise.sampled); one core, no threads.
        lib.fluid_settings_setint(self.settings, b"synth.reverb.active", 0)
        lib.fluid_settings_setint(self.settings, b"synth.chorus.active", 0)
        lib.fluid_settings_setint(self.settings, b"synth.cpu-cores", 1)
        lib.fluid_settings_setint(self.settings, b"synth.polyphony", 512)
        lib.fluid_settings_setnum(self.settings, b"synth.gain", 0.5)
        self.keeper = lib.new_fluid_synth(self.settings)
        self.sfonts = []
        for f in self.fonts:
            sfid = lib.fluid_synth_sfload(self.keeper, str(f).encode(), 0)
            if sfid < 0:
                raise RenderUnavailable(f"{f}: FluidSynth cannot load this SoundFont")
            self.sfonts.append(lib.fluid_synth_get_sfont_by_id(self.keeper, sfid))

    def preset_name(self, font: int, bank: int, program: int) -> str | None:
        """The preset's name in SoundFont ``font``, None where it has no such preset."""
        preset = self.lib.fluid_sfont_get_preset(self.sfonts[font], bank, program)
        return None if not preset else self.lib.fluid_preset_get_name(preset).decode(errors="replace")

    def render(self, font: int, bank: int, program: int, events, frames: int) -> np.ndarray:
        """Play ``events`` (``to_events``) on one channel; returns ``(2, frames)`` float32."""
        lib = self.lib
        channel = _DRUM_CHANNEL if bank == DRUM_BANK else 0
        total = -(-frames // BLOCK) * BLOCK
        out = np.zeros((2, total), np.float32)
        synth = lib.new_fluid_synth(self.settings)
        try:
            sfid = lib.fluid_synth_add_sfont(synth, self.sfonts[font])
            if lib.fluid_synth_program_select(synth, channel, sfid, bank, program) != 0:
                raise ValueError(f"{self.fonts[font]}: has no preset bank {bank} program {program}")
            left, right = out[0].ctypes.data, out[1].ctypes.data
            pos = 0
            for at, code, a, b in events:
                at = min(at, total)
                if at > pos:
                    lib.fluid_synth_write_float(synth, at - pos, left, pos, 1, right, pos, 1)
                    pos = at
                if at >= total:
                    break
                if code == NOTE_ON:
                    lib.fluid_synth_noteon(synth, channel, a, b)
                elif code == NOTE_OFF:
                    lib.fluid_synth_noteoff(synth, channel, a)
                elif code == CONTROL:
                    lib.fluid_synth_cc(synth, channel, a, b)
                else:
                    lib.fluid_synth_pitch_bend(synth, channel, a)
            if pos < total:
                lib.fluid_synth_write_float(synth, total - pos, left, pos, 1, right, pos, 1)
        finally:
            # The SoundFont belongs to the keeper: take it back before the synthesizer is freed.
            lib.fluid_synth_remove_sfont(synth, self.sfonts[font])
            lib.delete_fluid_synth(synth)
        return out[:, :frames]


@functools.lru_cache(maxsize=2)
def synthesizer(fonts: tuple[Path, ...], samplerate: int = 44100) -> FluidSynth:
    """One FluidSynth per (SoundFonts, rate) and process: the SoundFonts load once (about a second)."""
    return FluidSynth(fonts, samplerate)
