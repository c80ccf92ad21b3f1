"""Does the method (truncation, filtering, the final bag) beat plain training under label noise? Same budget.

    .venv/bin/python bench/noise_robustness.py                      # realistic renders, 3 seeds: the method vs plain L1
    .venv/bin/python bench/noise_robustness.py --render sine        # the sine generator, every arm below
    .venv/bin/python bench/noise_robustness.py --seeds 1 --arms plain,trunc_rel --epochs-scale 0.5
    .venv/bin/python bench/noise_robustness.py --epochs-scale 4 --tracks 64 --seconds 30 --device cuda
    .venv/bin/python bench/noise_robustness.py --arch htdemucs --device cuda --epochs-scale 8
    .venv/bin/python bench/noise_robustness.py --report-only        # the table and plot again, from the files

On generated data (``labelnoise.synth``: ``--render sampled``, SoundFont
instruments playing composed songs, the default; ``--render sine``, sines
and noise) it trains one small model per arm with the demo's stage configs
(configs/demo/: MaskNet at 16 kHz; ``--arch htdemucs`` uses configs/tiny/, a
small HTDemucs; ``--configs`` any folder with every stage) and scores each on
one clean test set:

    method        (m) the whole method as the demo runs it: steps 1-3 (truncation ranked by relative error),
                      both filters, joint360, the fine-tunes and the final bag (each source from its best
                      candidate on tracks held out of the pools); every stage's epochs x --epochs-scale
    clean         (a) the clean twin of the noisy tracks, plain L1
    plain         (b) the noisy tracks, plain L1
    trunc         (c) noisy, truncated L1, C 0.7 -> 0.5 -> 0.3 (steps 1-3), absolute ranking (the original)
    trunc_rel     (c') as (c), entries ranked by relative error (loss / target level)
    filtered      (d) (c)'s model filters the noisy stems (filter.py, auto_filter.py with --threshold),
                      then joint360 trains from scratch on the kept stems
    kuielab       (e) noisy, MSE with quantile keep-below 0.4 (mse_trunc, C 0.4), the peer baseline
    trunc_gentle  variant of (c): C 0.8 in every step
    trunc_warmup  variant of (c): step 1 plain L1, then C 0.5 -> 0.3
    pool_all      (d0) the control of (d): joint360 from scratch on every noisy stem, unfiltered. Part 2
                      draws each source from its own pool, so stems of one item come from different
                      songs: this alone changes the data (a stem of the same source from another song
                      is no longer wrong), and (d) - (d0) is what the filter itself adds.

Defaults per backend: ``sampled`` runs (m), (a) and (b) on 24 tracks with
16 test tracks at the demo's budget (``--epochs-scale 1``) with SDX23-style
noise (30 % of the stems: recordings grouped into the wrong stem, bleed,
swaps, partial swaps, other songs); ``sine`` runs every arm but (m) on 16
tracks at 0.35 of the budget, at 30 % and 50 % noise, as before.

Budget: every arm's model sees the same items: steps 1-3 of configs/demo
with their epochs x ``--epochs-scale``, ``--steps-per-epoch`` optimizer steps
each (``data.items_per_epoch`` is set to match). Arm (d)'s joint360 model
trains from scratch for that same number of items; before it, (d) also spent
(c)'s training and one filter pass to choose its data (the table says so).
The variants rank by ``--variants-by`` (default absolute, so each differs
from (c) in one thing).

Noise settings (``--rates``): ``RATE`` or ``RATE@KINDS`` with synth's noise
kind weights (default ``0.3`` with every kind alike and ``0.5@swap=3,other_song=3``).
``--seeds N`` repeats everything with data and training seeds 1..N; (a)
depends on the seed only, so it is trained once per seed. ``--train-seed K``
trains on the same data with training seeds K+1..K+N instead: run twice
into two ``--out`` folders with one ``--data``, the differences between them
are what training alone varies.

Written to ``--out`` (default runs/bench/noise_robustness): one folder per
seed and noise setting with each arm's runs and ``result.json`` (test SDR,
noisy shares among truncated vs kept entries, the filter's precision/recall,
wall and CPU seconds); results.md, results.json and results.png over all of
them. Running the same command again skips finished arms and continues an
interrupted one; more seeds, rates or arms add to what is there. An out or
data folder made with other settings is refused.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import resource
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from labelnoise import SOURCES, files, pipeline, runner
from labelnoise.atomic import write_json, write_text
from labelnoise.config import load_config
from labelnoise.demo import make_set as make_set_of
from labelnoise.document import save_figure
from labelnoise.report_stats import CLEAR, combined_shares, noisy_shares
from labelnoise.selection import read_selection, write_pool
from labelnoise.synth import NOISE_KINDS, parse_kinds
from labelnoise.yamlio import read_mapping

log = logging.getLogger("noise_robustness")

PART1 = pipeline.PART1
TEST_SEED = 1000       # the test set's data seed: no test song is a training song
RESULT = "result.json"
SETTINGS_FILE = "settings.json"
ARCH_CONFIGS = {"masknet": "configs/demo", "htdemucs": "configs/tiny"}


@dataclass(frozen=True)
class Arm:
    key: str                        # the letter
    what: str
    data: str                       # noisy | clean
    steps: tuple[tuple[str, ...], ...] = ((), (), ())   # extra overrides of step1..3
    filtered: bool = False          # (d): filter with (c)'s model, then joint360 on the kept stems
    pool_all: bool = False          # (d)'s control: joint360 on every stem, no filter
    truncates: bool = True
    method: bool = False            # (m): the whole method through the final bag, as the demo runs it


def _trunc(by: str, ratios=(None, None, None), loss: str = "l1_trunc") -> tuple[tuple[str, ...], ...]:
    """Overrides of steps 1-3: truncated ``loss`` ranked ``by``; a ratio None keeps the config's C."""
    return tuple((f"optim.loss={loss}", f"optim.trunc_by={by}", *([f"optim.trunc_ratio={c}"] if c else []))
                 for c in ratios)


