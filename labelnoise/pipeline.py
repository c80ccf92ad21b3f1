"""The method's stages in order, and the one command that runs them with their control arms and scores.

Every other place that runs stages takes them from here: the Makefile, the
demo, bench/noise_robustness.py, slurm/part1.sh, slurm/part2.sh and
slurm/submit.py.

    part1: step1 -> step2 -> step3
    part2: filter_pretrain3 -> select_pretrain3 -> joint360 -> filter_filtered360
           -> select_filtered360 -> {vocals, bass, drums, other_trunc -> other} -> bag
    arms:  baseline_step1..3 (steps 1-3 again with plain L1, the same data and budget)
           clean_step1..3    (the same on --clean, the clean twin of the tracks)

The method on your own noisy stems, scored on your clean test tracks, with a report:

    python -m labelnoise.pipeline run all --data TRAIN --test TEST --arms baseline --report
    python -m labelnoise.pipeline run all --data TRAIN --clean CLEAN --test TEST --arms baseline,clean --report
    python -m labelnoise.pipeline run all --preset demo --data data/demo/train --epochs-scale 0.5
    python -m labelnoise.pipeline run part1 --nproc 8                       # torchrun over 8 GPUs per stage
    python -m labelnoise.pipeline run part2 --from joint360 --set joint360:optim.lr=2e-4
    python -m labelnoise.pipeline list all --format tsv                     # what the SLURM scripts read
    python -m labelnoise.pipeline bag --runs runs                           # write runs/final.yaml

Every stage is one command (``train.py``, ``filter.py``, ``auto_filter.py``
or ``python -m labelnoise.pipeline bag``) with explicit paths, so a stage
runs anywhere: here one after the other (``run``, labelnoise.runner), or as
a chain of SLURM jobs. Each command is idempotent: a finished stage returns
at once, an interrupted one continues.

Presets name the configs, where data and runs live and the overrides they
stand for: ``full`` (configs/, data/labelnoise, runs/: the original's
schedule), ``tiny`` (configs/tiny/, for tests) and ``demo`` (configs/demo/,
MaskNet at 16 kHz, truncation ranked by relative error). ``--set
[SCOPE:]a.b=value`` overrides a config key for every training stage, or for
one SCOPE: a stage (``step1``), a part (``part1``, ``part2``) or an arm
(``baseline``, ``clean``). An arm's stages also take the overrides of the
steps they repeat (``step1``, ``part1``), so that they keep the method's
budget; then their own plain L1.
"""
from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from . import files

PARTS = ("part1", "part2", "all")
KINDS = ("train", "filter", "select", "bag")
PART1 = ("step1", "step2", "step3")
JOINT = "joint360"   # trained from scratch on the first filter's pool
FINETUNES = ("vocals", "bass", "drums", "other_trunc")
# The two filter passes: (filter name, the run whose model filters, the filter's chunking).
# The first uses overlap-add, the second plain normalised chunks (REFERENCE.md).
FILTERS = (("pretrain3", PART1[-1], "overlap"), ("filtered360", JOINT, "plain"))
BAG_FILE = files.BAG_FILE
BAG_STAGE = "bag"
# Each source's own fine-tunes, the first of them the original's final bag.
OWN_FINETUNES = {"drums": ("drums",), "bass": ("bass",), "other": ("other", "other_trunc"), "vocals": ("vocals",)}
BAG_SOURCES = {source: names[0] for source, names in OWN_FINETUNES.items()}
# The models the final bag may take each source from: every model of Part 2, the source's own fine-tunes
# first and joint360 last. Every model separates all four sources, and one fine-tuned for another source
# can separate a source better than its own fine-tune (in the demo the drums fine-tune beat the bass and
# vocals fine-tunes on their sources: docs/BENCHMARKS.md). The bag keeps joint360 for a source unless another
# candidate proves a gain over it on tracks Part 2 did not train on (labelnoise.final_bag); a tie goes to the
# first.
PART2_MODELS = (JOINT, *FINETUNES, "other")
BAG_CANDIDATES = {source: (*own, *(n for n in PART2_MODELS[1:] if n not in own), JOINT)
                  for source, own in OWN_FINETUNES.items()}
