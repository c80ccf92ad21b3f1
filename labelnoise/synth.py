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
made from sines and noise (``labelnoise.sine_sources``; fast, for unit tests); ``sampled``
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
from .noise import NOISE_KINDS, draw_noise, kind_weights, noisy_track, parse_kinds
from .sine_sources import sine_source, track_rng

__all__ = ["NOISE_KINDS", "LABELS_FILE", "PARAMS_FILE", "RENDERS", "clean_source", "clean_track", "generate",
           "load_clean", "main", "parse_kinds", "remove_generated", "track_name"]

log = logging.getLogger(__name__)

RENDERS = ("sine", "sampled")


def track_name(index: int, tracks: int) -> str:
    return f"track_{index:0{max(3, len(str(tracks - 1)))}d}"


def clean_source(seed: int, index: int, source: str, *, seconds: float,
                 samplerate: int = 44100, render: str = "sine", soundfonts=None) -> np.ndarray:
    """The clean content ``(2, T)`` of one source of track ``index``."""
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; expected one of {SOURCES}")
    if _check_render(render) == "sampled":
        from .sampled import render_track
        return render_track(seed, index, seconds=seconds, samplerate=samplerate, soundfonts=soundfonts,
                            stems=(source,)).stem(source)
    return sine_source(seed, index, source, seconds=seconds, samplerate=samplerate)


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
        rng = track_rng(seed, i, 99)
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
