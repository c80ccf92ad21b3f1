"""Challenge SDR (or other metrics) of separated stems, per track and source, with mean and median over tracks.

Estimates already on disk (``EST/<track>/<source>.wav``, as ``separate.py`` writes):

    python evaluate.py data/test est/ --json est/sdr.json --csv est/sdr.csv
    python evaluate.py data/test est/ --sources vocals bass
    python evaluate.py data/test est/ --metrics sdr,csdr,si_sdr --csv est/scores.csv

Separate and score in one go (nothing written unless ``--out``):

    python evaluate.py --model runs/joint360/model.th --tracks data/test --json sdr.json
    python evaluate.py --model bags/final.yaml --tracks data/test --shifts 1 --out est/

SDR = 10 log10((sum s^2 + 1e-7) / (sum (s - s_hat)^2 + 1e-7)) over all samples
and channels; a track's score is the mean over its sources. Lengths within
``--max-length-diff`` samples are cropped and reported; channel-count or
sample-rate mismatches are errors naming the file. Prints a table; exit code 1
on an error.

``--metrics`` (comma-separated; default ``sdr``): ``sdr``, ``csdr`` (museval's
BSS-eval v4 SDR, median over 1 s frames, as the MUSDB18 literature reports),
``si_sdr``, and MSST's ``l1_freq``, ``aura_stft``, ``aura_mrstft``,
``bleedless``, ``fullness`` (labelnoise/track_metrics.py defines each). With
several, the table, JSON and CSV (a ``metric`` column) hold each.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from labelnoise import SOURCES
from labelnoise.audio import AudioError
from labelnoise.bag import BagError, load_model_or_bag
from labelnoise.errors import command_line
from labelnoise.evaluation import (MAX_LENGTH_DIFF, evaluate_dirs, evaluate_model, format_table,
                                   write_scores)
from labelnoise.files import MIXTURE_FILE
from labelnoise.inference import MODES, PRECISIONS
from labelnoise.track_metrics import parse_metrics

log = logging.getLogger("evaluate")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ref_dir", nargs="?", type=Path, help="reference track folders")
    parser.add_argument("est_dir", nargs="?", type=Path, help="estimate track folders")
    parser.add_argument("--sources", nargs="+", default=None,
                        help=f"sources to score (default: {' '.join(SOURCES)}, or the model's)")
    parser.add_argument("--metrics", default="sdr",
                        help="comma-separated: sdr (default), csdr, si_sdr, l1_freq, aura_stft, aura_mrstft, "
                             "bleedless, fullness")
    parser.add_argument("--json", type=Path, help="write the full report as JSON here")
    parser.add_argument("--csv", type=Path, help="write one row per track as CSV here")
    parser.add_argument("--max-length-diff", type=int, default=MAX_LENGTH_DIFF,
                        help=f"largest length difference cropped silently (default {MAX_LENGTH_DIFF})")
    run = parser.add_argument_group("separate and evaluate")
    run.add_argument("--model", help="checkpoint or bag YAML to separate with")
    run.add_argument("--model-config", type=Path,
                     help="the model config of a bare state dict (ours, or an MSST config)")
    run.add_argument("--tracks", type=Path, help=f"test set: <track>/{{sources}}.wav [+ {MIXTURE_FILE}]")
    run.add_argument("--out", type=Path, help="also write the estimates here")
    run.add_argument("--float32", action="store_true", help="write float WAV estimates")
    run.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    run.add_argument("--overlap", type=float, default=0.25)
    run.add_argument("--shifts", type=int, default=0)
    run.add_argument("--segment", type=float, default=None, help="seconds (default: the model's)")
    run.add_argument("--mode", choices=MODES, default="overlap")
    run.add_argument("--precision", choices=PRECISIONS, default="float32")
    run.add_argument("--batch-size", type=int, default=None, help="default: 1 on CPU, 4 on GPU")
    args = parser.parse_args(argv)
    with_model = args.model is not None or args.tracks is not None
    with_dirs = args.ref_dir is not None or args.est_dir is not None
    if with_model == with_dirs:
        parser.error("give either REF_DIR EST_DIR, or --model M --tracks DIR")
    if with_model and (args.model is None or args.tracks is None):
        parser.error("--model and --tracks go together")
    if with_dirs and args.est_dir is None:
        parser.error("EST_DIR is missing")
    try:
        args.metrics = parse_metrics(args.metrics)
    except ValueError as exc:
        parser.error(str(exc))
    return args


@command_line(log)
def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        if args.model is not None:
            model = load_model_or_bag(args.model, config=args.model_config)
            report = evaluate_model(
                model, args.tracks, sources=args.sources, out_dir=args.out, float32=args.float32,
                max_length_diff=args.max_length_diff, progress=True, device=args.device,
                segment=args.segment, overlap=args.overlap, shifts=args.shifts,
                batch_size=args.batch_size, precision=args.precision, mode=args.mode, metrics=args.metrics)
        else:
            report = evaluate_dirs(args.ref_dir, args.est_dir, args.sources or SOURCES,
                                   max_length_diff=args.max_length_diff, progress=True, metrics=args.metrics)
    except (AudioError, BagError, FileNotFoundError, ValueError) as exc:
        log.error("%s", exc)
        return 1
    print(format_table(report))
    if report["aligned"]:
        log.warning("cropped to equal length: %s", report["aligned"])
    write_scores(report, json_path=args.json, csv_path=args.csv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
