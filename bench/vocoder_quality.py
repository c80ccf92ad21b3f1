"""How close a repitched stem comes to the same music made at the asked pitch and tempo.

The synthetic sources of ``labelnoise.synth`` are notes on a beat grid, so
the ideal result of "+3 semitones, 12 % faster" is known: the same track made
in a key 3 semitones up at a tempo 12 % higher (same random draws, same
notes). Each engine changes the original; the score is the spectral
convergence of its magnitude spectrogram to the ideal one,
``10 log10(sum |X|^2 / sum (|X| - |Y|)^2)`` in dB (higher is closer), STFT
1024 / 128, edges left out. Drums hold no key, so for them only tempo moves
the ideal (their pitched parts moved by the vocoder count as error; the
score compares engines, not absolute quality).

Engines: the vocoder at its default hop (``n_fft // 3``), the vocoder at
``hop=n_fft // 4`` (four overlaps), and Rubber Band R2 (pedalboard,
``high_quality=False``, the original's engine).

    .venv/bin/python bench/vocoder_quality.py                # 4 tracks, about 3 minutes
    .venv/bin/python bench/vocoder_quality.py --tracks 2
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
from pathlib import Path

import numpy as np
import pedalboard
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import labelnoise.sine_sources as sine_sources  # noqa: E402
import labelnoise.synth as synth  # noqa: E402
from labelnoise.vocoder import N_FFT, repitch  # noqa: E402

SR = 44100
SECONDS = 5.0
SOURCES = ("drums", "bass", "other")  # vocals: their formants would move with the key
CASES = [(semi, tempo) for tempo in (0.88, 1.0, 1.12) for semi in (-6, -3, 3, 6)]


@contextlib.contextmanager
def shifted_tracks(semitones: int, tempo: float):
    """Tracks made ``semitones`` higher and ``tempo`` times faster.

    The generator draws key and tempo per track (``sine_sources._track_params``);
    moving them after the draw keeps every other draw, hence the same notes.
    """
    draw = sine_sources._track_params

    def moved(seed, index):
        params = draw(seed, index)
        return {**params, "key": params["key"] + semitones, "bpm": params["bpm"] * tempo}

    sine_sources._track_params = moved
    try:
        yield
    finally:
        sine_sources._track_params = draw


def magnitude(wav) -> torch.Tensor:
    wav = torch.as_tensor(np.asarray(wav), dtype=torch.float32)
    return torch.stft(wav, 1024, 128, window=torch.hann_window(1024), return_complex=True).abs()


def convergence_db(ideal, got) -> float:
    ref, est = magnitude(ideal), magnitude(got)
    frames = min(ref.shape[-1], est.shape[-1])
    ref, est = ref[..., 40:frames - 40], est[..., 40:frames - 40]
    return float(10 * torch.log10(ref.pow(2).sum() / (ref - est).pow(2).sum()))


def engines():
    def vocoder(hop):
        return lambda x, semi, tempo, n: repitch(torch.from_numpy(x), semi, tempo, length=n,
                                                 hop=hop, stereo=True).numpy()

    def rubberband(x, semi, tempo, n):
        y = pedalboard.time_stretch(x, SR, tempo, semi, high_quality=False, preserve_formants=False)
        return np.pad(y[:, :n], ((0, 0), (0, max(0, n - y.shape[-1]))))

    return {"vocoder (3 overlaps, default)": vocoder(None),
            "vocoder (4 overlaps)": vocoder(N_FFT // 4),
            "Rubber Band R2": rubberband}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracks", type=int, default=4)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    scores = {}  # (engine, source) -> scores over tracks and cases
    for semi, tempo in CASES:
        for track in range(args.tracks):
            for source in SOURCES:
                x = synth.clean_source(track, track, source, seconds=SECONDS)
                with shifted_tracks(semi, tempo):
                    ideal = synth.clean_source(track, track, source, seconds=SECONDS / tempo)
                for name, engine in engines().items():
                    got = engine(x, semi, tempo, ideal.shape[-1])
                    scores.setdefault((name, source), []).append(convergence_db(ideal, got))
    print(f"spectral convergence to the ideal, dB (higher is closer), mean over {len(CASES)} "
          f"pitch/tempo changes x {args.tracks} tracks")
    for name in engines():
        print(f"  {name:30s} " + "  ".join(f"{source} {statistics.mean(scores[(name, source)]):5.2f}"
                                           for source in SOURCES))


if __name__ == "__main__":
    main()
