"""The demo's report: report.md and a self-contained report.html, made from the files a demo run left.

    python -m labelnoise.report runs/demo        # write runs/demo/report.md and report.html again

Reads ``RUN/demo.json`` (the stage list and settings ``labelnoise.demo``
writes), each stage's test scores (``test_sdr.json``), its ``metrics.jsonl``
and ``config.yaml``, the two filters' ``selection.json`` and ``margins.csv``,
and the final bag's estimates of the first test track. Figures go to
``RUN/report_files/*.png``; report.html embeds them (base64), so it can be
mailed or opened anywhere on its own.

Every sentence that says whether something helped is computed here from the
numbers: a difference between two systems is the mean over test tracks of the
per-track difference in mean SDR, called a rise or a fall only when it is
larger than twice its standard error; anything else is said to be no clear
difference at this scale.
"""
from __future__ import annotations

import argparse
import base64
import csv
import html
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from . import SOURCES
from .atomic import atomic_path, write_text
from .audio import read_audio
from .filter_report import blind_text
from .yamlio import read_mapping

MANIFEST = "demo.json"
FILES_DIR = "report_files"
MD_FILE = "report.md"
HTML_FILE = "report.html"
# The requirements on the demo's own run.
MIN_PRECISION = 0.9
MIN_RECALL = 0.5
MIN_SHARE_RATIO = 2.0
CLEAR = 2.0  # a difference counts when it exceeds this many standard errors
# How each stage's model came about, for the SDR table.
WHAT = {
    "step1": "noisy tracks, truncated L1 (C 0.7)",
    "step2": "+ truncated L1 (C 0.5)",
    "step3": "+ truncated L1 (C 0.3): the first filter's model",
    "joint360": "from scratch on the stems filter 1 kept, L1",
    "vocals": "joint360 + fine-tune on filter 2's stems (vocals loss)",
    "bass": "joint360 + fine-tune (bass + vocals loss)",
    "drums": "joint360 + fine-tune (mostly drums loss)",
    "other_trunc": "joint360 + fine-tune, truncated L1 (C 0.9)",
    "other": "other_trunc + fine-tune (other loss)",
    "bag": "final: each source from its own fine-tune",
    "baseline_step1": "noisy tracks, plain L1 (step 1's schedule)",
    "baseline_step2": "+ plain L1 (step 2's schedule)",
    "baseline_step3": "+ plain L1 (step 3's schedule): the baseline",
    "clean_step1": "clean twin of the tracks, plain L1",
    "clean_step2": "+ plain L1",
    "clean_step3": "+ plain L1: the clean-data reference",
}
# The source a fine-tune is for (its SDR cell is the one the final bag uses).
TARGET = {"vocals": "vocals", "bass": "bass", "drums": "drums", "other": "other"}
GROUP_COLOURS = {"method": "tab:blue", "baseline": "tab:gray", "clean": "tab:green"}
FILTER_NAMES = {"select_pretrain3": "filter 1", "select_filtered360": "filter 2"}
SPECTROGRAM_SECONDS = 8.0


class ReportError(RuntimeError):
    """A run folder the report cannot be made from; the message names the file."""


# ---------------------------------------------------------------- facts from files

@dataclass
class Facts:
    out: Path
    manifest: dict
    scores: dict[str, dict] = field(default_factory=dict)      # stage -> evaluation report
    metrics: dict[str, list] = field(default_factory=dict)     # train stage -> metrics.jsonl records
    configs: dict[str, dict] = field(default_factory=dict)     # train stage -> its resolved config
    selections: dict[str, dict] = field(default_factory=dict)  # select stage -> selection.json
    margins: dict[str, list] = field(default_factory=dict)     # select stage -> margins.csv rows

    @property
    def stages(self) -> list[dict]:
        return self.manifest["stages"]

    def stage(self, name: str) -> dict | None:
        return next((s for s in self.stages if s["name"] == name), None)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path}: not valid JSON ({exc})") from None


