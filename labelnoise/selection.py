"""Which stems the filter calls clean: volumes -> per-source thresholds -> a stem-pool dataset.

``filter.py`` measures the four outputs of the model run on every stem
(``volumes.jsonl``, see ``labelnoise.volumes``); this module turns them into
decisions and writes the dataset Part 2 trains on. ``auto_filter.py`` is its
command line; the demo and tests call ``select_clean_stems`` directly::

    from labelnoise.selection import select_clean_stems, read_selection
    sel = select_clean_stems("filtered360", 6, 200, "20", data="data/labelnoise")
    sel.thresholds, sel.kept, sel.metrics      # also in DEST/selection.json
    read_selection(sel.dest)                    # the same, read back

Where the volumes come from (``labelnoise.filter_volumes``): ``OUTPUTS/volumes.jsonl`` when it exists; else
the original code's WAVs ``OUTPUTS/{stem}/{track}/{source}.wav``, measured
with ``volume_db`` and cached in ``OUTPUTS/volumns_{suffix}.json`` (the
original's name and spelling; an entry is measured again when one of its four
files changed size or mtime). With WAVs only, a stem counts as silent when its
four outputs are equal and its own output is silent: the original filter wrote
a silent stem's own audio as all four outputs.

The threshold rule gives one threshold per source (labelnoise.thresholds:
a number of dB, ``auto``, ``otsu`` or a keep fraction), then the original's
decision ``margin > threshold`` (strict). ``auto`` then also leaves out a
stem whose leak into one other output stands out from its source's stems
(labelnoise.leaks).

Stems the filter marked silent are never kept (their four outputs are the
stem itself, so their margin is 0 and says nothing; with a threshold >= 0 this
is the original's decision too) and take no part in ``auto`` and
``keep_fraction``. Stems whose outputs are all at or below -80 dB are skipped
(no decision), as in the original.

Everything goes under DEST, the pool dataset root (training reads only
``DEST/train``): ``labelnoise_track_clean_predicted_by_{suffix}.json``
(``{stem: [track, ...]}``), ``train/{stem}/{track}.wav`` (copies, or hard links
with ``link=True``; a copy where the file systems differ; ``labelnoise.pool``), ``selection.json``
(settings, thresholds, counts, metrics) and the report (``filter_report``).
DEST must not overlap the source dataset or the filter's output folders. A
DEST made with other settings is refused; the same settings again skip the
files already there and remove pool files no longer selected. OUTPUTS made
by ``filter.py`` from another dataset, key or speed are refused
(``labelnoise.provenance``).
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from . import SOURCES
from . import filter_report, leaks, thresholds
from .atomic import write_json
from .config import base_default
from .filter_volumes import load_volumes
from .holdout import count as holdout_count, held_out
from .pool import write_pool
from .thresholds import Rule
from .provenance import check_outputs_origin
from .stem_record import Stem
from .files import (LABELS_FILE, SELECTION_FILE, VOLUMES_FILE, clean_stems_name, filter_outputs_dir, pool_dir,
                    suffix, volume_cache_name)
from .volumes import leaks_db, margin_db, window_margin

log = logging.getLogger(__name__)

VERSION = 1


def default_data() -> Path:
    """The dataset the filter ran on when none is given: ``data.root`` of configs/base.yaml."""
    return Path(base_default("data.root"))


@dataclass
class Selection:
    suffix: str
    rule: Rule
    outputs: Path
    data: Path
    dest: Path
    volumes_from: str                   # "volumes.jsonl" or "wav"
    stems: list[Stem]
    thresholds: dict[str, float]
    threshold_rules: dict[str, str]     # per source: which rule chose its threshold
    counts: dict[str, dict[str, int]]   # per source: total, silent, skipped, eligible, kept, missing
    kept: dict[str, list[str]]          # per source: the kept tracks
    skipped_outputs: dict[str, str] = field(default_factory=dict)  # output folder -> why it was not read
    labels: Path | None = None
    metrics: dict | None = None         # precision/recall of "clean" (filter_report.metrics)
    files: dict[str, int] = field(default_factory=dict)  # pool writes: copied, linked, existing, removed
    held_out: dict[str, list[str]] = field(default_factory=dict)  # held-out track -> its kept stems
    leak_tests: dict[str, str] = field(default_factory=dict)  # per source: what the auto rule's leak test did

    def settings(self) -> dict:
        return settings_of(self.suffix, self.rule, self.outputs, self.data, len(self.held_out))

    def to_json(self, complete: bool = True) -> dict:
        return {
            "version": VERSION, "complete": complete, "settings": self.settings(),
            "rule": self.rule.describe(), "thresholds": self.thresholds,
            "threshold_rules": self.threshold_rules, "counts": self.counts, "kept": self.kept,
            "volumes_from": self.volumes_from, "skipped_outputs": self.skipped_outputs,
            "labels": None if self.labels is None else str(self.labels),
            "metrics": self.metrics, "files": self.files,
            "clean_json": clean_stems_name(self.suffix),
            "held_out": self.held_out, "leak_tests": self.leak_tests,
        }


def settings_of(sfx: str, rule: Rule, outputs: Path, data: Path, holdout: int | str = 0) -> dict:
    """What must match for a re-run to reuse a destination."""
    out = {"suffix": sfx, "rule": rule.name, "value": rule.value,
           "outputs": str(Path(outputs).resolve()), "data": str(Path(data).resolve())}
    # One spelling per choice: 2 and "2" alike, none held out recorded as no key (as before the option).
    spec = str(holdout).strip().lower()
    if spec not in ("", "0"):
        out["holdout"] = spec if spec == "auto" else int(spec)
    return out


def read_selection(dest: str | os.PathLike) -> dict:
    path = Path(dest) / SELECTION_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: not found; run auto_filter.py first") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None


# ---------------------------------------------------------------- stems

def to_stems(records: list[dict], source_file: Path) -> list[Stem]:
    stems = []
    for rec in records:
        volumes = {k: float(v) for k, v in rec["volumes"].items()}
        if rec["stem"] not in volumes:
            raise ValueError(f"{source_file}: the record of {rec['track']}/{rec['stem']} has no "
                             f"{rec['stem']} output (outputs: {', '.join(volumes)})")
        whole = margin_db(volumes, rec["stem"])
        stems.append(Stem(rec["track"], rec["stem"], volumes=volumes, silent=bool(rec.get("silent", False)),
                          margin=whole, whole_margin=whole, window_margin=window_margin(rec),
                          leaks=leaks_db(rec)))
    return sorted(stems, key=lambda s: (s.stem, s.track))


# ---------------------------------------------------------------- thresholds

def choose_thresholds(stems: list[Stem], rule: Rule, sources=SOURCES) -> tuple[dict, dict]:
    """Per-source thresholds over the eligible stems' margins, and the words saying how each was chosen."""
    return thresholds.choose({s: [st.margin for st in stems if st.stem == s and st.eligible] for s in sources}, rule)


