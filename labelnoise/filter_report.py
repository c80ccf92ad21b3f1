"""The automatic filter's report: what was kept, why, and (with labels) how well.

Written into the pool dataset's folder by ``labelnoise.selection.select_clean_stems``:

- ``report.md``: stems kept / total per source, the threshold of each source
  and the rule that chose it; with labels, precision / recall / F1 of "clean"
  per source and overall, the keep rate per noise kind, and a threshold sweep;
- ``margins.png``: a histogram of the margin (own output minus the loudest
  other, dB) per source with its threshold line (clean and noisy stacked when
  labels are given);
- ``sweep.png`` (with labels): precision and recall against one threshold
  for every source, the chosen thresholds marked;
- ``margins.csv``: ``track, stem, margin_db, kept, silent, noisy, kind,
  whole_margin_db, window_margin_db, leak_z, leak_into`` (``margin_db``: what
  the rule decided on, the whole stem's margin or, with ``auto``, the one over
  its windows; empty when every output was at or below -80 dB; ``leak_z``:
  with ``auto``, the stem's largest leak as a robust z-score in its source,
  labelnoise.leaks, and ``leak_into`` the output it leaks into).

"Clean" is the positive class: precision = kept clean / kept, recall = kept
clean / labelled clean. Stems without a label take no part in the figures.
"""
from __future__ import annotations

import csv
import importlib.util
import logging
import math
from collections import defaultdict

import numpy as np

from . import leaks
from .atomic import atomic_path, write_text
from .document import Doc, fmt, save_figure
from .files import MARGINS_CSV, MARGINS_PNG, REPORT_MD, SWEEP_PNG, clean_stems_name
from .noise import KINDS

log = logging.getLogger(__name__)

# Noisy stems a filter that judges each stem alone cannot tell from clean ones (labelnoise.noise.KINDS):
# the blind kinds, then those quieter than their line (bleed under -12 dB).
BLIND_KINDS = (tuple(name for name, kind in KINDS.items() if kind.blind)
               + tuple(f"{name} < {kind.blind_below_db:g} dB" for name, kind in KINDS.items()
                       if kind.blind_below_db is not None))


# ---------------------------------------------------------------- figures

def confusion(kept_clean: list[tuple[bool, bool]]) -> dict:
    """Counts and precision / recall / F1 of "clean" from (kept, labelled clean) pairs; None where undefined."""
    tp = sum(k and c for k, c in kept_clean)
    fp = sum(k and not c for k, c in kept_clean)
    fn = sum(c and not k for k, c in kept_clean)
    tn = sum(not k and not c for k, c in kept_clean)
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    f1 = (2 * precision * recall / (precision + recall)
          if precision is not None and recall is not None and precision + recall > 0 else None)
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn, "precision": precision, "recall": recall, "f1": f1}


def _kind_rows(stem) -> list[str]:
    kind = stem.kind
    rows = [kind]
    level = (stem.label or {}).get("level_db")
    split = KINDS[kind].blind_below_db if kind in KINDS else None
    if split is not None and level is not None:
        rows.append(f"{kind} >= {split:g} dB" if level >= split else f"{kind} < {split:g} dB")
    return rows


def is_blind(stem) -> bool:
    """A noisy stem of ``BLIND_KINDS``: out of reach of a per-stem filter, whatever its threshold."""
    return bool(stem.noisy) and any(row in BLIND_KINDS for row in _kind_rows(stem))


def kept_at(stem, threshold: float) -> bool:
    """The decision of selection.decide at another threshold (and the leak test's, where it ran)."""
    return stem.eligible and stem.margin > threshold and not leaks.is_outlier(stem)


def sweep_grid(stems, rows: int = 12) -> list[float]:
    """Round thresholds across the margins, at most about ``rows`` of them."""
    finite = [st.margin for st in stems if st.eligible and math.isfinite(st.margin)]
    if not finite:
        return [0.0]
    lo, hi = min(finite), max(finite)
    step = next((s for s in (0.5, 1, 2, 5, 10, 20, 50, 100) if (hi - lo) / s <= rows), 200)
    first, last = math.floor(lo / step) * step, math.ceil(hi / step) * step
    return [float(first + i * step) for i in range(int(round((last - first) / step)) + 1)]


def sweep(stems, sources, thresholds_to_try) -> list[dict]:
    """Precision / recall of "clean" with one threshold for every source, per source and overall."""
    labelled = [st for st in stems if st.label is not None]
    out = []
    for t in thresholds_to_try:
        row = {"threshold": float(t),
               "overall": confusion([(kept_at(st, t), not st.noisy) for st in labelled])}
        row["per_source"] = {s: confusion([(kept_at(st, t), not st.noisy) for st in labelled if st.stem == s])
                             for s in sources}
        out.append(row)
    return out