# --quick: items per step, and 2 steps per epoch: checks the machinery, learns nothing.
QUICK_BATCH = 8
# How each model came about, in words (the report's SDR table).
DESCRIPTIONS = {
    "step1": "noisy tracks, truncated L1 (C 0.7)",
    "step2": "+ truncated L1 (C 0.5)",
    "step3": "+ truncated L1 (C 0.3): the first filter's model",
    "joint360": "from scratch on the stems filter 1 kept, L1",
    "vocals": "joint360 + fine-tune on filter 2's stems (vocals loss)",
    "bass": "joint360 + fine-tune (bass + vocals loss)",
    "drums": "joint360 + fine-tune (mostly drums loss)",
    "other_trunc": "joint360 + fine-tune, truncated L1 (C 0.9)",
    "other": "other_trunc + fine-tune (other loss)",
    BAG_STAGE: "final: each source from joint360 or a model proven better on the held-out tracks",
}


class PipelineError(RuntimeError):
    """A stage that failed or a chain that cannot be built."""


@dataclass(frozen=True)
class Arm:
    """A control arm: steps 1-3 again with other overrides, as runs ``{name}_step1..3``."""
    name: str
    what: str                       # in words, for the report
    data: str = "noisy"             # noisy: the method's --data; clean: --clean
    overrides: tuple[str, ...] = ("optim.loss=l1",)


ARMS = {
    "baseline": Arm("baseline", "plain L1 on the same noisy tracks"),
    "clean": Arm("clean", "plain L1 on the clean twin of the tracks", data="clean"),
}


@dataclass(frozen=True)
class Layout:
    """What a chain of stages is made from; every path is used as given (relative: to the cwd)."""
    configs: str = "configs"
    data: str = files.DATA_ROOT     # the noisy track folders
    runs: str = "runs"              # run.root of every training stage; filter outputs too
    pools: str = "data"             # the filtered stem pools are made here
    key: int = 6
    speed: int = 200
    threshold: str = "20"           # auto_filter's rule: dB, "auto", or "keep=F" (keep fraction)
    overrides: tuple[str, ...] = () # "[SCOPE:]a.b=value" for the training stages
    clean: str | None = None        # the clean twin of `data`, for the clean arm
    arms: tuple[str, ...] = ()      # control arms run after part 1
    epochs_scale: float = 1.0       # x every training stage's epochs (a fine-tune: at least one past its parent)
    quick: bool = False             # one short epoch per stage
    holdout: str = "auto"           # tracks kept out of the pools to score the bag's candidates on: N or auto
    valid: str | None = None        # clean validation tracks: the bag's candidates are scored on them instead


PRESETS = {
    "full": Layout(),
    "tiny": Layout(configs="configs/tiny", data="data/tiny", runs="runs/tiny", pools="data/tiny_pools",
                   threshold="auto"),
    "demo": Layout(configs="configs/demo", data="data/demo/train", runs="runs/demo", pools="data/demo",
                   threshold="auto", overrides=("part1:optim.trunc_by=relative",)),
}


@dataclass(frozen=True)
class Stage:
    name: str
    kind: str                       # train | filter | select | bag
    after: tuple[str, ...]          # stages that must have finished
    argv: tuple[str, ...]           # arguments to python: a script (or -m module) and its arguments
    done: str                       # a path that exists once the stage has finished
    parallel: bool = False          # runs under torchrun over the job's GPUs / processes
    part: str = field(default="part2", compare=False)  # part1 | part2 | an arm's name
    repeats: str | None = field(default=None, compare=False)  # an arm's stage: the step it repeats

    @property
    def group(self) -> str:
        """``method`` for the method's own stages, else the arm's name."""
        return "method" if self.part in ("part1", "part2") else self.part

    @property
    def run_dir(self) -> str:
        return str(Path(self.done).parent)

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
    return files.suffix(name, layout.key, layout.speed)


def filter_outputs(name: str, layout: Layout) -> str:
    return f"{layout.runs}/{files.filter_outputs_dir(suffix(name, layout))}"


def pool_dir(name: str, layout: Layout) -> str:
    return f"{layout.pools}/{files.POOL.format(suffix=suffix(name, layout))}"


# ---------------------------------------------------------------- overrides

def split_override(text: str) -> tuple[str | None, str]:
    """``"step1:optim.lr=1e-3"`` -> ``("step1", "optim.lr=1e-3")``; no scope -> ``(None, text)``."""
    key = text.split("=", 1)[0]
    if ":" in key:
        scope, _, rest = text.partition(":")
        return scope, rest
    return None, text


