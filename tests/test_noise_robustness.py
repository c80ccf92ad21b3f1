"""bench/noise_robustness.py at a reduced size: it runs, writes its table, JSON and plot, and re-runs skip."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "noise_robustness.py"
# Two optimizer steps of 4 items per stage: checks the machinery, learns nothing.
SMALL = ["--render", "sampled", "--tracks", "6", "--seconds", "3", "--test-tracks", "2", "--seeds", "1",
         "--rates", "0.5@swap=3", "--arms", "clean,plain,filtered,kuielab,method", "--epochs-scale", "0.01",
         "--steps-per-epoch", "2", "--set", "optim.batch_size=4", "--threshold", "keep=0.5"]
SLUG = "r0.5_swap3"


def _bench_module():
    spec = importlib.util.spec_from_file_location("noise_robustness", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def _run(tmp: Path, extra=()):
    # The stage commands name configs/ and filter.py relative to the repository root, as the demo does.
    done = subprocess.run([sys.executable, str(SCRIPT), *SMALL, "--out", str(tmp / "runs"),
                           "--data", str(tmp / "data"), *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=2400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("noise_robustness")
    return tmp, _run(tmp)


def test_table_has_every_arm_and_the_filter(small_run):
    tmp, printed = small_run
    md = (tmp / "runs" / "results.md").read_text()
    assert md in printed  # the same table is printed
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| (")}
    # (d) needs (c)'s runs, so (c) is trained and shown as well.
    assert list(rows) == ["(a) clean", "(b) plain", "(c) trunc", "(d) filtered", "(e) kuielab", "(m) method"]
    assert "Filter of arm (d)" in md and "precision" in md
    # Truncation arms report the noisy shares; plain L1 arms drop nothing.
    assert rows["(c) trunc"].count("%") >= 2 and "x)" in rows["(c) trunc"]
    assert "x)" not in rows["(b) plain"]


def test_the_method_arm_runs_to_the_bag_and_reports_it(small_run):
    tmp, printed = small_run
    result = json.loads((tmp / "runs" / "seed1" / SLUG / "method" / "result.json").read_text())
    bag = json.loads((tmp / "runs" / "seed1" / SLUG / "method" / "final_test_sdr.json").read_text())
    assert result["sdr"]["mean"] == bag["summary"]["mean"]
    m = result["method"]
    assert set(m["sdr"]) == {"step3", "joint360", "bag"} and set(m["choices"]) == {"drums", "bass", "other", "vocals"}
    assert set(m["bag_vs_joint360"]) == {"drums", "bass", "other", "vocals"}
    assert "second" in result["filter"] and 0 <= result["filter"]["second"]["precision"] <= 1
    md = (tmp / "runs" / "results.md").read_text()
    assert "Arm (m), per seed" in md and "| 1 | " in md.split("Arm (m), per seed", 1)[1]


def test_results_json_and_plot(small_run):
    tmp, _ = small_run
    data = json.loads((tmp / "runs" / "results.json").read_text())
    arms = data["summary"][SLUG]["arms"]
    assert set(arms) == {"clean", "plain", "trunc", "filtered", "kuielab", "method"}
    for row in arms.values():
        assert set(row["sdr"]) == {"drums", "bass", "other", "vocals", "mean"}
    assert arms["plain"]["vs_plain"] is None and arms["trunc"]["vs_plain"]["n"] == 1
    f = arms["filtered"]["filter"]
    assert 0 <= f["precision"] <= 1 and 0 <= f["recall"] <= 1
    assert 0 <= arms["kuielab"]["shares"]["dropped"] <= 1
    png = (tmp / "runs" / "results.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000


def test_every_model_sees_the_same_items(small_run):
    tmp, _ = small_run
    from labelnoise.yamlio import read_mapping

    def items(run: Path) -> int:
        cfg = read_mapping(run / "config.yaml")
        return cfg["optim"]["epochs"] * cfg["data"]["items_per_epoch"]

    seed = tmp / "runs" / "seed1"
    budget = {arm: sum(items(seed / SLUG / arm / step) for step in ("step1", "step2", "step3"))
              for arm in ("plain", "trunc", "kuielab")}
    budget["clean"] = sum(items(seed / "clean" / "clean" / s) for s in ("step1", "step2", "step3"))
    budget["filtered"] = items(seed / SLUG / "trunc" / "joint360")
    budget["method"] = sum(items(seed / SLUG / "method" / step) for step in ("step1", "step2", "step3"))
    assert len(set(budget.values())) == 1, budget
    kuielab = read_mapping(seed / SLUG / "kuielab" / "step2" / "config.yaml")["optim"]
    assert (kuielab["loss"], kuielab["trunc_ratio"]) == ("mse_trunc", 0.4)
    joint = read_mapping(seed / SLUG / "trunc" / "joint360" / "config.yaml")
    assert joint["data"]["mode"] == "pool" and "labelnoise_clean_dataset_predicted_by" in joint["data"]["root"]


def test_rerun_skips_finished_arms_and_refuses_other_settings(small_run):
    tmp, _ = small_run
    printed = _run(tmp)
    lines = [line for line in printed.splitlines() if line.startswith("[")]
    assert len(lines) == 6 and all("done already" in line for line in lines)
    bad = subprocess.run([sys.executable, str(SCRIPT), *SMALL, "--tracks", "5", "--out", str(tmp / "runs"),
                          "--data", str(tmp / "data")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "other settings" in bad.stderr


def test_noise_settings_parse():
    bench = _bench_module()
    noise = bench.Noise.parse("0.5@swap=3,other_song=3")
    assert (noise.rate, noise.slug) == (0.5, "r0.5_swap3_other_song3")
    assert bench.Noise.parse("0.3").slug == "r0.3"
    for bad in ("x", "0", "1.5", "0.5@nosuch=2"):
        with pytest.raises(ValueError):
            bench.Noise.parse(bad)


def test_training_seeds_move_apart_from_the_data_seeds(tmp_path):
    bench = _bench_module()
    plain = bench.arms("absolute")["plain"]
    for offset, expected in ((0, "run.seed=2"), (100, "run.seed=102")):
        settings = bench.Settings(train_seed=offset)
        layouts = (bench.layout_of(plain, settings, 2, tmp_path / "runs", tmp_path / "data", tmp_path / "pools"),
                   bench.method_layout(settings, 2, tmp_path / "runs", tmp_path / "data", tmp_path / "pools"))
        for layout in layouts:
            seeds = [o for o in layout.overrides if o.startswith("run.seed=")]
            assert seeds[-1] == expected, layout.overrides
    # A folder written before the setting existed holds results of its default, and of nothing else.
    settings = json.loads(json.dumps(bench.dataclasses.asdict(bench.Settings())))
    del settings["train_seed"]
    (tmp_path / bench.SETTINGS_FILE).write_text(json.dumps(settings))
    bench.check_settings(tmp_path, bench.Settings())
    with pytest.raises(bench.pipeline.PipelineError, match="train_seed"):
        bench.check_settings(tmp_path, bench.Settings(train_seed=5))
