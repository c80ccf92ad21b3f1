"""The report's figures, each drawn from the facts a run folder holds (labelnoise.report.Facts).

A figure whose facts are missing (a stage not run, no test set) is not drawn: its function returns None.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from . import SOURCES
from .audio import info, read_audio
from .document import save_figure
from .files import MIXTURE_FILE
from .report_stats import noisy_share

GROUP_COLOURS = {"method": "tab:blue", "baseline": "tab:gray", "clean": "tab:green"}
ARM_LINES = {"baseline": "--", "clean": ":"}
SPECTROGRAM_SECONDS = 8.0


def stage_label(stage: dict) -> str:
    return "final (bag)" if stage["kind"] == "bag" else stage["name"]


def plot_sdr(facts, path: Path) -> Path | None:
    stages = facts.model_stages()
    if not stages:
        return None
    fig = Figure(figsize=(8, 0.32 * len(stages) + 1.4), layout="constrained")
    ax = fig.add_subplot()
    means = [facts.scores[s["name"]]["summary"]["mean"] for s in stages]
    ys = np.arange(len(stages))[::-1]
    ax.barh(ys, means, color=[GROUP_COLOURS.get(s["group"], "tab:purple") for s in stages])
    ax.set_yticks(ys, [stage_label(s) for s in stages], fontsize=8)
    for y, m in zip(ys, means):
        ax.text(m, y, f" {m:.2f}", va="center", fontsize=7)
    for arm, name in facts.arm_finals().items():
        if name in facts.scores:
            ax.axvline(facts.scores[name]["summary"]["mean"], color="black", linestyle=ARM_LINES.get(arm, "-."),
                       linewidth=1, label=f"{arm}: {facts.scores[name]['summary']['mean']:.2f} dB")
    lo, hi = min(0.0, *means), max(0.0, *means)
    ax.set_xlim(lo - 0.05 * (hi - lo), hi + 0.12 * (hi - lo))  # room for the value labels
    ax.set_xlabel("mean SDR on the test set (dB)")
    ax.set_title("Test SDR after each stage (blue: the method, gray: plain L1 on noisy data, green: clean data)",
                 fontsize=9)
    if ax.get_legend_handles_labels()[0]:
        fig.legend(fontsize=8, loc="outside lower center", ncols=2)
    return save_figure(fig, path)


def _smooth(values: np.ndarray, width: int) -> np.ndarray:
    if len(values) < width or width < 2:
        return values
    kernel = np.ones(width) / width
    head = np.array([values[: i + 1].mean() for i in range(width - 1)])
    return np.concatenate([head, np.convolve(values, kernel, mode="valid")])


def _chain(facts, names: list[str], kind: str) -> tuple[list, list]:
    """Records of ``kind`` of runs that start from step 0 each, on one step axis; the boundaries."""
    out, bounds, offset = [], [], 0
    for name in names:
        records = [r for r in facts.metrics.get(name, []) if r.get("kind") == kind]
        out += [(offset + r["step"], r) for r in records]
        last = max((r["step"] for r in facts.metrics.get(name, []) if "step" in r), default=0)
        offset += last
        bounds.append((offset, name))
    return out, bounds


def plot_losses(facts, path: Path) -> Path | None:
    part1 = {"method (truncated)": facts.part1()}
    for arm, names in facts.arm_stages().items():
        part1[f"{arm} ({facts.arm_what(arm)})"] = names
    part2 = facts.part2_train()
    if not any(n in facts.metrics for names in part1.values() for n in names):
        return None
    fig = Figure(figsize=(11, 3.6), layout="constrained")
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    colours = ["tab:blue", *[GROUP_COLOURS.get(arm, "tab:purple") for arm in facts.arm_stages()]]
    for (label, names), colour in zip(part1.items(), colours):
        points, _ = _chain(facts, names, "step")
        points = [(x, r["loss"]) for x, r in points if r["loss"] is not None and math.isfinite(r["loss"])]
        if points:
            xs, ys = np.array(points).T
            ax1.plot(xs, _smooth(ys, 10), color=colour, label=label, linewidth=1)
    for x, _ in _chain(facts, part1["method (truncated)"], "step")[1][:-1]:
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
    return save_figure(fig, path)


def plot_truncation(facts, path: Path, noise_rate: float | None) -> Path | None:
    names = facts.part1()
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
    with_share = [(x, share) for x, r in epochs if (share := noisy_share(r))]
    if with_share:
        ex = [x for x, _ in with_share]
        for key, colour in (("dropped", "tab:red"), ("kept", "tab:green")):
            ys = [np.nan if share[key] is None else share[key] for _, share in with_share]
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
    return save_figure(fig, path)


def plot_margins(facts, path: Path) -> Path | None:
    filters = [(n, title) for n, title in facts.filters().items() if n in facts.margins]
    if not filters:
        return None
    fig = Figure(figsize=(12, 2.9 * len(filters)), layout="constrained")
    for row, (name, filter_title) in enumerate(filters):
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
            title = f"{filter_title}: {source}"
            if source in thresholds:
                ax.axvline(thresholds[source], color="black", linestyle="--", linewidth=1, label="threshold")
                title += f" (threshold {thresholds[source]:.1f} dB)"
                # Above the threshold yet not kept: left out by the auto rule's leak test (labelnoise.leaks).
                vetoed = [float(r["margin_db"]) for r in rows
                          if r["kept"] == "false" and float(r["margin_db"]) > thresholds[source]]
                if vetoed:
                    ax.plot(vetoed, [0] * len(vetoed), "kx", markersize=9, markeredgewidth=2, clip_on=False,
                            zorder=5, label="left out by the leak test")
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("margin (dB)", fontsize=8)
            if col == 0:
                ax.legend(fontsize=7)
    fig.suptitle("Margins: own output minus the loudest other output, per stem (kept: right of the line, "
                 "but for the x marks)", fontsize=10)
    return save_figure(fig, path)


def _spectrogram_db(wav: np.ndarray, nfft: int = 1024, hop: int = 256) -> np.ndarray:
    mono = wav.mean(axis=0) if wav.ndim == 2 else wav
    if len(mono) < nfft:
        mono = np.pad(mono, (0, nfft - len(mono)))
    frames = 1 + (len(mono) - nfft) // hop
    idx = np.arange(nfft)[None, :] + hop * np.arange(frames)[:, None]
    spec = np.abs(np.fft.rfft(mono[idx] * np.hanning(nfft), axis=1)).T
    return 20 * np.log10(spec + 1e-6)


def plot_spectrogram(facts, path: Path) -> Path | None:
    score = facts.bag_scores()
    separated = score and score.get("separated")
    test = facts.test_folder()
    if not separated or not Path(separated).is_dir() or test is None:
        return None
    track = sorted(p.name for p in Path(separated).iterdir() if p.is_dir())[0]
    mix_path = test / track / MIXTURE_FILE
    if not mix_path.is_file():
        return None
    rate = info(mix_path).samplerate
    frames = int(SPECTROGRAM_SECONDS * rate)  # the first seconds: enough to see, a small PNG
    mix = read_audio(mix_path, channels=None, frames=frames)
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
    return save_figure(fig, path, dpi=72)
