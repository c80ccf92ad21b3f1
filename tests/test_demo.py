"""The demo end to end at a reduced size (--quick), its report, re-runs, and the report's arithmetic."""
import base64
import contextlib
import io
import json
import re
from dataclasses import replace

import numpy as np
import pytest

from labelnoise import demo, pipeline, report, report_stats, runner, scoring

QUICK = ["--quick", "--tracks", "8", "--seconds", "3", "--test-tracks", "2"]
MODEL_STAGES = ["step1", "step2", "step3", "joint360", "vocals", "bass", "drums", "other_trunc", "other",
                "final (bag)", "baseline_step1", "baseline_step2", "baseline_step3",
                "clean_step1", "clean_step2", "clean_step3"]


def _run(args):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = demo.main(args)
    return code, out.getvalue()


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    args = QUICK + ["--out", str(root / "runs"), "--data", str(root / "data")]
    code, printed = _run(args)
    assert code == 0, printed
    return root, args, printed


def _table_rows(markdown: str, heading: str) -> dict[str, list[str]]:
    """Rows of the first table after ``heading``, by their first cell."""
    section = markdown.split(heading, 1)[1]
    table = next(block for block in section.split("\n\n") if block.startswith("| "))
    rows = {}
    for row in table.splitlines():
        if not row.startswith("|---"):
            cells = [c.strip() for c in row.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


def test_every_stage_prints_a_line_with_an_eta(quick_demo):
    _, _, printed = quick_demo
    running = re.findall(r"^\[\s*\d+/\d+\] (\S+)\s+running .*ETA \d+:\d\d; demo ~\d+:\d\d left$", printed, re.M)
    assert running[:3] == ["step1", "step2", "step3"]
    assert {"filter_pretrain3", "select_filtered360", "bag", "clean_step3"} <= set(running)
    assert len(running) == len(set(running)) == 20


def test_report_has_an_sdr_row_for_every_model(quick_demo):
    root = quick_demo[0]
    md = (root / "runs" / "report.md").read_text()
    rows = _table_rows(md, "## Test SDR after each stage")
    assert list(rows) == ["stage"] + MODEL_STAGES
    for name in MODEL_STAGES:
        cells = rows[name]
        # drums, bass, other, vocals, mean: numbers; a fine-tune's own source in bold.
        values = [float(c.strip("*")) for c in cells[1:6]]
        assert np.isfinite(values).all()
    assert rows["vocals"][4].startswith("**") and rows["baseline_step3"][6] == "+0.00"
    # The scores are cached, atomically, next to each model.
    cached = json.loads((root / "runs" / "step3" / scoring.EVAL_FILE).read_text())
    assert abs(cached["summary"]["mean"] - float(rows["step3"][5])) < 0.006
    assert (root / "runs" / scoring.BAG_EVAL_FILE).is_file()


def test_report_states_the_filters_precision_and_recall(quick_demo):
    root = quick_demo[0]
    md = (root / "runs" / "report.md").read_text()
    for heading, select in (("### Filter 1", "select_pretrain3"), ("### Filter 2", "select_filtered360")):
        rows = _table_rows(md, heading)
        assert {"drums", "bass", "other", "vocals", "**all**"} <= set(rows)
        sel = json.loads((root / "data" / f"labelnoise_clean_dataset_predicted_by_"
                                          f"{select.split('_', 1)[1]}_key6_speed200" / "selection.json").read_text())
        overall = sel["metrics"]["overall"]
        precision, recall = rows["**all**"][-2:]
        assert precision == f"{overall['precision']:.3f}" and recall == f"{overall['recall']:.3f}"
        # Each source's threshold, the reason its rule gave and what the leak test did, as the selection
        # recorded them.
        assert rows["drums"][0] == f"{sel['thresholds']['drums']:.2f}"
        assert rows["drums"][1] == f"{sel['threshold_rules']['drums']}; leak test: {sel['leak_tests']['drums']}"
        assert sel["rule"].startswith("auto")
        j, m = sel["metrics"]["judgeable"], sel["metrics"]
        assert (f"Without the {m['blind']} noisy stems that no filter judging one stem at a time can see"
                in md) and f"precision below {m['precision_ceiling']:.3f}" in md
        assert j["tp"] == overall["tp"] and j["fp"] <= overall["fp"]  # the blind stems are all noisy
    # The requirements table says, from the numbers, whether each holds.
    reqs = report.requirements(report.gather(root / "runs"))
    assert len(reqs) == 5 and all(r["value"] is not None for r in reqs)
    for r in reqs:
        assert f"| {r['what']} | {r['limit']} | {r['value']:.3f} | {'yes' if r['met'] else '**no**'} |" in md


def test_images_are_pngs_embedded_in_the_html(quick_demo):
    root = quick_demo[0]
    pngs = sorted((root / "runs" / report.FILES_DIR).glob("*.png"))
    assert [p.stem for p in pngs] == ["losses", "margins", "sdr", "spectrogram", "truncation"]
    for png in pngs:
        assert png.read_bytes()[:4] == b"\x89PNG"
    md = (root / "runs" / "report.md").read_text()
    for png in pngs:
        assert f"]({report.FILES_DIR}/{png.name})" in md
    page = (root / "runs" / "report.html").read_text()
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(embedded) == len(pngs)
    assert sorted(base64.b64decode(e) for e in embedded) == sorted(p.read_bytes() for p in pngs)
    assert "src=\"report_files" not in page


def test_a_rerun_skips_what_is_finished(quick_demo):
    root, args, _ = quick_demo
    models = sorted((root / "runs").glob("*/model.th"))
    before = {p: p.stat().st_mtime_ns for p in models}
    code, printed = _run(args)
    assert code == 0, printed
    assert "running" not in printed
    assert len(re.findall(r"done already", printed)) == 21  # the data and the 20 stages
    assert re.search(r"step3\s+done already; test SDR -?\d+\.\d\d dB \(cached\)", printed)
    assert {p: p.stat().st_mtime_ns for p in models} == before


def test_other_settings_are_refused(quick_demo, capsys):
    root, args, _ = quick_demo
    code = demo.main([*args, "--trunc-by", "absolute"])
    assert code == 1
    assert "other settings" in capsys.readouterr().err
    code = demo.main(["--quick", "--tracks", "9", "--seconds", "3", "--test-tracks", "2",
                      "--out", str(root / "runs_other"), "--data", str(root / "data")])
    assert code == 1
    assert "holds other data (tracks 8 where the demo asks for 9)" in capsys.readouterr().err


def test_a_run_folder_accepts_added_arms_only(tmp_path):
    layout = demo.layout_for(demo.Settings(), tmp_path, tmp_path / "data")
    (tmp_path / runner.MANIFEST).write_text(json.dumps({"settings": pipeline.layout_json(
        replace(layout, arms=())), "timings": {"step1": 3.0}}))
    # Arms add stages; the runs already there stay valid.
    assert runner.check_runs(tmp_path, layout) == {"step1": 3.0}
    with pytest.raises(pipeline.PipelineError, match=r"other settings \(threshold 'auto', now '20'\)"):
        runner.check_runs(tmp_path, demo.layout_for(demo.Settings(threshold="20"), tmp_path, tmp_path / "data"))


def test_a_folder_of_other_data_is_refused_and_left_alone(tmp_path, capsys):
    mine = tmp_path / "mine" / "train" / "song1"
    mine.mkdir(parents=True)
    (mine / "vocals.wav").write_bytes(b"my own recording")
    code = demo.main(["--quick", "--tracks", "2", "--seconds", "3", "--test-tracks", "1",
                      "--out", str(tmp_path / "runs"), "--data", str(tmp_path / "mine")])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert f"{tmp_path / 'mine' / 'train'}: holds other data (not a synthetic set this project made" in err
    assert "left as it is" in err and "python -m labelnoise.pipeline run all --data" in err
    assert "delete" not in err.lower()
    assert (mine / "vocals.wav").read_bytes() == b"my own recording"
    assert sorted(p.name for p in (tmp_path / "mine").rglob("*")) == ["song1", "train", "vocals.wav"]


def _scores(values):
    return {"scores": {f"t{i}": {"mean": v} for i, v in enumerate(values)}}


def test_verdicts_follow_the_numbers():
    base = _scores([1.0, 2.0, 3.0, 4.0])
    c = report_stats.compare(_scores([1.5, 2.6, 3.4, 4.5]), base)
    assert c["wins"] == 4 and abs(c["diff"] - 0.5) < 1e-9
    assert report_stats.verdict(c) == "raised"
    assert report_stats.verdict(report_stats.compare(base, _scores([1.5, 2.6, 3.4, 4.5]))) == "lowered"
    assert report_stats.verdict(report_stats.compare(_scores([2.0, 1.0, 4.0, 3.0]), base)) == "no clear difference"
    assert report_stats.verdict(report_stats.compare(_scores([5.0, 6.0]), _scores([1.0, 2.0]))) == "too few test tracks to tell"
    assert "**step3 raised SDR** over the baseline" in report_stats.comparison_text("step3", "the baseline", c)


def test_noisy_shares_weigh_steps_by_their_entries():
    config = {"optim": {"batch_size": 4, "accumulate": 1}}
    # Step 1 keeps 3 of 4 per source (4 dropped of 16), step 2 keeps 1 of 4 (12 dropped).
    records = [{"kind": "step", "kept": dict.fromkeys("dbov", 0.75), "noisy_share": {"dropped": 1.0, "kept": 0.0}},
               {"kind": "step", "kept": dict.fromkeys("dbov", 0.25), "noisy_share": {"dropped": 0.0, "kept": 0.5}},
               {"kind": "epoch", "kept": dict.fromkeys("dbov", 0.5), "noisy_share": {"dropped": 9.0, "kept": 9.0}}]
    s = report_stats.noisy_shares(records, config)
    assert s["dropped"] == pytest.approx(4 / 16) and s["kept"] == pytest.approx(2 / 16)
    assert s["ratio"] == pytest.approx(2.0) and s["kept_fraction"] == pytest.approx(0.5)