def decide_on_windows(stems: list[Stem]) -> None:
    """The ``auto`` rule decides on each stem's margin over its windows, where the filter recorded them."""
    for st in stems:
        if st.window_margin is not None and st.whole_margin is not None:
            st.margin = st.window_margin


def decide(stems: list[Stem], thresholds: dict[str, float]) -> None:
    """The original's rule (margin strictly above the threshold), silent stems never kept."""
    for st in stems:
        st.kept = st.eligible and st.margin > thresholds[st.stem]


# ---------------------------------------------------------------- paths and labels

def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_paths(data: Path, outputs: Path, dest: Path, sources=SOURCES) -> None:
    """DEST never overlaps the source dataset or the filter's stem folders."""
    data_r, dest_r, out_r = data.resolve(), dest.resolve(), outputs.resolve()
    if _inside(dest_r, data_r) or _inside(data_r, dest_r):
        raise ValueError(f"{dest}: the destination overlaps the source dataset {data}; "
                         "choose a --dest outside it (the source dataset is never written to)")
    if _inside(out_r, dest_r) or any(_inside(dest_r, out_r / s) for s in sources):
        raise ValueError(f"{dest}: the destination overlaps the filter's outputs {outputs}; choose another --dest")


def check_dest(dest: Path, settings: dict) -> dict | None:
    """The previous selection.json of DEST (None for a new or empty DEST); other settings are an error."""
    if not dest.exists():
        return None
    if not dest.is_dir():
        raise ValueError(f"{dest}: exists and is not a folder; choose another --dest")
    path = dest / SELECTION_FILE
    if not path.exists():
        if any(dest.iterdir()):
            raise ValueError(f"{dest}: exists, is not empty and has no {SELECTION_FILE} "
                             "(not made by auto_filter.py); choose another --dest")
        return None
    previous = read_selection(dest)
    old = previous.get("settings", {})
    differ = [k for k in settings if old.get(k) != settings[k]]
    if differ:
        what = "; ".join(f"{k}: {old.get(k)!r} there, {settings[k]!r} now" for k in differ)
        raise ValueError(f"{path}: {dest} was made with other settings ({what}); "
                         "choose another --dest or delete that folder")
    return previous


def load_labels(path: Path) -> dict:
    """noise_labels.json of labelnoise.synth: ``{track: {stem: {"noisy": bool, "kind": ...}}}``."""
    try:
        labels = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: labels file not found") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(labels, dict) or not all(isinstance(t, dict) for t in labels.values()):
        raise ValueError(f"{path}: expected {{track: {{stem: {{\"noisy\": bool, ...}}}}}}")
    for track, entries in labels.items():
        for stem, entry in entries.items():
            if not isinstance(entry, dict) or "noisy" not in entry:
                raise ValueError(f"{path}: the label of {track}/{stem} has no 'noisy' field")
    return labels


def dataset_stems(data: Path, sources=SOURCES) -> set[tuple[str, str]]:
    """(track, stem) of every stem file of a track-folder dataset."""
    if not data.is_dir():
        raise FileNotFoundError(f"{data}: dataset folder not found (give --data, the folder the filter ran on)")
    return {(t.name, s) for t in data.iterdir() if t.is_dir() for s in sources if (t / f"{s}.wav").is_file()}


