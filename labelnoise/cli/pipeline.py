"""``python -m labelnoise.pipeline``: list the stages, run them here, or write the final bag.

The options that decide the stages and their commands (``add_chain_arguments``,
``layout_from``) are shared with slurm/submit.py; the stages themselves are
labelnoise/pipeline.py's.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import shlex
import sys
from dataclasses import replace

from labelnoise import files, pipeline
from labelnoise.pipeline import (ARMS, BAG_FILE, PARTS, PRESETS, Layout, PipelineError, Stage, runner_device,
                                 stages, stages_between)


def add_chain_arguments(p: argparse.ArgumentParser) -> None:
    """The options that decide the stages and their commands (``list``, ``run``, the SLURM scripts, submit.py)."""
    p.add_argument("--preset", choices=sorted(PRESETS), default="full",
                   help="configs, paths and overrides (default: full, the original's schedule)")
    p.add_argument("--configs", help="the stage config folder (default: the preset's)")
    p.add_argument("--data", help="the noisy track folders (default: the preset's)")
    p.add_argument("--clean", help="the clean twin of --data: the clean arm trains on it")
    p.add_argument("--runs", help="run root of every stage (default: the preset's)")
    p.add_argument("--pools", help="folder for the filtered stem pools (default: the preset's)")
    p.add_argument("--threshold", help="auto_filter rule: dB, 'auto', 'otsu' or 'keep=F' (default: the preset's)")
    p.add_argument("--arms", default="", metavar="ARM,...",
                   help=f"control arms with the budget of steps 1-3: {', '.join(ARMS)} (default: none)")
    p.add_argument("--epochs-scale", type=float, default=None, metavar="F",
                   help="x every training stage's epochs (default 1)")
    p.add_argument("--quick", action="store_true", help="one short epoch per stage: checks the machinery")
    p.add_argument("--holdout", default=None, metavar="N|auto",
                   help="tracks kept out of the pools; the bag takes each source from the model that scores "
                        "best on them (default auto: 15 %% of the tracks, 2 to 8)")
    p.add_argument("--valid", help="clean validation track folders: the bag's choice is scored on them instead")
    p.add_argument("--set", action="append", default=[], metavar="[SCOPE:]A.B=VALUE",
                   help="config override for every training stage, or for a stage, part or arm (repeatable)")
    p.add_argument("--from", dest="start", metavar="STAGE", help="start at this stage")
    p.add_argument("--to", dest="stop", metavar="STAGE", help="stop after this stage")


def layout_from(args: argparse.Namespace) -> Layout:
    """The preset with the command line's changes."""
    layout = PRESETS[args.preset]
    changes = {k: getattr(args, k) for k in ("configs", "data", "clean", "runs", "pools", "threshold", "valid")
               if getattr(args, k)}
    if args.holdout is not None:
        if args.holdout != "auto" and not args.holdout.isdigit():
            raise PipelineError(f"--holdout {args.holdout}: must be a whole number >= 0 or auto")
        changes["holdout"] = args.holdout
    if args.epochs_scale is not None:
        if not (math.isfinite(args.epochs_scale) and args.epochs_scale > 0):
            raise PipelineError(f"--epochs-scale {args.epochs_scale:g}: must be > 0")
        changes["epochs_scale"] = args.epochs_scale
    arms = tuple(a.strip() for a in args.arms.split(",") if a.strip())
    return replace(layout, overrides=tuple(layout.overrides) + tuple(args.set), arms=arms,
                   quick=args.quick or layout.quick, **changes)


def chain_from(args: argparse.Namespace, part: str) -> tuple[Layout, list[Stage]]:
    layout = layout_from(args)
    return layout, stages_between(stages(part, layout), args.start, args.stop)


def _print(chain: list[Stage], fmt: str, nproc: int) -> None:
    for stage in chain:
        if fmt == "json":
            print(json.dumps({"name": stage.name, "kind": stage.kind, "after": list(stage.after),
                              "parallel": stage.parallel, "argv": list(stage.argv), "done": stage.done,
                              "part": stage.part}))
        elif fmt == "tsv":
            # One line per stage for shell scripts: fields split on tabs, argv quoted for the shell.
            print("\t".join([stage.name, stage.kind, ",".join(stage.after) or "-",
                             "1" if stage.parallel else "0", stage.done, shlex.join(stage.argv)]))
        else:
            after = f" (after {', '.join(stage.after)})" if stage.after else ""
            print(f"{stage.name}{after}\n    {shlex.join(stage.command('python', nproc))}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m labelnoise.pipeline", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="The stages of the method in order: list them, run them here with control arms, "
                    "test scores and a report, or write the final bag.",
        epilog="\n\n".join(pipeline.__doc__.split("\n\n")[2:5]))
    sub = parser.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("list", help="print the stages and their commands")
    run = sub.add_parser("run", help="run the stages one after the other on this machine",
                         formatter_class=argparse.RawDescriptionHelpFormatter,
                         epilog="example:\n  python -m labelnoise.pipeline run all --data TRAIN --clean CLEAN "
                                "--test TEST --arms baseline,clean --report")
    for p in (listing, run):
        p.add_argument("part", choices=PARTS)
        add_chain_arguments(p)
        p.add_argument("--nproc", type=int, default=1,
                       help="processes (GPUs) per training and filter stage, through torchrun")
    listing.add_argument("--format", choices=("text", "tsv", "json", "runs"), default="text",
                         help="tsv: a line per stage for shell scripts; runs: the run root alone")
    from labelnoise import runner
    runner.add_run_arguments(run)
    bag = sub.add_parser("bag", help=f"write RUNS/{BAG_FILE}: each source from joint360 or a model proven "
                                     "better on held-out tracks")
    bag.add_argument("--runs", default="runs")
    bag.add_argument("--selection", help=f"the second filter's pool (its {files.SELECTION_FILE} lists the held-out tracks)")
    bag.add_argument("--data", help="the track folders the held-out tracks are in")
    bag.add_argument("--valid", help="clean validation track folders, instead of the held-out tracks")
    bag.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    args = parser.parse_args(argv)
    try:
        if args.command == "bag":
            from labelnoise.final_bag import build
            logging.basicConfig(level=logging.INFO, format="%(message)s")
            from labelnoise.model_card import write_card
            print(build(args.runs, selection_dir=args.selection, data=args.data, valid=args.valid,
                        device=args.device or runner_device()))
            print(write_card(args.runs))
            return 0
        if args.nproc < 1:
            raise PipelineError(f"--nproc {args.nproc}: must be >= 1")
        layout, chain = chain_from(args, args.part)
        if args.command == "list":
            if args.format == "runs":
                print(layout.runs)
            else:
                _print(chain, args.format, args.nproc)
            return 0
        return runner.main(args, layout, chain)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