def scopes(stage_name: str, part: str, repeats: str | None = None) -> set[str]:
    """The scopes whose overrides a training stage takes."""
    out = {stage_name, part}
    if repeats is not None:  # an arm's stage keeps the budget of the step it repeats
        out |= {repeats, "part1"}
    return out


def scoped(layout: Layout, names: set[str]) -> list[str]:
    """The layout's overrides that apply to a stage of these scopes, in the order given."""
    out = []
    for text in layout.overrides:
        scope, override = split_override(text)
        if scope is None or scope in names:
            out.append(override)
    return out


def _check_scopes(layout: Layout, chain: list[Stage]) -> None:
    known = {s.name for s in stages_of_method(layout)} | {"part1", "part2"} | set(ARMS)
    known |= {f"{arm}_{step}" for arm in ARMS for step in PART1}
    for text in layout.overrides:
        scope, override = split_override(text)
        if "=" not in override:
            raise PipelineError(f"--set {text!r}: expected [SCOPE:]a.b=value")
        if scope is not None and scope not in known:
            raise PipelineError(f"--set {text!r}: unknown scope {scope!r}; scopes: part1, part2, "
                                f"{', '.join(ARMS)} or a stage ({', '.join(s.name for s in chain)})")


# ---------------------------------------------------------------- stages

def _threshold_args(layout: Layout) -> list[str]:
    if layout.threshold.startswith("keep="):
        # auto_filter's positional threshold is still required; --keep-fraction overrides it.
        return ["20", "--keep-fraction", layout.threshold.split("=", 1)[1]]
    return [layout.threshold]


def _train(name: str, after: tuple[str, ...], data: str, layout: Layout, part: str) -> Stage:
    argv = ("train.py", f"{layout.configs}/{name}.yaml", f"run.root={layout.runs}", f"data.root={data}",
            *scoped(layout, scopes(name, part)))
    return Stage(name, "train", after, argv, f"{layout.runs}/{name}/{files.DONE_FILE}", parallel=True, part=part)


def _filter(name: str, model_run: str, mode: str, layout: Layout) -> Stage:
    out = filter_outputs(name, layout)
    argv = ("filter.py", "--model", f"{layout.runs}/{model_run}/{files.MODEL_FILE}", "--data", layout.data,
            "--name", name, "--key", str(layout.key), "--speed", str(layout.speed),
            "--mode", mode, "--out", out)
    return Stage(f"filter_{name}", "filter", (model_run,), argv, f"{out}/{files.VOLUMES_FILE}", parallel=True)


def holdout_count(layout: Layout) -> str:
    """Tracks held out of the pools (auto_filter's --holdout): none when clean validation tracks are given."""
    return "0" if layout.valid else str(layout.holdout)


def _select(name: str, layout: Layout) -> Stage:
    dest = pool_dir(name, layout)
    holdout = holdout_count(layout)
    argv = ("auto_filter.py", name, str(layout.key), str(layout.speed), *_threshold_args(layout),
            "--outputs", filter_outputs(name, layout), "--data", layout.data, "--dest", dest, "--link",
            *(["--holdout", holdout] if holdout != "0" else []))
    return Stage(f"select_{name}", "select", (f"filter_{name}",), argv, f"{dest}/{files.SELECTION_FILE}")


def stages_of_method(layout: Layout) -> list[Stage]:
    """Parts 1 and 2 of the method, before budgets: the one definition of their order."""
    p1 = [_train(step, (PART1[k - 1],) if k else (), layout.data, layout, "part1") for k, step in enumerate(PART1)]
    (first, first_model, first_mode), (second, second_model, second_mode) = FILTERS
    p2 = [
        _filter(first, first_model, first_mode, layout),
        _select(first, layout),
        _train(JOINT, (f"select_{first}",), pool_dir(first, layout), layout, "part2"),
        _filter(second, second_model, second_mode, layout),
        _select(second, layout),
        *[_train(name, (f"select_{second}",), pool_dir(second, layout), layout, "part2") for name in FINETUNES],
        _train("other", ("other_trunc",), pool_dir(second, layout), layout, "part2"),
        Stage(BAG_STAGE, "bag", tuple(dict.fromkeys(BAG_SOURCES.values())),
              ("-m", "labelnoise.pipeline", "bag", "--runs", layout.runs, "--selection", pool_dir(second, layout),
               "--data", layout.data, *(["--valid", layout.valid] if layout.valid else [])),
              f"{layout.runs}/{BAG_FILE}"),
    ]
    return p1 + p2