def gather(out: str | Path) -> Facts:
    """Everything the report shows, read from ``out``; stages not run yet are simply absent."""
    out = Path(out)
    path = out / MANIFEST
    if not path.is_file():
        raise ReportError(f"{path}: not found; run python -m labelnoise.demo first")
    facts = Facts(out, _read_json(path))
    for stage in facts.stages:
        name = stage["name"]
        if stage["eval"] and Path(stage["eval"]).is_file():
            facts.scores[name] = _read_json(Path(stage["eval"]))
        if stage["kind"] == "train":
            run = Path(stage["done"]).parent
            if (run / "metrics.jsonl").is_file():
                facts.metrics[name] = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
                                       if line.strip()]
            if (run / "config.yaml").is_file():
                facts.configs[name] = read_mapping(run / "config.yaml", ReportError)
        if stage["kind"] == "select" and stage["selection"]:
            dest = Path(stage["selection"])
            if (dest / "selection.json").is_file():
                facts.selections[name] = _read_json(dest / "selection.json")
            if (dest / "margins.csv").is_file():
                with open(dest / "margins.csv", newline="") as f:
                    facts.margins[name] = list(csv.DictReader(f))
    return facts


# ---------------------------------------------------------------- arithmetic

def compare(a: dict, b: dict) -> dict | None:
    """Per-track mean SDR of ``a`` minus ``b`` over their common tracks: mean, standard error, wins."""
    tracks = sorted(set(a["scores"]) & set(b["scores"]))
    if not tracks:
        return None
    d = np.array([a["scores"][t]["mean"] - b["scores"][t]["mean"] for t in tracks])
    se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else None
    return {"diff": float(d.mean()), "se": se, "n": len(d), "wins": int((d > 0).sum()),
            "a": float(np.mean([a["scores"][t]["mean"] for t in tracks])),
            "b": float(np.mean([b["scores"][t]["mean"] for t in tracks]))}


def verdict(c: dict | None) -> str:
    """``raised``, ``lowered``, ``no clear difference`` or, with fewer than 3 tracks, ``too few tracks``."""
    if c is None:
        return "not measured"
    if c["n"] < 3 or c["se"] is None:
        return "too few test tracks to tell"
    if c["diff"] > CLEAR * c["se"]:
        return "raised"
    if c["diff"] < -CLEAR * c["se"]:
        return "lowered"
    return "no clear difference"


def comparison_text(label_a: str, label_b: str, c: dict | None) -> str:
    if c is None:
        return f"{label_a} vs {label_b}: not measured (a stage has not run)."
    se = "n/a" if c["se"] is None else f"{c['se']:.2f}"
    numbers = (f"{c['a']:.2f} vs {c['b']:.2f} dB, {c['diff']:+.2f} dB (standard error {se} over "
               f"{c['n']} test tracks; {c['wins']} of {c['n']} tracks higher)")
    v = verdict(c)
    words = {"raised": f"**{label_a} raised SDR** over {label_b}",
             "lowered": f"**{label_a} lowered SDR** below {label_b}",
             "no clear difference": f"**no clear difference** between {label_a} and {label_b} at this scale",
             "too few test tracks to tell": f"{label_a} vs {label_b}: **too few test tracks to tell**"}[v]
    return f"{words}: {numbers}."


def noisy_shares(records: list[dict], config: dict) -> dict | None:
    """Noisy stems among the entries truncation dropped and among those it kept, over a run's steps."""
    items = config["optim"]["batch_size"] * config["optim"]["accumulate"]
    totals = np.zeros(4)  # noisy dropped, dropped, noisy kept, kept
    for r in records:
        share = r.get("noisy_share")
        if r.get("kind") != "step" or r.get("skipped") or share is None:
            continue
        kept = items * sum(r["kept"].values())
        dropped = items * len(r["kept"]) - kept
        if share["dropped"] is not None:
            totals[0] += share["dropped"] * dropped
            totals[1] += dropped
        if share["kept"] is not None:
            totals[2] += share["kept"] * kept
            totals[3] += kept
    if totals[1] == 0 or totals[3] == 0:
        return None
    dropped, kept = totals[0] / totals[1], totals[2] / totals[3]
    return {"dropped": float(dropped), "kept": float(kept), "ratio": float(dropped / kept) if kept else None,
            "kept_fraction": float(totals[3] / (totals[1] + totals[3])), "entries": float(totals[1] + totals[3]),
            "totals": totals.tolist()}


