"""Keep the stems the filter found clean: volumes -> clean-stem JSON + a stem-pool dataset + a report.

Reads what ``filter.py`` measured (``OUTPUTS/volumes.jsonl``, or the original
code's WAVs ``OUTPUTS/{stem}/{track}/{source}.wav``) and keeps a stem when its
own output is louder than the loudest other output by more than THRESHOLD dB
(one threshold per source; rules in ``labelnoise/selection.py``). Writes, under
DEST (default: next to the dataset, ``data/labelnoise_clean_dataset_predicted_by_{suffix}``,
the ``data.root`` of configs/joint360.yaml and configs/finetune.yaml):

    labelnoise_track_clean_predicted_by_{suffix}.json   {stem: [track, ...]}
    train/{stem}/{track}.wav                            the pool training reads
    selection.json, report.md, margins.png, margins.csv (+ sweep.png with labels)

where suffix = ``{MODEL}_key{KEY}_speed{SPEED}``. The source dataset is never
written to. Commands::

    python auto_filter.py pretrain3 6 200 20                       # the original's call
    python auto_filter.py filtered360 6 200 20 --data data/labelnoise --link
    python auto_filter.py pretrain3 6 200 auto                     # one population of margins or two, and a leak test
    python auto_filter.py pretrain3 6 200 otsu                     # Otsu's split per source
    python auto_filter.py filtered360 6 200 auto --holdout 4       # 4 tracks stay out of the pool
    python auto_filter.py filtered360 6 200 auto --holdout auto    # 15 % of them, 2 to 8
    python auto_filter.py pretrain3 6 200 --keep-fraction 0.6      # the best 60 % of each source
    python auto_filter.py pretrain3 6 200 20 --outputs /scratch/evaluator_outputs_pretrain3_key6_speed200 \\
        --labels data/labelnoise/noise_labels.json --dry-run
    python auto_filter.py pretrain3 6 200 -5                       # a negative threshold needs no --

OUTPUTS written by filter.py record the dataset, key and speed they were made
with (filter.json); other --data, KEY or SPEED are refused. A run killed while
writing DEST leaves selection.json with "complete": false, which train.py
refuses; the same command again finishes it.

Exit codes: 0 done; 1 failed (no volumes, outputs of other data, a DEST made
with other settings, a read-only or full disk); 2 bad arguments.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from labelnoise.errors import command_line
from labelnoise.files import FILTER_OUTPUTS, LABELS_FILE, POOL, REPORT_MD
from labelnoise.selection import select_clean_stems

log = logging.getLogger("auto_filter")


@command_line(log)
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="the model name the filter ran with (pretrain3, filtered360, ...)")
    parser.add_argument("key", type=int, help="the filter's pitch change in semitones (the original: 6)")
    parser.add_argument("speed", type=int, help="the filter's tempo in percent (the original: 200)")
    parser.add_argument("threshold", nargs="?", default="20",
                        help="margin in dB a clean stem must exceed, 'auto' or 'otsu' (labelnoise/thresholds.py); default 20")
    parser.add_argument("--keep-fraction", type=float, default=None, metavar="F",
                        help="keep the best F (0-1] of each source by margin; overrides THRESHOLD")
    parser.add_argument("--outputs", type=Path, default=None,
                        help=f"the filter's output folder (default {FILTER_OUTPUTS})")
    parser.add_argument("--data", type=Path, default=None,
                        help="the track-folder dataset the filter ran on (default: data.root of configs/base.yaml)")
    parser.add_argument("--dest", type=Path, default=None,
                        help=f"the pool dataset to write (default: next to --data, {POOL})")
    parser.add_argument("--link", action="store_true",
                        help="hard-link the kept stems instead of copying them (a copy where links are refused)")
    parser.add_argument("--labels", type=Path, default=None,
                        help=f"{LABELS_FILE} for precision / recall (default DATA/{LABELS_FILE} if present)")
    parser.add_argument("--holdout", default="0", metavar="N|auto",
                        help="N tracks stay out of the pool, to score the models trained on it; auto: 15 %% of "
                             "the tracks, 2 to 8 (default 0)")
    parser.add_argument("--dry-run", action="store_true", help="decide and log the counts; write nothing to DEST")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.key < 0 or args.speed <= 0:
        parser.error(f"need KEY >= 0 (semitones up) and SPEED > 0 (percent), got {args.key} and {args.speed}")
    if args.holdout.strip().lower() != "auto" and not (args.holdout.isdigit()):
        parser.error(f"--holdout {args.holdout}: must be a whole number >= 0 or auto")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        sel = select_clean_stems(args.model, args.key, args.speed, args.threshold,
                                 keep_fraction=args.keep_fraction, outputs=args.outputs, data=args.data,
                                 dest=args.dest, labels=args.labels, link=args.link, dry_run=args.dry_run,
                                 progress=not args.no_progress, holdout=args.holdout)
    except (FileNotFoundError, ValueError) as exc:
        log.error("%s", exc)
        return 1
    if sel.metrics is not None:
        o = sel.metrics["overall"]
        log.info("against %s: precision %s, recall %s of 'clean' over %d labelled stems", sel.labels,
                 "n/a" if o["precision"] is None else f"{o['precision']:.3f}",
                 "n/a" if o["recall"] is None else f"{o['recall']:.3f}", sel.metrics["labelled"])
    if not args.dry_run:
        log.info("report: %s", sel.dest / REPORT_MD)
    return 0


if __name__ == "__main__":
    sys.exit(main())
