"""The final bag: each source from joint360, or from the model that proves it separates it better.

For each source the candidates are every model of Part 2: its own
fine-tunes first, the other fine-tunes, joint360 last
(``pipeline.BAG_CANDIDATES``). Each is scored (challenge SDR per source) on
the clean validation tracks when the user gave some (``--valid``), else on
the tracks held out of the pools (labelnoise.holdout), against those of
their stems the second filter kept: a stem the filter found noisy is no
reference, nor is one more than ``QUIET_REFERENCE_DB`` below its track's
mixture. A source stays with joint360 unless another candidate's mean
per-track gain over it exceeds ``report_stats.CLEAR`` standard errors, the
rule by which the report calls any difference a rise; of those that
do, the best wins (a tie goes to the first, its own fine-tune). A source
with no reference at all takes its fine-tune, as the original did.
``final.yaml`` records every choice, its scores and why, and flags a
fine-tune whose pool is thin: fewer than ``THIN_SHARE`` of the dataset's
stems of its source.

    python -m labelnoise.pipeline bag --runs runs --selection POOL --data data/labelnoise
"""
from __future__ import annotations

import logging
from pathlib import Path

from . import SOURCES
from .atomic import write_text
from .files import BAG_FILE, HELDOUT_SCORES_FILE as HELDOUT_FILE, MODEL_FILE
from .pipeline import BAG_CANDIDATES, JOINT, PipelineError
from .report_stats import CLEAR, clear_rise, paired

log = logging.getLogger(__name__)

THIN_SHARE = 0.5
QUIET_REFERENCE_DB = 30.0   # a reference this far below its mixture holds under 0.1 % of its power


def pick(scores: dict[str, dict[str, dict[str, float]]], candidates=BAG_CANDIDATES,
         base: str = JOINT) -> dict[str, dict]:
    """Per source: the model it is taken from, and why.

    ``scores[model][source]`` holds the SDR per reference track. ``base`` (joint360, the model every
    fine-tune starts from) keeps a source unless another candidate proves a gain over it: a mean gain on
    the tracks both were scored on larger than ``CLEAR`` standard errors (none below two tracks). A
    handful of held-out tracks ranks models a few tenths of a dB apart at random, and a fine-tune that
    merely looks better there can be worse on new songs; among the candidates that prove a gain, the
    best mean wins (a tie: the first, the source's own fine-tune). A source with no reference at all
    takes its own fine-tune, as the original did; one that ``base`` was not scored on takes the best mean.
    """
    out = {}
    for source, names in candidates.items():
        per_model = {n: scores.get(n, {}).get(source) or {} for n in names}
        means = {n: sum(v.values()) / len(v) for n, v in per_model.items() if v}
        if not means:
            out[source] = {"model": names[0], "why": "no held-out reference for this source: its fine-tune"}
            continue
        against = ", ".join(f"{n} {m:.2f}" for n, m in means.items())
        if base not in means:
            model = max(means, key=means.get)  # max keeps the first of equals
            out[source] = {"model": model, "why": f"best on the held-out tracks: {means[model]:.2f} dB ({against})"}
            continue
        gains = {n: c for n in means if n != base and (c := paired(per_model[n], per_model[base]))}
        proven = [n for n, c in gains.items() if clear_rise(c)]
        if proven:
            model = max(proven, key=means.get)
            why = f"beat {base} on the held-out tracks by {_gain(gains[model])} ({against})"
        elif not gains:
            model, why = base, f"the only candidate scored on the held-out tracks: {means[base]:.2f} dB"
        else:
            model = base
            runner_up = max(gains, key=lambda n: gains[n]["diff"])
            why = (f"no other model beat it by more than {CLEAR:g} standard errors on the held-out tracks "
                   f"(closest: {runner_up} {_gain(gains[runner_up])}; {against})")
        out[source] = {"model": model, "why": why}
    return out


def _gain(c: dict) -> str:
    se = "no standard error" if c["se"] is None else f"± {c['se']:.2f} dB"
    return f"{c['diff']:+.2f} {se} over {c['n']} track(s)"


def thin_pools(selection: dict | None, candidates=BAG_CANDIDATES) -> dict[str, str]:
    """Sources whose pool (the second selection's kept stems) is thin, with the words saying so."""
    if selection is None:
        return {}
    out = {}
    for source in candidates:
        counts = selection["counts"].get(source)
        if counts and counts["kept"] < THIN_SHARE * counts["total"]:
            out[source] = (f"its fine-tune trained on a thin pool: {counts['kept']} of {counts['total']} "
                           f"{source} stems kept")
    return out