PLAIN = (("optim.loss=l1",),) * 3


def arms(variants_by: str) -> dict[str, Arm]:
    return {
        "method": Arm("m", "the whole method: steps 1-3 (relative), both filters, joint360, fine-tunes, final bag",
                      "noisy", _trunc("relative"), method=True),
        "clean": Arm("a", "clean twin, plain L1", "clean", PLAIN, truncates=False),
        "plain": Arm("b", "noisy, plain L1", "noisy", PLAIN, truncates=False),
        "trunc": Arm("c", "noisy, truncated L1 C 0.7/0.5/0.3, absolute", "noisy", _trunc("absolute")),
        "trunc_rel": Arm("c'", "noisy, truncated L1 C 0.7/0.5/0.3, relative", "noisy", _trunc("relative")),
        "filtered": Arm("d", "(c), filter + auto_filter, joint360 on kept stems", "noisy", _trunc("absolute"),
                        filtered=True),
        "pool_all": Arm("d0", "(d)'s control: joint360 on every noisy stem, no filter", "noisy", pool_all=True,
                        truncates=False),
        "kuielab": Arm("e", "noisy, MSE keep-below quantile 0.4", "noisy",
                       _trunc("absolute", (0.4, 0.4, 0.4), loss="mse_trunc")),
        "trunc_gentle": Arm("c-0.8", f"noisy, truncated L1 C 0.8/0.8/0.8, {variants_by}", "noisy",
                            _trunc(variants_by, (0.8, 0.8, 0.8))),
        "trunc_warmup": Arm("c-warm", f"noisy, plain L1 then truncated C 0.5/0.3, {variants_by}", "noisy",
                            (("optim.loss=l1",), *_trunc(variants_by)[1:])),
    }


ARM_NAMES = tuple(arms("absolute"))


@dataclass(frozen=True)
class Noise:
    rate: float
    kinds: str = ""                 # synth kind weights, "swap=3,other_song=3"; "" = every kind alike

    @classmethod
    def parse(cls, text: str) -> "Noise":
        rate, _, kinds = text.partition("@")
        try:
            value = float(rate)
        except ValueError:
            raise ValueError(f"--rates: {text!r} is not RATE or RATE@KIND=W,...") from None
        if not 0 < value <= 1:
            raise ValueError(f"--rates: rate {value} must lie in (0, 1]")
        # An unknown kind is an error now, not after an hour of training.
        unknown = sorted(set(parse_kinds(kinds or None) or {}) - set(NOISE_KINDS))
        if unknown:
            raise ValueError(f"--rates: unknown noise kind {unknown[0]!r} in {text!r}; kinds: {', '.join(NOISE_KINDS)}")
        return cls(value, kinds)

    @property
    def slug(self) -> str:
        return f"r{self.rate:g}" + ("_" + self.kinds.replace("=", "").replace(",", "_") if self.kinds else "")

    @property
    def label(self) -> str:
        return f"{self.rate:.0%} noisy stems" + (f" ({self.kinds})" if self.kinds else " (every kind alike)")


@dataclass(frozen=True)
class Settings:
    """What the figures depend on (seeds, rates and arms may be added to a run folder)."""
    # Default budget: 4 + 2 + 2 epochs of 20 steps = 160 MaskNet steps per model; 51 models (3 seeds x
    # (1 clean + 2 rates x 8 arms)) and 6 filter passes took 25 min on 2 idle CPU cores (BENCHMARKS.md).
    tracks: int = 16
    seconds: float = 16.0
    test_tracks: int = 6
    epochs_scale: float = 0.35
    steps_per_epoch: int = 20
    configs: str = ARCH_CONFIGS["masknet"]
    threshold: str = "auto"
    variants_by: str = "absolute"
    overrides: tuple[str, ...] = ()
    render: str = "sampled"
    train_seed: int = 0          # training seed = data seed + this


@dataclass
class Plan:
    """Paths of one seed: its data sets and run roots."""
    seed: int
    data: Path
    out: Path

    def train_set(self, noise: Noise | None) -> Path:
        return self.data / f"seed{self.seed}" / ("clean" if noise is None else noise.slug) / "train"

    def arm_dir(self, noise: Noise | None, arm: str) -> Path:
        return self.out / f"seed{self.seed}" / ("clean" if noise is None else noise.slug) / arm


