"""A run folder's report: report.md and a self-contained report.html, made from the files its stages left.

    python -m labelnoise.report runs/demo        # write runs/demo/report.md and report.html again
    python -m labelnoise.report RUNS             # any folder `python -m labelnoise.pipeline run` made

Reads ``RUNS/pipeline.json`` (the settings and stages labelnoise.runner
records), each stage's test scores (``test_sdr.json``), its ``metrics.jsonl``
and ``config.yaml``, the filters' ``selection.json`` and ``margins.csv``, and
the final bag's estimates of the first test track. It shows what exists: a
stage not run yet, or a run without a test set, leaves its part out and says
so. Figures go to ``RUNS/report_files/*.png``; report.html embeds them
(base64), so it can be mailed or opened anywhere on its own.

Every sentence that says whether something helped is computed here from the
numbers: a difference between two systems is the mean over test tracks of the
per-track difference in mean SDR, called a rise or a fall only when it is
larger than twice its standard error; anything else is said to be no clear
difference at this scale.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import SOURCES
from .atomic import write_text
from .document import Doc, fmt
from .files import MARGINS_PNG, REPORT_HTML, REPORT_MD
from .filter_report import blind_text
from .final_bag import QUIET_REFERENCE_DB
from .leaks import RULE as LEAK_RULE
from .pipeline import (ARMS, BAG_CANDIDATES, BAG_FILE, BAG_SOURCES, BAG_STAGE, DESCRIPTIONS, FILTERS, JOINT, PART1,
                       PART2_MODELS)
from .report_facts import Facts, ReportError, gather
from .report_plots import plot_losses, plot_margins, plot_sdr, plot_spectrogram, plot_truncation, stage_label
from .report_stats import CLEAR, combined_shares, compare, comparison_text, noisy_shares
from .synth import LABELS_FILE
from .yamlio import read_mapping

FILES_DIR = "report_files"
MD_FILE, HTML_FILE = REPORT_MD, REPORT_HTML
# The demo's own targets (filter precision and recall, truncation's noisy-share ratio).
MIN_PRECISION = 0.9
MIN_RECALL = 0.5
MIN_SHARE_RATIO = 2.0
# The source a fine-tune is for (its SDR cell is the one the final bag uses).
TARGET = {stage: source for source, stage in BAG_SOURCES.items()}


def requirements(facts: Facts) -> list[dict]:
    """The demo's targets, each with its measured value and whether it holds (None: not measured)."""
    rows = []
    for name, title in facts.filters().items():
        overall = ((facts.selections.get(name) or {}).get("metrics") or {}).get("overall")
        for key, limit in (("precision", MIN_PRECISION), ("recall", MIN_RECALL)):
            value = None if overall is None else overall[key]
            rows.append({"what": f"{title}: {key} of the kept stems being clean", "limit": f">= {limit:g}",
                         "value": value, "met": None if value is None else value >= limit})
    shares = combined_shares([noisy_shares(facts.metrics[s], facts.configs[s]) for s in facts.part1()
                              if s in facts.metrics and s in facts.configs])
    ratio = None if shares is None else shares["ratio"]
    rows.append({"what": "truncation (steps 1-3): noisy share among dropped / among kept entries",
                 "limit": f">= {MIN_SHARE_RATIO:g}", "value": ratio,
                 "met": None if ratio is None else ratio >= MIN_SHARE_RATIO})
    return rows


# ---------------------------------------------------------------- the document

def _clock(seconds) -> str:
    if seconds is None:
        return "n/a"
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


def _what(stage: dict) -> str:
    if stage.get("repeats"):
        return f"{ARMS[stage['group']].what if stage['group'] in ARMS else stage['group']} " \
               f"({stage['repeats']}'s schedule)"
    return DESCRIPTIONS.get(stage["name"], stage["group"])


def _model_words(facts: Facts) -> str:
    cfg = next((facts.configs[n] for n in facts.part1() if n in facts.configs), None)
    if cfg is None:
        return "the configured network"
    model = cfg["model"]
    name = {"masknet": "MaskNet (a small spectrogram-mask network)", "htdemucs": "HTDemucs"}.get(
        model.get("arch", "htdemucs"), model.get("arch"))
    return f"{name} at {model['samplerate'] / 1000:g} kHz"


