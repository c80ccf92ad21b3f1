"""The ``auto`` threshold rule and variants of its constants, re-decided on filter runs already made.

    python bench/rule_variants.py runs/demo                  # every filter run under runs/demo
    python bench/rule_variants.py runs/bench runs/demo/evaluator_outputs_pretrain3_key6_speed200
    python bench/rule_variants.py runs/demo --variant "2 MADs:OUTLIER_MADS=2" --variant "z 4:LEAK_Z=4"

Each folder given is a filter run (``filter.json`` and ``volumes.jsonl``, what
``filter.py`` writes) or a folder searched for them. The dataset a run
measured (``filter.json``'s ``data``) must hold ``noise_labels.json``. No
model runs: every variant re-decides the same recorded margins with
``labelnoise.selection`` (a dry run, nothing written), with some of the
rule's constants changed for the time of the decision.

Variants: ``auto`` (the rule as it stands), ``floor`` (nothing kept at or
below the -6 dB floor: ``OUTLIER_MADS=0``), ``2.5 MADs`` and ``no leak test``
(``LEAK_Z=inf``), and any given as ``--variant LABEL:NAME=VALUE[,NAME=VALUE]``
over the constants in ``CONSTANTS``.

A run on a dataset whose labels hold a noisy stem is a noisy case: the table
adds up, over those, the clean stems kept, the noisy stems kept per kind
(bleed only at or above -12 dB, other_song not at all: no per-stem filter
hears them), the judgeable precision (every noisy case together, and the
lowest of one case). A run on a dataset without noisy stems (a clean twin)
counts the sources that keep fewer than 95 % of their stems.

The last row, ``labels' best``, is no rule: per run and source it takes the
threshold on the margins that the labels say is best, the highest judgeable
precision at a judgeable recall of at least 0.8 over the run (the leak
test's outliers left out, as ``auto`` does). No threshold rule on the same
margins can pass it, so it is what the filter model's margins allow.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from labelnoise import SOURCES, filter_report, leaks, thresholds  # noqa: E402
from labelnoise.files import FILTER_SETTINGS_FILE, LABELS_FILE, VOLUMES_FILE  # noqa: E402
from labelnoise.noise import KINDS  # noqa: E402
from labelnoise.selection import Selection, select_clean_stems  # noqa: E402

# The constants a variant may change: each is read when the rule runs, so setting it changes the decision.
CONSTANTS = {"OUTLIER_MADS": thresholds, "MIN_SPREAD_DB": thresholds, "BIC_MARGIN": thresholds,
             "MIN_SEPARATION": thresholds, "MIN_CLEAN_SHARE": thresholds, "LEAK_Z": leaks}
VARIANTS = {"auto": {}, "floor": {"OUTLIER_MADS": 0.0}, "2.5 MADs": {"OUTLIER_MADS": 2.5},
            "no leak test": {"LEAK_Z": math.inf}}
LABELS_BEST = "labels' best"
RECALL_AT = 0.8         # the operating point the labels' best is chosen at: judgeable recall at least this
CLEAN_SHARE = 0.95      # a clean twin's source keeping fewer of its stems than this is counted
# The rows of labelnoise.filter_report's keep rate per kind that a per-stem filter can hear.
JUDGED_KINDS = ("swap", "misgroup", "partial", f"bleed >= {KINDS['bleed'].blind_below_db:g} dB", "silent")


def parse_variant(text: str) -> tuple[str, dict[str, float]]:
    """``"LABEL:NAME=VALUE,NAME=VALUE"`` -> ``(LABEL, {NAME: VALUE})``."""
    label, sep, body = text.partition(":")
    if not sep or not label.strip():
        raise ValueError(f"--variant {text!r}: expected LABEL:NAME=VALUE[,NAME=VALUE]")
    values = {}
    for part in body.split(","):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name not in CONSTANTS:
            raise ValueError(f"--variant {text!r}: {name!r} is not one of {', '.join(CONSTANTS)}")
        try:
            values[name] = float(value)
        except ValueError:
            raise ValueError(f"--variant {text!r}: {value!r} is not a number") from None
    return label.strip(), values


@contextlib.contextmanager
def constants(values: dict[str, float]):
    """The rule's constants set to ``values`` inside the block, restored after it."""
    saved = {name: getattr(CONSTANTS[name], name) for name in values}
    try:
        for name, value in values.items():
            setattr(CONSTANTS[name], name, value)
        yield
    finally:
        for name, value in saved.items():
            setattr(CONSTANTS[name], name, value)