# ---------------------------------------------------------------- data

def make_set(folder: Path, *, tracks: int, seconds: float, samplerate: int, seed: int, noise: Noise | None,
             render: str) -> bool:
    """Generate one synthetic set unless it is there already; a folder holding other data is an error."""
    spec = dict(folder=folder, seed=seed, seconds=seconds, samplerate=samplerate, tracks=tracks,
                noise_rate=0.0 if noise is None else noise.rate, render=render)
    return make_set_of(spec, kinds=parse_kinds(noise.kinds or None) if noise is not None else None)


# ---------------------------------------------------------------- stages

def _part1_budget(settings: Settings, layout: pipeline.Layout) -> list[tuple[str, int, int]]:
    """(step, epochs, items per epoch) of steps 1-3: the configs' epochs x scale, fixed steps per epoch."""
    out = []
    for stage in pipeline.stages("part1", layout):
        epochs = load_config(stage.argv[1], list(stage.argv[2:]))["optim"]["epochs"]
        out.append((stage.name, max(1, round(epochs * settings.epochs_scale)), _items_per_epoch(settings, stage)))
    return out


def layout_of(arm: Arm, settings: Settings, seed: int, runs: Path, data: Path, pools: Path) -> pipeline.Layout:
    """The demo's preset with the arm's losses and the budget, as scoped overrides of the stages.

    Every model sees the same items: steps 1-3 as many as the configs' epochs x ``--epochs-scale`` at
    ``--steps-per-epoch``; joint360 (arms d, d0) from scratch as many as steps 1-3 together, in epochs of
    their mean size, in whole batches of its own.
    """
    # No held-out tracks: arm (d) trains joint360 on every kept stem, as it did before the bag chose.
    base = replace(pipeline.PRESETS["demo"], configs=settings.configs, data=str(data), runs=str(runs),
                   pools=str(pools), threshold=settings.threshold, holdout="0",
                   overrides=(*settings.overrides, f"run.seed={seed + settings.train_seed}"))
    part1 = _part1_budget(settings, base)
    budget = [o for step, epochs, items in part1
              for o in (f"{step}:optim.epochs={epochs}", f"{step}:data.items_per_epoch={items}")]
    steps = [f"{step}:{o}" for (step, _, _), spec in zip(part1, arm.steps) for o in spec]
    joint = next(s for s in pipeline.stages("part2", base) if s.name == pipeline.JOINT)
    optim = load_config(joint.argv[1], list(joint.argv[2:]))["optim"]
    per_batch = optim["batch_size"] * optim["accumulate"]
    items = sum(epochs * n for _, epochs, n in part1)
    epochs = sum(epochs for _, epochs, _ in part1)
    per_epoch = max(1, round(items / epochs / per_batch)) * per_batch
    budget += [f"{pipeline.JOINT}:optim.epochs={epochs}", f"{pipeline.JOINT}:data.items_per_epoch={per_epoch}"]
    if arm.pool_all:
        budget.append(f"{pipeline.JOINT}:data.root={all_stems_pool(data)}")
    return replace(base, overrides=(*base.overrides, *budget, *steps))


def method_layout(settings: Settings, seed: int, runs: Path, data: Path, pools: Path) -> pipeline.Layout:
    """The demo's preset and schedule, every stage's epochs x ``--epochs-scale`` (a fine-tune at least one
    past its parent), ``--steps-per-epoch`` steps per epoch: steps 1-3 see what the other arms' do."""
    preset = pipeline.PRESETS["demo"]
    # The batch sizes the stages run with (--set included) give their items per epoch.
    base = replace(preset, configs=settings.configs, data=str(data), runs=str(runs), pools=str(pools),
                   threshold=settings.threshold, epochs_scale=settings.epochs_scale,
                   overrides=(*preset.overrides, *settings.overrides, f"run.seed={seed + settings.train_seed}"))
    per_step = {s.name: _items_per_epoch(settings, s) for s in pipeline.train_stages(pipeline.stages("all", base))}
    items = [f"{name}:data.items_per_epoch={n}" for name, n in per_step.items()]
    return replace(base, overrides=(*base.overrides, *items))


def _items_per_epoch(settings: Settings, stage: pipeline.Stage) -> int:
    optim = load_config(stage.argv[1], list(stage.argv[2:]))["optim"]
    return settings.steps_per_epoch * optim["batch_size"] * optim["accumulate"]


def arm_chain(arm: Arm, layout: pipeline.Layout) -> list[pipeline.Stage]:
    """Steps 1-3; (d): through the first filter, its selection and joint360; (d0): joint360 alone; (m): all."""
    chain = pipeline.stages("all", layout)
    if arm.method:
        return chain
    if arm.pool_all:
        return pipeline.stages_between(chain, pipeline.JOINT, pipeline.JOINT)
    return pipeline.stages_between(chain, None, pipeline.JOINT if arm.filtered else pipeline.PART1[-1])


def all_stems_pool(data: Path) -> Path:
    return data.parent / "pool_every_stem"


