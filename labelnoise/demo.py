"""The whole method end to end on a laptop CPU, with a report: what ``make demo`` runs.

    python -m labelnoise.demo                                  # about 8 minutes on 2 idle CPU cores
    python -m labelnoise.demo --tracks 64 --seconds 30 --epochs-scale 4 --device cuda
    python -m labelnoise.demo --quick --out /tmp/demo/runs --data /tmp/demo/data   # a smoke run
    python -m labelnoise.report runs/demo                      # the report again, from the files

1. Data (``--data``, default data/demo): ``train/``, a synthetic label-noise
   set (``labelnoise.synth``, 30 % noisy stems, 16 kHz, the truth in
   ``noise_labels.json``); ``clean/``, its clean twin (same seed, no noise);
   ``test/``, a clean test set from another seed.
2. Every stage of ``labelnoise.pipeline`` (preset ``demo``: configs/demo/,
   MaskNet at 16 kHz) one after the other: steps 1-3 with loss truncation
   (ranked by relative error, ``--trunc-by``), the first filter and its
   selection (``--threshold``, default ``auto``), joint training on the kept
   stems, the second filter and selection, the four fine-tunes and the final
   bag. Then two arms with the budget of steps 1-3 (the same configs, epochs
   and learning rates) and plain L1: ``baseline_step1..3`` on the same noisy
   data, ``clean_step1..3`` on the clean twin.
3. After every stage that makes a model: the challenge SDR on the test set,
   cached as ``test_sdr.json`` in the run dir (``final_test_sdr.json`` for
   the bag, whose estimates also go to ``final_separated/``).
4. ``--out``/report.md and report.html (``labelnoise.report``).

Each stage prints one line with its ETA when it starts and one when it ends;
the stages' own output goes to ``--out``/logs/<stage>.log. Running the same
command again skips what is finished (a stage's ``done`` file, a cached
evaluation) and continues an interrupted stage. A data or run folder made
with other settings is refused: delete it or give another ``--data``/``--out``.
``--epochs-scale F`` multiplies every stage's epochs (a fine-tune still runs
at least one epoch past the run it continues); ``--quick`` runs one short epoch
per stage, to check the machinery, not the method.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import pipeline
from .atomic import write_json
from .config import ConfigError, load_config

log = logging.getLogger(__name__)

MANIFEST = "demo.json"
EVAL_FILE = "test_sdr.json"
BAG_EVAL_FILE = "final_test_sdr.json"
SEPARATED_DIR = "final_separated"
LOGS_DIR = "logs"
ARMS = ("baseline", "clean")   # plain L1 on the noisy data / on its clean twin
PART1 = ("step1", "step2", "step3")
TEST_ONLY = ("test_tracks",)   # settings that change the scores, not the runs
QUICK_BATCH = 8                # --quick: items per step, and 2 steps per pool epoch

# Seconds on 2 idle CPU cores, to start the ETA before a stage of the kind has run; measured with the
# default demo (docs/BENCHMARKS.md): MaskNet at 16 kHz, batch 16 x 1 s, about 0.2 s a step.
PRIOR_RATES = {"train": 0.2 / 16,    # per item-second trained
               "filter": 0.025,     # per second of sped-up stem (Rubber Band, then the model)
               "infer": 0.008}      # per second of test audio separated (x models in a bag)
PRIOR_FIXED = {"train": 4.0, "filter": 4.0, "select": 2.0, "bag": 1.0}  # start-up per command


class DemoError(RuntimeError):
    """A demo that cannot run as asked; the message names the folder or stage."""


@dataclass(frozen=True)
class Settings:
    """What the demo's results depend on; a run or data folder remembers them and refuses others."""
    tracks: int = 24
    seconds: float = 16.0
    test_tracks: int = 16           # paired differences of ~0.2 dB need this many to stand out
    noise_rate: float = 0.3
    seed: int = 1
    samplerate: int = 16000
    epochs_scale: float = 1.0
    quick: bool = False
    threshold: str = "auto"
    trunc_by: str = "relative"
    configs: str = "configs/demo"
    overrides: tuple[str, ...] = ()

    @property
    def test_seed(self) -> int:
        return self.seed + 1000  # another seed: no test song is a training song

    def data_sets(self, data: Path) -> dict[str, dict]:
        """The three synthetic sets: folder and generator arguments."""
        common = dict(seconds=self.seconds, samplerate=self.samplerate)
        return {
            "train": dict(folder=data / "train", tracks=self.tracks, noise_rate=self.noise_rate,
                          seed=self.seed, **common),
            "clean": dict(folder=data / "clean", tracks=self.tracks, noise_rate=0.0, seed=self.seed, **common),
            "test": dict(folder=data / "test", tracks=self.test_tracks, noise_rate=0.0,
                         seed=self.test_seed, **common),
        }