def metrics(stems, sources, thresholds: dict[str, float]) -> dict | None:
    """Figures of the decisions against the labels (None when no stem has a label)."""
    labelled = [st for st in stems if st.label is not None]
    if not labelled:
        return None
    kinds = defaultdict(lambda: [0, 0])
    for st in labelled:
        for row in _kind_rows(st):
            kinds[row][0] += 1
            kinds[row][1] += st.kept
    table = sweep(labelled, sources, sweep_grid(labelled))
    clean = sum(not st.noisy for st in labelled)
    blind = sum(is_blind(st) for st in labelled)
    return {
        "labelled": len(labelled), "unlabelled": len(stems) - len(labelled),
        "per_source": {s: confusion([(st.kept, not st.noisy) for st in labelled if st.stem == s]) for s in sources},
        "overall": confusion([(st.kept, not st.noisy) for st in labelled]),
        # The same without the blind stems; and the precision a filter keeping them at the clean stems' rate
        # cannot pass, whatever its threshold: clean / (clean + blind).
        "judgeable": confusion([(st.kept, not st.noisy) for st in labelled if not is_blind(st)]),
        "blind": blind,
        "precision_ceiling": clean / (clean + blind) if clean + blind else None,
        "per_kind": {k: {"total": n, "kept": kept, "keep_rate": kept / n}
                     for k, (n, kept) in sorted(kinds.items(), key=lambda kv: (kv[0] != "clean", kv[0]))},
        "sweep": [{"threshold": r["threshold"], **{k: r["overall"][k] for k in ("precision", "recall", "f1")},
                   "kept": r["overall"]["tp"] + r["overall"]["fp"]} for r in table],
    }


# ---------------------------------------------------------------- files

def write_csv(path, stems) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["track", "stem", "margin_db", "kept", "silent", "noisy", "kind", "whole_margin_db",
                             "window_margin_db", "leak_z", "leak_into"])
            for st in stems:
                writer.writerow([st.track, st.stem, _db(st.margin), str(st.kept).lower(), str(st.silent).lower(),
                                 "" if st.noisy is None else str(st.noisy).lower(), st.kind or "",
                                 _db(st.whole_margin), _db(st.window_margin), _db(st.leak_z), st.leak_into or ""])


def _db(value) -> str:
    return "" if value is None else f"{value:.4f}"


def _grid(n: int, width: float = 5.0, height: float = 3.4):
    cols = min(n, 2) if n <= 4 else 3
    rows = math.ceil(n / cols)
    from matplotlib.figure import Figure  # the [report] extra; write_selection_report checks it is there
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    return fig, [fig.add_subplot(rows, cols, i + 1) for i in range(n)]


