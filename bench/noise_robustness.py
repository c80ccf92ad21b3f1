"""Does loss truncation (and filtering) beat plain training under label noise? Test SDR per arm, same budget.

    .venv/bin/python bench/noise_robustness.py                      # the default: 25 min on 2 idle CPU cores
    .venv/bin/python bench/noise_robustness.py --seeds 1 --arms plain,trunc_rel --epochs-scale 0.5
    .venv/bin/python bench/noise_robustness.py --epochs-scale 4 --tracks 64 --seconds 30 --device cuda
    .venv/bin/python bench/noise_robustness.py --arch htdemucs --device cuda --epochs-scale 8
    .venv/bin/python bench/noise_robustness.py --report-only        # the table and plot again, from the files

On synthetic data (``labelnoise.synth``) it trains one small model per arm
with the demo's stage configs (configs/demo/: MaskNet at 16 kHz; ``--arch
htdemucs`` uses configs/tiny/, a small HTDemucs; ``--configs`` any folder
with step1..3 and joint360) and scores each on one clean test set:

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
depends on the seed only, so it is trained once per seed.

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
import contextlib
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

from labelnoise import SOURCES, pipeline
from labelnoise.atomic import atomic_path, write_json, write_text
from labelnoise.config import ConfigError, load_config
from labelnoise.demo import Job, TestSet, synth_params_match
from labelnoise.report import combined_shares, noisy_shares
from labelnoise.selection import read_selection, write_pool
from labelnoise.synth import NOISE_KINDS, generate, parse_kinds
from labelnoise.trainer import TrainingError, train
from labelnoise.yamlio import read_mapping

log = logging.getLogger("noise_robustness")

PART1 = ("step1", "step2", "step3")
CLEAR = 2.0            # a difference counts when it exceeds this many standard errors over seeds
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


def _trunc(by: str, ratios=(None, None, None), loss: str = "l1_trunc") -> tuple[tuple[str, ...], ...]:
    """Overrides of steps 1-3: truncated ``loss`` ranked ``by``; a ratio None keeps the config's C."""
    return tuple((f"optim.loss={loss}", f"optim.trunc_by={by}", *([f"optim.trunc_ratio={c}"] if c else []))
                 for c in ratios)


PLAIN = (("optim.loss=l1",),) * 3