def _data_words(facts: Facts) -> str:
    data = facts.manifest["data"]
    params = facts.train_params()
    if params is not None:
        how = ("songs the generator composed, played by SoundFont instruments with effects"
               if params.get("render") == "sampled" else "sines, clicks and noise bursts")
        kinds = ("recordings grouped into the wrong stem, " if params.get("render") == "sampled" else "")
        words = (f"{len(params['tracks'])} synthetic tracks of {params['seconds']:g} s ({how}) in `{data['train']}`, "
                 f"in which {params['noise_rate']:.0%} of the stems are wrong ({kinds}bleed, swapped, partly "
                 f"swapped or silent stems, stems of other songs; the truth is in {LABELS_FILE})")
    else:
        words = f"the tracks in `{data['train']}`"
        words += (f" (the truth of each stem in {LABELS_FILE})" if facts.has_labels() else
                  f" (no {LABELS_FILE}: the filters' precision and recall cannot be measured)")
    if data.get("clean"):
        words += f"; the clean arm trains on `{data['clean']}`"
    return words


def _intro(doc: Doc, facts: Facts) -> None:
    s, timings = facts.manifest["settings"], facts.manifest.get("timings", {})
    test = facts.test_folder()
    scored = next(iter(facts.scores.values()), None)
    if test is None:
        tested = ("No test set was given (`--test`), so no model was scored: this report has no SDR tables. "
                  "The same command with `--test TEST_TRACKS` scores every model (the runs are kept).")
    else:
        count = scored["test_set"]["tracks"] if scored else "the"
        tested = f"Scored on {count} clean test tracks in `{test}` with the challenge SDR."
    overrides = ", ".join(f"`{o}`" for o in s["overrides"]) or "none"
    arms = ", ".join(f"{a} ({facts.arm_what(a)})" for a in facts.arm_stages()) or "none"
    total = sum(v for k, v in timings.items() if k.endswith("(test)") or k in facts.names())
    last = next((timings[k] for k in ("demo", "pipeline") if k in timings), None)
    doc.p(f"{_model_words(facts)}, trained on {_data_words(facts)}. {tested} "
          f"Configs: `{s['configs']}`; epochs x {s['epochs_scale']:g}"
          f"{' (quick: one short epoch per stage)' if s['quick'] else ''}; overrides: {overrides}; "
          f"filter threshold rule `{s['threshold']}`; control arms: {arms}. "
          f"Wall time of the last run: {_clock(last)} (stages done before it are not counted again); "
          f"the stages and their scoring took {_clock(total)} in all, summed over the runs that did them.")


def _findings(doc: Doc, facts: Facts) -> None:
    doc.h(2, "What the numbers say")
    if not facts.scores:
        doc.p("Nothing was scored: there is no test set, or no model has finished yet.")
        return
    step3 = PART1[-1]
    baseline = facts.arm_finals().get("baseline")
    clean = facts.arm_finals().get("clean")
    pairs = [("Truncation: ", step3, step3, baseline, "the baseline"),
             ("Filtering, joint training: ", JOINT, JOINT, step3, step3),
             ("Filtering, joint training: ", JOINT, JOINT, baseline, "the baseline"),
             ("Filtering, final bag: ", BAG_STAGE, "the final bag", step3, step3),
             ("Filtering, final bag: ", BAG_STAGE, "the final bag", baseline, "the baseline"),
             ("What the label noise costs: ", clean, "clean-data training", baseline, "the baseline")]
    lines = [head + comparison_text(la, lb, _cmp(facts, a, b)) for head, a, la, b, lb in pairs
             if a is not None and b is not None and a in facts.names() and b in facts.names()]
    if not baseline:
        lines.append("No baseline arm was run (`--arms baseline`): nothing to compare the method with.")
    doc.items(lines)
    doc.p(f"A difference is called a rise or a fall only when it exceeds {CLEAR:g} standard errors of the "
          f"per-track differences; the test set is small, so modest effects read as no clear difference.")


def _requirements(doc: Doc, facts: Facts) -> None:
    reqs = requirements(facts)
    doc.table(["target", "needed", "measured", "holds"],
              [[r["what"], r["limit"], fmt(r["value"], 3),
                "not measured" if r["met"] is None else ("yes" if r["met"] else "**no**")] for r in reqs], "lrrl")
    measured = [r["met"] for r in reqs if r["met"] is not None]
    doc.p("All targets hold." if measured and all(measured) and len(measured) == len(reqs) else
          f"{sum(1 for m in measured if not m)} of {len(reqs)} targets do not hold"
          + (f"; {len(reqs) - len(measured)} not measured." if len(measured) < len(reqs) else "."))