def write_all_stems_pool(data: Path) -> None:
    """Part 2's pool layout (``train/{stem}/{track}.wav``, hard links) holding every stem of ``data``."""
    tracks = sorted(p.name for p in data.iterdir() if p.is_dir())
    dest = all_stems_pool(data)
    if (dest / files.DONE_FILE).is_file():
        return
    write_pool(data, dest, {s: tracks for s in SOURCES}, link=True, progress=False)
    write_text(dest / files.DONE_FILE, f"{len(tracks)} tracks x {len(SOURCES)} stems\n")


# ---------------------------------------------------------------- one arm

def _cpu_seconds() -> float:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def truncation_shares(runs: Path) -> dict | None:
    """Noisy stems among the entries steps 1-3 dropped vs kept (from metrics.jsonl), pooled over the steps."""
    parts = []
    for step in PART1:
        run = runs / step
        if (run / files.METRICS_FILE).is_file() and (run / files.CONFIG_FILE).is_file():
            records = [json.loads(line) for line in (run / files.METRICS_FILE).read_text().splitlines() if line.strip()]
            parts.append(noisy_shares(records, read_mapping(run / files.CONFIG_FILE)))
    return combined_shares(parts)


def run_arm(name: str, arm: Arm, settings: Settings, plan: Plan, noise: Noise | None, test_dir: Path,
            device: str) -> tuple[dict, bool]:
    """Train what is not done yet through the pipeline's runner, score the last model, write result.json.

    Returns the result and whether it was there already.
    """
    where = plan.arm_dir(noise, name)
    result_path = where / RESULT
    if result_path.is_file():
        return json.loads(result_path.read_text()), True
    # (d) continues in (c)'s run folder: its steps 1-3 are (c)'s own runs.
    runs = plan.arm_dir(noise, "trunc") if arm.filtered else where
    data = plan.train_set(None if arm.data == "clean" else noise)
    layout = (method_layout(settings, plan.seed, runs, data, where / "pools") if arm.method
              else layout_of(arm, settings, plan.seed, runs, data, data.parent))
    chain = arm_chain(arm, layout)
    if arm.pool_all:
        write_all_stems_pool(data)
    jobs = runner.plan(chain, layout, test_seconds=settings.test_tracks * settings.seconds, device=device)
    scored = {job.name for job in jobs[-1:]} | ({pipeline.PART1[-1], pipeline.JOINT} if arm.method else set())
    for job in jobs:
        if job.name not in scored:
            job.eval = None  # the arm is judged by its last model (the method's also shows step3 and joint360)
    wall, cpu = time.monotonic(), _cpu_seconds()
    where.mkdir(parents=True, exist_ok=True)
    with open(where / "progress.log", "a") as lines:
        runner.run(jobs, layout, test=test_dir, device=device, here=True, label=name,
                   say=lambda text: print(text, file=lines, flush=True))
    report = json.loads(Path(jobs[-1].eval).read_text())
    result = {
        "arm": name, "key": arm.key, "what": arm.what, "seed": plan.seed,
        "noise": None if noise is None else dataclasses.asdict(noise),
        "sdr": {**{s: report["summary"]["per_source"][s]["mean"] for s in SOURCES},
                "mean": report["summary"]["mean"]},
        "per_track": {t: v["mean"] for t, v in report["scores"].items()},
        "shares": truncation_shares(runs) if arm.truncates else None,
        "filter": _filter_figures(chain) if arm.filtered or arm.method else None,
        "method": method_figures(jobs, runs) if arm.method else None,
        "wall_seconds": round(time.monotonic() - wall, 1), "cpu_seconds": round(_cpu_seconds() - cpu, 1),
        "commands": [["python", *s.argv] for s in chain],
    }
    write_json(result_path, result)
    return result, False


def _filter_figures(stages: list[pipeline.Stage]) -> dict:
    """The first filter's precision and recall (overall, and without the stems no per-stem filter can see);
    with two filters, the second's under ``second``."""
    out = {}
    for k, select in enumerate(s for s in stages if s.kind == "select"):
        sel = read_selection(Path(select.done).parent)
        metrics = sel.get("metrics") or {}
        overall, judgeable = metrics.get("overall") or {}, metrics.get("judgeable") or {}
        figures = {"precision": overall.get("precision"), "recall": overall.get("recall"),
                   "judgeable_precision": judgeable.get("precision"), "judgeable_recall": judgeable.get("recall"),
                   "kept": {s: c["kept"] + c.get("held_out", 0) for s, c in sel["counts"].items()},
                   "total": {s: c["total"] for s, c in sel["counts"].items()}, "thresholds": sel["thresholds"],
                   "rules": sel["threshold_rules"], "per_kind": metrics.get("per_kind")}
        if k == 0:
            out = figures
        else:
            out["second"] = figures
    return out


