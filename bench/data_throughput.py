"""Part 2 loader throughput per CPU core, by Repitch backend, against the original's method.

Items are 4 stems x 11 s (44.1 kHz stereo) from ``labelnoise.data.PoolDataset``
on synthetic data; Repitch as in Part 2 (per stem, proba 0.2, pitch +/-6,
tempo gauss(0, 5) % clipped to 12 %). Columns, all on one thread:

- ``original``: every stem segment written to a temp WAV, the repitched ones
  run through ``rubberband-r3 --fast`` as a subprocess, all read back (the
  original's method; skipped with a note when the CLI is missing);
- ``rubberband``: our backend, Rubber Band in process (pedalboard, R2 engine);
- ``vocoder``: the loader without repitch, plus ``VocoderRepitch`` on the
  batch on this machine's CPU (and the loader alone, the CPU's share when the
  vocoder runs on a GPU).

CPU time counts this process and its children (the CLI). Then per-stem costs
of each repitch engine (and the vocoder on CUDA when there is one), from a
few calls; ``bench/vocoder_speed.py`` times the vocoder against Rubber Band
with alternating repeats and medians (the figures in docs/BENCHMARKS.md).

Command::

    python bench/data_throughput.py --tracks 8 --seconds 30 --items 40 --out /tmp/bench_throughput
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from labelnoise.augment import RubberbandRepitch, VocoderRepitch, repitch_length
from labelnoise.data import PoolDataset
from labelnoise.files import METADATA_FILE
from labelnoise.metadata import index_dataset
from labelnoise.synth import generate, remove_generated
from labelnoise.vocoder import repitch

SR = 44100
PART2 = dict(proba=0.2, max_pitch=6, max_tempo=12, tempo_std=5, same_for_all=False)
CLI = "rubberband-r3"


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the CLI runs)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class CliRepitch(RubberbandRepitch):
    """The original's method: temp WAV per stem, ``rubberband-r3 --fast`` per repitched stem."""

    def __call__(self, stems, rng):
        S, C, T = stems.shape
        out_len = repitch_length(T, self.max_tempo)
        out = []
        with tempfile.TemporaryDirectory() as tmp:
            for s, (apply, semi, tempo) in enumerate(zip(*self.draw(S, rng))):
                src, dst = Path(tmp) / f"in{s}.wav", Path(tmp) / f"out{s}.wav"
                sf.write(src, stems[s].T, SR, subtype="PCM_16")
                if apply:
                    subprocess.run([CLI, "--fast", "-q", f"--pitch={int(semi)}",
                                    f"--tempo={1 + 0.01 * float(tempo):.6f}", str(src), str(dst)],
                                   check=True, capture_output=True)
                    src = dst
                wav, _ = sf.read(src, dtype="float32", always_2d=True)
                out.append(np.pad(wav.T[:, :out_len], ((0, 0), (0, max(0, out_len - len(wav))))))
        return np.stack(out)


def loader_rate(ds, items: int, batch: int = 4, on_batch=None) -> tuple[float, float]:
    """(items per CPU-second, items per wall-second) reading ``items`` items, ``batch`` at a time."""
    ds[0]  # open files and warm the page cache outside the timing
    cpu, wall = cpu_seconds(), time.perf_counter()
    for start in range(1, items + 1, batch):
        wav = torch.stack([ds[i] for i in range(start, min(start + batch, items + 1))])
        if on_batch is not None:
            on_batch(wav)
    n = items
    return n / (cpu_seconds() - cpu), n / (time.perf_counter() - wall)


