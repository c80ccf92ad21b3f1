"""Render speed of labelnoise.synth's backends: seconds per track-minute, wall clock and CPU.

Generates the same set (noise 0.3, every kind alike) with ``render="sampled"``
and with ``render="sine"``, one process, and prints the time per track and
per track-minute; the SoundFonts' first load is timed apart (once per
process). The load average is printed too: the figure depends on what else
runs on the machine.

Command::

    python bench/render_speed.py --tracks 16 --seconds 16 --samplerate 22050 --out /tmp/bench_render
"""
from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

from labelnoise.fluid import find_soundfonts, synthesizer
from labelnoise.sampled import RATE
from labelnoise.synth import generate, remove_generated


def _timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_render"),
                        help="scratch folder (deleted first; only a folder made by labelnoise.synth)")
    parser.add_argument("--tracks", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=16.0)
    parser.add_argument("--samplerate", type=int, default=22050)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")
    fonts = find_soundfonts()
    wall, _ = _timed(lambda: synthesizer(fonts, RATE))
    print(f"SoundFonts loaded in {wall:.2f} s (once per process): {', '.join(f.name for f in fonts)}")
    minutes = args.tracks * args.seconds / 60
    for render in ("sampled", "sine"):
        folder = args.out / render
        remove_generated(folder)
        wall, cpu = _timed(lambda: generate(folder, tracks=args.tracks, seconds=args.seconds, noise_rate=0.3, seed=0,
                                            samplerate=args.samplerate, render=render, progress=False))
        print(f"{render}: {args.tracks} tracks x {args.seconds:g} s at {args.samplerate} Hz in {wall:.1f} s: "
              f"{wall / args.tracks:.2f} s per track, {wall / minutes:.2f} s per track-minute "
              f"(CPU {cpu / minutes:.2f} s per track-minute)")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