def method_figures(jobs: list, runs: Path) -> dict:
    """Step3's and joint360's test SDR next to the bag's, per source with paired standard errors, and the
    bag's choices."""
    scores = {j.name: json.loads(Path(j.eval).read_text()) for j in jobs if j.eval and Path(j.eval).is_file()}
    bag, joint = scores[pipeline.BAG_STAGE], scores[pipeline.JOINT]
    per_source = {}
    for s in SOURCES:
        d = np.array([bag["scores"][t][s] - joint["scores"][t][s] for t in bag["scores"]])
        per_source[s] = {"bag": bag["summary"]["per_source"][s]["mean"],
                         pipeline.JOINT: joint["summary"]["per_source"][s]["mean"],
                         "diff": float(d.mean()), "se": float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else None}
    choices = read_mapping(runs / pipeline.BAG_FILE).get("choices", {})
    return {"sdr": {name: r["summary"]["mean"] for name, r in scores.items()}, "bag_vs_joint360": per_source,
            "choices": {s: c.get("model") for s, c in choices.items()},
            "warnings": {s: c["warning"] for s, c in choices.items() if c.get("warning")}}


# ---------------------------------------------------------------- summary

def _mean_std(values: list[float]) -> tuple[float, float | None]:
    a = np.asarray(values, dtype=float)
    return float(a.mean()), (float(a.std(ddof=1)) if len(a) > 1 else None)


def summarize(results: list[dict], noises: list[Noise], names: list[str]) -> dict:
    """Per noise setting and arm: SDR mean/std over seeds, paired differences vs (b), gap closed, shares."""
    by = {}
    for r in results:
        by.setdefault((r["noise_slug"], r["arm"]), {})[r["seed"]] = r
    out = {}
    for noise in noises:
        rows = {}
        plain = by.get((noise.slug, "plain"), {})
        clean = by.get(("clean", "clean"), {})
        for name in names:
            got = by.get(("clean", "clean") if name == "clean" else (noise.slug, name), {})
            if not got:
                continue
            seeds = sorted(got)
            row = {"seeds": seeds, "sdr": {}}
            for key in (*SOURCES, "mean"):
                m, s = _mean_std([got[k]["sdr"][key] for k in seeds])
                row["sdr"][key] = {"mean": m, "std": s}
            row["vs_plain"] = _paired(got, plain)
            row["vs_clean"] = _paired(got, clean)
            shares = [got[k]["shares"] for k in seeds if got[k].get("shares")]
            if shares:
                row["shares"] = {k: _mean_std([s[k] for s in shares])[0] for k in ("dropped", "kept", "ratio")}
            filters = [got[k]["filter"] for k in seeds if got[k].get("filter")]
            if filters:
                row["filter"] = {k: _mean_std([f[k] for f in filters if f[k] is not None] or [float("nan")])[0]
                                 for k in ("precision", "recall")}
            row["cpu_seconds"] = float(np.mean([got[k]["cpu_seconds"] for k in seeds]))
            rows[name] = row
        for name, row in rows.items():
            got = by.get((noise.slug, name), {})
            # The share of the clean-vs-noisy gap an arm closes, over the seeds where (a), (b) and it all ran.
            seeds = sorted(set(got) & set(plain) & set(clean))
            if name in ("clean", "plain") or not seeds:
                continue
            gap = np.mean([clean[k]["sdr"]["mean"] - plain[k]["sdr"]["mean"] for k in seeds])
            if gap > 0:
                gain = np.mean([got[k]["sdr"]["mean"] - plain[k]["sdr"]["mean"] for k in seeds])
                row["gap_closed"] = float(gain / gap)
                row["gap_seeds"] = seeds
        method = by.get((noise.slug, "method"), {})
        seeds_m = [{**method[k], "plain_sdr": plain[k]["sdr"]["mean"] if k in plain else None} for k in sorted(method)]
        out[noise.slug] = {"label": noise.label, "rate": noise.rate, "kinds": noise.kinds, "arms": rows,
                           "method_seeds": seeds_m}
    return out


def _paired(a: dict, b: dict) -> dict | None:
    """Mean SDR of ``a`` minus ``b`` over their common seeds: mean, std, standard error, verdict."""
    seeds = sorted(set(a) & set(b))
    if not seeds or a is b:
        return None
    d = [a[k]["sdr"]["mean"] - b[k]["sdr"]["mean"] for k in seeds]
    m, s = _mean_std(d)
    se = None if s is None else s / math.sqrt(len(d))
    if se is None:
        verdict = "one seed"
    elif abs(m) > CLEAR * se:
        verdict = "higher" if m > 0 else "lower"
    else:
        verdict = "within seed noise"
    return {"diff": m, "std": s, "se": se, "n": len(d), "verdict": verdict}


def _pm(m, s, digits=2) -> str:
    if m is None or (isinstance(m, float) and math.isnan(m)):
        return "–"
    return f"{m:.{digits}f}" + ("" if s is None else f" ± {s:.{digits}f}")


