"""The sampled render backend of labelnoise.synth: songs played by General MIDI SoundFonts, with effects.

A track is composed (``labelnoise.music``), each of its recordings is played
once through FluidSynth (``labelnoise.fluid``) at 44.1 kHz and run through a
seeded pedalboard chain: a high-pass and an EQ band per instrument, a
compressor, the stem's reverb room at the instrument's send level, and
extras by class (chorus on clean guitars, vowel formants and an echo on the
vocals, a low-pass on pads). Levels: each recording at a drawn level inside
its stem, each stem at a drawn RMS (peaks at most ``STEM_PEAK``), panned
with a constant-power law; a stem is the exact sum of its recordings, and
the requested sample rate comes from soxr (``labelnoise.audio.resample``)
applied to each recording, so that still holds.

Label noise at the recording level, ``misgroup`` (SDX23 leaderboard A:
recordings grouped into the wrong stem): ``misgroup`` moves one recording of
a clean stem with two or more recordings into the noisy stem, for the whole
track or a span of it; ``inside`` adds it to that stem's own content,
``instead`` replaces that content over the span. The other kinds of
``labelnoise.synth`` work on whole stems as with the sine backend; a bleed
leaks through a "microphone" here (band-limited and a few ms late).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pedalboard as pb

from . import SOURCES
from .audio import resample
from .fluid import DRUM_BANK, find_soundfonts, synthesizer, to_events
from .music import Part, Song, compose
from .noise import rms

RATE = 44100  # FluidSynth and the effects run at this rate; other rates are resampled from it
DRY_RMS_DB = -20.0  # every recording enters its effects chain at this RMS (dBFS)
STEM_PEAK = 0.5  # two stems summed (a moved recording, a silent stem's receiver) stay unclipped in 16 bits
# Stem RMS in dBFS, drawn per track: (low, high).
STEM_RMS_DB = {"drums": (-26, -21), "bass": (-27, -22), "other": (-27, -22), "vocals": (-25, -20)}
# Reverb send (wet level) per stem and the high-pass cutoff (Hz) per instrument class.
REVERB_SEND = {"drums": (0.04, 0.15), "bass": (0.0, 0.04), "other": (0.08, 0.3), "vocals": (0.12, 0.3)}
# Limiter thresholds (dBFS, the recording entering at DRY_RMS_DB) for the stems of sharp attacks.
LIMIT_DB = {"drums": (-14, -8), "bass": (-9, -5)}
# A secondary recording's level (dB, RMS while it plays) under its stem's main one; hand percussion lower.
RELATIVE_DB = {"percussion": (-14, -6)}
DEFAULT_RELATIVE_DB = (-9, -2)
HIGHPASS_HZ = {"kit": 30, "percussion": 150, "bass": 28, "synth bass": 25}
DEFAULT_HIGHPASS_HZ = 90
# Vowel formants F1, F2 (Hz) for the vocals' EQ.
VOWELS = ((800, 1200), (400, 2000), (300, 2300), (500, 900), (350, 700))
MISGROUP_WHOLE = 0.4  # share of misgroups that last the whole track
MISGROUP_INSTEAD = 0.3  # share that replace the stem's own content rather than join it


@dataclass
class Recording:
    part: Part
    font: Path
    preset: str
    audio: np.ndarray  # (2, frames) at the track's sample rate, effects and level applied

    @property
    def name(self) -> str:
        return self.part.name


@dataclass
class Track:
    song: Song
    recordings: list[Recording | None]  # in composition order; None for those of stems not rendered
    samplerate: int
    frames: int

    def of(self, stem: str) -> list[int]:
        return [i for i, r in enumerate(self.recordings) if r is not None and r.part.stem == stem]

    def stem(self, stem: str) -> np.ndarray:
        out = np.zeros((2, self.frames), np.float32)
        for i in self.of(stem):
            out += self.recordings[i].audio
        return out

    def stems(self) -> np.ndarray:
        return np.stack([self.stem(s) for s in SOURCES])


def _db(ratio: float) -> float:
    return round(20 * math.log10(max(ratio, 1e-12)), 3)


def _pan(wav: np.ndarray, pan: float) -> np.ndarray:
    """Constant-power balance, ``pan`` in [-1, 1]; 0 leaves the channels as they are."""
    angle = (pan + 1) * math.pi / 4
    return wav * np.array([[math.cos(angle)], [math.sin(angle)]], np.float32) * np.float32(math.sqrt(2))


def _chain(part: Part, song: Song, room: dict, rng) -> pb.Pedalboard:
    cls = part.cls
    fx = [pb.HighpassFilter(HIGHPASS_HZ.get(cls, DEFAULT_HIGHPASS_HZ) * float(rng.uniform(0.8, 1.5)))]
    fx.append(pb.PeakFilter(float(np.exp(rng.uniform(np.log(200), np.log(6000)))),
                            float(rng.uniform(-4, 4)), float(rng.uniform(0.7, 2.0))))
    fx.append(pb.HighShelfFilter(8000, float(rng.uniform(-3, 2))))
    if part.stem == "vocals":
        f1, f2 = VOWELS[room["vowel"]]
        fx += [pb.PeakFilter(f1, float(rng.uniform(3, 6)), 2.0), pb.PeakFilter(f2, float(rng.uniform(3, 6)), 3.0),
               pb.PeakFilter(float(rng.uniform(2800, 4000)), 2.0, 1.5)]
    if cls == "electric guitar" and rng.random() < 0.5:
        fx.append(pb.Chorus(rate_hz=float(rng.uniform(0.3, 1.5)), depth=0.2, mix=float(rng.uniform(0.2, 0.5))))
    if cls == "pad" and rng.random() < 0.6:
        fx.append(pb.LowpassFilter(float(rng.uniform(1500, 6000))))
    fx.append(pb.Compressor(threshold_db=float(rng.uniform(-30, -14)), ratio=float(rng.uniform(1.5, 5)),
                            attack_ms=float(rng.uniform(2, 25)), release_ms=float(rng.uniform(50, 250))))
    if part.stem in LIMIT_DB:  # transients tamed, as a mix engineer would, so the stem is not all peaks
        fx.append(pb.Limiter(threshold_db=float(rng.uniform(*LIMIT_DB[part.stem])),
                             release_ms=float(rng.uniform(50, 150))))
    if part.stem == "vocals" and room["echo"]:
        fx.append(pb.Delay(delay_seconds=song.beat * room["echo"], feedback=0.25, mix=0.15))
    wet = float(rng.uniform(*REVERB_SEND[part.stem]))
    if wet > 0.01:
        fx.append(pb.Reverb(room_size=room["size"], damping=room["damping"], width=room["width"],
                            wet_level=wet, dry_level=1.0 - wet / 2))
    return pb.Pedalboard(fx)


def _rooms(seed: int, index: int) -> dict:
    """Per stem: the reverb room, the level, the vocals' vowel and echo; drawn once per track."""
    rooms = {}
    for k, s in enumerate(SOURCES):
        rng = np.random.default_rng([seed, index, 400 + k])
        rooms[s] = {"size": float(rng.uniform(0.15, 0.8)), "damping": float(rng.uniform(0.3, 0.7)),
                    "width": float(rng.uniform(0.5, 1.0)), "rms_db": float(rng.uniform(*STEM_RMS_DB[s])),
                    "vowel": int(rng.integers(len(VOWELS))),
                    "echo": float(rng.choice([0, 0, 0.5, 0.75, 1.0]))}
    return rooms