def per_stem_costs(have_cli: bool) -> None:
    rng = np.random.default_rng(0)
    stem = (0.1 * rng.standard_normal((2, 11 * SR))).astype(np.float32)
    semi, tempo = 3, 1.05

    def timed(fn, reps=3):
        fn()
        t = time.process_time()
        for _ in range(reps):
            fn()
        return (time.process_time() - t) / reps

    import pedalboard
    r2 = timed(lambda: pedalboard.time_stretch(stem, SR, tempo, semi, high_quality=False, preserve_formants=False))
    r3 = timed(lambda: pedalboard.time_stretch(stem, SR, tempo, semi, high_quality=True, preserve_formants=False))
    batch = torch.from_numpy(np.stack([stem] * 8))  # 8 stems of one batch, all repitched
    voc = timed(lambda: repitch(batch, semi, tempo, length=repitch_length(11 * SR), stereo=True)) / 8
    print(f"per 11 s stereo stem, one thread: Rubber Band R2 (pedalboard, --fast) {r2 * 1e3:.0f} ms, "
          f"R3 {r3 * 1e3:.0f} ms, torch vocoder (CPU) {voc * 1e3:.0f} ms "
          f"= {r2 / voc:.1f}x faster than R2, {r3 / voc:.1f}x than R3")
    if have_cli:
        with tempfile.TemporaryDirectory() as tmp:
            src, dst = Path(tmp) / "in.wav", Path(tmp) / "out.wav"
            sf.write(src, stem.T, SR, subtype="PCM_16")
            c0 = cpu_seconds()
            for _ in range(3):
                subprocess.run([CLI, "--fast", "-q", f"--pitch={semi}", f"--tempo={tempo}", str(src), str(dst)],
                               check=True, capture_output=True)
            print(f"  {CLI} --fast CLI: {(cpu_seconds() - c0) / 3 * 1e3:.0f} CPU ms per stem (incl. WAV I/O)")
    if torch.cuda.is_available():
        gpu = batch.repeat(8, 1, 1).cuda()  # 64 stems
        semis = torch.randint(-6, 7, (64, 1), device="cuda").float()
        tempos = 1 + 0.05 * torch.randn(64, 1, device="cuda").clamp(-2.4, 2.4)
        for _ in range(2):
            repitch(gpu, semis, tempos, length=repitch_length(11 * SR), stereo=True)
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(5):
            repitch(gpu, semis, tempos, length=repitch_length(11 * SR), stereo=True)
        torch.cuda.synchronize()
        per = (time.perf_counter() - t) / 5 / 64
        print(f"  torch vocoder on {torch.cuda.get_device_name()}: {per * 1e3:.2f} ms per stem "
              f"(64 stems, mixed pitches and tempi)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_throughput"),
                        help="scratch folder for the synthetic data (deleted first; only a folder made by labelnoise.synth)")
    parser.add_argument("--tracks", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--items", type=int, default=40, help="items timed per column")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)  # per core
    remove_generated(args.out)
    generate(args.out, tracks=args.tracks, seconds=args.seconds, noise_rate=0.3, seed=0, progress=False)
    index_dataset(args.out, out=args.out / METADATA_FILE, progress=False)

    def pool(transform=None):
        return PoolDataset(args.out / METADATA_FILE, segment=11.0, samplerate=SR,
                           items_per_epoch=args.items + 1, seed=0, item_transform=transform)

    print(f"Part 2 pool loader, 11 s items (4 stereo stems), repitch per stem proba {PART2['proba']}, "
          f"{args.items} items per column, torch threads 1")
    have_cli = shutil.which(CLI) is not None
    rates = {}
    if have_cli:
        rates["original"] = loader_rate(pool(CliRepitch(SR, **PART2)), args.items)
    else:
        print(f"note: {CLI} not found (Debian package rubberband-cli): original column skipped")
    rates["rubberband"] = loader_rate(pool(RubberbandRepitch(SR, **PART2)), args.items)
    rates["loader only"] = loader_rate(pool(), args.items)
    vocoder = VocoderRepitch(SR, generator=torch.Generator().manual_seed(0), **PART2)
    rates["vocoder (CPU)"] = loader_rate(pool(), args.items, on_batch=vocoder)
    for name, (per_cpu, per_wall) in rates.items():
        print(f"  {name:14s} {per_cpu:6.2f} items per CPU-second   {per_wall:6.2f} items/s wall")
    if "original" in rates:
        print(f"  rubberband backend / original: {rates['rubberband'][0] / rates['original'][0]:.2f}x per core")
    per_stem_costs(have_cli)


if __name__ == "__main__":
    main()
