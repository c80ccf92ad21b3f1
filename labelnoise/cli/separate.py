"""Separate songs into stems with a model checkpoint or a bag of models.

    python separate.py runs/vocals/model.th song.flac other.ogg --out separated/
    python separate.py bags/final.yaml data/test/*/mixture.wav --out est/ --shifts 1
    python separate.py model.th song.wav --out est/ --device cuda --precision bf16 --jobs 4

Writes ``OUT/<track>/<source>.wav`` (16-bit, or float with ``--float32``) at
the input's sample rate; ``<track>`` is the file name without extension, or
the folder name for ``<track>/mixture.wav``, so a test set separated this way
is laid out for ``evaluate.py``. Any file soundfile reads (WAV, FLAC, OGG...)
works; mono becomes stereo, more than two channels is an error, other sample
rates are resampled to the model's and back. A file that cannot be read
(not audio, truncated, NaN or infinite samples) or written, or whose
separation is not finite, gets a one-line error and the others still run;
the exit code is 1 if any failed, 2 for a model that cannot be loaded.
"""
from __future__ import annotations

import argparse
import collections
import logging
import random
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from labelnoise.progress import bar as progress_bar
from tqdm.contrib.logging import logging_redirect_tqdm

from labelnoise.audio import AudioError, info, read_audio, resample, write_audio
from labelnoise.bag import BagError, load_model_or_bag
from labelnoise.errors import command_line, describe
from labelnoise.inference import MODES, PRECISIONS, apply

log = logging.getLogger("separate")


def track_name(path: Path) -> str:
    """``song.flac`` -> ``song``; ``<track>/mixture.wav`` -> ``<track>``."""
    return path.parent.name if path.stem == "mixture" and path.parent.name else path.stem


def read_input(path: Path, samplerate: int, channels: int):
    """(audio at the model rate, the file's own rate)."""
    rate = info(path).samplerate
    return read_audio(path, samplerate=samplerate, channels=channels), rate


def write_stems(out_dir: Path, sources, estimate, model_rate: int, file_rate: int, float32: bool):
    for source, wav in zip(sources, estimate):
        write_audio(out_dir / f"{source}.wav", resample(wav, model_rate, file_rate), file_rate,
                    float32=float32)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="checkpoint file, or a bag YAML (models: [...], weights: [[...]])")
    parser.add_argument("audio", nargs="+", type=Path, help="audio files to separate")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--overlap", type=float, default=0.25, help="segment overlap (default 0.25)")
    parser.add_argument("--shifts", type=int, default=0,
                        help="random shifts of up to 0.5 s to average over (default 0)")
    parser.add_argument("--segment", type=float, default=None,
                        help="segment length in seconds (default: the model's)")
    parser.add_argument("--mode", choices=MODES, default="overlap",
                        help="overlap-add (default) or plain normalised chunks")
    parser.add_argument("--precision", choices=PRECISIONS, default="float32",
                        help="bf16 runs the model under autocast (CUDA)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="segments per forward pass (default: 1 on CPU, 4 on GPU)")
    parser.add_argument("--jobs", type=int, default=2, help="threads reading and writing files")
    parser.add_argument("--float32", action="store_true", help="write 32-bit float WAV, not 16-bit")
    parser.add_argument("--seed", type=int, default=None, help="seed for the random shifts")
    return parser.parse_args(argv)


@command_line(log)
def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if args.jobs < 1:
        log.error("--jobs must be at least 1")
        return 2
    try:
        model = load_model_or_bag(args.model)
    except (BagError, OSError, ValueError) as exc:
        log.error("%s", exc)
        return 2
    model.to(args.device)
    rng = random.Random(args.seed) if args.seed is not None else None
    failed = 0
    seen: dict[str, Path] = {}
    todo = []
    for path in args.audio:
        name = track_name(path)
        if name in seen:
            log.error("%s: track name %r already used by %s; skipped", path, name, seen[name])
            failed += 1
            continue
        seen[name] = path
        todo.append(path)

    with logging_redirect_tqdm(), ThreadPoolExecutor(args.jobs) as pool:
        # Reads run ahead of the model by up to --jobs files; writes run behind it.
        pending = collections.deque()
        queue = iter(todo)

        def refill():
            while len(pending) < args.jobs:
                path = next(queue, None)
                if path is None:
                    return
                pending.append((path, pool.submit(read_input, path, model.samplerate,
                                                  model.audio_channels)))

        refill()
        writes = []
        for _ in progress_bar(range(len(todo)), unit="file", desc="files"):
            path, future = pending.popleft()
            refill()
            try:
                wav, rate = future.result()
            except AudioError as exc:
                log.error("%s", exc)
                failed += 1
                continue
            estimate = apply(model, torch.from_numpy(wav), segment=args.segment,
                             overlap=args.overlap, shifts=args.shifts, batch_size=args.batch_size,
                             device=args.device, progress=True, precision=args.precision,
                             mode=args.mode, rng=rng)
            if not bool(torch.isfinite(estimate).all()):
                # 16-bit WAV would turn NaN into -1.0 everywhere: write nothing instead.
                log.error("%s: the model's output holds NaN or infinite values; nothing written", path)
                failed += 1
                continue
            out_dir = args.out / track_name(path)
            writes.append((out_dir, pool.submit(write_stems, out_dir, model.sources,
                                                estimate.cpu().numpy(), model.samplerate, rate,
                                                args.float32)))
        for out_dir, future in writes:
            try:
                future.result()
            except (OSError, RuntimeError, ValueError) as exc:
                log.error("%s: writing failed (%s)", out_dir, describe(exc) if isinstance(exc, OSError) else exc)
                failed += 1
    done = len(args.audio) - failed
    log.info("separated %d of %d file(s) into %s", done, len(args.audio), args.out)
    if failed:
        log.error("%d file(s) failed", failed)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
