"""The one runner on data that is not the demo's: its own folders, a separate test set, both arms, the report."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from labelnoise import final_bag, pipeline, report_stats, runner
from labelnoise.cli.pipeline import add_chain_arguments, layout_from
from labelnoise.scoring import reference_scores
from labelnoise.yamlio import read_mapping
from labelnoise.synth import PARAMS_FILE, generate

REPO = Path(__file__).resolve().parents[1]


def _pipeline(*args, timeout=1800):
    return subprocess.run([sys.executable, "-m", "labelnoise.pipeline", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def user_data(tmp_path_factory):
    """Stems as a user would have them: track folders with noise labels, but not a set the demo made."""
    root = tmp_path_factory.mktemp("user")
    generate(root / "mine", tracks=6, seconds=3, noise_rate=0.3, seed=3, samplerate=16000, progress=False)
    generate(root / "mine_clean", tracks=6, seconds=3, noise_rate=0.0, seed=3, samplerate=16000, progress=False)
    generate(root / "held_out", tracks=3, seconds=3, noise_rate=0.0, seed=9, samplerate=16000, progress=False)
    for name in ("mine", "mine_clean", "held_out"):
        (root / name / PARAMS_FILE).unlink()  # no generator settings: the report must not rely on them
    return root


def _run_args(root: Path, runs: Path, *extra):
    return ["run", "all", "--preset", "demo", "--quick", "--data", str(root / "mine"),
            "--clean", str(root / "mine_clean"), "--test", str(root / "held_out"), "--runs", str(runs),
            "--pools", str(root / "pools"), "--arms", "baseline,clean", "--threshold", "keep=0.5",
            "--holdout", "2", "--device", "cpu", "--threads", "1", "--report", *extra]


@pytest.fixture(scope="module")
def full_run(user_data):
    runs = user_data / "runs"
    done = _pipeline(*_run_args(user_data, runs))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return user_data, runs, done.stdout


def _table(markdown: str, heading: str) -> dict[str, list[str]]:
    section = markdown.split(heading, 1)[1]
    table = next(block for block in section.split("\n\n") if block.startswith("| "))
    rows = {}
    for row in table.splitlines():
        if not row.startswith("|---"):
            cells = [c.strip() for c in row.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


def test_runner_scores_every_model_and_reports_both_arms(full_run):
    root, runs, printed = full_run
    chain = pipeline.stages("all", layout_from(_namespace(root, runs)))
    assert [s.name for s in chain][-6:] == [f"{arm}_{step}" for arm in ("baseline", "clean")
                                            for step in pipeline.PART1]
    running = re.findall(r"^\[\s*\d+/(\d+)\] (\S+)\s+running", printed, re.M)
    assert [name for _, name in running] == [s.name for s in chain]
    md = (runs / "report.md").read_text()
    assert md.startswith(f"# The method on {root / 'mine'}")
    rows = _table(md, "## Test SDR after each stage")
    models = [s.name for s in chain if s.kind == "train"]
    assert list(rows) == ["stage", *models[:9], "final (bag)", *models[9:]]
    evals = {s["name"]: s["eval"] for s in json.loads((runs / runner.MANIFEST).read_text())["stages"]}
    for name, cells in rows.items():
        if name == "stage":
            continue
        cached = json.loads(Path(evals["bag" if name == "final (bag)" else name]).read_text())
        assert cells[5] == f"{cached['summary']['mean']:.2f}"  # the mean column, from the cached scores
        assert cached["test_set"]["tracks"] == 3
    assert rows["baseline_step3"][6] == "+0.00"
    assert "plain L1 on the clean twin of the tracks (step3's schedule)" in rows["clean_step3"][0]
    # Both arms are compared, with the numbers behind each sentence.
    said = {line.split(": ", 1)[0]: line for line in md.splitlines() if line.startswith("- ")}
    assert "clean-data training" in said["- What the label noise costs"] and "the baseline" in said["- Truncation"]
    assert re.search(r"[+-]\d\.\d\d dB \(standard error \d\.\d\d over 3 test tracks", said["- Truncation"])
    filters = _table(md, "### Filter 1")
    assert filters["**all**"][2].endswith("/ 24") and "keep fraction 0.5" in filters["drums"][1]
    assert "synthetic" not in json.loads((runs / runner.MANIFEST).read_text())


def test_the_bag_chose_each_source_on_the_held_out_tracks(full_run):
    root, runs, _ = full_run
    second = pipeline.pool_dir(pipeline.FILTERS[1][0], layout_from(_namespace(root, runs)))
    held = json.loads((Path(second) / "selection.json").read_text())["held_out"]
    assert len(held) == 2 and not any((Path(second) / "train" / s / f"{t}.wav").exists()
                                      for t, stems in held.items() for s in stems)
    bag = read_mapping(runs / pipeline.BAG_FILE)
    md = (runs / "report.md").read_text()
    rows = _table(md, "## The final bag's choice")
    for source, names in pipeline.BAG_CANDIDATES.items():
        choice = bag["choices"][source]
        assert choice["model"] in names
        if any(source in stems for stems in held.values()):  # scored: joint360 unless another proved a gain
            reports = {n: json.loads((runs / n / final_bag.HELDOUT_FILE).read_text()) for n in names}
            scores = {n: reference_scores(r, held)[source] for n, r in reports.items()}
            assert all(r["references"][source]["mean"] == pytest.approx(sum(scores[n].values()) / len(scores[n]))
                       for n, r in reports.items())
            gains = {n: report_stats.paired(scores[n], scores[pipeline.JOINT]) for n in names}
            proven = {n for n, c in gains.items()
                      if n != pipeline.JOINT and c and c["se"] is not None and c["diff"] > 2 * c["se"]}
            assert choice["model"] == (max(proven, key=lambda n: gains[n]["diff"]) if proven else pipeline.JOINT)
        assert rows[source][0] == f"**{choice['model']}**" and rows[source][-2] == choice["why"]
    assert f"{choice['model']}/model.th" in bag["models"]
    # The model card beside the bag: its choices and the bag's test score, as the files hold them.
    card = (runs / "final.md").read_text()
    final = json.loads((runs / "final_test_sdr.json").read_text())
    assert f"challenge SDR {final['summary']['mean']:.2f} dB mean" in card
    for source in pipeline.BAG_CANDIDATES:
        assert bag["choices"][source]["why"] in card


def test_a_rerun_skips_everything_and_the_report_reads_the_folder(full_run):
    root, runs, _ = full_run
    again = _pipeline(*_run_args(root, runs))
    assert again.returncode == 0, again.stderr
    lines = [line for line in again.stdout.splitlines() if line.startswith("[")]
    assert len(lines) == 21 and all("done already" in line for line in lines[:20])
    assert all("(cached)" in line for line in lines[:20] if "SDR" in line)
    report = subprocess.run([sys.executable, "-m", "labelnoise.report", str(runs)], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr
    assert report.stdout.split() == [str(runs / "report.md"), str(runs / "report.html")]


def test_other_settings_are_refused_by_name(full_run):
    root, runs, _ = full_run
    other = _pipeline(*_run_args(root, runs, "--set", "part1:optim.trunc_by=absolute"), timeout=300)
    assert other.returncode == 1
    assert "made with other settings (overrides" in other.stderr and "delete" not in other.stderr
    assert "Traceback" not in other.stderr


def test_without_a_test_set_the_report_says_so(user_data):
    runs = user_data / "runs_untested"
    done = _pipeline("run", "part1", "--preset", "demo", "--quick", "--data", str(user_data / "mine"),
                     "--runs", str(runs), "--device", "cpu", "--report")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "no test set (--test): nothing is scored" in done.stdout
    md = (runs / "report.md").read_text()
    assert "No test set was given (`--test`), so no model was scored: this report has no SDR tables." in md
    assert "| stage | model |" not in md  # no SDR table
    assert "## Loss truncation in steps 1-3" in md and "### Filter 1" in md and "Not run yet." in md


def _namespace(root: Path, runs: Path):
    parser = __import__("argparse").ArgumentParser()
    add_chain_arguments(parser)
    return parser.parse_args(["--preset", "demo", "--quick", "--data", str(root / "mine"), "--clean",
                              str(root / "mine_clean"), "--runs", str(runs), "--pools", str(root / "pools"),
                              "--arms", "baseline,clean", "--threshold", "keep=0.5", "--holdout", "2"])
