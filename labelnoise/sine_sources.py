"""The sine render backend of labelnoise.synth: a track's four clean sources made from sines and noise.

A track's key, mode, tempo, chord progression, levels and pans are drawn
from its seed (``_track_params``); each source is then made on that grid
(drums: kick clicks, noise snares and hi-hats; bass: low notes with
harmonics; other: detuned chords of several waveforms; vocals: a melody with
vibrato, glides and vowel formants) and levelled to its drawn RMS and pan
(``sine_source``). ``track_rng`` gives the random streams, so any source can
be recomputed from ``(seed, track)`` alone.
"""
from __future__ import annotations

import numpy as np

from . import SOURCES
from .noise import rms

# Peak of every clean source; two of them summed (a silent stem's receiver,
# a partial crossfade) stay below 1, so 16-bit stems never clip.
_PEAK = 0.3
_MAJOR = (0, 2, 4, 5, 7, 9, 11)
_MINOR = (0, 2, 3, 5, 7, 8, 10)
# (F1, F2, F3) in Hz of five vowels, for the formant-shaped vocals.
_VOWELS = ((800, 1200, 2500), (400, 2000, 2600), (300, 2300, 3000),
           (500, 900, 2400), (350, 700, 2400))


def track_rng(seed: int, index: int, stream: int) -> np.random.Generator:
    # One independent stream per (seed, track, purpose): a track's sources and
    # noise never depend on how many tracks are generated or in what order.
    return np.random.default_rng([seed, index, stream])


def _hz(midi):
    return 440.0 * 2.0 ** ((np.asarray(midi, dtype=np.float64) - 69.0) / 12.0)


def _track_params(seed: int, index: int) -> dict:
    rng = track_rng(seed, index, 0)
    mode = _MAJOR if rng.random() < 0.5 else _MINOR
    degrees = [0] + [int(d) for d in rng.integers(0, 7, size=3)]
    return {
        "bpm": float(rng.uniform(80, 150)),
        "key": int(rng.integers(0, 12)),
        "mode": "major" if mode is _MAJOR else "minor",
        "scale": mode,
        "progression": degrees,
        "rms_db": [float(x) for x in rng.uniform(-30, -18, size=len(SOURCES))],
        "pan": [float(x) for x in rng.uniform(-0.35, 0.35, size=len(SOURCES))],
    }


def _scale_note(p: dict, degree: int, octave: int) -> int:
    """MIDI note of a scale degree (any integer) in the track's key."""
    oct_shift, step = divmod(degree, 7)
    return 12 * (octave + 1 + oct_shift) + p["key"] + p["scale"][step]


def _chord(p: dict, bar: int) -> int:
    return p["progression"][bar % len(p["progression"])]


def _cycles(freq: np.ndarray, sr: int) -> np.ndarray:
    """Running phase in cycles (float64, not wrapped) of a frequency in Hz."""
    return np.cumsum(freq / np.float64(sr))