def combined_shares(parts: list[dict]) -> dict | None:
    parts = [p for p in parts if p is not None]
    if not parts:
        return None
    t = np.sum([p["totals"] for p in parts], axis=0)
    dropped, kept = t[0] / t[1], t[2] / t[3]
    return {"dropped": float(dropped), "kept": float(kept), "ratio": float(dropped / kept) if kept else None,
            "kept_fraction": float(t[3] / (t[1] + t[3])), "entries": float(t[1] + t[3]), "totals": t.tolist()}


def requirements(facts: Facts) -> list[dict]:
    """The issue's requirements, each with its measured value and whether it holds (None: not measured)."""
    rows = []
    for name, title in (("select_pretrain3", "filter 1 (step3's model)"),
                        ("select_filtered360", "filter 2 (joint360's model)")):
        overall = ((facts.selections.get(name) or {}).get("metrics") or {}).get("overall")
        for key, limit in (("precision", MIN_PRECISION), ("recall", MIN_RECALL)):
            value = None if overall is None else overall[key]
            rows.append({"what": f"{title}: {key} of the kept stems being clean", "limit": f">= {limit:g}",
                         "value": value, "met": None if value is None else value >= limit})
    shares = combined_shares([noisy_shares(facts.metrics[s], facts.configs[s]) for s in ("step1", "step2", "step3")
                              if s in facts.metrics and s in facts.configs])
    ratio = None if shares is None else shares["ratio"]
    rows.append({"what": "truncation (steps 1-3): noisy share among dropped / among kept entries",
                 "limit": f">= {MIN_SHARE_RATIO:g}", "value": ratio,
                 "met": None if ratio is None else ratio >= MIN_SHARE_RATIO})
    return rows


# ---------------------------------------------------------------- figures

def _save(fig: Figure, path: Path, dpi: int = 90) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return path


def _model_stages(facts: Facts) -> list[dict]:
    return [s for s in facts.stages if s["name"] in facts.scores]


def _label(stage: dict) -> str:
    return "final (bag)" if stage["kind"] == "bag" else stage["name"]


def plot_sdr(facts: Facts, path: Path) -> Path | None:
    stages = _model_stages(facts)
    if not stages:
        return None
    fig = Figure(figsize=(8, 0.32 * len(stages) + 1.4), layout="constrained")
    ax = fig.add_subplot()
    means = [facts.scores[s["name"]]["summary"]["mean"] for s in stages]
    ys = np.arange(len(stages))[::-1]
    ax.barh(ys, means, color=[GROUP_COLOURS.get(s["group"], "tab:blue") for s in stages])
    ax.set_yticks(ys, [_label(s) for s in stages], fontsize=8)
    for y, m in zip(ys, means):
        ax.text(m, y, f" {m:.2f}", va="center", fontsize=7)
    for name, style in (("baseline_step3", "--"), ("clean_step3", ":")):
        if name in facts.scores:
            ax.axvline(facts.scores[name]["summary"]["mean"], color="black", linestyle=style, linewidth=1,
                       label=f"{name.split('_')[0]}: {facts.scores[name]['summary']['mean']:.2f} dB")
    lo, hi = min(0.0, *means), max(0.0, *means)
    ax.set_xlim(lo - 0.05 * (hi - lo), hi + 0.12 * (hi - lo))  # room for the value labels
    ax.set_xlabel("mean SDR on the test set (dB)")
    ax.set_title("Test SDR after each stage (blue: the method, gray: plain L1 on noisy data, green: clean data)",
                 fontsize=9)
    if ax.get_legend_handles_labels()[0]:
        fig.legend(fontsize=8, loc="outside lower center", ncols=2)
    return _save(fig, path)


def _smooth(values: np.ndarray, width: int) -> np.ndarray:
    if len(values) < width or width < 2:
        return values
    kernel = np.ones(width) / width
    head = np.array([values[: i + 1].mean() for i in range(width - 1)])
    return np.concatenate([head, np.convolve(values, kernel, mode="valid")])


def _chain(facts: Facts, names: list[str], kind: str) -> tuple[list, list]:
    """Records of ``kind`` of runs that start from step 0 each, on one step axis; the boundaries."""
    out, bounds, offset = [], [], 0
    for name in names:
        records = [r for r in facts.metrics.get(name, []) if r.get("kind") == kind]
        out += [(offset + r["step"], r) for r in records]
        last = max((r["step"] for r in facts.metrics.get(name, []) if "step" in r), default=0)
        offset += last
        bounds.append((offset, name))
    return out, bounds


