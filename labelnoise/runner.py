"""Run a chain of stages on this machine: one after the other, each model scored, a manifest, the report.

``python -m labelnoise.pipeline run`` is its command line (``--help`` there);
``labelnoise.demo`` and ``bench/noise_robustness.py`` call :func:`run`.

Each stage prints one line with its ETA when it starts and one when it ends;
its own output goes to ``RUNS/logs/<stage>.log``. With a test set every
model-making stage is scored on it when it ends (cached, see
labelnoise.scoring). ``RUNS/pipeline.json`` records the settings, the stages
with their commands and the time each took; the report
(``python -m labelnoise.report RUNS``) is made from it and the files the
stages left. Running the same command again skips what is finished (a
stage's ``done`` file, a cached score) and continues an interrupted stage;
a run folder made with other settings is refused, with the setting that
differs (arms may be added).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from . import SOURCES
from .atomic import write_json
from .files import (BAG_FILE, BAG_SCORES_FILE, LOGS_DIR, MANIFEST_FILE as MANIFEST, MODEL_FILE, REPORT_HTML, REPORT_MD,
                    TEST_SCORES_FILE)
from .pipeline import BAG_SOURCES, PipelineError, Layout, Stage, layout_json, runner_device
from .scoring import TestSet

# Seconds on 2 idle CPU cores, to start the ETA before a stage of the kind has run; measured with the
# default demo (docs/BENCHMARKS.md): MaskNet at 16 kHz, batch 16 x 1 s, about 0.2 s a step.
PRIOR_RATES = {"train": 0.2 / 16,    # per item-second trained
               "filter": 0.025,     # per second of sped-up stem (Rubber Band, then the model)
               "infer": 0.008}      # per second of test audio separated (x models in a bag)
PRIOR_FIXED = {"train": 4.0, "filter": 4.0, "select": 2.0, "bag": 1.0}  # start-up per command
# What a run folder's settings may differ in: arms add stages, the rest changes what was made.
ADDABLE = ("arms",)


@dataclass
class Job:
    """One stage, and where its model and test scores go."""
    stage: Stage
    model: str | None = None         # what the test set is separated with (a model file or a bag)
    eval: str | None = None          # the cached test scores
    selection: str | None = None     # select stages: the pool dataset with selection.json
    units: float = 0.0               # work, for the ETA: item-seconds trained or seconds separated
    eval_units: float = 0.0          # seconds of test audio x models, for the ETA
    eval_seconds: float = 0.0        # what scoring took in this run
    epochs: int | None = None        # train stages: epochs this stage runs (a fine-tune: past its parent's)
    steps: int | None = None

    @property
    def name(self) -> str:
        return self.stage.name


# ---------------------------------------------------------------- the plan

def _audio_seconds(folder: Path) -> list[float]:
    """Seconds of each track folder under ``folder`` (its first WAV's header); [] when there is none."""
    from .audio import info

    out = []
    if folder.is_dir():
        for track in sorted(p for p in folder.iterdir() if p.is_dir()):
            wav = next(iter(sorted(track.glob("*.wav"))), None)
            if wav is not None:
                try:
                    meta = info(wav)
                except Exception:  # noqa: BLE001 - the ETA does without; the stage itself reports the file
                    continue
                out.append(meta.frames / meta.samplerate)
    return out


def _train_job(stage: Stage, epochs_done: dict[str, int], seconds_of) -> Job:
    from .config import ConfigError, load_config

    try:
        cfg = load_config(stage.argv[1], [a for a in stage.argv[2:] if "=" in a and not a.startswith("--")])
    except ConfigError as exc:
        raise PipelineError(f"stage {stage.name}: {exc}") from None
    run, optim, data = cfg["run"], cfg["optim"], cfg["data"]
    parent = epochs_done.get(run["resume_from"], 0) if run["resume_from"] else 0
    epochs_done[run["name"]] = optim["epochs"]
    items = data["items_per_epoch"]
    if items is None:  # every segment of every track once (tracks mode): TrackDataset's grid
        items = sum(max(0, math.ceil((s - data["segment"]) / data["stride"] - 1e-9)) + 1
                    for s in seconds_of(data["root"]))
    per_step = optim["batch_size"] * optim["accumulate"]
    steps = max(0, optim["epochs"] - parent) * (items // per_step)
    return Job(stage, model=f"{stage.run_dir}/{MODEL_FILE}", eval=f"{stage.run_dir}/{TEST_SCORES_FILE}",
               units=steps * per_step * data["segment"], epochs=optim["epochs"] - parent, steps=steps)


def plan(chain: list[Stage], layout: Layout, *, test_seconds: float | None = None,
         device: str | None = None) -> list[Job]:
    """A job per stage with its share of the ETA; with ``test_seconds`` (a test set) its scores' cache.

    ``device`` goes to every training and filter command (``--device``).
    """
    cache: dict[str, list[float]] = {}

    def seconds_of(folder) -> list[float]:
        key = str(folder)
        if key not in cache:
            cache[key] = _audio_seconds(Path(folder))
        return cache[key]

    stems_seconds = len(SOURCES) * sum(seconds_of(layout.data))
    jobs, epochs_done = [], {}
    for stage in chain:
        if stage.kind == "train":
            job = _train_job(stage, epochs_done, seconds_of)
        elif stage.kind == "filter":
            # The stems are sped up x speed/100 before the model sees them.
            job = Job(stage, units=stems_seconds * 100 / layout.speed)
        elif stage.kind == "select":
            job = Job(stage, selection=stage.run_dir)
        else:
            job = Job(stage, model=stage.done, eval=str(Path(layout.runs) / BAG_SCORES_FILE))
        if stage.kind in ("train", "filter", "bag") and device is not None:
            job.stage = replace(stage, argv=(*stage.argv, "--device", device))
        if test_seconds is None:
            job.eval = None
        elif job.eval is not None:
            models = len(set(BAG_SOURCES.values())) if stage.kind == "bag" else 1
            job.eval_units = test_seconds * models
        jobs.append(job)
    return jobs


# ---------------------------------------------------------------- the ETA

class Clock:
    """Seconds per unit of work, from the stages run so far (a prior before the first of a kind)."""

    def __init__(self):
        self.work = {k: 0.0 for k in PRIOR_RATES}
        self.spent = {k: 0.0 for k in PRIOR_RATES}

    def rate(self, kind: str) -> float:
        if self.work[kind] > 0 and self.spent[kind] > 0:
            return self.spent[kind] / self.work[kind]
        return PRIOR_RATES[kind]

    def record(self, kind: str, units: float, seconds: float, fixed: float = 0.0) -> None:
        if units > 0:
            self.work[kind] += units
            self.spent[kind] += max(seconds - fixed, 0.05 * seconds)

    def stage_seconds(self, job: Job) -> float:
        kind = job.stage.kind
        seconds = PRIOR_FIXED.get(kind, 1.0) + (job.units * self.rate(kind) if kind in PRIOR_RATES else 0.0)
        return seconds + self.eval_seconds(job)

    def eval_seconds(self, job: Job) -> float:
        return job.eval_units * self.rate("infer")


def clock_text(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}:{seconds % 60:02d}"


# ---------------------------------------------------------------- running one stage

def default_threads(nproc: int = 1) -> int:
    """Torch threads per process: this machine's CPUs shared out over the processes of a stage."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, cpus // max(1, nproc))


def stage_env(threads: int) -> dict:
    # torch, OpenMP and the BLAS libraries read these before they start their thread pools.
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def run_stage(stage: Stage, *, nproc: int = 1, python: str = sys.executable, env=None,
              log_file: str | os.PathLike | None = None) -> float:
    """Run one stage's command here; returns its seconds. A non-zero exit is a PipelineError naming the stage.

    ``log_file``: the command's output is appended to that file instead of this terminal.
    """
    cmd = stage.command(python, nproc)
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


def train_here(stage: Stage, log_file: Path, threads: int) -> float:
    """A train stage in this process: a new interpreter per stage costs seconds each, x 100 stages in a bench.

    Its progress goes to ``log_file``, as a subprocess stage's output does.
    """
    import torch

    from .config import ConfigError, load_config
    from .trainer import TrainingError, train

    script, config, *rest = stage.argv
    if script != "train.py":
        raise PipelineError(f"stage {stage.name}: not a train.py stage ({script})")
    device = rest[rest.index("--device") + 1] if "--device" in rest else None
    overrides = [a for a in rest if "=" in a and not a.startswith("--")]
    log_file.parent.mkdir(parents=True, exist_ok=True)
    start, before = time.monotonic(), torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with open(log_file, "a") as out, contextlib.redirect_stderr(out):
            code = train(load_config(config, overrides), device=device)
    except (ConfigError, TrainingError) as exc:
        raise PipelineError(f"stage {stage.name} ({stage.done}): {exc}") from None
    finally:
        torch.set_num_threads(before)
    if code != 0 or not stage.is_done():
        raise PipelineError(f"stage {stage.name} stopped with code {code} before {stage.done}")
    return time.monotonic() - start


# ---------------------------------------------------------------- the manifest

def _comparable(settings: dict) -> dict:
    """Stored settings with their paths made absolute: the same folder named two ways is the same."""
    out = dict(settings)
    for key in ("configs", "data", "runs", "pools", "clean"):
        if out.get(key) is not None:
            out[key] = str(Path(out[key]).resolve())
    return out


def check_runs(runs: Path, layout: Layout) -> dict:
    """The timings of a previous run into ``runs``; a run made with other settings is an error."""
    path = runs / MANIFEST
    if not path.is_file():
        return {}
    try:
        previous = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise PipelineError(f"{path}: not valid JSON ({exc}); it records what this run folder was made "
                            "with: give --runs another folder") from None
    theirs, mine = _comparable(previous.get("settings", {})), _comparable(layout_json(layout))
    differ = [k for k in mine if k not in ADDABLE and theirs.get(k) != mine[k]]
    if differ:
        k = differ[0]
        raise PipelineError(f"{path}: this run folder was made with other settings ({k} {theirs.get(k)!r}, "
                            f"now {mine[k]!r}); run with the same settings, or give another run folder")
    return previous.get("timings", {})


def manifest(layout: Layout, jobs: list[Job], timings: dict, test: Path | None, extra: dict | None) -> dict:
    return {
        "settings": layout_json(layout),
        "data": {"train": layout.data, "clean": layout.clean, "test": None if test is None else str(test)},
        "stages": [{"name": j.name, "kind": j.stage.kind, "group": j.stage.group, "part": j.stage.part,
                    "repeats": j.stage.repeats, "after": list(j.stage.after), "done": j.stage.done,
                    "model": j.model, "eval": j.eval, "selection": j.selection, "epochs": j.epochs,
                    "command": ["python", *j.stage.argv]} for j in jobs],
        "timings": timings,
        **(extra or {}),
    }


# ---------------------------------------------------------------- the run

def run(jobs: list[Job], layout: Layout, *, test: str | Path | None = None, device: str = "cpu",
        nproc: int = 1, threads: int | None = None, python: str = sys.executable, here: bool = False,
        report: bool = False, label: str = "pipeline", extra: dict | None = None, say=None) -> dict:
    """Run every job not done yet (and score its model), write the manifest and the report.

    ``here``: train stages run in this process (``nproc`` 1 only). ``label`` names the run in its
    lines; ``extra`` goes into the manifest. Returns the manifest.
    """
    say = say or (lambda text: print(text, flush=True))
    runs = Path(layout.runs)
    started = time.monotonic()
    timings = check_runs(runs, layout)
    threads = threads or default_threads(nproc)
    test_set = TestSet(test, device) if test is not None else None
    clock = Clock()
    total = len(jobs) + (1 if report else 0)
    width = max([len(j.name) for j in jobs] + [6])
    names = {j.name: j for j in jobs}
    env = stage_env(threads)

    def write_manifest():
        write_json(runs / MANIFEST, manifest(layout, jobs, timings, None if test is None else Path(test), extra))

    runs.mkdir(parents=True, exist_ok=True)
    write_manifest()
    for i, job in enumerate(jobs, 1):
        head = f"[{i:2d}/{total}] {job.name:<{width}}"
        if job.stage.is_done():
            say(f"{head}  done already{_scores_text(test_set, job, clock, done_already=True)}")
            continue
        missing = [a for a in job.stage.after if a in names and not names[a].stage.is_done()]
        if missing:
            raise PipelineError(f"stage {job.name}: {', '.join(missing)} not finished")
        left = sum(clock.stage_seconds(j) for j in jobs[i - 1:] if not j.stage.is_done())
        what = f"{job.steps} steps" if job.steps is not None else job.stage.kind
        say(f"{head}  running ({what}), ETA {clock_text(clock.stage_seconds(job))}; "
            f"{label} ~{clock_text(left)} left")
        log_file = runs / LOGS_DIR / f"{job.name}.log"
        if here and job.stage.kind == "train" and nproc == 1:
            seconds = train_here(job.stage, log_file, threads)
        else:
            seconds = run_stage(job.stage, nproc=nproc, python=python, env=env, log_file=log_file)
        if job.stage.kind in PRIOR_RATES:
            clock.record(job.stage.kind, job.units, seconds, PRIOR_FIXED[job.stage.kind])
        timings[job.name] = round(seconds, 1)
        scores = _scores_text(test_set, job, clock, done_already=False)
        if job.eval is not None and test_set is not None:
            timings[f"{job.name} (test)"] = round(job.eval_seconds, 1)
        write_manifest()
        say(f"{head}  finished in {clock_text(seconds)}{scores}")
    timings[label] = round(time.monotonic() - started, 1)
    write_manifest()
    if (runs / BAG_FILE).is_file():
        # Again now that the bag's test scores and the manifest's timings exist.
        from .model_card import write_card
        say(f"model card: {write_card(runs)}")
    if report:
        from .report import write_report
        md, page = write_report(runs)
        say(f"[{total:2d}/{total}] {'report':<{width}}  {md} and {page}")
    return manifest(layout, jobs, timings, None if test is None else Path(test), extra)


def _scores_text(test_set: TestSet | None, job: Job, clock: Clock, done_already: bool) -> str:
    """Score a model-making stage (or read its cached scores); the words for its line."""
    if test_set is None or job.eval is None:
        return ""
    cached = test_set.cached(job.model, job.eval)
    if cached is None:
        t = time.monotonic()
        cached = test_set.evaluate(job.model, job.eval, keep_estimates=job.stage.kind == "bag")
        job.eval_seconds = time.monotonic() - t
        clock.record("infer", job.eval_units, job.eval_seconds)
        how = "" if not done_already else f" (scored now, {clock_text(job.eval_seconds)})"
    else:
        how = " (cached)" if done_already else ""
    return f"; test SDR {cached['summary']['mean']:.2f} dB{how}"


# ---------------------------------------------------------------- command line

def add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--test", help="clean test track folders: every model is scored on them (cached)")
    p.add_argument("--report", action="store_true", help=f"write RUNS/{REPORT_MD} and {REPORT_HTML} at the end")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per process (default: this machine's CPUs / --nproc)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--dry-run", action="store_true", help="print the commands only")


def main(args: argparse.Namespace, layout: Layout, chain: list[Stage]) -> int:
    """``python -m labelnoise.pipeline run``: the chain here, scored on ``--test``, with ``--report``."""
    if args.threads is not None and args.threads < 1:
        raise PipelineError(f"--threads {args.threads}: must be >= 1")
    if args.test is not None and not Path(args.test).is_dir():
        raise PipelineError(f"--test {args.test}: no such folder")
    if args.dry_run:
        for i, stage in enumerate(chain, 1):
            state = "done already" if stage.is_done() else shlex.join(stage.command("python", args.nproc))
            print(f"[{i}/{len(chain)}] {stage.name}: {state}")
        return 0
    device = args.device
    score_device = device or runner_device()
    test_seconds = None
    if args.test is not None:
        test_seconds = sum(_audio_seconds(Path(args.test)))
    jobs = plan(chain, layout, test_seconds=test_seconds, device=device)
    print(f"pipeline: {len(jobs)} stages on {score_device} in {layout.runs}; logs in {Path(layout.runs) / LOGS_DIR}"
          + (f"; scored on {args.test}" if args.test else "; no test set (--test): nothing is scored"), flush=True)
    try:
        run(jobs, layout, test=args.test, device=score_device, nproc=args.nproc, threads=args.threads,
            report=args.report)
    except KeyboardInterrupt:
        print("\ninterrupted: the same command continues where this run stopped", file=sys.stderr)
        return 130
    return 0