def _font_for(synth, part: Part, rng) -> tuple[int, int, str]:
    """(SoundFont index, program, preset name): the first SoundFont twice as likely as each other one."""
    program = part.program
    fonts = [f for f in range(len(synth.fonts)) if synth.preset_name(f, part.bank, program)]
    if not fonts and part.bank == DRUM_BANK:
        program = 0  # a SoundFont without this kit: the standard kit
        fonts = [f for f in range(len(synth.fonts)) if synth.preset_name(f, part.bank, program)]
    if not fonts:
        raise ValueError(f"no SoundFont of {', '.join(map(str, synth.fonts))} has bank {part.bank} "
                         f"program {part.program} ({part.name})")
    w = np.array([2.0 if f == 0 else 1.0 for f in fonts])
    font = fonts[int(rng.choice(len(fonts), p=w / w.sum()))]
    return font, program, synth.preset_name(font, part.bank, program)


def render_track(seed: int, index: int, *, seconds: float, samplerate: int = RATE, soundfonts=None,
                 stems=SOURCES) -> Track:
    """Render the recordings of ``stems`` of track ``index`` (the others stay None)."""
    fonts = find_soundfonts(soundfonts)
    synth = synthesizer(fonts, RATE)
    song, parts = compose(seed, index, seconds)
    rooms = _rooms(seed, index)
    n44 = int(round(seconds * RATE))
    frames = int(round(seconds * samplerate))
    raw: list[tuple[Part, Path, str, np.ndarray] | None] = []
    for i, part in enumerate(parts):
        if part.stem not in stems:
            raw.append(None)
            continue
        rng = np.random.default_rng([seed, index, 300 + i])
        font, program, preset = _font_for(synth, part, rng)
        dry = synth.render(font, part.bank, program, to_events(part.notes, part.controls, RATE), n44)
        # At a known level first, so the compressor's and limiter's thresholds mean the same for every preset.
        dry *= np.float32(10 ** (DRY_RMS_DB / 20) / max(rms(dry), 1e-9))
        wet = _chain(part, song, rooms[part.stem], rng)(dry, RATE)
        # The main part leads its stem, the others sit a few dB under it (RMS while they play). Mains near the centre.
        a, b = (int(t * RATE) for t in part.span())
        level = 0.0 if part.main else float(rng.uniform(*RELATIVE_DB.get(part.cls, DEFAULT_RELATIVE_DB)))
        wet *= np.float32(10 ** (level / 20) / max(rms(wet[:, a:max(b, a + 1)]), 1e-9))
        wet = _pan(wet, float(rng.uniform(-0.15, 0.15) if part.main else rng.choice([-1, 1]) * rng.uniform(0.2, 0.7)))
        raw.append((part, fonts[font], preset, wet))
    recordings: list[Recording | None] = [None] * len(parts)
    for s in stems:
        idx = [i for i, r in enumerate(raw) if r is not None and r[0].stem == s]
        total = sum(raw[i][3] for i in idx)
        gain = 10 ** (rooms[s]["rms_db"] / 20) / max(rms(total), 1e-9)
        gain = min(gain, STEM_PEAK / max(float(np.abs(total).max()), 1e-9))
        for i in idx:
            part, font, preset, wav = raw[i]
            wav = resample(wav * np.float32(gain), RATE, samplerate)[:, :frames]
            if wav.shape[1] < frames:
                wav = np.pad(wav, ((0, 0), (0, frames - wav.shape[1])))
            recordings[i] = Recording(part, font, preset, np.ascontiguousarray(wav, dtype=np.float32))
    return Track(song, recordings, samplerate, frames)