def plot_losses(facts: Facts, path: Path) -> Path | None:
    part1 = {"method (truncated)": ["step1", "step2", "step3"],
             "baseline (plain L1)": ["baseline_step1", "baseline_step2", "baseline_step3"],
             "clean data (plain L1)": ["clean_step1", "clean_step2", "clean_step3"]}
    part2 = ["joint360", "vocals", "bass", "drums", "other_trunc", "other"]
    if not any(n in facts.metrics for names in part1.values() for n in names):
        return None
    fig = Figure(figsize=(11, 3.6), layout="constrained")
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for (label, names), colour in zip(part1.items(), ("tab:blue", "tab:gray", "tab:green")):
        points, bounds = _chain(facts, names, "step")
        points = [(x, r["loss"]) for x, r in points if r["loss"] is not None and math.isfinite(r["loss"])]
        if points:
            xs, ys = np.array(points).T
            ax1.plot(xs, _smooth(ys, 10), color=colour, label=label, linewidth=1)
    for x, name in _chain(facts, part1["method (truncated)"], "step")[1][:-1]:
        ax1.axvline(x, color="black", linewidth=0.5, linestyle=":")
    ax1.set_yscale("log")
    ax1.set_xlabel("optimizer step (steps 1-3 one after the other)")
    ax1.set_ylabel("training loss (10-step mean)")
    ax1.set_title("Part 1; truncation zeroes the dropped entries, so its loss runs lower", fontsize=9)
    ax1.legend(fontsize=8)
    for name in part2:
        records = [r for r in facts.metrics.get(name, []) if r.get("kind") == "step" and r.get("loss") is not None
                   and math.isfinite(r["loss"])]
        if records:
            # The fine-tunes continue joint360's step counter.
            ax2.plot([r["step"] for r in records], _smooth(np.array([r["loss"] for r in records]), 10),
                     label=name, linewidth=1)
    ax2.set_yscale("log")
    ax2.set_xlabel("optimizer step (fine-tunes continue joint360)")
    ax2.set_title("Part 2 (each fine-tune weights the sources its own way)", fontsize=9)
    if ax2.get_legend_handles_labels()[0]:
        ax2.legend(fontsize=8)
    return _save(fig, path)


def plot_truncation(facts: Facts, path: Path, noise_rate: float | None) -> Path | None:
    names = ["step1", "step2", "step3"]
    steps, bounds = _chain(facts, names, "step")
    epochs, _ = _chain(facts, names, "epoch")
    if not steps:
        return None
    fig = Figure(figsize=(11, 3.4), layout="constrained")
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    xs = [x for x, _ in steps]
    ax1.plot(xs, [r["kept_mean"] for _, r in steps], color="tab:blue", linewidth=1)
    ax1.set_ylim(0, 1.05)
    ax1.set_xlabel("optimizer step (steps 1-3)")
    ax1.set_ylabel("kept fraction of entries")
    ax1.set_title("Kept by truncation (C 0.7, 0.5, 0.3)", fontsize=9)
    with_share = [(x, r) for x, r in epochs if r.get("noisy_share")]
    if with_share:
        ex = [x for x, _ in with_share]
        for key, colour in (("dropped", "tab:red"), ("kept", "tab:green")):
            ys = [np.nan if r["noisy_share"][key] is None else r["noisy_share"][key] for _, r in with_share]
            ax2.plot(ex, ys, marker="o", markersize=3, color=colour, label=f"among {key} entries")
        if noise_rate is not None:
            ax2.axhline(noise_rate, color="black", linestyle=":", linewidth=1, label="the data set's noise rate")
        ax2.set_ylim(0, 1)
        ax2.legend(fontsize=8)
    ax2.set_xlabel("optimizer step (per epoch)")
    ax2.set_ylabel("share of noisy stems")
    ax2.set_title("Noisy stems among the dropped and the kept entries", fontsize=9)
    for ax in (ax1, ax2):
        for x, _ in bounds[:-1]:
            ax.axvline(x, color="black", linewidth=0.5, linestyle=":")
    return _save(fig, path)