def _sdr_table(doc: Doc, facts: Facts, files: Path) -> None:
    doc.h(2, "Test SDR after each stage")
    if not facts.scores:
        doc.p("No scores (no test set given, or no model finished).")
        return
    baseline = facts.arm_finals().get("baseline")
    base = facts.scores.get(baseline) if baseline else None
    rows = []
    for st in facts.model_stages():
        sc = facts.scores[st["name"]]["summary"]
        cells = []
        for src in SOURCES:
            value = f"{sc['per_source'][src]['mean']:.2f}"
            cells.append(f"**{value}**" if TARGET.get(st["name"]) == src else value)
        delta = "" if base is None else f"{sc['mean'] - base['summary']['mean']:+.2f}"
        rows.append([stage_label(st), _what(st), *cells, f"{sc['mean']:.2f}", delta])
    doc.p("Challenge SDR in dB, mean over the test tracks (a fine-tune's own source in bold: the one the final "
          "bag may take from it, see its choice below). Last column: mean SDR minus the baseline's (plain L1 on the same noisy data, "
          "the budget of steps 1-3).")
    doc.table(["stage", "model", *SOURCES, "mean", "vs baseline"], rows, "ll" + "r" * (len(SOURCES) + 2))
    doc.image(plot_sdr(facts, files / "sdr.png"), "mean test SDR per stage")


def _filters(doc: Doc, facts: Facts, files: Path) -> None:
    doc.h(2, "The filters against the known labels" if facts.has_labels() else "The filters")
    doc.p("Each stem, pitched up and sped up, is separated by the filter model; a stem is kept as clean when its "
          "own output is louder than the loudest other output by more than its source's threshold (and, with "
          f"the `auto` rule, when {LEAK_RULE}). "
          "Precision: share of kept stems that are clean; recall: share of clean stems that are kept.")
    titles = {f"select_{name}": f"Filter {k}: {model}'s model" for k, (name, model, _) in enumerate(FILTERS, 1)}
    for name, title in titles.items():
        sel = facts.selections.get(name)
        doc.h(3, title)
        if sel is None:
            doc.p("Not run yet.")
            continue
        m = sel.get("metrics") or {}
        rows = []
        for src in SOURCES:
            c, ms = sel["counts"][src], (m.get("per_source") or {}).get(src) or {}
            leak = (sel.get("leak_tests") or {}).get(src)   # the auto rule's second test, where it ran
            rows.append([src, f"{sel['thresholds'][src]:.2f}",
                         sel["threshold_rules"][src] + (f"; leak test: {leak}" if leak else ""),
                         f"{c['kept']} / {c['total']}", fmt(ms.get("precision"), 3), fmt(ms.get("recall"), 3)])
        o = m.get("overall") or {}
        kept = sum(sel["counts"][src]["kept"] for src in SOURCES)
        total = sum(sel["counts"][src]["total"] for src in SOURCES)
        rows.append(["**all**", "", sel.get("rule", ""), f"{kept} / {total}", fmt(o.get("precision"), 3),
                     fmt(o.get("recall"), 3)])
        doc.table(["source", "threshold (dB)", "chosen by", "kept", "precision", "recall"], rows, "lrlrrr")
        if "judgeable" in m:  # selections made before these figures existed lack them
            doc.p(blind_text(m))
    shown = facts.filters()
    kinds = {n: ((facts.selections.get(n) or {}).get("metrics") or {}).get("per_kind") or {} for n in shown}
    names = list(dict.fromkeys(k for per in kinds.values() for k in per))
    if names:
        doc.p(f"What each filter kept, by the stem's true state (`{LABELS_FILE}`): a filter can only drop a stem "
              "whose content sounds unlike its label.")
        doc.table(["true state", *(f"kept by {shown[n]}" for n in shown)],
                  [[k, *(f"{kinds[n][k]['kept']} / {kinds[n][k]['total']}" if k in kinds[n] else "" for n in shown)]
                   for k in names])
    doc.image(plot_margins(facts, files / MARGINS_PNG), "margin histograms of both filters")


def _bag(doc: Doc, facts: Facts) -> None:
    """How the final bag chose each source: held-out scores of every candidate, the choice, thin pools."""
    path = facts.out / BAG_FILE
    if not path.is_file():
        return
    choices = read_mapping(path, ReportError).get("choices") or {}
    doc.h(2, "The final bag's choice")
    held = facts.heldout()
    doc.p("Each source comes from joint360 unless another model of Part 2 (its own fine-tunes, the other "
          f"fine-tunes) beat it by more than {CLEAR:g} standard errors of the per-track gains, on "
          "tracks no model of Part 2 trained on: the clean validation tracks (`--valid`), else the tracks held "
          "out of the pools, scored against those of their stems the second filter kept; a stem more than "
          f"{QUIET_REFERENCE_DB:g} dB below its track's mixture is no reference. Of the models that did, the best "
          "wins.")
    names = list(PART2_MODELS)
    rows = []
    for source in SOURCES:
        c = choices.get(source, {})
        cells = [fmt(held.get(n, {}).get(source)) if n in BAG_CANDIDATES[source] else "" for n in names]
        rows.append([source, f"**{c.get('model', '?')}**", *cells, c.get("why", ""), c.get("warning", "")])
    doc.table(["source", "chosen", *(f"{n} (held-out dB)" for n in names), "why", "warning"], rows,
              "ll" + "r" * len(names) + "ll")


