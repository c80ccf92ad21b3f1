"""Filter throughput in stem-minutes per minute: ``labelnoise.filtering`` vs the original's method.

    python bench/filter_speed.py                                # small and P1, 44.1 kHz synthetic stems
    python bench/filter_speed.py --configs small --tracks 2 --seconds 10 --repeats 3
    python bench/filter_speed.py --configs P1 --tracks 1 --seconds 10 --threads 1

Same stems, same weights (random, seed 0), key +6, speed 200, overlap 0.25,
shifts 1, float32, for each config:

- ``original``: per stem, the ``rubberband`` command line (``rubberband-r3
  --fast`` when installed, else ``rubberband``: both the R2 engine) from the
  stem file to a temp WAV via ``subprocess``, the temp WAV read back,
  ``demucs.apply.apply_model`` on ``demucs.htdemucs.HTDemucs``, and the four
  outputs written as 16-bit WAVs (the silent rule as in the original);
- ``ours``: ``labelnoise.filtering.run_filter`` with ``model.HTDemucs`` holding
  the same weights (Rubber Band in process, reading ahead one stem, volumes
  recorded, no WAVs);
- ``ours, no read-ahead``: the same with ``prefetch=0``.

Variants alternate, ``--repeats`` times after a one-stem warm-up; the best
wall time of each is shown (the least disturbed by other load on a shared
machine) with the median, and the CPU seconds of this process and its
children (the ``rubberband`` processes), which other load disturbs less.
Stem-minutes per minute = seconds of stem audio / wall seconds; per
CPU-minute = seconds of stem audio / CPU seconds.
"""
from __future__ import annotations

import argparse
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from demucs.apply import apply_model  # noqa: E402  (benchmarks may import demucs)
from demucs.htdemucs import HTDemucs as DemucsHTDemucs  # noqa: E402

from labelnoise import SOURCES  # noqa: E402
from labelnoise.silence import is_silent  # noqa: E402
from labelnoise.audio import read_audio  # noqa: E402
from labelnoise.evaluation import list_tracks  # noqa: E402
from labelnoise.filter_input import shift_stem  # noqa: E402
from labelnoise.filtering import run_filter  # noqa: E402
from labelnoise.synth import generate  # noqa: E402
from labelnoise.model.htdemucs import HTDemucs  # noqa: E402

CONFIGS = {
    # Segment 11 s: the training segment, which a trained model's `segment` becomes.
    "small": dict(channels=16, depth=4, nfft=1024, t_layers=1, t_heads=4, segment=11, samplerate=44100),
    "P1": dict(segment=11, samplerate=44100),
}
KEY, SPEED = 6, 200


def rubberband_command() -> list[str] | None:
    if shutil.which("rubberband-r3"):
        return ["rubberband-r3", "--fast"]
    if shutil.which("rubberband"):
        return ["rubberband"]
    return None


def original_filter(data: Path, out: Path, model, rubberband: list[str] | None, limit: int | None = None,
                    device=None) -> float:
    """The original's method over every stem; returns the seconds of stem audio.

    ``rubberband``: the command line (a temp WAV per stem, as the original), or None for the
    same R2 engine in process through pedalboard (where no CLI is installed). ``device``:
    where ``apply_model`` computes (the model must be there; the track stays on the CPU).
    """
    seconds, count = 0.0, 0
    with tempfile.TemporaryDirectory() as tmp:
        shifted_path = Path(tmp) / "shifted.wav"
        for folder in list_tracks(data):
            for stem in SOURCES:
                if limit is not None and count >= limit:
                    return seconds
                path = folder / f"{stem}.wav"
                wav = read_audio(path)
                target = out / stem / folder.name
                target.mkdir(parents=True, exist_ok=True)
                if is_silent(wav):
                    outputs = [wav] * len(SOURCES)
                else:
                    if rubberband is None:
                        shifted = torch.from_numpy(shift_stem(wav, 44100, KEY, SPEED))
                    else:
                        subprocess.run([*rubberband, "-p", str(KEY), "-T", str(SPEED / 100), str(path),
                                        str(shifted_path)], check=True, capture_output=True)
                        shifted = torch.from_numpy(read_audio(shifted_path))
                    with torch.no_grad():
                        est = apply_model(model, shifted[None], shifts=1, overlap=0.25, progress=False,
                                          device=device)[0]
                    outputs = est.cpu().numpy()
                for source, output in zip(SOURCES, outputs):
                    sf.write(str(target / f"{source}.wav"), np.clip(output, -1, 1).T, 44100, subtype="PCM_16")
                seconds += wav.shape[-1] / 44100
                count += 1
    return seconds


