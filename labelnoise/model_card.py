"""A model card beside the final bag: ``RUNS/final.md``, written from what the run folder holds.

    from labelnoise.model_card import write_card
    write_card(Path("runs"))          # -> runs/final.md
    python -m labelnoise.model_card runs

It reads, each where present: ``RUNS/final.yaml`` (the bag: its models,
weights and the ``choices`` per source), ``RUNS/pipeline.json`` (the
runner's manifest: settings, data folders, stages and their commands), each
stage's ``config.yaml``, the selections' ``selection.json`` (the rule, the
thresholds and the kept counts per source), the held-out scores
(``RUN/heldout_sdr.json``) and test scores (``RUN/test_sdr.json``,
``RUNS/final_test_sdr.json``). The training data is named with its identity
(its tracks and a digest of their files' names, sizes and mtimes, as the
score caches), and the code with its git commit when it is a checkout.
Nothing is run and nothing but ``final.md`` is written; what is missing is
said so.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from . import SOURCES
from .atomic import write_text
from .document import Doc, fmt
from .files import (BAG_FILE, BAG_SCORES_FILE, CONFIG_FILE, HELDOUT_SCORES_FILE, MANIFEST_FILE, MODEL_CARD_FILE,
                    SELECTION_FILE, TEST_SCORES_FILE)
from .yamlio import read_mapping

CARD_FILE = MODEL_CARD_FILE
# The config values a reader of the card asks about first, per training stage.
CONFIG_KEYS = ("model.arch", "data.mode", "data.root", "optim.loss", "optim.trunc_ratio", "optim.trunc_by",
               "optim.lr", "optim.epochs", "optim.batch_size", "run.init_from", "run.resume_from")


def _json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _yaml(path: Path) -> dict | None:
    try:
        return read_mapping(path)
    except ValueError:
        return None


def _lookup(config: dict, dotted: str):
    value = config
    for key in dotted.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _commit(repo: Path) -> str:
    """``<sha> (tree with uncommitted changes)`` of the checkout holding the code, or why there is none."""
    if not (repo / ".git").exists():
        return "not a git checkout"
    try:
        sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], check=True, capture_output=True,
                             text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               check=True, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as exc:
        return f"unknown ({exc})"
    return f"`{sha}`" + (" (with uncommitted changes)" if dirty else "")


def _data_identity(folder: str | None) -> str:
    if not folder:
        return "not recorded"
    from .scoring import identity
    try:
        ident = identity(Path(folder))
    except (OSError, ValueError) as exc:
        return f"`{folder}` (not readable here: {exc})"
    return f"`{ident['folder']}`: {ident['tracks']} tracks, digest `{ident['digest']}`"


def _stage_runs(runs: Path, manifest: dict | None) -> list[tuple[str, Path]]:
    """Training stages as (name, run dir): the manifest's, else every folder of RUNS with a config.yaml."""
    if manifest:
        out = []
        for stage in manifest.get("stages", []):
            model = stage.get("model")
            if model:
                out.append((stage["name"], Path(model).parent))
        return out
    return [(p.name, p) for p in sorted(runs.iterdir()) if (p / CONFIG_FILE).is_file()]


def _selections(runs: Path, manifest: dict | None) -> list[tuple[str, Path]]:
    """Selection folders as (name, folder): the manifest's; else the pools the stages trained on and
    any folder of RUNS holding a selection.json."""
    if manifest:
        return [(s["name"], Path(s["selection"])) for s in manifest.get("stages", []) if s.get("selection")]
    found = {}
    for _, run in _stage_runs(runs, None):
        config = _yaml(run / CONFIG_FILE) or {}
        root = _lookup(config, "data.root")
        if _lookup(config, "data.mode") == "pool" and root and (Path(root) / SELECTION_FILE).is_file():
            found.setdefault(Path(root), Path(root).name)
    for path in sorted(runs.glob(f"*/{SELECTION_FILE}")):
        found.setdefault(path.parent, path.parent.name)
    return [(name, folder) for folder, name in found.items()]


def _source_scores(report: dict | None, key: str) -> dict:
    if not report:
        return {}
    if key == "references":
        return {s: v.get("mean") for s, v in (report.get("references") or {}).items()}
    return {s: v.get("mean") for s, v in (report.get("summary", {}).get("per_source") or {}).items()}