@dataclass
class Job:
    """One line of the demo: a pipeline stage, and where its model and test scores go."""
    stage: pipeline.Stage
    group: str                       # method | baseline | clean
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

def layout_for(settings: Settings, out: Path, data: Path) -> pipeline.Layout:
    return replace(pipeline.PRESETS["demo"], configs=settings.configs, data=str(data / "train"),
                   runs=str(out), pools=str(data), threshold=settings.threshold,
                   overrides=tuple(settings.overrides))


def arm_stages(arm: str, data_root: str, layout: pipeline.Layout) -> list[pipeline.Stage]:
    """Steps 1-3 again with plain L1 (same configs, epochs and learning rates), as runs ``{arm}_step{k}``."""
    stages, previous = [], None
    for step in PART1:
        name = f"{arm}_{step}"
        argv = ["train.py", f"{layout.configs}/{step}.yaml", f"run.root={layout.runs}", f"data.root={data_root}",
                *layout.overrides, "optim.loss=l1", f"run.name={name}"]
        if previous is not None:
            argv.append(f"run.init_from={previous}")
        stages.append(pipeline.Stage(name, "train", (previous,) if previous else (), tuple(argv),
                                     f"{layout.runs}/{name}/done", parallel=True, part=arm))
        previous = name
    return stages


def _segments_per_track(seconds: float, cfg: dict) -> int:
    # TrackDataset's grid: ceil((duration - segment) / stride) + 1 items per track.
    data = cfg["data"]
    return max(0, math.ceil((seconds - data["segment"]) / data["stride"] - 1e-9)) + 1