def plot_margins(path, stems, sources, thresholds, threshold_rules, title: str) -> None:
    fig, axes = _grid(len(sources))
    for ax, s in zip(axes, sources):
        mine = [st for st in stems if st.stem == s and st.eligible]
        finite = [st for st in mine if math.isfinite(st.margin)]
        values = np.array([st.margin for st in finite] + [thresholds[s]])
        bins = np.histogram_bin_edges(values, bins=min(40, max(10, len(finite) // 3)))
        if any(st.label is not None for st in finite):
            clean = [st.margin for st in finite if st.noisy is False]
            noisy = [st.margin for st in finite if st.noisy is True]
            ax.hist([clean, noisy], bins=bins, stacked=True, color=["tab:green", "tab:red"],
                    label=["labelled clean", "labelled noisy"])
        else:
            ax.hist([st.margin for st in finite], bins=bins, color="tab:blue", label="stems")
        ax.axvline(thresholds[s], color="black", linestyle="--",
                   label=f"threshold {thresholds[s]:.2f} dB\n({threshold_rules[s]})")
        total = sum(st.stem == s for st in stems)
        kept = sum(st.kept for st in mine)
        hidden = total - len(finite)  # silent, all outputs quiet, or an infinite margin
        ax.set_title(f"{s}: kept {kept} of {total}" + (f" ({hidden} not drawn)" if hidden else ""), fontsize=10)
        ax.set_xlabel("margin: own output - loudest other (dB)")
        ax.set_ylabel("stems")
        ax.legend(fontsize=8)
    fig.suptitle(f"Margins per source; rule: {title}", fontsize=10)
    save_figure(fig, path, dpi=100)


def plot_sweep(path, stems, sources, thresholds) -> None:
    finite = [st.margin for st in stems if st.eligible and math.isfinite(st.margin)] or [0.0]
    grid = np.linspace(min(finite) - 1, max(finite) + 1, 200)
    rows = sweep(stems, sources, grid)
    fig, axes = _grid(len(sources) + 1)
    panels = [("all sources", lambda r: r["overall"], None)] + [
        (s, lambda r, s=s: r["per_source"][s], thresholds[s]) for s in sources]
    for ax, (title, pick, chosen) in zip(axes, panels):
        for key, color in (("precision", "tab:blue"), ("recall", "tab:orange"), ("f1", "tab:gray")):
            ys = [np.nan if pick(r)[key] is None else pick(r)[key] for r in rows]
            ax.plot(grid, ys, color=color, label=key)
        if chosen is not None:
            ax.axvline(chosen, color="black", linestyle="--", label=f"chosen {chosen:.2f} dB")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("threshold (dB)")
        ax.legend(fontsize=8)
    fig.suptitle('Precision and recall of "clean" against the threshold', fontsize=10)
    save_figure(fig, path, dpi=100)


def blind_text(m: dict) -> str:
    """The figures of ``metrics`` without the stems no per-stem filter can see, in a sentence."""
    j = m["judgeable"]
    return (f"Without the {m['blind']} noisy stems that no filter judging one stem at a time can see "
            f"({' and '.join(BLIND_KINDS)}): precision {fmt(j['precision'], 3)}, recall {fmt(j['recall'], 3)}. "
            f"Kept as often as the clean stems, those {m['blind']} hold the precision below "
            f"{fmt(m['precision_ceiling'], 3)} at any threshold.")


def report_text(sel) -> str:
    doc = Doc()
    doc.h(1, f"Automatic filter: {sel.suffix}")
    doc.items([f"volumes: `{sel.outputs}` ({sel.volumes_from})", f"dataset: `{sel.data}`",
               f"rule: {sel.rule.describe()}",
               f"pool: `{sel.dest / 'train'}`; kept tracks in `{sel.dest.name}/{clean_stems_name(sel.suffix)}`"])
    doc.p("A stem is kept when its margin (own output volume minus the loudest other, "
          "`20 log10(sum |out|)` in dB) is above its source's threshold"
          + (f", and (rule `auto`) when {leaks.RULE}" if sel.rule.name == "auto" else "")
          + ". Silent stems are never kept; stems whose outputs are all at or below -80 dB are skipped.")
    leak = ["leak test"] if sel.leak_tests else []
    doc.table(["source", "threshold (dB)", "chosen by", *leak, "kept", "of", "silent", "outputs quiet", "not measured"],
              [[s, f"{sel.thresholds[s]:.2f}", sel.threshold_rules[s], *([sel.leak_tests[s]] if leak else []),
                *(str(c[k]) for k in ("kept", "total", "silent", "skipped", "missing"))]
               for s, c in sel.counts.items()], "lrl" + "l" * len(leak) + "rrrrr")
    doc.image(sel.dest / MARGINS_PNG, "margins per source")
    doc.p(f"Every stem's margin: `{MARGINS_CSV}`.")
    if sel.skipped_outputs:
        doc.p(f"{len(sel.skipped_outputs)} output folders could not be read:")
        doc.items([f"`{folder}`: {why}" for folder, why in list(sel.skipped_outputs.items())[:20]])
    m = sel.metrics
    if m is not None:
        doc.h(2, f"Against the labels (`{sel.labels}`)")
        doc.p(f"{m['labelled']} stems labelled ({m['unlabelled']} without a label). "
              "Positive class: labelled clean. Precision = kept clean / kept; recall = kept clean / clean.")
        doc.table(["source", "precision", "recall", "F1", "kept clean", "kept noisy", "clean left out",
                   "noisy left out"],
                  [[name, fmt(c["precision"], 3), fmt(c["recall"], 3), fmt(c["f1"], 3),
                    *(str(c[k]) for k in ("tp", "fp", "fn", "tn"))]
                   for name, c in [*m["per_source"].items(), ("**overall**", m["overall"])]])
        doc.p(blind_text(m))
        doc.h(3, "Keep rate per noise kind")
        doc.table(["kind", "stems", "kept", "keep rate"],
                  [[kind, str(k["total"]), str(k["kept"]), f"{k['keep_rate']:.3f}"] for kind, k in m["per_kind"].items()])
        doc.h(3, "Threshold sweep")
        doc.p("One threshold for every source; to use one, run again with it as THRESHOLD.")
        doc.table(["threshold (dB)", "precision", "recall", "F1", "kept"],
                  [[f"{r['threshold']:g}", fmt(r["precision"], 3), fmt(r["recall"], 3), fmt(r["f1"], 3),
                    str(r["kept"])] for r in m["sweep"]], "rrrrr")
        doc.image(sel.dest / SWEEP_PNG, "precision and recall against the threshold")
    return doc.markdown(sel.dest)


def write_selection_report(sel) -> None:
    """report.md, margins.png, margins.csv and (with labels) sweep.png in the selection's DEST."""
    sources = list(sel.counts)
    write_csv(sel.dest / MARGINS_CSV, sel.stems)
    if importlib.util.find_spec("matplotlib") is None:
        log.info("matplotlib is not installed (pip install 'mdx-labelnoise[report]'): %s has no figures",
                 sel.dest / REPORT_MD)
    else:
        _plot(sel, sources)
    write_text(sel.dest / REPORT_MD, report_text(sel))


def _plot(sel, sources) -> None:
    plot_margins(sel.dest / MARGINS_PNG, sel.stems, sources, sel.thresholds, sel.threshold_rules,
                 sel.rule.describe())
    if sel.metrics is not None:
        plot_sweep(sel.dest / SWEEP_PNG, [st for st in sel.stems if st.label is not None], sources, sel.thresholds)