def filter_runs(folders) -> list[Path]:
    """Every filter run (a folder with filter.json and volumes.jsonl) in or under the folders given."""
    runs = []
    for folder in map(Path, folders):
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no such folder")
        found = [folder] if (folder / FILTER_SETTINGS_FILE).is_file() else sorted(
            p.parent for p in folder.rglob(FILTER_SETTINGS_FILE))
        found = [f for f in found if (f / VOLUMES_FILE).is_file()]
        if not found:
            raise FileNotFoundError(f"{folder}: no filter run in it ({FILTER_SETTINGS_FILE} with {VOLUMES_FILE})")
        runs += [f for f in found if f not in runs]
    return runs


def redecide(run: Path, values: dict[str, float]) -> Selection:
    """One run's stems decided again under a variant (a dry run, nothing written); ``metrics`` holds
    labelnoise.filter_report's figures of the decisions against the labels."""
    made = json.loads((run / FILTER_SETTINGS_FILE).read_text())
    data = Path(made["data"])
    if not (data / LABELS_FILE).is_file():
        raise FileNotFoundError(f"{run}: its dataset {data} has no {LABELS_FILE}; a variant cannot be judged")
    # The model's name only names volume caches, and a run with volumes.jsonl reads none.
    with constants(values):
        sel = select_clean_stems("filter", made["key"], made["speed"], "auto", outputs=run, data=data,
                                 dry_run=True, report=False, progress=False)
    if sel.metrics is None:
        raise ValueError(f"{data / LABELS_FILE}: labels none of the stems {run} measured")
    return sel


def keep_labels_best(sel: Selection) -> None:
    """Decide ``sel``'s stems again with the labels' best thresholds (``best_thresholds``), its figures too."""
    chosen = best_thresholds(sel.stems)
    for st in sel.stems:
        st.kept = st.stem in chosen and filter_report.kept_at(st, chosen[st.stem])
    sel.thresholds, sel.metrics = chosen, filter_report.metrics(sel.stems, SOURCES, chosen)


def decide(run: Path, values: dict[str, float], by_labels: bool = False) -> dict:
    """The figures of one run's decisions under a variant, or with the labels' best thresholds."""
    sel = redecide(run, values)
    if by_labels:
        keep_labels_best(sel)
    return sel.metrics


def best_thresholds(stems, recall: float = RECALL_AT) -> dict[str, float]:
    """Per source, the threshold on the margins that gives the run the highest judgeable precision at a
    judgeable recall of at least ``recall`` (ties: the higher recall), chosen with the labels.

    A source's choices are to keep its top k judged stems by margin (eligible, labelled, not blind, not a
    leak outlier); the sources' choices are combined exactly, keeping per count of clean stems kept the
    fewest noisy ones. Where no choice reaches ``recall``, the one that keeps the most clean stems."""
    judged = [st for st in stems if st.label is not None and not filter_report.is_blind(st)]
    clean_total = sum(not st.noisy for st in judged)
    best = {0: (0, {})}                        # clean kept -> (noisy kept, threshold per source)
    for source in sorted({st.stem for st in judged}):
        # The stems some threshold keeps (not a margin of -inf: the stem's own output all zero).
        ranked = sorted((st for st in judged if st.stem == source and filter_report.kept_at(st, -math.inf)),
                        key=lambda st: -st.margin)
        margins = [st.margin for st in ranked]
        options, tp, fp = [(0, 0, math.inf)], 0, 0
        for k, st in enumerate(ranked, 1):     # keep the top k: the threshold lies below the k-th margin
            tp, fp = tp + (not st.noisy), fp + bool(st.noisy)
            if k < len(ranked) and margins[k] == margins[k - 1]:
                continue                       # a threshold cannot part stems of one margin
            options.append((tp, fp, between(margins[k - 1], margins[k]) if k < len(ranked) else -math.inf))
        merged = {}
        for kept, (noisy, chosen) in best.items():
            for tp, fp, threshold in options:
                if kept + tp not in merged or noisy + fp < merged[kept + tp][0]:
                    merged[kept + tp] = (noisy + fp, {**chosen, source: threshold})
        best = merged
    enough = [k for k in best if clean_total and k >= recall * clean_total] or [max(best)]
    kept = max(enough, key=lambda k: (k / (k + best[k][0]) if k + best[k][0] else 0.0, k))
    return best[kept][1]


