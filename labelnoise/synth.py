"""Synthetic label-noise data: track folders of four music-like stems, some of them wrong.

Each track has a random key, mode, tempo, chord progression, levels and pans;
its four sources are made to be told apart by ear and by a model:

- drums: pitched-down kick clicks, noise snares and hi-hats on a beat grid;
- bass: low notes with harmonics on the chord roots;
- other: chords from several waveforms (saw, square, triangle) with pad or
  pluck envelopes, detuned between the channels;
- vocals: a melody with vibrato, glides and formant (vowel) shaped harmonics.

Label noise is drawn per stem with probability ``noise_rate``; its kind is
one of ``NOISE_KINDS`` (weights from ``kinds``; each kind is registered, with
how it is drawn and made, in ``labelnoise.noise.KINDS``):

- ``bleed``: another stem of the track leaks in, ``level_db`` = RMS of the
  leak relative to the RMS of the stem's own content (-20..-6 dB); with
  ``render="sampled"`` as a microphone hears it (band-limited, 1-15 ms late);
- ``swap``: the stem holds another source of the track (``holds``);
- ``other_song``: the stem holds the same source of another track (``track``);
- ``silent``: the stem is all zeros, its content was moved into another stem
  (``moved_to``); that receiving stem is labelled noisy too, as a ``bleed``
  with ``"via": "silent"`` and its measured ``level_db``;
- ``partial``: from ``start`` to ``end`` seconds (30-70 % of the track) the
  stem holds another source (``holds``) instead of its own;
- ``misgroup`` (``render="sampled"`` only, SDX23 leaderboard A): a recording
  of another, clean stem (``holds``; its ``class`` and ``recording`` name)
  was grouped into this stem, from ``start`` to ``end`` (the whole track or
  30-80 % of it), added to the stem's own content (``"mode": "inside"``) or
  in its place (``"instead"``), ``level_db`` = its RMS relative to the
  stem's own content over that span; the stem it came from lacks it there
  (its label lists it under ``gave``).

Two render backends (``render``): ``sine``, the default, the sources above
made from sines and noise (fast, for unit tests); ``sampled``
(``labelnoise.sampled``), songs of several recordings per stem played by
General MIDI SoundFonts through FluidSynth, with effects (``make sounds``
installs them); its labels also list each stem's ``recordings`` (class,
program, SoundFont, level, span).

Everything depends only on the seed, so the clean content of any stem can be
recomputed (``clean_track``, ``load_clean``); ``write_clean`` also writes it
under ``DIR/clean/``. Stems are 16-bit WAV (or float with ``float32``);
``mixture.wav`` is float32, the exact sum of the stems as written.

Commands::

    python -m labelnoise.synth --out data/synth --tracks 20 --seconds 30 --noise-rate 0.3 --seed 0
    python -m labelnoise.synth --out data/demo --tracks 8 --seconds 20 --noise-rate 0.3 \\
        --seed 1 --samplerate 16000 --kinds swap=2,other_song=2
    python -m labelnoise.synth --out data/sampled --tracks 64 --seconds 16 --noise-rate 0.3 \\
        --seed 0 --samplerate 22050 --render sampled --kinds misgroup=3,bleed=2
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path

import numpy as np
from .progress import bar as progress_bar

from . import SOURCES
from .atomic import write_json
from .audio import read_audio, write_audio
from .files import LABELS_FILE, MIXTURE_FILE, SYNTH_FILE as PARAMS_FILE
from .fluid import RenderUnavailable
from .noise import NOISE_KINDS, draw_noise, kind_weights, noisy_track, parse_kinds, rms

__all__ = ["NOISE_KINDS", "LABELS_FILE", "PARAMS_FILE", "RENDERS", "clean_source", "clean_track", "generate",
           "load_clean", "main", "parse_kinds", "remove_generated", "track_name"]

log = logging.getLogger(__name__)

RENDERS = ("sine", "sampled")

# Peak of every clean source; two of them summed (a silent stem's receiver,
# a partial crossfade) stay below 1, so 16-bit stems never clip.
_PEAK = 0.3
_MAJOR = (0, 2, 4, 5, 7, 9, 11)
_MINOR = (0, 2, 3, 5, 7, 8, 10)
# (F1, F2, F3) in Hz of five vowels, for the formant-shaped vocals.
_VOWELS = ((800, 1200, 2500), (400, 2000, 2600), (300, 2300, 3000),
           (500, 900, 2400), (350, 700, 2400))


def track_name(index: int, tracks: int) -> str:
    return f"track_{index:0{max(3, len(str(tracks - 1)))}d}"


def _rng(seed: int, index: int, stream: int) -> np.random.Generator:
    # One independent stream per (seed, track, purpose): a track's sources and
    # noise never depend on how many tracks are generated or in what order.
    return np.random.default_rng([seed, index, stream])


def _hz(midi):
    return 440.0 * 2.0 ** ((np.asarray(midi, dtype=np.float64) - 69.0) / 12.0)


def _track_params(seed: int, index: int) -> dict:
    rng = _rng(seed, index, 0)
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


def clean_source(seed: int, index: int, source: str, *, seconds: float,
                 samplerate: int = 44100, render: str = "sine", soundfonts=None) -> np.ndarray:
    """The clean content ``(2, T)`` of one source of track ``index``."""
    if source not in _SYNTHS:
        raise ValueError(f"unknown source {source!r}; expected one of {SOURCES}")
    if _check_render(render) == "sampled":
        from .sampled import render_track
        return render_track(seed, index, seconds=seconds, samplerate=samplerate, soundfonts=soundfonts,
                            stems=(source,)).stem(source)
    p = _track_params(seed, index)
    n = int(round(seconds * samplerate))
    k = SOURCES.index(source)
    wav = _SYNTHS[source](p, _rng(seed, index, 1 + k), n, samplerate)
    return _finish(wav, p["rms_db"][k], p["pan"][k])


def clean_track(seed: int, index: int, *, seconds: float, samplerate: int = 44100,
                render: str = "sine", soundfonts=None) -> np.ndarray:
    """The clean sources ``(4, 2, T)`` of track ``index``, in ``SOURCES`` order."""
    if _check_render(render) == "sampled":
        from .sampled import render_track
        return render_track(seed, index, seconds=seconds, samplerate=samplerate, soundfonts=soundfonts).stems()
    return np.stack([clean_source(seed, index, s, seconds=seconds, samplerate=samplerate)
                     for s in SOURCES])


def load_clean(out_dir, track: str) -> np.ndarray:
    """Recompute the clean sources ``(4, 2, T)`` of a generated track from ``DIR/synth.json``."""
    params_path = Path(out_dir) / PARAMS_FILE
    try:
        params = json.loads(params_path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{params_path}: not found; is {out_dir} a synth output folder?") from None
    if track not in params["tracks"]:
        raise KeyError(f"{params_path}: no track {track!r}")
    return clean_track(params["seed"], params["tracks"].index(track), seconds=params["seconds"],
                       samplerate=params["samplerate"], render=params.get("render", "sine"),
                       soundfonts=params.get("soundfonts"))


def _check_render(render: str) -> str:
    if render not in RENDERS:
        raise ValueError(f"unknown render backend {render!r}; expected one of {', '.join(RENDERS)}")
    return render


def _kind_weights(kinds: dict | None, render: str = "sine") -> np.ndarray:
    """Weights over NOISE_KINDS for ``render``; kinds not named keep weight 1 (0 where it cannot make them)."""
    return kind_weights(kinds, _check_render(render))


def _sampled_track(seed, index, tracks, names, rng, noise_rate, weights, seconds, sr, fonts):
    """One track of the sampled backend: clean stems, the stems as written, labels."""
    from . import sampled

    track = sampled.render_track(seed, index, seconds=seconds, samplerate=sr, soundfonts=fonts)
    plan = draw_noise(rng, noise_rate, weights, tracks, {s: track.of(s) for s in SOURCES})
    clean = track.stems()

    def source_of(j, s):
        return sampled.render_track(seed, j, seconds=seconds, samplerate=sr, soundfonts=fonts, stems=(s,)).stem(s)

    stems, labels = noisy_track(index, tracks, names, clean, plan, rng, sr, source_of,
                                leak_of=lambda wav, r: sampled.mic_bleed(wav, r, sr))
    sampled.misgroup(stems, clean, track, plan, labels, rng)
    for s in SOURCES:
        labels[s]["recordings"] = sampled.recording_labels(track, s)
    return clean, stems, labels


def generate(out_dir, *, tracks: int, seconds: float, noise_rate: float, seed: int,
             samplerate: int = 44100, kinds: dict | None = None, write_clean: bool = False,
             float32: bool = False, progress: bool = True, render: str = "sine", soundfonts=None) -> Path:
    """Write ``tracks`` track folders under ``out_dir``; return the path of noise_labels.json.

    ``kinds`` weights the noise kinds (``{"swap": 2}``; kinds not named keep
    weight 1, ``misgroup`` only with ``render="sampled"``). ``noise_rate=0``
    gives a clean set. ``render``: ``"sine"`` or ``"sampled"`` (SoundFonts from
    ``soundfonts``, else ``$LABELNOISE_SOUNDFONTS``, else Debian's).
    """
    if tracks < 1:
        raise ValueError(f"tracks must be >= 1, got {tracks}")
    if seconds <= 0:
        raise ValueError(f"seconds must be > 0, got {seconds}")
    if not 0 <= noise_rate <= 1:
        raise ValueError(f"noise_rate must be in [0, 1], got {noise_rate}")
    weights = _kind_weights(kinds, render)
    fonts = None
    if render == "sampled":
        from .fluid import find_soundfonts
        fonts = [str(f) for f in find_soundfonts(soundfonts)]
    out_dir = Path(out_dir)
    names = [track_name(i, tracks) for i in range(tracks)]
    all_labels = {}
    for i in progress_bar(range(tracks), desc="synth", unit="track", disable=not progress):
        rng = _rng(seed, i, 99)
        if render == "sampled":
            clean, stems, labels = _sampled_track(seed, i, tracks, names, rng, noise_rate, weights, seconds,
                                                  samplerate, fonts)
        else:
            plan = draw_noise(rng, noise_rate, weights, tracks)
            clean = clean_track(seed, i, seconds=seconds, samplerate=samplerate)
            stems, labels = noisy_track(i, tracks, names, clean, plan, rng, samplerate,
                                        lambda j, s: clean_source(seed, j, s, seconds=seconds, samplerate=samplerate))
        folder = out_dir / names[i]
        mixture = 0.0
        for k, s in enumerate(SOURCES):
            write_audio(folder / f"{s}.wav", stems[k], samplerate, float32=float32)
            # Sum what the files hold (after 16-bit rounding), not the floats.
            # (read back: libsndfile's float -> int rounding differs between versions).
            mixture = mixture + read_audio(folder / f"{s}.wav", channels=None)
            if write_clean:
                write_audio(out_dir / "clean" / names[i] / f"{s}.wav", clean[k], samplerate, float32=float32)
        write_audio(folder / MIXTURE_FILE, mixture, samplerate, float32=True)
        all_labels[names[i]] = labels
    write_json(out_dir / PARAMS_FILE, {
        "seed": seed, "seconds": seconds, "samplerate": samplerate, "noise_rate": noise_rate,
        "kinds": dict(zip(NOISE_KINDS, weights.tolist())), "tracks": names, "render": render,
        **({"soundfonts": fonts} if fonts else {})})
    labels_path = out_dir / LABELS_FILE
    write_json(labels_path, all_labels)
    noisy = sum(lab["noisy"] for t in all_labels.values() for lab in t.values())
    log.info("wrote %d tracks to %s; %d of %d stems noisy", tracks, out_dir, noisy, 4 * tracks)
    return labels_path


def remove_generated(out_dir) -> None:
    """Delete a folder this generator made (it holds synth.json); refuse any other folder."""
    out_dir = Path(out_dir)
    if not out_dir.exists():
        return
    if not (out_dir / PARAMS_FILE).is_file():
        raise ValueError(f"{out_dir}: exists and was not made by labelnoise.synth (no {PARAMS_FILE}); "
                         "refusing to delete it, choose another folder")
    shutil.rmtree(out_dir)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m labelnoise.synth", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--tracks", type=int, required=True, help="number of tracks")
    parser.add_argument("--seconds", type=float, required=True, help="length of each track in seconds")
    parser.add_argument("--noise-rate", type=float, default=0.0,
                        help="probability that a stem is noisy (0 = clean set; default 0)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (the output depends only on it)")
    parser.add_argument("--samplerate", type=int, default=44100, help="sample rate in Hz (default 44100)")
    parser.add_argument("--kinds", default=None,
                        help=f"weights of the noise kinds, e.g. swap=2,other_song=2 (kinds: {', '.join(NOISE_KINDS)}; "
                             "kinds not named keep weight 1, use KIND=0 to exclude one)")
    parser.add_argument("--write-clean", action="store_true", help="also write the clean stems to DIR/clean/<track>/")
    parser.add_argument("--float32", action="store_true", help="write stems as 32-bit float instead of 16-bit PCM")
    parser.add_argument("--render", choices=RENDERS, default="sine",
                        help="sine: sines and noise bursts (fast, the default); sampled: several recordings per stem "
                             "played by General MIDI SoundFonts through FluidSynth, with effects (make sounds)")
    parser.add_argument("--soundfont", action="append", type=Path, default=None, metavar="SF2",
                        help="with --render sampled: a SoundFont to play (repeat for several; default "
                             "$LABELNOISE_SOUNDFONTS, else /usr/share/sounds/sf2/FluidR3_GM.sf2 and TimGM6mb.sf2)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        kinds = parse_kinds(args.kinds)
        path = generate(args.out, tracks=args.tracks, seconds=args.seconds, noise_rate=args.noise_rate,
                        seed=args.seed, samplerate=args.samplerate, kinds=kinds,
                        write_clean=args.write_clean, float32=args.float32, render=args.render,
                        soundfonts=args.soundfont)
    except RenderUnavailable as exc:
        raise SystemExit(f"error: {exc}") from None
    except ValueError as exc:
        parser.error(str(exc))
    print(path)


if __name__ == "__main__":
    main()
