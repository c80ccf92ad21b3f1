"""Separate songs into stems with a model checkpoint or a bag of models.

    python separate.py runs/vocals/model.th song.flac other.ogg --out separated/
    python separate.py bags/final.yaml data/test/*/mixture.wav --out est/ --shifts 1
    python separate.py model.th song.wav --out est/ --device cuda --precision bf16 --jobs 4
    python separate.py model.th song.wav -o est/ --two-stems vocals --mp3 --mp3-bitrate 192
    python separate.py model.th song.wav -o est/ --flac --int24 --filename "{track}_{stem}.{ext}"

Writes ``OUT/<track>/<source>.wav`` (``--filename`` changes the layout, with
the keys ``{track}``, ``{trackext}``, ``{stem}``, ``{ext}``), 16-bit PCM, or
``--int24``, ``--float32``, ``--flac`` (16 or 24-bit), ``--mp3`` (constant
``--mp3-bitrate``, 320 kbps by default), at the input's sample rate
(``--samplerate`` for another). Each stem is kept from clipping as demucs
does (``--clip-mode rescale``, the default: divided by max(1.01 x peak, 1);
``clamp``: cut at +-0.99; ``none``). ``--two-stems vocals`` writes vocals and
no_vocals (the sum of the other stems). ``--standardize`` separates the input
standardised by its mono mix's mean and std, as the demucs CLI does.

``<track>`` is the file name without extension, or the folder name for
``<track>/mixture.wav``, so a test set separated this way is laid out for
``evaluate.py``. Any file soundfile reads (WAV, FLAC, OGG, MP3...) works;
mono becomes stereo, more than two channels is an error, other sample rates
are resampled to the model's and back. A file that cannot be read (not
audio, truncated, NaN or infinite samples) or written, or whose separation
is not finite, gets a one-line error and the others still run; the exit
code is 1 if any failed, 2 for a model that cannot be loaded or bad options.
"""
from __future__ import annotations

import argparse
import collections
import logging
import random
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from labelnoise.progress import bar as progress_bar
from tqdm.contrib.logging import logging_redirect_tqdm

from labelnoise.audio import AudioError, info, read_audio, resample
from labelnoise.bag import BagError, load_model_or_bag
from labelnoise.errors import command_line, describe
from labelnoise.inference import MODES, PRECISIONS, apply
from labelnoise.stem_files import CLIP_MODES, DEFAULT_TEMPLATE, OTHER_METHODS, StemOutput, check_template

log = logging.getLogger("separate")


def track_name(path: Path) -> str:
    """``song.flac`` -> ``song``; ``<track>/mixture.wav`` -> ``<track>``."""
    return path.parent.name if path.stem == "mixture" and path.parent.name else path.stem


def read_input(path: Path, samplerate: int, channels: int):
    """(audio at the model rate, the file's own rate, the audio at the file's rate)."""
    rate = info(path).samplerate
    wav = read_audio(path, channels=channels)
    return resample(wav, rate, samplerate), rate, wav


