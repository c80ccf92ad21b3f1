"""What a better filter would buy: joint360 trained again on pools chosen with the labels.

    .venv/bin/python bench/noise_robustness.py          # first: the method arms this reads
    .venv/bin/python bench/pool_oracle.py runs/bench/noise_robustness --test data/bench/noise_robustness/test

For each method arm under the folder given (a ``pipeline.json`` whose stages
hold ``joint360``), the first filter's selection (its ``selection.json``:
the filter run, the dataset, the held-out tracks) is decided again with the
labels, and joint360 is trained again with the pipeline's own command on:

- ``labels' best``: the thresholds of ``bench/rule_variants.py``'s last row
  (the highest judgeable precision at recall >= 0.8 any threshold on the
  margins reaches);
- ``every clean stem``: the stems the labels call clean and no other, the
  pool a perfect filter would make.

Both leave out the held-out tracks as the method's pool does. The pools
are folders of symbolic links to the dataset's stems, under ``--out`` in
a folder per method arm (its path under the folder given); nothing in the
dataset or the method's run is changed. Each model is scored
on ``--test`` (training and scoring write to ``log.txt`` next to the pool),
and the table sets both against the method's own joint360.
Running the command again reuses what is finished.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import rule_variants  # noqa: E402

from labelnoise import atomic  # noqa: E402
from labelnoise.files import DONE_FILE, MANIFEST_FILE, MODEL_FILE, SELECTION_FILE, TEST_SCORES_FILE  # noqa: E402
from labelnoise.pipeline import JOINT as STAGE  # noqa: E402

POOLS = {"labels_best": "labels' best", "clean": "every clean stem"}   # folder name -> the table's words
POOL_LIST = "pool.json"   # the stems a pool was made of: a finished run is reused only for the same pool


def method_runs(folder: Path) -> list[Path]:
    """Every pipeline run under ``folder`` that filtered and then trained joint360 on the pool (its folder
    holds pipeline.json; the bench's control arm pool_all trains joint360 without a filter)."""
    return [manifest.parent for manifest in sorted(folder.rglob(MANIFEST_FILE))
            if first_selection(stages_of(manifest.parent)) is not None]


def stages_of(run: Path) -> dict[str, dict]:
    return {s["name"]: s for s in json.loads((run / MANIFEST_FILE).read_text())["stages"]}


def first_selection(stages: dict[str, dict]) -> Path | None:
    """The pool joint360 trained on: the selection stage it ran after (None: no such stage in the run)."""
    after = stages[STAGE]["after"] if STAGE in stages else ()
    found = [stages[name]["selection"] for name in after if stages.get(name, {}).get("kind") == "select"]
    return Path(found[0]) if found else None


def pool_stems(selection: Path) -> tuple[Path, dict[str, list]]:
    """The dataset and the stems of each oracle pool, from a selection the method made (its folder)."""
    made = json.loads((selection / SELECTION_FILE).read_text())
    held = set(made.get("held_out") or {})
    sel = rule_variants.redecide(Path(made["settings"]["outputs"]), {})
    stems = [st for st in sel.stems if st.track not in held]
    method = [st for st in stems if st.kept]
    rule_variants.keep_labels_best(sel)
    return sel.data, {"method": method, "labels_best": [st for st in stems if st.kept],
                      "clean": [st for st in stems if st.label is not None and not st.noisy and st.eligible]}


def write_pool(root: Path, stems, data: Path) -> None:
    """``root/train/<source>/<track>.wav``, each a link to ``data/<track>/<source>.wav`` (the pool layout).

    A pool made before of other stems is an error: the run trained on it would be reused for the wrong
    pool."""
    listed = sorted(f"{st.track}/{st.stem}" for st in stems)
    record = root / POOL_LIST
    if record.is_file() and json.loads(record.read_text()) != listed:
        raise ValueError(f"{root}: made of other stems before (its {POOL_LIST}); remove {root.parent} to "
                         f"train on the pool the labels give now")
    for st in stems:
        link = root / "train" / st.stem / f"{st.track}.wav"
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            os.symlink((data / st.track / f"{st.stem}.wav").resolve(), link)
    atomic.write_text(record, json.dumps(listed) + "\n")   # a cut-off record would refuse the pool


def command_on(command: list[str], pool: Path, out: Path) -> list[str]:
    """The pipeline's joint360 command with another pool and run folder; ``python`` is this interpreter."""
    argv = [sys.executable if command[0] == "python" else command[0]]
    for arg in command[1:]:
        key = arg.split("=", 1)[0]
        argv.append({"data.root": f"data.root={pool}", "run.root": f"run.root={out}"}.get(key, arg))
    return argv


def counts(stems) -> str:
    return f"({len(stems)} stems, {sum(bool(st.noisy) for st in stems)} noisy)"


def method_scores(run: Path, stages: dict[str, dict]) -> Path:
    """The test scores of the method's own joint360, which the table sets the pools against."""
    scores = stages[STAGE].get("eval")
    if not scores or not Path(scores).is_file():
        raise FileNotFoundError(f"{run}: its {STAGE} was not scored on a test set ({scores or 'no --test'}); "
                                f"run its pipeline with --test first")
    return Path(scores)


def mean_sdr(sdr_json: Path) -> float:
    """The mean SDR over tracks and sources that evaluate.py's JSON holds."""
    return json.loads(sdr_json.read_text())["summary"]["mean"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path, help=f"searched for method arms ({MANIFEST_FILE} with {STAGE})")
    ap.add_argument("--test", type=Path, required=True, help="the clean test tracks to score on")
    ap.add_argument("--out", type=Path, default=Path("runs/bench/pool_oracle"), help="pools and runs")
    args = ap.parse_args(argv)
    runs = method_runs(args.folder)
    if not runs:
        print(f"pool_oracle: no method arm under {args.folder} ({MANIFEST_FILE} with {STAGE})", file=sys.stderr)
        return 2
    rows = []
    for run in runs:
        stages, arm_out = stages_of(run), args.out / run.relative_to(args.folder)
        try:
            method_sdr = mean_sdr(method_scores(run, stages))
            data, pools = pool_stems(first_selection(stages))
            for name in POOLS:
                write_pool(arm_out / name / "pool", pools[name], data)
        except (FileNotFoundError, ValueError) as exc:
            print(f"pool_oracle: {exc}", file=sys.stderr)
            return 2
        row = [str(run), f"{method_sdr:.2f} {counts(pools.pop('method'))}"]
        for name, stems in pools.items():
            here = arm_out / name
            model_dir = here / STAGE
            sdr = here / TEST_SCORES_FILE
            steps = [] if (model_dir / DONE_FILE).is_file() else [command_on(stages[STAGE]["command"], here / "pool", here)]
            if not sdr.is_file():
                steps.append([sys.executable, "evaluate.py", "--model", str(model_dir / MODEL_FILE), "--tracks",
                              str(args.test), "--json", str(sdr)])
            for command in steps:
                with open(here / "log.txt", "a") as log:
                    if subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode:
                        print(f"pool_oracle: {' '.join(command)} failed; its output is in {here / 'log.txt'}",
                              file=sys.stderr)
                        return 1
            row.append(f"{mean_sdr(sdr):.2f} {counts(stems)}")
            print(f"{run}: {POOLS[name]} {row[-1]}", flush=True)
        rows.append(row)
    head = ["method arm", "its joint360 (its pool)"] + [f"joint360 on {label}" for label in POOLS.values()]
    print("\n| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