def arms(variants_by: str) -> dict[str, Arm]:
    return {
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

def make_set(folder: Path, *, tracks: int, seconds: float, samplerate: int, seed: int, noise: Noise | None) -> bool:
    """Generate one synthetic set unless it is there already; a folder holding other data is an error."""
    spec = dict(seed=seed, seconds=seconds, samplerate=samplerate, tracks=tracks,
                noise_rate=0.0 if noise is None else noise.rate)
    ok, difference = synth_params_match(folder, spec)
    kinds = parse_kinds(noise.kinds or None) if noise is not None else None
    if ok:
        return False
    if difference or (folder.exists() and any(folder.iterdir())):
        raise SystemExit(f"error: {folder}: holds other data ({difference or 'not a complete synthetic set'}); "
                         f"delete it or give --data another folder")
    generate(folder, tracks=tracks, seconds=seconds, noise_rate=spec["noise_rate"], seed=seed,
             samplerate=samplerate, kinds=kinds, progress=False)
    return True


# ---------------------------------------------------------------- stages

def _scaled_epochs(stage: pipeline.Stage, scale: float) -> int:
    return max(1, round(load_config(stage.argv[1], stage.argv[2:])["optim"]["epochs"] * scale))


def _items_per_epoch(settings: Settings, stage: pipeline.Stage) -> int:
    optim = load_config(stage.argv[1], stage.argv[2:])["optim"]
    return settings.steps_per_epoch * optim["batch_size"] * optim["accumulate"]


def _budget_overrides(seed: int, epochs: int, items: int) -> list[str]:
    return [f"optim.epochs={epochs}", f"data.items_per_epoch={items}", f"run.seed={seed}"]


def layout_of(settings: Settings, runs: Path, data: Path, pools: Path) -> pipeline.Layout:
    return replace(pipeline.PRESETS["demo"], configs=settings.configs, data=str(data), runs=str(runs),
                   pools=str(pools), threshold=settings.threshold, overrides=tuple(settings.overrides))


def arm_stages(arm: Arm, settings: Settings, seed: int, runs: Path, data: Path, pools: Path,
               device: str) -> list[pipeline.Stage]:
    """The pipeline's steps 1-3 (+ filter, select, joint360 for (d)) with the arm's losses and the budget."""
    layout = layout_of(settings, runs, data, pools)
    chain = pipeline.stages("all", layout)
    part1 = chain[:3]
    epochs = [_scaled_epochs(s, settings.epochs_scale) for s in part1]
    if arm.pool_all:
        joint = chain[5]
        items = sum(e * _items_per_epoch(settings, s) for s, e in zip(part1, epochs))
        per_batch = _items_per_epoch(settings, joint) // settings.steps_per_epoch
        per_epoch = max(1, round(items / sum(epochs) / per_batch)) * per_batch
        pool = pipeline.Stage("pool_all", "pool", (), ("every stem of", str(data), "->", str(all_stems_pool(data))),
                              str(all_stems_pool(data) / "done"))
        return [pool, replace(joint, after=("pool_all",), argv=(
            *joint.argv, f"data.root={all_stems_pool(data)}", *_budget_overrides(seed, sum(epochs), per_epoch)))]
    out = []
    for stage, spec, e in zip(part1, arm.steps, epochs):
        argv = (*stage.argv, *_budget_overrides(seed, e, _items_per_epoch(settings, stage)), *spec)
        out.append(replace(stage, argv=argv))
    if arm.filtered:
        filt, select, joint = chain[3:6]
        assert (filt.kind, select.kind, joint.name) == ("filter", "select", "joint360"), "pipeline order changed"
        out.append(replace(filt, argv=(*filt.argv, "--device", device)))
        out.append(select)
        # From scratch on the kept stems, seeing as many items as each other arm's model.
        # As many epochs as steps 1-3 together, each of their mean size, in whole batches of joint360's.
        items = sum(e * _items_per_epoch(settings, s) for s, e in zip(part1, epochs))
        per_batch = _items_per_epoch(settings, joint) // settings.steps_per_epoch
        per_epoch = max(1, round(items / sum(epochs) / per_batch)) * per_batch
        out.append(replace(joint, argv=(*joint.argv, *_budget_overrides(seed, sum(epochs), per_epoch))))
    return out


def all_stems_pool(data: Path) -> Path:
    return data.parent / "pool_every_stem"


def write_all_stems_pool(data: Path) -> None:
    """Part 2's pool layout (``train/{stem}/{track}.wav``, hard links) holding every stem of ``data``."""
    tracks = sorted(p.name for p in data.iterdir() if p.is_dir())
    dest = all_stems_pool(data)
    write_pool(data, dest, {s: tracks for s in SOURCES}, link=True, progress=False)
    write_text(dest / "done", f"{len(tracks)} tracks x {len(SOURCES)} stems\n")


def run_train(stage: pipeline.Stage, device: str, log_file: Path) -> None:
    """A train stage in this process (a new interpreter per stage would cost seconds each, x 100 stages).

    Its progress bars go to ``log_file``, as a subprocess stage's output does.
    """
    script, config, *overrides = stage.argv
    if script != "train.py":
        raise ValueError(f"stage {stage.name}: not a train.py stage ({script})")
    log_file.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(log_file, "a") as out, contextlib.redirect_stderr(out):
            code = train(load_config(config, overrides), device=device)
    except (ConfigError, TrainingError) as exc:
        raise pipeline.PipelineError(f"stage {stage.name} ({stage.done}): {exc}") from None
    if code != 0 or not stage.is_done():
        raise pipeline.PipelineError(f"stage {stage.name} stopped with code {code} before {stage.done}")


# ---------------------------------------------------------------- one arm

def _cpu_seconds() -> float:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def truncation_shares(runs: Path) -> dict | None:
    """Noisy stems among the entries steps 1-3 dropped vs kept (from metrics.jsonl), pooled over the steps."""
    parts = []
    for step in PART1:
        run = runs / step
        if (run / "metrics.jsonl").is_file() and (run / "config.yaml").is_file():
            records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
            parts.append(noisy_shares(records, read_mapping(run / "config.yaml")))
    return combined_shares(parts)


def run_arm(name: str, arm: Arm, settings: Settings, plan: Plan, noise: Noise | None, test_set: TestSet,
            device: str) -> tuple[dict, bool]:
    """Train (what is not done yet), score on the test set, write the arm's result.json.

    Returns the result and whether it was there already.
    """
    where = plan.arm_dir(noise, name)
    result_path = where / RESULT
    if result_path.is_file():
        return json.loads(result_path.read_text()), True
    # (d) continues in (c)'s run folder: its steps 1-3 are (c)'s own runs.
    runs = plan.arm_dir(noise, "trunc") if arm.filtered else where
    data = plan.train_set(None if arm.data == "clean" else noise)
    stages = arm_stages(arm, settings, plan.seed, runs, data, data.parent, device)
    wall, cpu = time.monotonic(), _cpu_seconds()
    for stage in stages:
        if stage.is_done():
            continue
        log_file = where / "logs" / f"{stage.name}.log"
        if stage.kind == "train":
            run_train(stage, device, log_file)
        elif stage.kind == "pool":
            write_all_stems_pool(data)
        else:
            pipeline.run_stage(stage, log_file=log_file)
    last = stages[-1]
    run_dir = Path(last.done).parent
    job = Job(last, name, model=str(run_dir / "model.th"), eval=str(run_dir / "test_sdr.json"))
    report = test_set.evaluate(job)
    result = {
        "arm": name, "key": arm.key, "what": arm.what, "seed": plan.seed,
        "noise": None if noise is None else dataclasses.asdict(noise),
        "sdr": {**{s: report["summary"]["per_source"][s]["mean"] for s in SOURCES},
                "mean": report["summary"]["mean"]},
        "per_track": {t: v["mean"] for t, v in report["scores"].items()},
        "shares": truncation_shares(runs) if arm.truncates else None,
        "filter": _filter_figures(stages) if arm.filtered else None,
        "wall_seconds": round(time.monotonic() - wall, 1), "cpu_seconds": round(_cpu_seconds() - cpu, 1),
        "commands": [["python", *s.argv] for s in stages if s.kind != "pool"],
    }
    write_json(result_path, result)
    return result, False


def _filter_figures(stages: list[pipeline.Stage]) -> dict:
    select = next(s for s in stages if s.kind == "select")
    sel = read_selection(Path(select.done).parent)
    overall = (sel.get("metrics") or {}).get("overall") or {}
    return {"precision": overall.get("precision"), "recall": overall.get("recall"),
            "kept": {s: c["kept"] for s, c in sel["counts"].items()},
            "total": {s: c["total"] for s, c in sel["counts"].items()}, "thresholds": sel["thresholds"]}


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
        out[noise.slug] = {"label": noise.label, "rate": noise.rate, "kinds": noise.kinds, "arms": rows}
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
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    return path


# ---------------------------------------------------------------- the run

def check_settings(out: Path, settings: Settings) -> None:
    path = out / SETTINGS_FILE
    mine = json.loads(json.dumps(dataclasses.asdict(settings)))
    if path.is_file():
        theirs = json.loads(path.read_text())
        differ = [k for k in mine if theirs.get(k) != mine[k]]
        if differ:
            k = differ[0]
            raise SystemExit(f"error: {path}: made with other settings ({k} {theirs.get(k)!r}, now {mine[k]!r}); "
                             f"delete {out} or give --out another folder")
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


def parse_args(argv=None) -> argparse.Namespace:
    d = Settings()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tracks", type=int, default=d.tracks, help=f"noisy training tracks (default {d.tracks})")
    p.add_argument("--seconds", type=float, default=d.seconds, help=f"seconds per track (default {d.seconds:g})")
    p.add_argument("--test-tracks", type=int, default=d.test_tracks, help=f"clean test tracks (default {d.test_tracks})")
    p.add_argument("--rates", nargs="+", default=["0.3", "0.5@swap=3,other_song=3"], metavar="RATE[@KINDS]",
                   help="noise settings (default: 0.3 and 0.5@swap=3,other_song=3)")
    p.add_argument("--seeds", type=int, default=3, help="data and training seeds 1..N (default 3)")
    p.add_argument("--arms", default=",".join(ARM_NAMES), help=f"comma-separated subset of {', '.join(ARM_NAMES)}")
    p.add_argument("--epochs-scale", type=float, default=d.epochs_scale,
                   help=f"x the configs' epochs of steps 1-3 (default {d.epochs_scale:g})")
    p.add_argument("--steps-per-epoch", type=int, default=d.steps_per_epoch,
                   help=f"optimizer steps per epoch (default {d.steps_per_epoch})")
    p.add_argument("--arch", choices=sorted(ARCH_CONFIGS), default="masknet",
                   help="masknet: configs/demo (default); htdemucs: configs/tiny")
    p.add_argument("--configs", default=None, help="stage config folder (overrides --arch)")
    p.add_argument("--threshold", default=d.threshold, help="arm (d)'s filter rule: dB, auto or keep=F (default auto)")
    p.add_argument("--variants-by", choices=("absolute", "relative"), default=d.variants_by,
                   help="ranking of the C 0.8 and warm-up variants (default absolute, as (c))")
    p.add_argument("--set", action="append", default=[], metavar="A.B=VALUE",
                   help="config override for every training stage (repeatable)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--out", type=Path, default=Path("runs/bench/noise_robustness"))
    p.add_argument("--data", type=Path, default=Path("data/bench/noise_robustness"))
    p.add_argument("--report-only", action="store_true", help="write the table and plot from finished arms")
    args = p.parse_args(argv)
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
                        variants_by=args.variants_by, overrides=tuple(args.set))
    out, data = args.out, args.data
    say = lambda text: print(text, flush=True)  # noqa: E731
    step1 = load_config(Path(settings.configs) / "step1.yaml", list(settings.overrides))
    samplerate = step1["data"]["samplerate"]
    all_arms = arms(settings.variants_by)
    names = args.arm_names
    # (d) needs (c)'s runs; (c) is then trained anyway, so it is shown too.
    if "filtered" in names and "trunc" not in names:
        names.insert(names.index("filtered"), "trunc")
    header = (f"Noise robustness: {settings.tracks} tracks x {settings.seconds:g} s at {samplerate} Hz, "
              f"{settings.test_tracks} clean test tracks, configs {settings.configs}, epochs x "
              f"{settings.epochs_scale:g} of steps 1-3 at {settings.steps_per_epoch} steps per epoch, "
              f"seeds 1..{args.seeds}, device {args.device}.")
    out.mkdir(parents=True, exist_ok=True)
    check_settings(out, settings)
    if args.report_only:
        say(write_outputs(out, settings, args.noises, names, header))
        return 0

    started = time.monotonic()
    test_dir = data / "test"
    make_set(test_dir, tracks=settings.test_tracks, seconds=settings.seconds, samplerate=samplerate,
             seed=TEST_SEED, noise=None)
    test_set = TestSet(test_dir, args.device)
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
                 seed=plan.seed, noise=noise)
        head = f"[{i:3d}/{len(jobs)}] seed {plan.seed} {'clean' if noise is None else noise.slug:<22} {name:<13}"
        try:
            result, cached = run_arm(name, arm, settings, plan, noise, test_set, args.device)
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