def _wrap(cycles: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Cycles (times ``scale``, a detune) -> phase in radians in [0, 2 pi), float32.

    Wrapping in float64 first keeps long tracks in tune; float32 sin is fast.
    """
    c = cycles * scale if scale != 1.0 else cycles.copy()
    c -= np.floor(c)
    c *= 2 * np.pi
    return c.astype(np.float32)


def _phase(freq: np.ndarray, sr: int) -> np.ndarray:
    return _wrap(_cycles(freq, sr))


def _smooth(x: np.ndarray, width: int) -> np.ndarray:
    """Moving average (box filter) of ``width`` samples, same length."""
    if width <= 1:
        return x
    c = np.cumsum(np.concatenate([np.full(width, x[0]), x]), dtype=np.float64)
    return ((c[width:] - c[:-width]) / width).astype(np.float32)


def _place(out: np.ndarray, onset: int, event: np.ndarray) -> None:
    if onset >= out.shape[-1]:
        return
    n = min(event.shape[-1], out.shape[-1] - onset)
    out[..., onset:onset + n] += event[..., :n]


def _drums(p, rng, n, sr):
    beat = 60.0 / p["bpm"]
    t = np.arange(int(0.3 * sr), dtype=np.float32) / sr
    k_start, k_end = rng.uniform(110, 180), rng.uniform(40, 60)
    kick = np.sin(_phase(k_end + (k_start - k_end) * np.exp(-t / 0.03), sr)) * np.exp(-t / 0.12)
    click = rng.standard_normal(t.size).astype(np.float32) * np.exp(-t / 0.002) * 0.5
    kick = kick + click
    snare_tone = rng.uniform(160, 240)
    snare_noise = rng.standard_normal(t.size).astype(np.float32)
    snare_noise = snare_noise - 0.6 * np.roll(snare_noise, 1)
    snare = 0.8 * snare_noise * np.exp(-t / 0.07) + np.sin(2 * np.pi * snare_tone * t) * np.exp(-t / 0.05)
    hat_noise = np.diff(rng.standard_normal(t.size + 1).astype(np.float32))
    hat_decay = rng.uniform(0.015, 0.04)
    hat = 0.35 * hat_noise * np.exp(-t / hat_decay)
    left, right = np.zeros(n, np.float32), np.zeros(n, np.float32)
    hat_pan = rng.uniform(-0.6, 0.6)
    eighths = int(n / sr / (beat / 2)) + 1
    for e in range(eighths):
        onset = int(round(e * beat / 2 * sr))
        pos = e % 8
        if pos in (0, 4) or (pos in (3, 5, 7) and rng.random() < 0.2):
            vel = rng.uniform(0.8, 1.0)
            _place(left, onset, vel * kick)
            _place(right, onset, vel * kick)
        if pos in (2, 6) or rng.random() < 0.05:
            vel = rng.uniform(0.7, 1.0)
            _place(left, onset, vel * snare)
            _place(right, onset, vel * snare)
        vel = rng.uniform(0.4, 1.0)
        _place(left, onset, vel * (1 - hat_pan) * hat)
        _place(right, onset, vel * (1 + hat_pan) * hat)
    return np.stack([left, right])


def _note_index(notes, n, sr):
    """Per sample, the index of the latest note started (0 before the first)."""
    bounds = np.clip([0] + [int(start * sr) for start, _, _ in notes[1:]] + [n], 0, n)
    return np.repeat(np.arange(len(notes), dtype=np.int32), np.diff(bounds))


def _notes_to_tracks(notes, n, sr, attack, release):
    """(start_s, dur_s, midi) notes -> per-sample f0 (Hz) and envelope arrays.

    The pitch holds through rests (no phase jumps); the envelope is zero there.
    """
    f0 = _hz([m for _, _, m in notes]).astype(np.float32)[_note_index(notes, n, sr)]
    env = np.zeros(n, np.float32)
    for start, dur, _ in notes:
        a, b = int(start * sr), min(n, int((start + dur) * sr))
        if a >= b:
            continue
        m = b - a
        i = np.arange(m, dtype=np.float32)
        e = np.minimum(1.0, i / (attack * sr)) * np.minimum(1.0, (m - i) / (release * sr))
        env[a:b] = np.maximum(env[a:b], e)
    return f0, env


def _bass(p, rng, n, sr):
    beat = 60.0 / p["bpm"]
    notes = []
    step = beat / 2 if rng.random() < 0.5 else beat
    for i in range(int(n / sr / step) + 1):
        start = i * step
        bar = int(start / (4 * beat))
        degree = _chord(p, bar) + (4 if rng.random() < 0.15 else 0)
        notes.append((start, step * rng.uniform(0.6, 0.95), _scale_note(p, degree, 1)))
    f0, env = _notes_to_tracks(notes, n, sr, 0.005, 0.05)
    ph = _phase(f0, sr)
    tilt = rng.uniform(0.9, 1.6)
    x = sum(np.sin(h * ph) / h ** tilt for h in range(1, 7)).astype(np.float32)
    x *= env
    return np.stack([x, x])


def _other(p, rng, n, sr):
    beat = 60.0 / p["bpm"]
    pad = rng.random() < 0.5
    shapes = rng.choice(3, size=3)  # one waveform per chord voice
    detune = rng.uniform(2, 8) / 1200  # cents -> octaves, opposite per channel
    bars = int(n / sr / (4 * beat)) + 1
    voices = [[] for _ in range(3)]
    for bar in range(bars):
        d = _chord(p, bar)
        for v in range(3):
            midi = _scale_note(p, d + 2 * v, 4)
            if pad:
                voices[v].append((bar * 4 * beat, 4 * beat * 0.98, midi))
            else:
                for e in range(8):
                    if rng.random() < 0.7:
                        voices[v].append(((bar * 8 + e) * beat / 2, beat / 2 * 0.9, midi))
    out = np.zeros((2, n), np.float32)
    for v in range(3):
        f0, env = _notes_to_tracks(voices[v], n, sr, 0.15 if pad else 0.003, 0.2 if pad else 0.15)
        if not pad:
            env *= _pluck_decay(voices[v], n, sr)
        ph = _phase(f0, sr)
        if shapes[v] == 0:  # saw
            w = sum(np.sin(h * ph) * np.float32(1 / h) for h in range(1, 7))
        elif shapes[v] == 1:  # square
            w = sum(np.sin(h * ph) * np.float32(1 / h) for h in range(1, 9, 2))
        else:  # triangle
            w = sum(np.sin(h * ph) * np.float32((-1) ** (h // 2) / h ** 2) for h in range(1, 9, 2))
        w *= env
        # Width: each voice reaches the right channel a few ms later (Haas effect).
        delay = int(rng.uniform(0.002, 0.012) * sr)
        out[0] += w
        out[1, delay:] += w[:n - delay]
    return out


def _pluck_decay(notes, n, sr):
    dec = np.ones(n, np.float32)
    for start, dur, _ in notes:
        a, b = int(start * sr), min(n, int((start + dur) * sr))
        if a < b:
            dec[a:b] = np.exp(-np.arange(b - a, dtype=np.float32) / (0.12 * sr))
    return dec


def _vocals(p, rng, n, sr):
    beat = 60.0 / p["bpm"]
    notes, vowels = [], []
    t, degree = 0.0, int(rng.integers(0, 7))
    while t < n / sr:
        if notes and rng.random() < 0.15:  # a rest between phrases (never first)
            t += beat * rng.choice([1, 2])
            continue
        dur = beat * rng.choice([0.5, 1, 1, 2])
        degree = int(np.clip(degree + rng.choice([-2, -1, 0, 1, 2]), -3, 9))
        notes.append((t, dur * 0.95, _scale_note(p, degree, 4)))
        vowels.append(_VOWELS[rng.integers(len(_VOWELS))])
        t += dur
    f0, env = _notes_to_tracks(notes, n, sr, 0.03, 0.06)
    # Glides between notes, then a vibrato of 5-6.5 Hz.
    f0 = 2 ** _smooth(np.log2(f0), int(0.04 * sr))
    rate, depth = rng.uniform(5, 6.5), rng.uniform(0.2, 0.5)
    tt = np.arange(n, dtype=np.float32) / sr
    f0 = f0 * 2 ** (depth / 12 * np.sin(2 * np.pi * rate * tt))
    ph = _phase(f0, sr)
    # Formant gains per note and harmonic, at the note's nominal pitch.
    nharm = 12
    h = np.arange(1, nharm + 1)
    table = np.zeros((len(notes), nharm), np.float32)
    for j, ((_, _, midi), formants) in enumerate(zip(notes, vowels)):
        fh = _hz(midi) * h
        g = sum(np.exp(-((fh - F) / (0.12 * F + 60)) ** 2) * w for F, w in zip(formants, (1.0, 0.6, 0.3)))
        table[j] = g / h ** 0.5 + 0.02
    # Sum the harmonics note by note: the gains are constant within a note.
    x = np.zeros(n, np.float32)
    for j, (start, dur, _) in enumerate(notes):
        a, b = int(start * sr), min(n, int((start + dur) * sr))
        seg = ph[a:b]
        acc = x[a:b]
        for k in range(nharm):
            acc += table[j, k] * np.sin((k + 1) * seg)
    x *= env
    return np.stack([x, x])


_SYNTHS = {"drums": _drums, "bass": _bass, "other": _other, "vocals": _vocals}


def _finish(wav: np.ndarray, rms_db: float, pan: float) -> np.ndarray:
    # A pan, then the level: RMS at the drawn dB, but never a peak above _PEAK.
    wav = wav * np.array([[1 - pan], [1 + pan]], np.float32)
    wav *= 10 ** (rms_db / 20) / (rms(wav) + 1e-12)
    peak = float(np.abs(wav).max())
    if peak > _PEAK:
        wav *= _PEAK / peak
    return wav.astype(np.float32)


def sine_source(seed: int, index: int, source: str, *, seconds: float, samplerate: int) -> np.ndarray:
    """The clean content ``(2, T)`` of one source of track ``index``, made from sines and noise."""
    p = _track_params(seed, index)
    n = int(round(seconds * samplerate))
    k = SOURCES.index(source)
    wav = _SYNTHS[source](p, track_rng(seed, index, 1 + k), n, samplerate)
    return _finish(wav, p["rms_db"][k], p["pan"][k])