def plot_margins(facts: Facts, path: Path) -> Path | None:
    filters = [n for n in ("select_pretrain3", "select_filtered360") if n in facts.margins]
    if not filters:
        return None
    fig = Figure(figsize=(12, 2.9 * len(filters)), layout="constrained")
    for row, name in enumerate(filters):
        thresholds = (facts.selections.get(name) or {}).get("thresholds", {})
        for col, source in enumerate(SOURCES):
            ax = fig.add_subplot(len(filters), len(SOURCES), row * len(SOURCES) + col + 1)
            rows = [r for r in facts.margins[name] if r["stem"] == source and r["margin_db"]
                    and r["silent"] != "true" and math.isfinite(float(r["margin_db"]))]
            clean = [float(r["margin_db"]) for r in rows if r["noisy"] == "false"]
            noisy = [float(r["margin_db"]) for r in rows if r["noisy"] == "true"]
            other = [float(r["margin_db"]) for r in rows if r["noisy"] not in ("true", "false")]
            values = clean + noisy + other + ([thresholds[source]] if source in thresholds else [])
            series = [(v, c, lab) for v, c, lab in ((clean, "tab:green", "labelled clean"),
                                                     (noisy, "tab:red", "labelled noisy"),
                                                     (other, "tab:gray", "no label")) if v]
            if series:
                ax.hist([v for v, _, _ in series], bins=np.histogram_bin_edges(values, bins=16), stacked=True,
                        color=[c for _, c, _ in series], label=[lab for _, _, lab in series])
            title = f"{FILTER_NAMES[name]}: {source}"
            if source in thresholds:
                ax.axvline(thresholds[source], color="black", linestyle="--", linewidth=1, label="threshold")
                title += f" (threshold {thresholds[source]:.1f} dB)"
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("margin (dB)", fontsize=8)
            if col == 0:
                ax.legend(fontsize=7)
    fig.suptitle("Margins: own output minus the loudest other output, per stem (kept: right of the line)",
                 fontsize=10)
    return _save(fig, path)


def _spectrogram_db(wav: np.ndarray, nfft: int = 1024, hop: int = 256) -> np.ndarray:
    mono = wav.mean(axis=0) if wav.ndim == 2 else wav
    if len(mono) < nfft:
        mono = np.pad(mono, (0, nfft - len(mono)))
    frames = 1 + (len(mono) - nfft) // hop
    idx = np.arange(nfft)[None, :] + hop * np.arange(frames)[:, None]
    spec = np.abs(np.fft.rfft(mono[idx] * np.hanning(nfft), axis=1)).T
    return 20 * np.log10(spec + 1e-6)