def _train_job(stage: pipeline.Stage, group: str, settings: Settings, epochs_done: dict[str, int]) -> Job:
    """The stage with its epochs scaled (and, for part 1, truncation ranked by ``trunc_by``)."""
    argv = list(stage.argv)
    extra = []
    if stage.name in PART1:
        extra.append(f"optim.trunc_by={settings.trunc_by}")
    try:
        cfg = load_config(argv[1], argv[2:] + extra)
    except ConfigError as exc:
        raise DemoError(f"stage {stage.name}: {exc}") from None
    run, optim, data = cfg["run"], cfg["optim"], cfg["data"]
    parent = epochs_done.get(run["resume_from"], 0) if run["resume_from"] else 0
    if settings.quick:
        epochs, batch, items = parent + 1, QUICK_BATCH, 2 * QUICK_BATCH
        extra += [f"optim.batch_size={batch}", f"data.items_per_epoch={items}"]
    else:
        epochs = max(parent + 1, round(optim["epochs"] * settings.epochs_scale))
        batch, items = optim["batch_size"], data["items_per_epoch"]
        if items is None:  # every segment of every track once (tracks mode)
            items = settings.tracks * _segments_per_track(settings.seconds, cfg)
    extra.append(f"optim.epochs={epochs}")
    epochs_done[run["name"]] = epochs
    steps = (epochs - parent) * (items // (batch * optim["accumulate"]))
    units = steps * batch * optim["accumulate"] * data["segment"]
    return Job(replace(stage, argv=tuple(argv + extra)), group, model=f"{run_dir_of(stage)}/model.th",
               eval=f"{run_dir_of(stage)}/{EVAL_FILE}", units=units, epochs=epochs - parent, steps=steps)


def run_dir_of(stage: pipeline.Stage) -> str:
    return str(Path(stage.done).parent)


def plan(settings: Settings, out: Path, data: Path, device: str) -> list[Job]:
    """Every stage of the demo in order, with its evaluation and its share of the ETA."""
    layout = layout_for(settings, out, data)
    chain = [(s, "method") for s in pipeline.stages("all", layout)]
    chain += [(s, "baseline") for s in arm_stages("baseline", layout.data, layout)]
    chain += [(s, "clean") for s in arm_stages("clean", str(data / "clean"), layout)]
    train_stems_seconds = 4 * settings.tracks * settings.seconds
    test_seconds = settings.test_tracks * settings.seconds
    jobs, epochs_done = [], {}
    for stage, group in chain:
        if stage.kind == "train":
            job = _train_job(stage, group, settings, epochs_done)
        elif stage.kind == "filter":
            # The stems are sped up x speed/100 before the model sees them.
            job = Job(stage, group, units=train_stems_seconds * 100 / layout.speed)
        elif stage.kind == "select":
            job = Job(stage, group, selection=str(Path(stage.done).parent))
        else:
            job = Job(stage, group, model=stage.done, eval=str(out / BAG_EVAL_FILE))
        if stage.kind in ("train", "filter"):
            job.stage = replace(job.stage, argv=job.stage.argv + ("--device", device))
        if job.eval is not None:
            job.eval_units = test_seconds * (len(pipeline.BAG_SOURCES) if stage.kind == "bag" else 1)
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
        seconds = PRIOR_FIXED[kind] + (job.units * self.rate(kind) if kind in PRIOR_RATES else 0.0)
        return seconds + self.eval_seconds(job)

    def eval_seconds(self, job: Job) -> float:
        return job.eval_units * self.rate("infer")


def clock_text(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}:{seconds % 60:02d}"


# ---------------------------------------------------------------- data

def synth_params_match(folder: Path, spec: dict) -> tuple[bool, str]:
    """Whether ``folder`` holds the set ``spec`` describes; else the first difference, in words."""
    from .synth import LABELS_FILE, PARAMS_FILE

    params_path = folder / PARAMS_FILE
    if not (params_path.is_file() and (folder / LABELS_FILE).is_file()):
        return False, ""
    params = json.loads(params_path.read_text())
    want = {"seed": spec["seed"], "seconds": spec["seconds"], "samplerate": spec["samplerate"],
            "noise_rate": spec["noise_rate"], "tracks": spec["tracks"]}
    have = {**{k: params.get(k) for k in want}, "tracks": len(params.get("tracks", []))}
    for key in want:
        if float(have[key]) != float(want[key]):
            return False, f"{key} {have[key]} where the demo asks for {want[key]}"
    return True, ""


def make_data(settings: Settings, data: Path) -> int:
    """Generate the sets not there yet; returns how many were made. A set made otherwise is an error."""
    from .synth import generate

    made = 0
    for name, spec in settings.data_sets(data).items():
        folder = spec["folder"]
        ok, difference = synth_params_match(folder, spec)
        if ok:
            continue
        if difference or (folder.exists() and any(folder.iterdir())):
            raise DemoError(f"{folder}: holds other data ({difference or 'not a complete synthetic set'}); "
                            f"delete it or give --data another folder")
        generate(folder, tracks=spec["tracks"], seconds=spec["seconds"], noise_rate=spec["noise_rate"],
                 seed=spec["seed"], samplerate=spec["samplerate"], progress=False)
        made += 1
    return made


# ---------------------------------------------------------------- evaluation

def _stamp(paths: list[Path]) -> list[list]:
    return [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in paths]


def _model_files(model: Path) -> list[Path]:
    """The files a model or bag is read from (a cached score is stale when one of them changed)."""
    if model.suffix in (".yaml", ".yml"):
        from .yamlio import read_mapping
        return [model] + [(model.parent / m).resolve() for m in read_mapping(model).get("models", [])]
    return [model]


class TestSet:
    """The test tracks, read once; each model's scores cached next to it."""

    def __init__(self, folder: Path, device: str):
        self.folder, self.device = folder, device
        self._tracks = None
        params = json.loads((folder / "synth.json").read_text())
        self.identity = {k: params[k] for k in ("seed", "seconds", "samplerate", "tracks")}

    def tracks(self):
        if self._tracks is None:
            from .evaluation import load_tracks
            self._tracks = load_tracks(self.folder)
        return self._tracks

    def cached(self, job: Job) -> dict | None:
        path = Path(job.eval)
        if not path.is_file():
            return None
        try:
            report = json.loads(path.read_text())
        except json.JSONDecodeError:
            return None
        fresh = (report.get("test_set") == self.identity
                 and report.get("stamp") == _stamp(_model_files(Path(job.model))))
        return report if fresh else None

    def evaluate(self, job: Job) -> dict:
        """The job's test scores: cached, or separated and scored now (and cached)."""
        report = self.cached(job)
        if report is not None:
            return report
        from .bag import load_model_or_bag
        from .evaluation import evaluate_model

        model_path = Path(job.model)
        model = load_model_or_bag(model_path)
        start = time.monotonic()
        # The bag's estimates are kept: the report shows one of them as a spectrogram.
        out_dir = Path(job.eval).parent / SEPARATED_DIR if job.stage.kind == "bag" else None
        report = evaluate_model(model, self.tracks(), device=self.device, out_dir=out_dir)
        report.update(model=str(model_path), test_set=self.identity, stamp=_stamp(_model_files(model_path)),
                      seconds=time.monotonic() - start, separated=None if out_dir is None else str(out_dir))
        write_json(job.eval, report)
        return report


# ---------------------------------------------------------------- the run

def manifest(settings: Settings, out: Path, data: Path, jobs: list[Job], timings: dict) -> dict:
    return {
        "settings": dataclasses.asdict(settings),
        "data": {name: str(spec["folder"]) for name, spec in settings.data_sets(data).items()},
        "stages": [{"name": j.name, "kind": j.stage.kind, "group": j.group, "part": j.stage.part,
                    "after": list(j.stage.after), "done": j.stage.done, "model": j.model, "eval": j.eval,
                    "selection": j.selection, "epochs": j.epochs, "command": ["python", *j.stage.argv]}
                   for j in jobs],
        "timings": timings,
    }


def check_out(out: Path, settings: Settings) -> dict:
    """The timings of a previous run into ``out``; a run made with other settings is an error."""
    path = out / MANIFEST
    if not path.is_file():
        return {}
    previous = json.loads(path.read_text())
    mine = json.loads(json.dumps(dataclasses.asdict(settings)))  # tuples as lists, as stored
    # Another test set only makes the cached scores stale (they record the set they were made on).
    differ = [k for k in mine if k not in TEST_ONLY and previous.get("settings", {}).get(k) != mine[k]]
    if differ:
        k = differ[0]
        raise DemoError(f"{path}: made with other settings ({k} {previous['settings'].get(k)!r}, now "
                        f"{mine[k]!r}); delete {out} or give --out another folder")
    return previous.get("timings", {})


def run(settings: Settings, out: Path, data: Path, device: str = "cpu", python: str = sys.executable,
        report: bool = True) -> dict:
    """Make the data, run every stage and evaluation not done yet, write the report; returns the manifest."""
    out, data = Path(out), Path(data)
    started = time.monotonic()
    timings = check_out(out, settings)
    jobs = plan(settings, out, data, device)
    total = len(jobs) + 2
    clock = Clock()
    width = max(len(j.name) for j in jobs)
    say = lambda text: print(text, flush=True)  # noqa: E731
    say(f"demo: {settings.tracks} tracks x {settings.seconds:g} s, {settings.noise_rate:.0%} noisy stems; "
        f"{settings.test_tracks} test tracks; {len(jobs)} stages on {device}; logs in {out / LOGS_DIR}")

    t = time.monotonic()
    made = make_data(settings, data)
    head = f"[{1:2d}/{total}] {'data':<{width}}"
    if made:
        say(f"{head}  made {made} synthetic set(s) in {data} in {clock_text(time.monotonic() - t)}")
    else:
        say(f"{head}  done already ({data}/train, clean, test)")
    test_set = TestSet(data / "test", device)
    env = {**os.environ, "TQDM_MININTERVAL": "30"}  # the stage logs get a progress line twice a minute

    def write_manifest():
        write_json(out / MANIFEST, manifest(settings, out, data, jobs, timings))

    out.mkdir(parents=True, exist_ok=True)
    write_manifest()
    for i, job in enumerate(jobs, 2):
        head = f"[{i:2d}/{total}] {job.name:<{width}}"
        if job.stage.is_done():
            result = _evaluation_text(test_set, job, clock, done_already=True)
            say(f"{head}  done already{result}")
            continue
        missing = [a for a in job.stage.after if not next(j for j in jobs if j.name == a).stage.is_done()]
        if missing:
            raise DemoError(f"stage {job.name}: {', '.join(missing)} not finished")
        left = sum(clock.stage_seconds(j) for j in jobs[i - 2:] if not j.stage.is_done())
        what = f"{job.steps} steps" if job.steps is not None else job.stage.kind
        say(f"{head}  running ({what}), ETA {clock_text(clock.stage_seconds(job))}; "
            f"demo ~{clock_text(left)} left")
        t = time.monotonic()
        pipeline.run_stage(job.stage, python=python, env=env, log_file=out / LOGS_DIR / f"{job.name}.log")
        seconds = time.monotonic() - t
        if job.stage.kind in PRIOR_RATES:
            clock.record(job.stage.kind, job.units, seconds, PRIOR_FIXED[job.stage.kind])
        timings[job.name] = round(seconds, 1)
        result = _evaluation_text(test_set, job, clock, done_already=False)
        if job.eval is not None:
            timings[f"{job.name} (test)"] = round(job.eval_seconds, 1)
        write_manifest()
        say(f"{head}  finished in {clock_text(seconds)}{result}")
    timings["demo"] = round(time.monotonic() - started, 1)
    write_manifest()
    head = f"[{total:2d}/{total}] {'report':<{width}}"
    if report:
        from .report import write_report
        paths = write_report(out)
        say(f"{head}  {paths[0]} and {paths[1]}")
    say(f"demo: {clock_text(time.monotonic() - started)} in all")
    return manifest(settings, out, data, jobs, timings)


def _evaluation_text(test_set: TestSet, job: Job, clock: Clock, done_already: bool) -> str:
    """Evaluate a model-making stage (or read its cached scores); the words for its line."""
    if job.eval is None:
        return ""
    cached = test_set.cached(job)
    if cached is None:
        t = time.monotonic()
        cached = test_set.evaluate(job)
        job.eval_seconds = time.monotonic() - t
        clock.record("infer", job.eval_units, job.eval_seconds)
        how = "" if not done_already else f" (scored now, {clock_text(job.eval_seconds)})"
    else:
        how = " (cached)" if done_already else ""
    return f"; test SDR {cached['summary']['mean']:.2f} dB{how}"


# ---------------------------------------------------------------- command line

def parse_args(argv=None) -> argparse.Namespace:
    d = Settings()
    p = argparse.ArgumentParser(prog="python -m labelnoise.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--tracks", type=int, default=d.tracks, help=f"noisy training tracks (default {d.tracks})")
    p.add_argument("--seconds", type=float, default=d.seconds, help=f"seconds per track (default {d.seconds:g})")
    p.add_argument("--test-tracks", type=int, default=d.test_tracks, help=f"test tracks (default {d.test_tracks})")
    p.add_argument("--noise-rate", type=float, default=d.noise_rate,
                   help=f"share of noisy stems in the training set (default {d.noise_rate})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"data seed; the test set uses seed + 1000 "
                                                             f"(default {d.seed})")
    p.add_argument("--epochs-scale", type=float, default=d.epochs_scale,
                   help="multiply every stage's epochs (default 1)")
    p.add_argument("--quick", action="store_true",
                   help="one short epoch per stage: checks the machinery in a minute or two, learns nothing")
    p.add_argument("--threshold", default=d.threshold,
                   help="the filters' rule: dB, 'auto' (Otsu per source) or 'keep=F' (default auto)")
    p.add_argument("--trunc-by", choices=("absolute", "relative"), default=d.trunc_by,
                   help="how steps 1-3 rank entries for truncation (default relative)")
    p.add_argument("--configs", default=d.configs, help=f"stage configs (default {d.configs})")
    p.add_argument("--set", action="append", default=[], metavar="A.B=VALUE",
                   help="config override for every training stage (repeatable)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="runs and report (default runs/demo)")
    p.add_argument("--data", type=Path, default=Path("data/demo"),
                   help="the synthetic sets and the filtered pools (default data/demo)")
    p.add_argument("--no-report", action="store_true", help="run the stages only")
    args = p.parse_args(argv)
    if args.tracks < 2 or args.test_tracks < 1 or args.seconds <= 0 or args.epochs_scale <= 0:
        p.error("need --tracks >= 2, --test-tracks >= 1, --seconds > 0 and --epochs-scale > 0")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    settings = Settings(tracks=args.tracks, seconds=args.seconds, test_tracks=args.test_tracks,
                        noise_rate=args.noise_rate, seed=args.seed, epochs_scale=args.epochs_scale,
                        quick=args.quick, threshold=args.threshold, trunc_by=args.trunc_by,
                        configs=args.configs, overrides=tuple(args.set))
    try:
        run(settings, args.out, args.data, device=args.device, report=not args.no_report)
    except (DemoError, pipeline.PipelineError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: the same command continues where this run stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