def write(runs: str | Path, choices: dict[str, dict], thin: dict[str, str] | None = None) -> Path:
    """``RUNS/final.yaml`` with one row per chosen model (its sources' columns 1) and the choices."""
    runs = Path(runs)
    chosen = list(dict.fromkeys(choices[s]["model"] for s in SOURCES))
    for name in chosen:
        if not (runs / name / MODEL_FILE).exists():
            raise PipelineError(f"{runs / name / MODEL_FILE}: not found; the {name} stage has not finished")
    rows = [[1 if choices[s]["model"] == name else 0 for s in SOURCES] for name in chosen]
    lines = ["# The final system: each source from joint360, or from the model that beat it by more than",
             f"# {CLEAR:g} standard errors on tracks Part 2 did not train on (labelnoise/final_bag.py).",
             f"models: [{', '.join(f'{name}/{MODEL_FILE}' for name in chosen)}]",
             "weights:        # rows: models; columns: " + ", ".join(SOURCES)]
    lines += [f"  - {row}" for row in rows]
    lines.append("choices:")
    for s in SOURCES:
        c = choices[s]
        lines.append(f"  {s}: {{model: {c['model']}, why: {_quoted(c['why'])}"
                     + (f", warning: {_quoted(thin[s])}" if thin and s in thin else "") + "}")
    path = runs / BAG_FILE
    write_text(path, "\n".join(lines) + "\n")
    return path


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def audible(folder, stems: dict[str, list[str]] | None = None) -> dict[str, list[str]]:
    """Per track of ``folder`` (those of ``stems``, else all), its stems (``stems[track]``, else every
    source) no more than ``QUIET_REFERENCE_DB`` below the track's mixture (``20 log10 mean |x|``)."""
    from .evaluation import list_tracks, load_track
    from .silence import level_db

    out = {}
    for path in list_tracks(folder):
        if stems is not None and path.name not in stems:
            continue
        track = load_track(path)
        floor = level_db(track.mix) - QUIET_REFERENCE_DB
        wanted = stems[path.name] if stems is not None else SOURCES
        heard = [s for s in wanted if level_db(track.stems[s]) > floor]
        quiet = [s for s in wanted if s not in heard]
        if quiet:
            log.info("%s: %s more than %g dB below the mixture: not a reference for the bag's choice",
                     path, ", ".join(quiet), QUIET_REFERENCE_DB)
        if heard:
            out[path.name] = heard
    return out


def reference_set(selection: dict | None, data, valid, device: str):
    """The tracks the candidates are scored on: --valid, else the held-out tracks' kept stems; None: neither.

    Either way a stem far below its mixture (``audible``) is no reference: against a near-silent stem
    (a track whose bass recording went into another stem) SDR measures a model's leakage into that
    output, not how it separates the source, and one such track outweighs the rest.
    """
    from .scoring import TestSet

    if valid is not None:
        keep = audible(valid)
        return TestSet(valid, device, tracks=sorted(keep), keep=keep) if keep else None
    held = {t: stems for t, stems in ((selection or {}).get("held_out") or {}).items() if stems}
    keep = audible(data, held) if held else {}
    if not keep:
        return None
    return TestSet(data, device, tracks=sorted(keep), keep=keep)


def build(runs: str | Path, *, selection_dir=None, data=None, valid=None, device: str = "cpu",
          candidates=BAG_CANDIDATES) -> Path:
    """Score the candidates (cached in their run dirs), choose, write ``RUNS/final.yaml``."""
    from .scoring import reference_scores
    from .selection import read_selection

    runs = Path(runs)
    selection = read_selection(selection_dir) if selection_dir is not None else None
    refs = reference_set(selection, data, valid, device)
    scores: dict[str, dict] = {}
    if refs is not None:
        for name in dict.fromkeys(n for names in candidates.values() for n in names):
            model = runs / name / MODEL_FILE
            if not model.exists():
                raise PipelineError(f"{model}: not found; the {name} stage has not finished")
            report = refs.evaluate(model, runs / name / HELDOUT_FILE)
            scores[name] = reference_scores(report, refs.keep)
    choices = pick(scores, candidates)
    thin = thin_pools(selection, candidates)
    for s, words in thin.items():
        log.warning("%s: %s", s, words)
    for s in SOURCES:
        log.info("%s: %s (%s)", s, choices[s]["model"], choices[s]["why"])
    return write(runs, choices, thin)