def plot_spectrogram(facts: Facts, path: Path) -> Path | None:
    score = facts.scores.get("bag")
    separated = score and score.get("separated")
    if not separated or not Path(separated).is_dir():
        return None
    test = Path(facts.manifest["data"]["test"])
    track = sorted(p.name for p in Path(separated).iterdir() if p.is_dir())[0]
    rate = facts.manifest["settings"]["samplerate"]
    frames = int(SPECTROGRAM_SECONDS * rate)  # the first seconds: enough to see, a small PNG
    mix = read_audio(test / track / "mixture.wav", channels=None, frames=frames)
    panels = [("mixture", mix)]
    for s in SOURCES:
        panels.append((f"{s}: final estimate (track SDR {score['scores'][track][s]:.1f} dB)",
                       read_audio(Path(separated) / track / f"{s}.wav", channels=None, frames=frames)))
        panels.append((f"{s}: reference", read_audio(test / track / f"{s}.wav", channels=None, frames=frames)))
    fig = Figure(figsize=(10, 9), layout="constrained")
    top = _spectrogram_db(mix).max()
    seconds = mix.shape[-1] / rate
    grid = fig.add_gridspec(5, 2)
    for i, (title, wav) in enumerate(panels):
        ax = fig.add_subplot(grid[0, :] if i == 0 else grid[1 + (i - 1) // 2, (i - 1) % 2])
        ax.imshow(_spectrogram_db(wav), origin="lower", aspect="auto", cmap="magma", vmin=top - 80, vmax=top,
                  extent=(0, seconds, 0, rate / 2000))
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("kHz", fontsize=8)
    fig.suptitle(f"Test track {track}: the mixture, and each source as separated by the final bag "
                 f"(left) next to the truth (right)", fontsize=10)
    return _save(fig, path, dpi=72)


# ---------------------------------------------------------------- the document

def _fmt(x, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


class Doc:
    """Blocks rendered both as Markdown and as HTML."""

    def __init__(self):
        self.blocks: list[tuple] = []

    def h(self, level: int, text: str):
        self.blocks.append(("h", level, text))

    def p(self, text: str):
        self.blocks.append(("p", text))

    def items(self, lines: list[str]):
        self.blocks.append(("ul", lines))

    def table(self, header: list[str], rows: list[list[str]], align: str | None = None):
        self.blocks.append(("table", header, rows, align or "l" + "r" * (len(header) - 1)))

    def image(self, path: Path | None, alt: str):
        if path is not None:
            self.blocks.append(("img", path, alt))

    def code(self, text: str):
        self.blocks.append(("code", text))

    def markdown(self, base: Path) -> str:
        out = []
        for b in self.blocks:
            if b[0] == "h":
                out.append("#" * b[1] + " " + b[2])
            elif b[0] == "p":
                out.append(b[1])
            elif b[0] == "ul":
                out.append("\n".join(f"- {line}" for line in b[1]))
            elif b[0] == "table":
                _, header, rows, align = b
                out.append("\n".join(["| " + " | ".join(header) + " |",
                                      "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|",
                                      *["| " + " | ".join(r) + " |" for r in rows]]))
            elif b[0] == "img":
                out.append(f"![{b[2]}]({b[1].relative_to(base).as_posix()})")
            elif b[0] == "code":
                out.append("```\n" + b[1] + "\n```")
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        out = [f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
               "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.45}"
               "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px}"
               "td.r,th.r{text-align:right}img{max-width:100%}code,pre{background:#f4f4f4}"
               "pre{padding:.6em;overflow-x:auto}</style></head><body>"]
        for b in self.blocks:
            if b[0] == "h":
                out.append(f"<h{b[1]}>{_inline(b[2])}</h{b[1]}>")
            elif b[0] == "p":
                out.append(f"<p>{_inline(b[1])}</p>")
            elif b[0] == "ul":
                out.append("<ul>" + "".join(f"<li>{_inline(line)}</li>" for line in b[1]) + "</ul>")
            elif b[0] == "table":
                _, header, rows, align = b
                cls = lambda i: ' class="r"' if align[i] == "r" else ""  # noqa: E731
                out.append("<table><tr>" + "".join(f"<th{cls(i)}>{_inline(h)}</th>" for i, h in enumerate(header))
                           + "</tr>" + "".join("<tr>" + "".join(f"<td{cls(i)}>{_inline(c)}</td>"
                                                                 for i, c in enumerate(r)) + "</tr>" for r in rows)
                           + "</table>")
            elif b[0] == "img":
                data = base64.b64encode(b[1].read_bytes()).decode("ascii")
                out.append(f'<p><img alt="{html.escape(b[2])}" src="data:image/png;base64,{data}"></p>')
            elif b[0] == "code":
                out.append(f"<pre><code>{html.escape(b[1])}</code></pre>")
        out.append("</body></html>")
        return "\n".join(out) + "\n"


def _inline(text: str) -> str:
    """The Markdown this report uses inside a line (**bold**, `code`) as HTML."""
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def _clock(seconds) -> str:
    if seconds is None:
        return "n/a"
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


def build(facts: Facts) -> Doc:
    s, files = facts.manifest["settings"], facts.out / FILES_DIR
    doc = Doc()
    doc.h(1, "Label-noise demo: the method end to end")
    timings = facts.manifest.get("timings", {})
    doc.p(f"MaskNet (a small spectrogram-mask network) at {s['samplerate'] // 1000} kHz, trained on "
          f"{s['tracks']} synthetic tracks of {s['seconds']:g} s in which {s['noise_rate']:.0%} of the stems are "
          f"wrong (bleed, swapped or silent stems, stems of other songs; the truth is in noise_labels.json), "
          f"and scored on {s['test_tracks']} clean test tracks of another seed with the challenge SDR. "
          f"Configs: `{s['configs']}`; epochs x {s['epochs_scale']:g}{' (quick: one short epoch per stage)' if s['quick'] else ''}; "
          f"truncation in steps 1-3 ranked by {s['trunc_by']} error; filter threshold rule `{s['threshold']}`. "
          f"Wall time of the last run: {_clock(timings.get('demo'))} (stages done before it are not counted again); "
          f"the stages and their scoring took {_clock(sum(v for k, v in timings.items() if k != 'demo'))} in all, "
          f"summed over the runs that did them.")

    # ---- what the numbers say
    doc.h(2, "What the numbers say")
    score = facts.scores.get
    lines = [
        "Truncation: " + comparison_text("step3", "the baseline", _cmp(facts, "step3", "baseline_step3")),
        "Filtering, joint training: " + comparison_text("joint360", "step3", _cmp(facts, "joint360", "step3")),
        "Filtering, joint training: " + comparison_text("joint360", "the baseline",
                                                        _cmp(facts, "joint360", "baseline_step3")),
        "Filtering, final bag: " + comparison_text("the final bag", "step3", _cmp(facts, "bag", "step3")),
        "Filtering, final bag: " + comparison_text("the final bag", "the baseline",
                                                   _cmp(facts, "bag", "baseline_step3")),
        "What the label noise costs: " + comparison_text("clean-data training", "the baseline",
                                                         _cmp(facts, "clean_step3", "baseline_step3")),
    ]
    doc.items(lines)
    doc.p(f"A difference is called a rise or a fall only when it exceeds {CLEAR:g} standard errors of the "
          f"per-track differences; the test set is small, so modest effects read as no clear difference.")
    reqs = requirements(facts)
    doc.table(["requirement", "needed", "measured", "holds"],
              [[r["what"], r["limit"], _fmt(r["value"], 3),
                "not measured" if r["met"] is None else ("yes" if r["met"] else "**no**")] for r in reqs], "lrrl")
    measured = [r["met"] for r in reqs if r["met"] is not None]
    doc.p("All requirements hold." if measured and all(measured) and len(measured) == len(reqs) else
          f"{sum(1 for m in measured if not m)} of {len(reqs)} requirements do not hold"
          + (f"; {len(reqs) - len(measured)} not measured." if len(measured) < len(reqs) else "."))

    # ---- SDR table
    doc.h(2, "Test SDR after each stage")
    base = score("baseline_step3")
    rows = []
    for st in _model_stages(facts):
        sc = facts.scores[st["name"]]["summary"]
        cells = []
        for src in SOURCES:
            value = f"{sc['per_source'][src]['mean']:.2f}"
            cells.append(f"**{value}**" if TARGET.get(st["name"]) == src else value)
        delta = "" if base is None else f"{sc['mean'] - base['summary']['mean']:+.2f}"
        rows.append([_label(st), WHAT.get(st["name"], st["group"]), *cells, f"{sc['mean']:.2f}", delta])
    doc.p("Challenge SDR in dB, mean over the test tracks (a fine-tune's own source in bold: the one the final "
          "bag takes from it). Last column: mean SDR minus the baseline's (plain L1 on the same noisy data, "
          "the budget of steps 1-3).")
    doc.table(["stage", "model", *SOURCES, "mean", "vs baseline"], rows, "ll" + "r" * (len(SOURCES) + 2))
    doc.image(plot_sdr(facts, files / "sdr.png"), "mean test SDR per stage")

    # ---- filters
    doc.h(2, "The filters against the known labels")
    doc.p("Each stem, pitched up and sped up, is separated by the filter model; a stem is kept as clean when its "
          "own output is louder than the loudest other output by more than its source's threshold. "
          "Precision: share of kept stems that are clean; recall: share of clean stems that are kept.")
    for name, title in (("select_pretrain3", "Filter 1: step3's model, for joint training"),
                        ("select_filtered360", "Filter 2: joint360's model, for the fine-tunes")):
        sel = facts.selections.get(name)
        doc.h(3, title)
        if sel is None:
            doc.p("Not run yet.")
            continue
        m = sel.get("metrics") or {}
        rows = []
        for src in SOURCES:
            c, ms = sel["counts"][src], (m.get("per_source") or {}).get(src) or {}
            rows.append([src, f"{sel['thresholds'][src]:.2f}", sel["threshold_rules"][src],
                         f"{c['kept']} / {c['total']}", _fmt(ms.get("precision"), 3), _fmt(ms.get("recall"), 3)])
        o = m.get("overall") or {}
        kept = sum(sel["counts"][src]["kept"] for src in SOURCES)
        total = sum(sel["counts"][src]["total"] for src in SOURCES)
        rows.append(["**all**", "", sel.get("rule", ""), f"{kept} / {total}", _fmt(o.get("precision"), 3),
                     _fmt(o.get("recall"), 3)])
        doc.table(["source", "threshold (dB)", "chosen by", "kept", "precision", "recall"], rows, "lrlrrr")
        if "judgeable" in m:  # selections made before these figures existed lack them
            doc.p(blind_text(m))
    kinds = {n: ((facts.selections.get(n) or {}).get("metrics") or {}).get("per_kind") or {} for n in FILTER_NAMES}
    names = list(dict.fromkeys(k for per in kinds.values() for k in per))
    if names:
        doc.p("What each filter kept, by the stem's true state (`noise_labels.json`): a filter can only drop a stem "
              "whose content sounds unlike its label.")
        doc.table(["true state", *(f"kept by {FILTER_NAMES[n]}" for n in FILTER_NAMES)],
                  [[k, *(f"{kinds[n][k]['kept']} / {kinds[n][k]['total']}" if k in kinds[n] else "" for n in FILTER_NAMES)]
                   for k in names])
    doc.image(plot_margins(facts, files / "margins.png"), "margin histograms of both filters")

    # ---- truncation
    doc.h(2, "Loss truncation in steps 1-3")
    parts = {n: noisy_shares(facts.metrics[n], facts.configs[n]) for n in ("step1", "step2", "step3")
             if n in facts.metrics and n in facts.configs}
    rows = [[n, _fmt(p and p["kept_fraction"]), _fmt(p and p["dropped"]), _fmt(p and p["kept"]),
             _fmt(p and p["ratio"])] for n, p in parts.items()]
    whole = combined_shares(list(parts.values()))
    if whole is not None:
        rows.append(["**steps 1-3**", _fmt(whole["kept_fraction"]), _fmt(whole["dropped"]), _fmt(whole["kept"]),
                     _fmt(whole["ratio"])])
    doc.p("Per source and batch, truncation drops the entries with the largest loss. If it works, the dropped "
          "entries hold noisy stems far more often than the kept ones.")
    doc.table(["run", "kept fraction", "noisy share, dropped", "noisy share, kept", "ratio"], rows)
    doc.image(plot_truncation(facts, files / "truncation.png", s["noise_rate"]), "kept fraction and noisy share")

    doc.h(2, "Training curves")
    doc.image(plot_losses(facts, files / "losses.png"), "training loss per step")

    doc.h(2, "One test mixture, separated")
    doc.image(plot_spectrogram(facts, files / "spectrogram.png"), "spectrograms of a test mixture and its stems")

    # ---- timings and commands
    doc.h(2, "Stages, times and commands")
    rows = []
    for st in facts.stages:
        t, te = timings.get(st["name"]), timings.get(f"{st['name']} (test)")
        rows.append([st["name"], st["kind"], st["group"], _clock(t), "" if te is None else _clock(te)])
    doc.p("Seconds of the last run that ran each stage (blank: skipped as done, or not run yet).")
    doc.table(["stage", "kind", "arm", "ran for", "scoring"], rows, "lllrr")
    doc.p("Every stage is one command; the demo ran these (plus scoring on the test set):")
    doc.code("\n".join(" ".join(st["command"]) for st in facts.stages))
    return doc


def _cmp(facts: Facts, a: str, b: str) -> dict | None:
    if a not in facts.scores or b not in facts.scores:
        return None
    return compare(facts.scores[a], facts.scores[b])


def write_report(out: str | Path) -> tuple[Path, Path]:
    """Write ``out/report.md``, ``out/report.html`` and the figures; returns the two paths."""
    out = Path(out)
    doc = build(gather(out))
    md, page = out / MD_FILE, out / HTML_FILE
    write_text(md, doc.markdown(out))
    write_text(page, doc.html("Label-noise demo"))
    return md, page


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labelnoise.report",
                                     description="Write the demo's report.md and report.html from its run folder.")
    parser.add_argument("out", type=Path, nargs="?", default=Path("runs/demo"),
                        help="the demo's run folder (default runs/demo)")
    args = parser.parse_args(argv)
    try:
        for path in write_report(args.out):
            print(path)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