def markdown(summary: dict, all_arms: dict[str, Arm], settings: Settings, header: str) -> str:
    lines = [header, ""]
    for slug, block in summary.items():
        lines += [f"### {block['label']}", "",
                  "| arm | what | " + " | ".join(SOURCES) + " | mean SDR (dB) | vs (b), paired | gap closed "
                  "| noisy share dropped / kept | seeds | CPU s |",
                  "|---|---|" + "---|" * len(SOURCES) + "---|---|---|---|---|---|"]
        for name, row in block["arms"].items():
            arm = all_arms[name]
            cells = [_pm(row["sdr"][s]["mean"], row["sdr"][s]["std"]) for s in SOURCES]
            d = row["vs_plain"]
            vs = "–" if d is None else f"{_pm(d['diff'], d['std'])} ({d['verdict']})"
            gap = f"{row['gap_closed']:.0%}" if "gap_closed" in row else "–"
            sh = row.get("shares")
            shares = "–" if not sh else f"{sh['dropped']:.0%} / {sh['kept']:.0%} ({sh['ratio']:.2f}x)"
            lines.append(f"| ({arm.key}) {name} | {arm.what} | " + " | ".join(cells)
                         + f" | **{_pm(row['sdr']['mean']['mean'], row['sdr']['mean']['std'])}** | {vs} | {gap} "
                         f"| {shares} | {len(row['seeds'])} | {row['cpu_seconds']:.0f} |")
        lines += method_lines(block, slug)
        filt = block["arms"].get("filtered", {}).get("filter")
        if filt:
            lines += ["", f"Filter of arm (d) (model of (c), threshold `{settings.threshold}`): precision "
                          f"{_pm(filt['precision'], None)}, recall {_pm(filt['recall'], None)} of the kept "
                          f"stems being clean (mean over seeds)."]
        lines.append("")
    lines += [
        "SDR: challenge SDR on the clean test set, mean over its tracks; mean ± std over seeds. "
        "\"vs (b)\": per-seed difference from plain L1 on the same data, mean ± std; \"higher\"/\"lower\" "
        f"only when larger than {CLEAR:g} standard errors over the seeds. \"gap closed\": (arm - b) / (a - b) "
        "from those paired means (shown when the clean arm is ahead). Noisy shares: truncated entries of steps "
        "1-3 that were noisy stems vs kept entries that were. CPU s: this process and its children, per arm "
        "and seed (mean). Arm (d) also spent (c)'s training and a filter pass (its CPU s counts only the "
        "filter, selection and joint360).", ""]
    return "\n".join(lines)


def _pr(f: dict | None, prefix: str = "") -> str:
    if not f:
        return "–"
    return f"{_pm(f.get(prefix + 'precision'), None)} / {_pm(f.get(prefix + 'recall'), None)}"


def method_lines(block: dict, slug: str) -> list[str]:
    """Arm (m), seed by seed: the bag against plain L1, both filters, the bag's choices, bag vs joint360."""
    per_seed = block.get("method_seeds") or []
    if not per_seed:
        return []
    lines = ["", "Arm (m), per seed: the final bag against plain L1; each filter's precision / recall of the kept "
                 "stems being clean, overall and without the stems no per-stem filter can see; the bag's "
                 "choices; each source of the bag minus joint360's on the test set (± its standard error over "
                 "test tracks; **bold** where it is lower by more than that).", "",
             "| seed | bag | plain | bag - plain | filter 1 (all; judgeable) | filter 2 (all; judgeable) | "
             "choices | bag - joint360 per source |", "|---|---|---|---|---|---|---|---|"]
    for r in per_seed:
        m, f = r["method"], r["filter"]
        second = f.get("second")
        vs = []
        for s in SOURCES:
            d = m["bag_vs_joint360"][s]
            text = f"{s} {_pm(d['diff'], d['se'])}"
            vs.append(f"**{text}**" if d["se"] is not None and d["diff"] < -d["se"] else text)
        plain = r.get("plain_sdr")
        lines.append(f"| {r['seed']} | {r['sdr']['mean']:.2f} | {_pm(plain, None)} | "
                     f"{_pm(None if plain is None else r['sdr']['mean'] - plain, None)} | "
                     f"{_pr(f)}; {_pr(f, 'judgeable_')} | {_pr(second)}; {_pr(second, 'judgeable_')} | "
                     + ", ".join(f"{s}: {c}" for s, c in m["choices"].items()) + " | " + "; ".join(vs) + " |")
    return lines