def card(runs: str | Path) -> str:
    """The card's Markdown for run folder ``runs``."""
    runs = Path(runs)
    bag = _yaml(runs / BAG_FILE)
    if bag is None:
        raise FileNotFoundError(f"{runs / BAG_FILE}: no final bag to describe")
    manifest = _json(runs / MANIFEST_FILE)
    doc = Doc()
    doc.h(1, f"Model card: {runs / BAG_FILE}")
    doc.p("Separates a mixture into " + ", ".join(SOURCES) + ": each source from the model chosen for it "
          "(the method of the SDX23 label-noise winner: loss truncation, then filtering by a model). "
          f"`python separate.py {runs / BAG_FILE} song.wav --out separated/`.")

    choices = bag.get("choices") or {}
    models = bag.get("models") or []
    weights = bag.get("weights") or [[1] * len(SOURCES)] * len(models)
    rows = []
    for k, source in enumerate(SOURCES):
        chosen = [m for m, row in zip(models, weights) if k < len(row) and row[k]]
        c = choices.get(source, {})
        rows.append([source, ", ".join(f"`{m}`" for m in chosen) or "none", c.get("why", ""),
                     c.get("warning", "")])
    doc.h(2, "The system")
    doc.table(["source", "model", "why", "warning"], rows, "llll")

    doc.h(2, "Scores")
    final = _json(runs / BAG_SCORES_FILE)
    if final:
        per = _source_scores(final, "summary")
        doc.p(f"Test set {_test_set(final)}: challenge SDR {fmt(final['summary'].get('mean'))} dB mean, "
              f"{fmt(final['summary'].get('median'))} dB median over {final['summary'].get('tracks')} tracks; "
              "per source " + ", ".join(f"{s} {fmt(per.get(s))}" for s in SOURCES) + " dB.")
    else:
        doc.p(f"No test score of the bag ({BAG_SCORES_FILE} is not in {runs}).")
    score_rows = []
    for model in models:
        run = (runs / model).parent
        held = _source_scores(_json(run / HELDOUT_SCORES_FILE), "references")
        test = _source_scores(_json(run / TEST_SCORES_FILE), "summary")
        score_rows.append([f"`{model}`"] + [f"{fmt(held.get(s))} / {fmt(test.get(s))}" for s in SOURCES])
    if score_rows:
        doc.p("Each model of the bag, SDR in dB per source: held-out (the tracks kept out of the pools, "
              "against their stems the filter kept) / test (n/a: not scored).")
        doc.table(["model", *SOURCES], score_rows)

    doc.h(2, "Data")
    data = (manifest or {}).get("data") or {}
    train = data.get("train")
    if not train:
        configs = [_yaml(run / CONFIG_FILE) for _, run in _stage_runs(runs, manifest)]
        roots = [c["data"]["root"] for c in configs if c and c.get("data", {}).get("mode") == "tracks"]
        train = roots[0] if roots else None
    items = [f"training data: {_data_identity(train)}"]
    if data.get("clean"):
        items.append(f"clean twin (control arm): `{data['clean']}`")
    if data.get("test"):
        items.append(f"test set: `{data['test']}`")
    doc.items(items)

    selections = [(name, folder, _json(folder / SELECTION_FILE)) for name, folder in _selections(runs, manifest)]
    doc.h(2, "Filtering")
    if not any(sel for _, _, sel in selections):
        doc.p(f"No {SELECTION_FILE} found: nothing recorded about the filter.")
    for name, folder, sel in selections:
        if not sel:
            doc.p(f"`{name}`: {folder / SELECTION_FILE} not found.")
            continue
        counts, thresholds = sel.get("counts", {}), sel.get("thresholds", {})
        doc.p(f"`{name}` ({folder}): rule {sel.get('rule', 'n/a')}.")
        doc.table(["source", "kept", "of", "threshold (dB)", "held out"],
                  [[s, str(counts.get(s, {}).get("kept", "n/a")), str(counts.get(s, {}).get("total", "n/a")),
                    fmt(thresholds.get(s)), str(counts.get(s, {}).get("held_out", 0))] for s in SOURCES])

    doc.h(2, "Training stages")
    stage_rows = []
    for name, run in _stage_runs(runs, manifest):
        config = _yaml(run / CONFIG_FILE)
        if config is None:
            stage_rows.append([name, f"{run / CONFIG_FILE} not found"] + [""] * (len(CONFIG_KEYS) - 1))
            continue
        stage_rows.append([name] + [_cell(_lookup(config, key)) for key in CONFIG_KEYS])
    if stage_rows:
        doc.table(["stage", *CONFIG_KEYS], stage_rows, "l" * (len(CONFIG_KEYS) + 1))
        doc.p(f"The whole resolved config of a stage is its run folder's `{CONFIG_FILE}`.")
    else:
        doc.p(f"No stage's {CONFIG_FILE} found.")
    if manifest and manifest.get("stages"):
        doc.code("\n".join(" ".join(s.get("command", [])) for s in manifest["stages"] if s.get("command")))

    from importlib.metadata import PackageNotFoundError, version
    try:
        package = version("mdx-labelnoise")
    except PackageNotFoundError:
        package = "not installed"
    doc.h(2, "Code")
    doc.items([f"commit: {_commit(Path(__file__).resolve().parents[1])}", f"mdx-labelnoise {package}"])
    return doc.markdown(runs)


def _test_set(report: dict) -> str:
    ident = report.get("test_set") or {}
    return f"`{ident.get('folder', '?')}` ({ident.get('tracks', '?')} tracks, digest `{ident.get('digest', '?')}`)"


def _cell(value) -> str:
    if value is None:
        return "-"
    return f"`{value}`" if isinstance(value, str) else f"{value:g}" if isinstance(value, float) else str(value)


def write_card(runs: Path) -> Path:
    """Write ``RUNS/final.md`` (atomically) and return its path."""
    path = Path(runs) / CARD_FILE
    write_text(path, card(runs))
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labelnoise.model_card", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, help=f"a run folder holding {BAG_FILE}")
    args = parser.parse_args(argv)
    try:
        print(write_card(args.runs))
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