def arm_stages(arm: Arm, layout: Layout) -> list[Stage]:
    """Steps 1-3 again with the arm's overrides (same configs, epochs and learning rates)."""
    if arm.data == "clean" and not layout.clean:
        raise PipelineError(f"arm {arm.name} trains on the clean twin of the tracks: give --clean FOLDER")
    data = layout.clean if arm.data == "clean" else layout.data
    out, previous = [], None
    for step in PART1:
        name = f"{arm.name}_{step}"
        argv = ["train.py", f"{layout.configs}/{step}.yaml", f"run.root={layout.runs}", f"data.root={data}",
                *scoped(layout, scopes(name, arm.name, step)), *arm.overrides, f"run.name={name}"]
        if previous is not None:
            argv.append(f"run.init_from={previous}")
        out.append(Stage(name, "train", (previous,) if previous else (), tuple(argv),
                         f"{layout.runs}/{name}/{files.DONE_FILE}", parallel=True, part=arm.name, repeats=step))
        previous = name
    return out


def stages(part: str = "all", layout: Layout = Layout()) -> list[Stage]:
    """The stages of ``part`` (with the layout's arms after part 1), in an order that respects ``after``."""
    if part not in PARTS:
        raise PipelineError(f"unknown part {part!r}; choose one of {PARTS}")
    unknown = [a for a in layout.arms if a not in ARMS]
    if unknown:
        raise PipelineError(f"unknown arm {unknown[0]!r}; arms: {', '.join(ARMS)}")
    chain = stages_of_method(layout)
    for name in layout.arms:
        chain += arm_stages(ARMS[name], layout)
    _check_scopes(layout, chain)
    if layout.epochs_scale != 1.0 or layout.quick:
        chain = with_budget(chain, layout)
    keep = {"part1": ("part1", *layout.arms), "part2": ("part2",), "all": None}[part]
    return [s for s in chain if keep is None or s.part in keep]


def with_budget(chain: list[Stage], layout: Layout) -> list[Stage]:
    """Every training stage's epochs x ``epochs_scale`` (``quick``: one short epoch past its parent).

    A fine-tune continues its parent's epoch counter, so it runs at least one epoch past it.
    """
    from .config import ConfigError, load_config

    done: dict[str, int] = {}
    out = []
    for stage in chain:
        if stage.kind != "train":
            out.append(stage)
            continue
        try:
            cfg = load_config(stage.argv[1], list(stage.argv[2:]))
        except ConfigError as exc:
            raise PipelineError(f"stage {stage.name}: {exc}") from None
        parent = done.get(cfg["run"]["resume_from"], 0) if cfg["run"]["resume_from"] else 0
        extra = []
        if layout.quick:
            epochs = parent + 1
            extra += [f"optim.batch_size={QUICK_BATCH}", f"data.items_per_epoch={2 * QUICK_BATCH}"]
        else:
            epochs = max(parent + 1, round(cfg["optim"]["epochs"] * layout.epochs_scale))
        done[cfg["run"]["name"]] = epochs
        out.append(replace(stage, argv=(*stage.argv, *extra, f"optim.epochs={epochs}")))
    return out


def stages_between(chain: list[Stage], start: str | None, stop: str | None = None) -> list[Stage]:
    """The stages from ``start`` to ``stop`` (both included; None: the ends); unknown names are errors."""
    names = [s.name for s in chain]
    for name in (start, stop):
        if name is not None and name not in names:
            raise PipelineError(f"unknown stage {name!r}; stages: {', '.join(names)}")
    first = 0 if start is None else names.index(start)
    last = len(chain) if stop is None else names.index(stop) + 1
    return chain[first:last]


def train_stages(chain: list[Stage]) -> list[Stage]:
    return [s for s in chain if s.kind == "train"]


def runner_device() -> str:
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def layout_json(layout: Layout) -> dict:
    return json.loads(json.dumps(asdict(layout)))


def main(argv=None) -> int:
    """``python -m labelnoise.pipeline``: the command line, in labelnoise/cli/pipeline.py."""
    from .cli.pipeline import main as command_line
    return command_line(argv)


if __name__ == "__main__":
    # Through the imported module: labelnoise.runner raises that module's PipelineError, not __main__'s.
    from labelnoise import pipeline as _pipeline
    sys.exit(_pipeline.main())