def plot(summary: dict, names: list[str], all_arms: dict[str, Arm], path: Path, results: list[dict]) -> Path:
    fig = Figure(figsize=(4 + 1.1 * len(names), 3.6 * len(summary)))
    for i, (slug, block) in enumerate(summary.items()):
        ax = fig.add_subplot(len(summary), 1, i + 1)
        shown = [n for n in names if n in block["arms"]]
        means = [block["arms"][n]["sdr"]["mean"]["mean"] for n in shown]
        stds = [block["arms"][n]["sdr"]["mean"]["std"] or 0.0 for n in shown]
        colours = ["tab:green" if n == "clean" else "tab:gray" if n == "plain" else "tab:blue" for n in shown]
        # Points with whiskers, not bars: the axis does not start at 0, and bars would exaggerate.
        for j, (n, m, s, c) in enumerate(zip(shown, means, stds, colours)):
            ax.errorbar([j], [m], yerr=[s], fmt="o", ms=7, capsize=5, color=c)
            seeds = [r["sdr"]["mean"] for r in results
                     if r["arm"] == n and r["noise_slug"] == ("clean" if n == "clean" else slug)]
            ax.plot([j + 0.15] * len(seeds), seeds, "k.", ms=4, alpha=0.6)
        if "plain" in shown:
            ax.axhline(means[shown.index("plain")], color="tab:gray", lw=0.8, ls="--")
        ax.set_xticks(range(len(shown)), [f"({all_arms[n].key})\n{n}" for n in shown], fontsize=8)
        low = min(m - s for m, s in zip(means, stds)) if means else 0
        high = max(m + s for m, s in zip(means, stds)) if means else 1
        ax.set_ylim(low - 0.3, high + 0.3)
        ax.set_ylabel("test SDR (dB)")
        ax.set_title(f"{block['label']}: mean ± std over seeds (dots: seeds)", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


# ---------------------------------------------------------------- the run

def check_settings(out: Path, settings: Settings) -> None:
    path = out / SETTINGS_FILE
    mine = json.loads(json.dumps(dataclasses.asdict(settings)))
    if path.is_file():
        theirs = json.loads(path.read_text())
        # A setting newer than the folder counts as its default there.
        defaults = json.loads(json.dumps(dataclasses.asdict(Settings())))
        differ = [k for k in mine if theirs.get(k, defaults[k]) != mine[k]]
        if differ:
            k = differ[0]
            raise pipeline.PipelineError(f"{path}: this folder holds results made with other settings ({k} "
                                         f"{theirs.get(k)!r}, now {mine[k]!r}); run with the same settings, "
                                         f"or give --out another folder")
    else:
        write_json(path, mine)


def collect(out: Path) -> list[dict]:
    results = []
    for path in sorted(out.glob(f"seed*/*/*/{RESULT}")):
        r = json.loads(path.read_text())
        r["noise_slug"] = path.parent.parent.name
        results.append(r)
    return results


def write_outputs(out: Path, settings: Settings, noises: list[Noise], names: list[str], header: str) -> str:
    all_arms = arms(settings.variants_by)
    results = collect(out)
    summary = summarize(results, noises, names)
    text = markdown(summary, all_arms, settings, header)
    write_text(out / "results.md", text)
    write_json(out / "results.json", {"settings": dataclasses.asdict(settings), "summary": summary,
                                      "results": results})
    plot(summary, names, all_arms, out / "results.png", results)
    return text


# The defaults of each generator backend: the realistic one judges the whole method at the demo's budget on
# SDX23-style noise (recordings grouped into the wrong stem, bleed); the sine one keeps the earlier setting.
SDX23_KINDS = "misgroup=3,bleed=2,swap=1,partial=1,other_song=1,silent=0"
PROFILES = {
    "sampled": dict(tracks=24, test_tracks=16, epochs_scale=1.0, rates=[f"0.3@{SDX23_KINDS}"],
                    arms="clean,plain,method", out="runs/bench/noise_robustness",
                    data="data/bench/noise_robustness"),
    "sine": dict(tracks=16, test_tracks=6, epochs_scale=0.35, rates=["0.3", "0.5@swap=3,other_song=3"],
                 arms=",".join(a for a in ARM_NAMES if a != "method"), out="runs/bench/noise_robustness_sine",
                 data="data/bench/noise_robustness_sine"),
}


def parse_args(argv=None) -> argparse.Namespace:
    d = Settings()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--render", choices=sorted(PROFILES), default="sampled",
                   help="the generator's backend, and its defaults for the options below (default sampled)")
    p.add_argument("--tracks", type=int, default=None, help="noisy training tracks (sampled 24, sine 16)")
    p.add_argument("--seconds", type=float, default=d.seconds, help=f"seconds per track (default {d.seconds:g})")
    p.add_argument("--test-tracks", type=int, default=None, help="clean test tracks (sampled 16, sine 6)")
    p.add_argument("--rates", nargs="+", default=None, metavar="RATE[@KINDS]",
                   help=f"noise settings (sampled: 0.3@{SDX23_KINDS}; sine: 0.3 and 0.5@swap=3,other_song=3)")
    p.add_argument("--seeds", type=int, default=3, help="data and training seeds 1..N (default 3)")
    p.add_argument("--train-seed", type=int, default=0, metavar="K",
                   help="training seeds K+1..K+N on the same data (default 0: the data seeds)")
    p.add_argument("--arms", default=None, help=f"comma-separated subset of {', '.join(ARM_NAMES)} "
                                                "(sampled: clean,plain,method; sine: all but method)")
    p.add_argument("--epochs-scale", type=float, default=None,
                   help="x the configs' epochs of steps 1-3 (and of every stage of the method; sampled 1, sine 0.35)")
    p.add_argument("--steps-per-epoch", type=int, default=d.steps_per_epoch,
                   help=f"optimizer steps per epoch (default {d.steps_per_epoch})")
    p.add_argument("--arch", choices=sorted(ARCH_CONFIGS), default="masknet",
                   help="masknet: configs/demo (default); htdemucs: configs/tiny")
    p.add_argument("--configs", default=None, help="stage config folder (overrides --arch)")
    p.add_argument("--threshold", default=d.threshold, help="the filters' rule: dB, auto, otsu or keep=F (default auto)")
    p.add_argument("--variants-by", choices=("absolute", "relative"), default=d.variants_by,
                   help="ranking of the C 0.8 and warm-up variants (default absolute, as (c))")
    p.add_argument("--set", action="append", default=[], metavar="A.B=VALUE",
                   help="config override for every training stage (repeatable)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--out", type=Path, default=None, help="results (sampled: runs/bench/noise_robustness, "
                                                          "sine: runs/bench/noise_robustness_sine)")
    p.add_argument("--data", type=Path, default=None, help="generated sets (data/bench/..., as --out)")
    p.add_argument("--report-only", action="store_true", help="write the table and plot from finished arms")
    args = p.parse_args(argv)
    for key, value in PROFILES[args.render].items():
        if getattr(args, key) is None:
            setattr(args, key, Path(value) if key in ("out", "data") else value)
    try:
        args.noises = [Noise.parse(t) for t in args.rates]
    except ValueError as exc:
        p.error(str(exc))
    args.arm_names = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = [a for a in args.arm_names if a not in ARM_NAMES]
    if unknown:
        p.error(f"unknown arm {unknown[0]!r}; arms: {', '.join(ARM_NAMES)}")
    if args.tracks < 2 or args.test_tracks < 1 or args.seeds < 1 or args.epochs_scale <= 0:
        p.error("need --tracks >= 2, --test-tracks >= 1, --seeds >= 1 and --epochs-scale > 0")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    settings = Settings(tracks=args.tracks, seconds=args.seconds, test_tracks=args.test_tracks,
                        epochs_scale=args.epochs_scale, steps_per_epoch=args.steps_per_epoch,
                        configs=args.configs or ARCH_CONFIGS[args.arch], threshold=args.threshold,
                        variants_by=args.variants_by, overrides=tuple(args.set), render=args.render,
                        train_seed=args.train_seed)
    say = lambda text: print(text, flush=True)  # noqa: E731
    step1 = load_config(Path(settings.configs) / "step1.yaml", list(settings.overrides))
    samplerate = step1["data"]["samplerate"]
    names = args.arm_names
    # (d) needs (c)'s runs; (c) is then trained anyway, so it is shown too.
    if "filtered" in names and "trunc" not in names:
        names.insert(names.index("filtered"), "trunc")
    header = (f"Noise robustness: {settings.tracks} tracks x {settings.seconds:g} s at {samplerate} Hz, "
              f"{settings.test_tracks} clean test tracks, configs {settings.configs}, epochs x "
              f"{settings.epochs_scale:g} of steps 1-3 at {settings.steps_per_epoch} steps per epoch, "
              f"seeds 1..{args.seeds}" + (f" (training seeds {args.train_seed + 1}..{args.train_seed + args.seeds})"
                                           if args.train_seed else "") + f", device {args.device}.")
    try:
        return run_all(args, settings, names, header, samplerate, say)
    except pipeline.PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def run_all(args, settings: Settings, names: list[str], header: str, samplerate: int, say) -> int:
    """Every seed, noise setting and arm not done yet; the table, JSON and plot after each arm."""
    out, data = args.out, args.data
    all_arms = arms(settings.variants_by)
    out.mkdir(parents=True, exist_ok=True)
    check_settings(out, settings)
    if args.report_only:
        say(write_outputs(out, settings, args.noises, names, header))
        return 0
    started = time.monotonic()
    test_dir = data / "test"
    make_set(test_dir, tracks=settings.test_tracks, seconds=settings.seconds, samplerate=samplerate,
             seed=TEST_SEED, noise=None, render=settings.render)
    jobs = []
    for seed in range(1, args.seeds + 1):
        plan = Plan(seed, data, out)
        for noise in [None, *args.noises]:
            for name in names:
                arm = all_arms[name]
                if (noise is None) != (arm.data == "clean"):
                    continue
                jobs.append((plan, noise, name, arm))
    say(f"{header}\n{len(jobs)} arm runs; out {out}")
    for i, (plan, noise, name, arm) in enumerate(jobs, 1):
        make_set(plan.train_set(noise), tracks=settings.tracks, seconds=settings.seconds, samplerate=samplerate,
                 seed=plan.seed, noise=noise, render=settings.render)
        head = f"[{i:3d}/{len(jobs)}] seed {plan.seed} {'clean' if noise is None else noise.slug:<22} {name:<13}"
        try:
            result, cached = run_arm(name, arm, settings, plan, noise, test_dir, args.device)
        except pipeline.PipelineError as exc:
            say(f"{head} FAILED: {exc}")
            return 1
        how = "done already" if cached else f"{result['wall_seconds']:.0f} s wall, {result['cpu_seconds']:.0f} s CPU"
        shares = result.get("shares")
        extra = "" if not shares else f"; noisy dropped/kept {shares['dropped']:.0%}/{shares['kept']:.0%}"
        if result.get("filter"):
            f = result["filter"]
            extra += f"; filter precision {_pm(f['precision'], None)} recall {_pm(f['recall'], None)}"
        say(f"{head} test SDR {result['sdr']['mean']:.2f} dB ({how}){extra}")
        write_outputs(out, settings, args.noises, names, header)
    text = write_outputs(out, settings, args.noises, names, header)
    say(text)
    say(f"{out / 'results.md'}, results.json, results.png; {(time.monotonic() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