def between(above: float, below: float) -> float:
    """A threshold that keeps a margin of ``above`` and not one of ``below`` (``above > below``, the upper
    one possibly +inf)."""
    return below + 1.0 if math.isinf(above) else (above + below) / 2


def holds_noisy(metrics: dict) -> bool:
    """Whether a run's labels name a noisy stem (else it ran on a clean twin)."""
    return bool(metrics["overall"]["fp"] + metrics["overall"]["tn"])


def summary(cases: list[dict]) -> dict:
    """A variant's figures over the cases' metrics (see the module's docstring)."""
    noisy = [m for m in cases if holds_noisy(m)]
    twins = [m for m in cases if not holds_noisy(m)]
    out = {"noisy_cases": len(noisy), "twin_cases": len(twins), "clean_kept": 0, "clean": 0,
           "kinds": {k: [0, 0] for k in JUDGED_KINDS}, "kept": 0, "lowest_precision": None}
    for m in noisy:
        judged = m["judgeable"]          # every clean stem, and the noisy ones a per-stem filter can hear
        out["clean"] += judged["tp"] + judged["fn"]
        out["clean_kept"] += judged["tp"]
        out["kept"] += judged["tp"] + judged["fp"]
        for k in JUDGED_KINDS:
            rate = m["per_kind"].get(k, {"kept": 0, "total": 0})
            out["kinds"][k][0] += rate["kept"]
            out["kinds"][k][1] += rate["total"]
        if judged["precision"] is not None:
            low = out["lowest_precision"]
            out["lowest_precision"] = judged["precision"] if low is None else min(low, judged["precision"])
    out["precision"] = out["clean_kept"] / out["kept"] if out["kept"] else None
    per_source = [c for m in twins for c in m["per_source"].values() if c["tp"] + c["fn"]]
    out["twin_sources"] = len(per_source)
    out["twin_sources_short"] = sum(c["tp"] < CLEAN_SHARE * (c["tp"] + c["fn"]) for c in per_source)
    return out


def table(results: dict[str, dict]) -> str:
    """The variants side by side, in markdown."""
    head = (["variant", "clean kept (noisy sets)"] + [f"{k} kept" for k in JUDGED_KINDS]
            + ["judgeable precision (all / lowest set)", f"clean-twin sources < {CLEAN_SHARE:.0%}"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, r in results.items():
        p = "n/a" if r["precision"] is None else f"{r['precision']:.3f}"
        low = "n/a" if r["lowest_precision"] is None else f"{r['lowest_precision']:.3f}"
        cells = ([label, f"{r['clean_kept']}/{r['clean']}"]
                 + [f"{kept}/{n}" for kept, n in r["kinds"].values()]
                 + [f"{p} / {low}", f"{r['twin_sources_short']}/{r['twin_sources']}"])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="+", help="filter runs, or folders searched for them")
    ap.add_argument("--variant", action="append", default=[], metavar="LABEL:NAME=VALUE[,NAME=VALUE]",
                    help="another variant (repeatable); the four built in always run")
    ap.add_argument("--json", type=Path, help="also write every variant's figures here")
    args = ap.parse_args(argv)
    try:
        variants = dict(VARIANTS)
        variants.update(parse_variant(v) for v in args.variant)
        runs = filter_runs(args.folders)
        results = {label: summary([decide(run, values) for run in runs]) for label, values in variants.items()}
        results[LABELS_BEST] = summary([decide(run, {}, by_labels=True) for run in runs])
    except (ValueError, FileNotFoundError) as exc:
        print(f"rule_variants: {exc}", file=sys.stderr)
        return 2
    noisy = results["auto"]["noisy_cases"]
    print(f"{len(runs)} filter runs: {noisy} on noisy sets, {len(runs) - noisy} on clean twins")
    for run in runs:
        print(f"  {run}")
    print()
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