def ours_filter(data: Path, out: Path, model, prefetch: int, **options) -> float:
    """``run_filter`` with the bench's settings; ``options`` go to it (``precision``, ``device``...)."""
    return run_filter(data, out, model, key=KEY, speed=SPEED, shifts=1, progress=False,
                      prefetch=prefetch, **options).seconds


def timed(fn):
    """(wall seconds, CPU seconds of this process and its children, result)."""
    def cpu():
        own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
    start, cpu0 = time.perf_counter(), cpu()
    out = fn()
    return time.perf_counter() - start, cpu() - cpu0, out


def bench(name: str, config: dict, args, rubberband) -> None:
    torch.manual_seed(0)
    reference = DemucsHTDemucs(list(SOURCES), **config).eval()
    ours = HTDemucs(list(SOURCES), **config)
    ours.load_state_dict(reference.state_dict())
    ours.eval()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = tmp / "data"
        generate(data, tracks=args.tracks, seconds=args.seconds, noise_rate=0.3, seed=0,
                 samplerate=44100, progress=False)
        variants = {"ours": lambda out: ours_filter(data, out, ours, prefetch=1),
                    "ours, no read-ahead": lambda out: ours_filter(data, out, ours, prefetch=0)}
        if rubberband:
            variants = {"original": lambda out: original_filter(data, out, reference, rubberband), **variants}
            original_filter(data, tmp / "warm", reference, rubberband, limit=1)  # warm-up
        ours_filter(data, tmp / "warm-ours", ours, prefetch=0)
        results = {k: [] for k in variants}
        for r in range(args.repeats):
            for variant, fn in variants.items():
                out = tmp / f"{variant}-{r}".replace(" ", "_").replace(",", "")
                wall, cpu, seconds = timed(lambda: fn(out))
                results[variant].append((wall, cpu, seconds))
                shutil.rmtree(out, ignore_errors=True)
    params = sum(p.numel() for p in ours.parameters())
    stems = 4 * args.tracks
    print(f"\n{name} ({params:,} params), {stems} stems x {args.seconds:g} s at 44.1 kHz, "
          f"key +{KEY}, speed {SPEED}, shifts 1, {args.repeats} repeats, {torch.get_num_threads()} torch threads")
    print("| variant | stem-min per min (best) | median | CPU s (best) | stem-min per CPU-min |")
    print("|---|---|---|---|---|")
    best, per_cpu = {}, {}
    for variant, runs in results.items():
        seconds = runs[0][2]
        walls = [w for w, _, _ in runs]
        best[variant] = seconds / min(walls)
        per_cpu[variant] = seconds / min(c for _, c, _ in runs)
        print(f"| {variant} | {best[variant]:.2f} | {seconds / statistics.median(walls):.2f} | "
              f"{min(c for _, c, _ in runs):.1f} | {per_cpu[variant]:.2f} |")
    if "original" in best:
        for label, figures in (("wall", best), ("CPU", per_cpu)):
            print(f"ours / original, {label}: {figures['ours'] / figures['original']:.2f}x "
                  f"(no read-ahead: {figures['ours, no read-ahead'] / figures['original']:.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=["small", "P1"])
    parser.add_argument("--tracks", type=int, default=1, help="tracks of 4 stems (default 1)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per stem (default 10)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's); 1 gives steady CPU figures on a busy machine")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rubberband = rubberband_command()
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"Rubber Band CLI: {' '.join(rubberband) if rubberband else 'not found'}")
    if not rubberband:
        print("the 'original' column needs the rubberband command line: "
              "apt-get install -y --no-install-recommends rubberband-cli")
    for name in args.configs:
        bench(name, CONFIGS[name], args, rubberband)


if __name__ == "__main__":
    main()