def recording_labels(track: Track, stem: str) -> list[dict]:
    """What the clean stem holds: each recording's class, program, SoundFont, level and span.

    ``level_db``: the recording's RMS over its span relative to the clean stem's RMS over the same span."""
    own = track.stem(stem)
    out = []
    for i in track.of(stem):
        r = track.recordings[i]
        start, end = r.part.span()
        a, b = int(start * track.samplerate), min(track.frames, max(int(end * track.samplerate), 1))
        out.append({"name": r.name, "class": r.part.cls, "program": r.part.program, "bank": r.part.bank,
                    "font": r.font.name, "preset": r.preset,
                    "level_db": _db(rms(r.audio[:, a:b]) / max(rms(own[:, a:b]), 1e-12)),
                    "start": round(start, 4), "end": round(min(end, track.frames / track.samplerate), 4)})
    return out


def mic_bleed(src: np.ndarray, rng, samplerate: int) -> np.ndarray:
    """Another source as a microphone hears it: a few ms late, band-limited (labelnoise.synth scales it)."""
    delay = int(rng.uniform(0.001, 0.015) * samplerate)
    out = np.zeros_like(src)
    out[:, delay:] = src[:, :src.shape[1] - delay]
    low = min(float(rng.uniform(2500, 8000)), 0.45 * samplerate)
    return pb.Pedalboard([pb.HighpassFilter(float(rng.uniform(80, 200))), pb.LowpassFilter(low)])(out, samplerate)


def _span(rng, frames: int, samplerate: int, whole: bool) -> tuple[int, int]:
    if whole:
        return 0, frames
    dur = int(rng.uniform(0.3, 0.8) * frames)
    a = int(rng.uniform(0, frames - dur))
    return a, a + dur


def misgroup(stems: np.ndarray, clean: np.ndarray, track: Track, plan: dict, labels: dict, rng) -> None:
    """Apply the plan's ``misgroup`` entries to ``stems`` (in place) and write their labels."""
    sr, n = track.samplerate, track.frames
    for s, entry in plan.items():
        if entry["kind"] != "misgroup":
            continue
        rec = track.recordings[entry["recording"]]
        k, d = SOURCES.index(s), SOURCES.index(entry["from"])
        whole = rng.random() < MISGROUP_WHOLE
        mode = "instead" if rng.random() < MISGROUP_INSTEAD else "inside"
        # A span where the recording plays; after a few tries, the whole track.
        for _ in range(6):
            a, b = _span(rng, n, sr, whole)
            if rms(rec.audio[:, a:b]) > 0.05 * rms(rec.audio):
                break
        else:
            a, b = 0, n
        fade = min(int(0.01 * sr), max(1, (b - a) // 4))
        mask = np.zeros(n, np.float32)
        mask[a:b] = 1.0
        if a > 0:
            mask[a:a + fade] = np.linspace(0, 1, fade, dtype=np.float32)
        if b < n:
            mask[b - fade:b] = np.linspace(1, 0, fade, dtype=np.float32)
        moved = rec.audio * mask
        stems[d] -= moved
        stems[k] = (stems[k] - clean[k] * mask if mode == "instead" else stems[k]) + moved
        own = rms(clean[k][:, a:b]) or rms(clean[k])
        labels[s] = {"noisy": True, "kind": "misgroup", "holds": entry["from"], "class": rec.part.cls,
                     "recording": rec.name, "mode": mode, "level_db": _db(rms(moved[:, a:b]) / max(own, 1e-12)),
                     "start": round(a / sr, 4), "end": round(b / sr, 4)}
        labels[entry["from"]].setdefault("gave", []).append(
            {"to": s, "recording": rec.name, "class": rec.part.cls, "start": round(a / sr, 4), "end": round(b / sr, 4)})
