"""CPU time per 11 s stereo stem on one thread: the torch phase vocoder against Rubber Band.

Engines, each asked for the same change of one 11 s stereo 44.1 kHz stem
(noise at -20 dBFS), output cut to 0.88 x length as Repitch does:

- Rubber Band R2 (``pedalboard.time_stretch(high_quality=False)``, the
  engine of the CLI's ``--fast``, which the original used) and R3
  (``high_quality=True``), one stem per call;
- ``labelnoise.vocoder.repitch`` on a batch, the stereo path that
  ``VocoderRepitch`` runs (one phase computation per stem).

Two cases: ``fixed``, +3 semitones and tempo 1.05 for every stem (a batch of
8), and ``spread``, every pitch of Part 2 but 0 (-6..6 semitones, tempo
1.05), one stem each, in one batch of 12 for the vocoder and one call per
pitch for Rubber Band. Repeats alternate between the engines in one process
(the machine is shared: a slow spell hits all of them), after one warm-up
call each; each figure is the median over repeats of process CPU time, and
each ratio the median of the per-repeat ratios.

    .venv/bin/python bench/vocoder_speed.py                  # 7 repeats, about a minute
    .venv/bin/python bench/vocoder_speed.py --repeats 15 --no-r3
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pedalboard
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from labelnoise.augment import repitch_length  # noqa: E402
from labelnoise.vocoder import repitch  # noqa: E402

SR = 44100
TEMPO = 1.05
FIXED_SEMITONES = 3
SPREAD_SEMITONES = [s for s in range(-6, 7) if s != 0]


def cpu_ms(fn) -> float:
    """Process CPU time of one call, in ms."""
    start = time.process_time()
    fn()
    return (time.process_time() - start) * 1e3


def rubberband(stem: np.ndarray, semitones: int, high_quality: bool) -> np.ndarray:
    return pedalboard.time_stretch(stem, SR, TEMPO, semitones, high_quality=high_quality,
                                   preserve_formants=False)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-r3", dest="r3", action="store_false", help="skip the slow R3 engine")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # per core, as Rubber Band runs

    stem = (0.1 * np.random.default_rng(0).standard_normal((2, 11 * SR))).astype(np.float32)
    length = repitch_length(stem.shape[-1])
    fixed = torch.from_numpy(np.stack([stem] * 8))
    spread = torch.from_numpy(np.stack([stem] * len(SPREAD_SEMITONES)))
    spread_semis = torch.tensor(SPREAD_SEMITONES, dtype=torch.float32)[:, None]

    # Per-stem CPU ms of each engine and case, one call (or batch) each.
    runs = {
        ("fixed", "R2"): lambda: cpu_ms(lambda: rubberband(stem, FIXED_SEMITONES, False)),
        ("fixed", "vocoder"): lambda: cpu_ms(
            lambda: repitch(fixed, FIXED_SEMITONES, TEMPO, length=length, stereo=True)) / len(fixed),
        ("spread", "R2"): lambda: sum(cpu_ms(lambda: rubberband(stem, s, False))
                                      for s in SPREAD_SEMITONES) / len(SPREAD_SEMITONES),
        ("spread", "vocoder"): lambda: cpu_ms(
            lambda: repitch(spread, spread_semis, TEMPO, length=length, stereo=True)) / len(spread),
    }
    if args.r3:
        runs[("fixed", "R3")] = lambda: cpu_ms(lambda: rubberband(stem, FIXED_SEMITONES, True))
    for run in runs.values():  # warm-up: plans, FFT descriptors, page cache
        run()
    ms = {key: [] for key in runs}
    for _ in range(args.repeats):
        for key, run in runs.items():
            ms[key].append(run())

    print(f"CPU ms per 11 s stereo stem, one thread, median of {args.repeats} repeats "
          f"(tempo {TEMPO}; fixed: {FIXED_SEMITONES:+d} semitones; spread: -6..6 but 0)")
    for case in ("fixed", "spread"):
        voc = ms[(case, "vocoder")]
        line = [f"  {case:6s} vocoder {statistics.median(voc):6.1f}"]
        for engine in ("R2", "R3"):
            if (case, engine) in ms:
                ref = ms[(case, engine)]
                ratio = statistics.median(r / v for r, v in zip(ref, voc))
                line.append(f"{engine} {statistics.median(ref):6.1f} (vocoder {ratio:.1f}x faster)")
        print("   ".join(line))


if __name__ == "__main__":
    main()