def _truncation(doc: Doc, facts: Facts, files: Path) -> None:
    doc.h(2, "Loss truncation in steps 1-3")
    parts = {n: noisy_shares(facts.metrics[n], facts.configs[n]) for n in facts.part1()
             if n in facts.metrics and n in facts.configs}
    rows = [[n, fmt(p and p["kept_fraction"]), fmt(p and p["dropped"]), fmt(p and p["kept"]),
             fmt(p and p["ratio"])] for n, p in parts.items()]
    whole = combined_shares(list(parts.values()))
    if whole is not None:
        rows.append(["**steps 1-3**", fmt(whole["kept_fraction"]), fmt(whole["dropped"]), fmt(whole["kept"]),
                     fmt(whole["ratio"])])
    doc.p("Per source and batch, truncation drops the entries with the largest loss. If it works, the dropped "
          "entries hold noisy stems far more often than the kept ones"
          + ("." if facts.has_labels() else f"; without {LABELS_FILE} the noisy shares cannot be counted."))
    doc.table(["run", "kept fraction", "noisy share, dropped", "noisy share, kept", "ratio"], rows)
    params = facts.train_params()
    doc.image(plot_truncation(facts, files / "truncation.png", params and params["noise_rate"]),
              "kept fraction and noisy share")


def build(facts: Facts) -> Doc:
    files = facts.out / FILES_DIR
    doc = Doc()
    demo = "synthetic" in facts.manifest
    doc.h(1, "Label-noise demo: the method end to end" if demo else
          f"The method on {facts.manifest['data']['train']}")
    _intro(doc, facts)
    _findings(doc, facts)
    if facts.has_labels():
        _requirements(doc, facts)
    _sdr_table(doc, facts, files)
    _bag(doc, facts)
    _filters(doc, facts, files)
    _truncation(doc, facts, files)
    doc.h(2, "Training curves")
    doc.image(plot_losses(facts, files / "losses.png"), "training loss per step")
    spectrogram = plot_spectrogram(facts, files / "spectrogram.png")
    if spectrogram is not None:
        doc.h(2, "One test mixture, separated")
        doc.image(spectrogram, "spectrograms of a test mixture and its stems")

    doc.h(2, "Stages, times and commands")
    timings = facts.manifest.get("timings", {})
    rows = []
    for st in facts.stages:
        t, te = timings.get(st["name"]), timings.get(f"{st['name']} (test)")
        rows.append([st["name"], st["kind"], st["group"], _clock(t), "" if te is None else _clock(te)])
    doc.p("Seconds of the last run that ran each stage (blank: skipped as done, or not run yet).")
    doc.table(["stage", "kind", "arm", "ran for", "scoring"], rows, "lllrr")
    doc.p("Every stage is one command; the run ran these"
          + (" (plus scoring on the test set):" if facts.test_folder() is not None else ":"))
    doc.code("\n".join(" ".join(st["command"]) for st in facts.stages))
    return doc


def _cmp(facts: Facts, a: str, b: str) -> dict | None:
    if a not in facts.scores or b not in facts.scores:
        return None
    return compare(facts.scores[a], facts.scores[b])


def write_report(out: str | Path) -> tuple[Path, Path]:
    """Write ``out/report.md``, ``out/report.html`` and the figures; returns the two paths."""
    out = Path(out)
    facts = gather(out)
    doc = build(facts)
    md, page = out / MD_FILE, out / HTML_FILE
    write_text(md, doc.markdown(out))
    write_text(page, doc.html("Label-noise demo" if "synthetic" in facts.manifest else "Label-noise run"))
    return md, page


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labelnoise.report",
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     description=f"Write a run folder's {REPORT_MD} and {REPORT_HTML} from its files.",
                                     epilog=__doc__.split("\n\n")[1])
    parser.add_argument("out", type=Path, nargs="?", default=Path("runs/demo"),
                        help="a run folder of python -m labelnoise.pipeline run or labelnoise.demo "
                             "(default runs/demo)")
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
