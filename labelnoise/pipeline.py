"""The method's stage order: one definition for the Makefile, the demo, the SLURM scripts and submit.py.

Part 1 trains on the raw noisy tracks with loss truncation; part 2 filters
with that model, trains on the stems it kept, filters again with the new
model, fine-tunes one model per source and bags them:

    part1: step1 -> step2 -> step3
    part2: filter_pretrain3 -> select_pretrain3 -> joint360 -> filter_filtered360
           -> select_filtered360 -> {vocals, bass, drums, other_trunc -> other} -> bag

Every stage is one command (``train.py``, ``filter.py``, ``auto_filter.py``
or ``python -m labelnoise.pipeline bag``) with explicit paths, so a stage can
run anywhere: here one after the other, or as a chain of SLURM jobs. Each
command is idempotent: a finished stage returns at once, an interrupted one
continues.

    python -m labelnoise.pipeline list part2                 # the stages and their commands
    python -m labelnoise.pipeline list all --format tsv      # name, kind, after, parallel, command
    python -m labelnoise.pipeline run part1 --nproc 8        # torchrun --nproc_per_node=8 per stage
    python -m labelnoise.pipeline run part2 --from joint360
    python -m labelnoise.pipeline run all --preset tiny --nproc 2
    python -m labelnoise.pipeline bag --runs runs            # write runs/final.yaml

Presets name the configs and where data and runs live: ``full`` (configs/,
data/labelnoise, runs/: the original's schedule), ``tiny`` (configs/tiny/,
for tests) and ``demo`` (configs/demo/). ``--data``, ``--runs``, ``--pools``,
``--threshold`` and ``--set a.b=value`` (to every training stage) override them.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import SOURCES
from .atomic import write_text

log = logging.getLogger(__name__)

PARTS = ("part1", "part2", "all")
KINDS = ("train", "filter", "select", "bag")
FINETUNES = ("vocals", "bass", "drums", "other_trunc")
BAG_FILE = "final.yaml"
# The stage whose model gives each source of the final bag.
BAG_SOURCES = {"drums": "drums", "bass": "bass", "other": "other", "vocals": "vocals"}


class PipelineError(RuntimeError):
    """A stage that failed or a chain that cannot be built."""


@dataclass(frozen=True)
class Layout:
    """Where a pipeline reads and writes; every path is used as given (relative: to the cwd)."""
    configs: str = "configs"
    data: str = "data/labelnoise"   # the noisy track folders
    runs: str = "runs"              # run.root of every training stage; filter outputs too
    pools: str = "data"             # the filtered stem pools are made here
    key: int = 6
    speed: int = 200
    threshold: str = "20"           # auto_filter's rule: dB, "auto", or "keep=F" (keep fraction)
    overrides: tuple[str, ...] = () # a.b=value for every training stage


PRESETS = {
    "full": Layout(),
    "tiny": Layout(configs="configs/tiny", data="data/tiny", runs="runs/tiny", pools="data/tiny_pools",
                   threshold="auto"),
    "demo": Layout(configs="configs/demo", data="data/demo/train", runs="runs/demo", pools="data/demo",
                   threshold="auto"),
}


@dataclass(frozen=True)
class Stage:
    name: str
    kind: str                       # train | filter | select | bag
    after: tuple[str, ...]          # stages that must have finished
    argv: tuple[str, ...]           # arguments to python: a script (or -m module) and its arguments
    done: str                       # a path that exists once the stage has finished
    parallel: bool = False          # runs under torchrun over the job's GPUs / processes
    part: str = field(default="part2", compare=False)

    def command(self, python: str = sys.executable, nproc: int = 1) -> list[str]:
        """The command line for one machine: torchrun over ``nproc`` processes for parallel stages."""
        if self.parallel and nproc > 1:
            return [python, "-m", "torch.distributed.run", "--standalone",
                    f"--nproc_per_node={nproc}", *self.argv]
        return [python, *self.argv]

    def is_done(self) -> bool:
        return Path(self.done).exists()


def suffix(name: str, layout: Layout) -> str:
    """auto_filter's naming of one filter run: ``pretrain3_key6_speed200``."""
    return f"{name}_key{layout.key}_speed{layout.speed}"


def filter_outputs(name: str, layout: Layout) -> str:
    return f"{layout.runs}/evaluator_outputs_{suffix(name, layout)}"


def pool_dir(name: str, layout: Layout) -> str:
    return f"{layout.pools}/labelnoise_clean_dataset_predicted_by_{suffix(name, layout)}"