# ---------------------------------------------------------------- the whole step

def select_clean_stems(model_name: str, key: int, speed: int, threshold: str | float | None = "20", *,
                       keep_fraction: float | None = None, outputs=None, data=None, dest=None,
                       labels=None, link: bool = False, dry_run: bool = False, report: bool = True,
                       progress: bool = True, sources=SOURCES, holdout: int | str = 0) -> Selection:
    """Read the filter's volumes, choose thresholds, decide, and write DEST (nothing with ``dry_run``).

    ``holdout``: that many tracks, or ``auto`` (labelnoise.holdout), stay out of the pool; the stems of
    theirs that are kept are listed in selection.json under ``held_out``.
    """
    sfx = suffix(model_name, key, speed)
    rule = Rule.parse(threshold, keep_fraction)
    data = Path(data) if data is not None else default_data()
    outputs = Path(outputs) if outputs is not None else filter_outputs_dir(sfx)
    dest = Path(dest) if dest is not None else pool_dir(data, sfx)
    if labels is None and (data / LABELS_FILE).is_file():
        labels = data / LABELS_FILE
    labels = None if labels is None else Path(labels)

    check_paths(data, outputs, dest, sources)
    present = dataset_stems(data, sources)
    check_outputs_origin(outputs, data, key, speed)
    settings = settings_of(sfx, rule, outputs, data, holdout)
    if not dry_run:
        check_dest(dest, settings)
    label_map = load_labels(labels) if labels is not None else {}

    # The cache is not written where it would land inside the source dataset.
    records, volumes_from, skipped_outputs = load_volumes(
        outputs, sfx, sources=sources, progress=progress,
        save_cache=not _inside(outputs.resolve(), data.resolve()))
    origin = outputs / (VOLUMES_FILE if volumes_from == VOLUMES_FILE else volume_cache_name(sfx))
    stems = [st for st in to_stems(records, origin) if st.stem in sources]
    if not stems:
        raise ValueError(f"{outputs}: no stem has been measured yet")
    for st in stems:
        st.label = label_map.get(st.track, {}).get(st.stem)
    if rule.name == "auto":
        decide_on_windows(stems)
    chosen, threshold_rules = choose_thresholds(stems, rule, sources)
    decide(stems, chosen)
    leak_tests = leaks.mark_outliers(stems, sources) if rule.name == "auto" else {}

    measured = {(st.track, st.stem) for st in stems}
    absent = sorted(measured - present)
    if absent:
        track, stem = absent[0]
        raise ValueError(f"{data / track / (stem + '.wav')}: measured by the filter but not in the dataset "
                         f"({len(absent)} such stems); is --data the folder the filter ran on?")
    names = sorted({t for t, _ in present})
    aside = set(held_out(names, holdout_count(holdout, len(names))))
    kept = {s: sorted(st.track for st in stems if st.stem == s and st.kept and st.track not in aside)
            for s in sources}
    counts = {}
    for s in sources:
        mine = [st for st in stems if st.stem == s]
        counts[s] = {"total": len(mine), "silent": sum(st.silent for st in mine),
                     "skipped": sum(st.margin is None and not st.silent for st in mine),
                     "eligible": sum(st.eligible for st in mine), "kept": len(kept[s]),
                     "held_out": sum(st.kept and st.track in aside for st in mine),
                     "missing": sum(1 for t, x in present if x == s and (t, x) not in measured)}
    sel = Selection(sfx, rule, outputs, data, dest, volumes_from, stems, chosen, threshold_rules,
                    counts, kept, skipped_outputs, labels,
                    filter_report.metrics(stems, sources, chosen) if label_map else None,
                    held_out={t: [st.stem for st in stems if st.track == t and st.kept] for t in sorted(aside)},
                    leak_tests=leak_tests)
    for s in sources:
        c = counts[s]
        log.info("%-7s kept %4d of %4d (threshold %.2f dB, %s%s; %d silent, %d all outputs quiet, %d not measured)",
                 s, c["kept"], c["total"], chosen[s], threshold_rules[s],
                 f"; {leak_tests[s]}" if s in leak_tests else "", c["silent"], c["skipped"], c["missing"])
        if c["kept"] == 0:
            log.warning("%s: no stem kept; a pool without %s cannot be trained on", s, s)
    if dry_run:
        return sel

    # selection.json first (complete: false): a killed run leaves a DEST that the same settings resume.
    write_json(dest / SELECTION_FILE, sel.to_json(complete=False))
    write_json(dest / clean_stems_name(sfx), kept)
    sel.files = write_pool(data, dest, kept, link=link, progress=progress)
    if report:
        filter_report.write_selection_report(sel)
    write_json(dest / SELECTION_FILE, sel.to_json(complete=True))
    log.info("pool %s: %d copied, %d linked, %d already there, %d removed", dest / "train",
             sel.files["copied"], sel.files["linked"], sel.files["existing"], sel.files["removed"])
    return sel