def write_stems(output: StemOutput, paths: dict, sources, estimate, model_rate: int, mix, rate: int,
                out_rate: int) -> None:
    """Resample ``estimate`` ``(S, C, T)`` to ``out_rate`` and write the stems ``output`` makes of it."""
    if out_rate != model_rate:
        estimate = np.stack([resample(wav, model_rate, out_rate) for wav in estimate])
    mix = resample(mix, rate, out_rate)
    # Resampling twice may leave a sample more or fewer than the mixture has.
    length = mix.shape[-1]
    estimate = np.pad(estimate[..., :length], ((0, 0), (0, 0), (0, max(0, length - estimate.shape[-1]))))
    for stem, wav in output.stems(sources, estimate, mix).items():
        output.write(paths[stem], wav, out_rate)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="checkpoint file, or a bag YAML (models: [...], weights: [[...]])")
    parser.add_argument("audio", nargs="+", type=Path, help="audio files to separate")
    parser.add_argument("--model-config", type=Path,
                        help="the model config of a bare state dict (ours, or an MSST config)")
    parser.add_argument("-o", "--out", type=Path, required=True, help="output folder")
    parser.add_argument("-d", "--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--overlap", type=float, default=0.25, help="segment overlap (default 0.25)")
    parser.add_argument("--shifts", type=int, default=0,
                        help="random shifts of up to 0.5 s to average over (default 0)")
    parser.add_argument("--segment", type=float, default=None,
                        help="segment length in seconds (default: the model's)")
    parser.add_argument("--mode", choices=MODES, default="overlap",
                        help="overlap-add (default) or plain normalised chunks")
    parser.add_argument("--standardize", action="store_true",
                        help="separate the input standardised by its mono mix's mean and std, as the demucs CLI")
    parser.add_argument("--precision", choices=PRECISIONS, default="float32",
                        help="bf16 runs the model under autocast (CUDA)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="segments per forward pass (default: 1 on CPU, 4 on GPU)")
    parser.add_argument("-j", "--jobs", type=int, default=2, help="threads reading and writing files")
    parser.add_argument("--seed", type=int, default=None, help="seed for the random shifts")
    out = parser.add_argument_group("output files")
    out.add_argument("--filename", default=DEFAULT_TEMPLATE,
                     help=f"output path under OUT, keys {{track}} {{trackext}} {{stem}} {{ext}} "
                          f"(default {DEFAULT_TEMPLATE})")
    out.add_argument("--two-stems", metavar="STEM", help="write STEM and no_STEM (the other stems summed)")
    out.add_argument("--other-method", choices=OTHER_METHODS, default="add",
                     help="with --two-stems: no_STEM as the sum of the others (add), minus_STEM as the "
                          "mixture minus STEM (minus), or nothing (none)")
    depth = out.add_mutually_exclusive_group()
    depth.add_argument("--int24", action="store_true", help="24-bit PCM (WAV or FLAC)")
    depth.add_argument("--float32", action="store_true", help="32-bit float WAV")
    kind = out.add_mutually_exclusive_group()
    kind.add_argument("--flac", action="store_true", help="FLAC, 16-bit (or --int24)")
    kind.add_argument("--mp3", action="store_true", help="MP3 at --mp3-bitrate")
    out.add_argument("--mp3-bitrate", type=int, default=320, help="MP3 kbps, constant (default 320)")
    out.add_argument("--clip-mode", choices=CLIP_MODES, default="rescale",
                     help="keep each stem from clipping: rescale the whole stem (default), clamp, none")
    out.add_argument("--samplerate", type=int, default=None, help="output rate in Hz (default: the input's)")
    args = parser.parse_args(argv)
    if args.mp3 and (args.int24 or args.float32):
        parser.error("--int24 and --float32 are for WAV and FLAC, not --mp3")
    if args.flac and args.float32:
        parser.error("FLAC holds no float samples: --flac with --int24, or --float32 alone (WAV)")
    try:
        check_template(args.filename)
    except ValueError as exc:
        parser.error(str(exc))
    return args


def stem_output(args) -> StemOutput:
    ext = "mp3" if args.mp3 else "flac" if args.flac else "wav"
    subtype = "FLOAT" if args.float32 else "PCM_24" if args.int24 else "PCM_16"
    return StemOutput(template=args.filename, ext=ext, subtype=subtype, bitrate=args.mp3_bitrate,
                      clip=args.clip_mode, two_stems=args.two_stems, other_method=args.other_method)


@command_line(log)
def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if args.jobs < 1:
        log.error("--jobs must be at least 1")
        return 2
    try:
        model = load_model_or_bag(args.model, config=args.model_config)
    except (BagError, OSError, ValueError) as exc:
        log.error("%s", exc)
        return 2
    output = stem_output(args)
    if args.two_stems is not None and args.two_stems not in model.sources:
        log.error("--two-stems %s: the model separates %s", args.two_stems, ", ".join(model.sources))
        return 2
    model.to(args.device)
    rng = random.Random(args.seed) if args.seed is not None else None
    failed = 0
    claimed: dict[Path, Path] = {}  # output file -> the input writing it
    todo = []
    for path in args.audio:
        paths = {stem: output.path(args.out, track_name(path), path.suffix.lstrip("."), stem)
                 for stem in output.names(model.sources)}
        taken = next((p for p in paths.values() if p in claimed), None)
        if taken is not None:
            log.error("%s: would write %s, as %s does; skipped (tell them apart with --filename, e.g. "
                      "{track}_{trackext}/{stem}.{ext})", path, taken, claimed[taken])
            failed += 1
            continue
        claimed.update(dict.fromkeys(paths.values(), path))
        todo.append((path, paths))

    with logging_redirect_tqdm(), ThreadPoolExecutor(args.jobs) as pool:
        # Reads run ahead of the model by up to --jobs files; writes run behind it.
        pending = collections.deque()
        queue = iter(todo)

        def refill():
            while len(pending) < args.jobs:
                job = next(queue, None)
                if job is None:
                    return
                pending.append((*job, pool.submit(read_input, job[0], model.samplerate,
                                                  model.audio_channels)))

        refill()
        writes = []
        for _ in progress_bar(range(len(todo)), unit="file", desc="files"):
            path, paths, future = pending.popleft()
            refill()
            try:
                wav, rate, mix = future.result()
            except AudioError as exc:
                log.error("%s", exc)
                failed += 1
                continue
            estimate = apply(model, torch.from_numpy(wav), segment=args.segment,
                             overlap=args.overlap, shifts=args.shifts, batch_size=args.batch_size,
                             device=args.device, progress=True, precision=args.precision,
                             mode=args.mode, rng=rng, standardize=args.standardize)
            if not bool(torch.isfinite(estimate).all()):
                # 16-bit WAV would turn NaN into -1.0 everywhere: write nothing instead.
                log.error("%s: the model's output holds NaN or infinite values; nothing written", path)
                failed += 1
                continue
            writes.append((path, pool.submit(write_stems, output, paths, model.sources, estimate.cpu().numpy(),
                                             model.samplerate, mix, rate, args.samplerate or rate)))
        for path, future in writes:
            try:
                future.result()
            except (OSError, RuntimeError, ValueError) as exc:
                log.error("%s: writing its stems failed (%s)", path,
                          describe(exc) if isinstance(exc, OSError) else exc)
                failed += 1
    done = len(args.audio) - failed
    log.info("separated %d of %d file(s) into %s", done, len(args.audio), args.out)
    if failed:
        log.error("%d file(s) failed", failed)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