def _threshold_args(layout: Layout) -> list[str]:
    if layout.threshold.startswith("keep="):
        # auto_filter's positional threshold is still required; --keep-fraction overrides it.
        return ["20", "--keep-fraction", layout.threshold.split("=", 1)[1]]
    return [layout.threshold]


def _train(name: str, after: tuple[str, ...], data: str, layout: Layout, part: str) -> Stage:
    argv = ("train.py", f"{layout.configs}/{name}.yaml", f"run.root={layout.runs}",
            f"data.root={data}", *layout.overrides)
    return Stage(name, "train", after, argv, f"{layout.runs}/{name}/done", parallel=True, part=part)


def _filter(model_run: str, name: str, mode: str, after: str, layout: Layout) -> Stage:
    out = filter_outputs(name, layout)
    argv = ("filter.py", "--model", f"{layout.runs}/{model_run}/model.th", "--data", layout.data,
            "--name", name, "--key", str(layout.key), "--speed", str(layout.speed),
            "--mode", mode, "--out", out)
    return Stage(f"filter_{name}", "filter", (after,), argv, f"{out}/volumes.jsonl", parallel=True)


def _select(name: str, layout: Layout) -> Stage:
    dest = pool_dir(name, layout)
    argv = ("auto_filter.py", name, str(layout.key), str(layout.speed), *_threshold_args(layout),
            "--outputs", filter_outputs(name, layout), "--data", layout.data, "--dest", dest, "--link")
    return Stage(f"select_{name}", "select", (f"filter_{name}",), argv, f"{dest}/selection.json")


def stages(part: str = "all", layout: Layout = Layout()) -> list[Stage]:
    """The stages of ``part`` in an order that respects ``after``."""
    if part not in PARTS:
        raise PipelineError(f"unknown part {part!r}; choose one of {PARTS}")
    p1 = [
        _train("step1", (), layout.data, layout, "part1"),
        _train("step2", ("step1",), layout.data, layout, "part1"),
        _train("step3", ("step2",), layout.data, layout, "part1"),
    ]
    first, second = pool_dir("pretrain3", layout), pool_dir("filtered360", layout)
    p2 = [
        # The first filter uses overlap-add, the second plain normalised chunks (REFERENCE.md).
        _filter("step3", "pretrain3", "overlap", "step3", layout),
        _select("pretrain3", layout),
        _train("joint360", ("select_pretrain3",), first, layout, "part2"),
        _filter("joint360", "filtered360", "plain", "joint360", layout),
        _select("filtered360", layout),
        *[_train(name, ("select_filtered360",), second, layout, "part2") for name in FINETUNES],
        _train("other", ("other_trunc",), second, layout, "part2"),
        Stage("bag", "bag", ("vocals", "bass", "drums", "other"),
              ("-m", "labelnoise.pipeline", "bag", "--runs", layout.runs),
              f"{layout.runs}/{BAG_FILE}"),
    ]
    return {"part1": p1, "part2": p2, "all": p1 + p2}[part]


def select_from(chain: list[Stage], start: str | None) -> list[Stage]:
    """The stages from ``start`` on (``None``: all); an unknown name is an error listing the names."""
    if start is None:
        return chain
    names = [s.name for s in chain]
    if start not in names:
        raise PipelineError(f"unknown stage {start!r}; stages: {', '.join(names)}")
    return chain[names.index(start):]


def write_bag(runs: str | os.PathLike) -> Path:
    """``RUNS/final.yaml``: each source from the model fine-tuned for it (one-hot rows)."""
    runs = Path(runs)
    models, rows = [], []
    for k, source in enumerate(SOURCES):
        model = runs / BAG_SOURCES[source] / "model.th"
        if not model.exists():
            raise PipelineError(f"{model}: not found; the {BAG_SOURCES[source]} stage has not finished")
        models.append(f"{BAG_SOURCES[source]}/model.th")
        rows.append([1 if j == k else 0 for j in range(len(SOURCES))])
    lines = ["# The final system: each source from its own fine-tuned model (python -m labelnoise.pipeline bag).",
             f"models: [{', '.join(models)}]", "weights:        # rows: models; columns: " + ", ".join(SOURCES)]
    lines += [f"  - {row}" for row in rows]
    path = runs / BAG_FILE
    write_text(path, "\n".join(lines) + "\n")
    return path


def run_stage(stage: Stage, *, nproc: int = 1, python: str = sys.executable, env=None,
              log_file: str | os.PathLike | None = None) -> float:
    """Run one stage here; returns its seconds. A non-zero exit is a PipelineError naming the stage.

    ``log_file``: the command's output is appended to that file instead of this terminal.
    """
    cmd = stage.command(python, nproc)
    log.info("stage %s: %s", stage.name, shlex.join(cmd))
    start = time.monotonic()
    if log_file is None:
        code = subprocess.run(cmd, env=env).returncode
    else:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        with open(log_file, "a") as out:
            code = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    if code != 0:
        where = f" (its output: {log_file})" if log_file is not None else ""
        raise PipelineError(f"stage {stage.name} exited with code {code}{where}: {shlex.join(cmd)}")
    if not stage.is_done():
        raise PipelineError(f"stage {stage.name} exited 0 but {stage.done} is missing")
    return time.monotonic() - start


def run_local(chain: list[Stage], *, nproc: int = 1, python: str = sys.executable,
              dry_run: bool = False) -> None:
    """Run ``chain`` one stage after the other on this machine; finished stages are skipped."""
    for i, stage in enumerate(chain, 1):
        head = f"[{i}/{len(chain)}] {stage.name}"
        if stage.is_done():
            print(f"{head}: done already ({stage.done})", flush=True)
            continue
        if dry_run:
            print(f"{head}: {shlex.join(stage.command(python, nproc))}", flush=True)
            continue
        print(f"{head}: running", flush=True)
        seconds = run_stage(stage, nproc=nproc, python=python)
        print(f"{head}: finished in {seconds:.0f} s", flush=True)


def _layout(args) -> Layout:
    layout = PRESETS[args.preset]
    changes = {k: getattr(args, k) for k in ("data", "runs", "pools", "threshold") if getattr(args, k)}
    if args.set:
        changes["overrides"] = tuple(layout.overrides) + tuple(args.set)
    return replace(layout, **changes)


def _print(chain: list[Stage], fmt: str, nproc: int) -> None:
    for stage in chain:
        if fmt == "json":
            print(json.dumps({"name": stage.name, "kind": stage.kind, "after": list(stage.after),
                              "parallel": stage.parallel, "argv": list(stage.argv), "done": stage.done}))
        elif fmt == "tsv":
            # One line per stage for shell scripts: fields split on tabs, argv quoted for the shell.
            print("\t".join([stage.name, stage.kind, ",".join(stage.after) or "-",
                             "1" if stage.parallel else "0", stage.done, shlex.join(stage.argv)]))
        else:
            after = f" (after {', '.join(stage.after)})" if stage.after else ""
            print(f"{stage.name}{after}\n    {shlex.join(stage.command('python', nproc))}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m labelnoise.pipeline",
        description="The stages of the method in order: list them, run them here, or write the final bag.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("list", "print the stages and their commands"),
                       ("run", "run the stages one after the other on this machine")):
        p = sub.add_parser(name, help=text)
        p.add_argument("part", choices=PARTS)
        p.add_argument("--preset", choices=sorted(PRESETS), default="full",
                       help="configs and paths (default: full, the original's schedule)")
        p.add_argument("--data", help="the noisy track folders (default: the preset's)")
        p.add_argument("--runs", help="run root of every stage (default: the preset's)")
        p.add_argument("--pools", help="folder for the filtered stem pools (default: the preset's)")
        p.add_argument("--threshold", help="auto_filter rule: dB, 'auto' or 'keep=F'")
        p.add_argument("--set", action="append", metavar="A.B=VALUE",
                       help="config override for every training stage (repeatable)")
        p.add_argument("--from", dest="start", metavar="STAGE", help="start at this stage")
        p.add_argument("--nproc", type=int, default=1,
                       help="processes (GPUs) per training and filter stage, through torchrun")
    sub.choices["list"].add_argument("--format", choices=("text", "tsv", "json"), default="text")
    sub.choices["run"].add_argument("--dry-run", action="store_true", help="print the commands only")
    bag = sub.add_parser("bag", help="write RUNS/final.yaml from the four fine-tuned models")
    bag.add_argument("--runs", default="runs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.command == "bag":
            print(write_bag(args.runs))
            return 0
        chain = select_from(stages(args.part, _layout(args)), args.start)
        if args.command == "list":
            _print(chain, args.format, args.nproc)
        else:
            run_local(chain, nproc=args.nproc, dry_run=args.dry_run)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
