"""bench/pool_oracle.py: the pools it makes with the labels, and the command it trains them with."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))
import pool_oracle  # noqa: E402
from test_rule_variants import _filter_run  # noqa: E402


def test_pools_hold_what_the_labels_say_and_leave_the_held_out_tracks_out(tmp_path):
    # bass: a clean population around +3 dB, t10 a swap at -15 dB, t12 a misgroup whose margin (+8 dB)
    # looks clean to any threshold that keeps most clean stems; t03 is held out.
    spread = np.linspace(-6.0, 6.0, 20)
    margin = {10: -15.0, 12: 8.0}
    outputs = _filter_run(tmp_path, "noisy", lambda i: margin.get(i, 3.0 + spread[i]), lambda i: -20.0,
                          {(10, "bass"): {"noisy": True, "kind": "swap"},
                           (12, "bass"): {"noisy": True, "kind": "misgroup"}})
    selection = tmp_path / "pool"
    selection.mkdir()
    (selection / "selection.json").write_text(json.dumps(
        {"settings": {"outputs": str(outputs)}, "held_out": {"t03": ["drums", "bass", "other", "vocals"]}}))
    data, pools = pool_oracle.pool_stems(selection)
    assert data == (tmp_path / "noisy" / "data").resolve()
    clean = {(st.track, st.stem) for st in pools["clean"]}
    assert len(clean) == 19 * 4 - 2 and ("t10", "bass") not in clean and ("t12", "bass") not in clean
    assert not any(track == "t03" for track, _ in clean)
    # The method's pool: what the auto rule kept (the swap is far below the floor), less t03.
    method = {(st.track, st.stem) for st in pools["method"]}
    assert len(method) == 19 * 4 - 1 and ("t12", "bass") in method and ("t10", "bass") not in method
    best = {(st.track, st.stem) for st in pools["labels_best"]}
    assert ("t10", "bass") not in best and not any(track == "t03" for track, _ in best)

    pool_oracle.write_pool(tmp_path / "out" / "pool", pools["clean"], data)
    pool_oracle.write_pool(tmp_path / "out" / "pool", pools["clean"], data)   # again: the links are there
    link = tmp_path / "out" / "pool" / "train" / "bass" / "t00.wav"
    assert link.is_symlink() and link.resolve() == data / "t00" / "bass.wav"
    assert len(list((tmp_path / "out" / "pool" / "train" / "bass").iterdir())) == 17
    # Another set of stems into the same folder: an error, so a model trained on the old pool is not reused.
    with pytest.raises(ValueError, match="made of other stems before"):
        pool_oracle.write_pool(tmp_path / "out" / "pool", pools["labels_best"], data)


def test_the_command_is_the_pipelines_with_another_pool_and_run_folder():
    command = ["python", "train.py", "configs/demo/joint360.yaml", "run.root=runs/m", "data.root=runs/m/pools/p",
               "run.seed=2", "--device", "cpu"]
    argv = pool_oracle.command_on(command, Path("/o/pool"), Path("/o"))
    assert argv[0] == sys.executable
    assert argv[1:] == ["train.py", "configs/demo/joint360.yaml", "run.root=/o", "data.root=/o/pool", "run.seed=2",
                        "--device", "cpu"]


def test_the_pool_is_the_selection_joint360_ran_after(tmp_path):
    run = tmp_path / "method"
    run.mkdir()
    stages = [{"name": "filter_a", "kind": "filter", "after": []},
              {"name": "select_a", "kind": "select", "after": ["filter_a"], "selection": "pools/a"},
              {"name": pool_oracle.STAGE, "kind": "train", "after": ["select_a"]}]
    (run / "pipeline.json").write_text(json.dumps({"stages": stages}))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "pipeline.json").write_text(json.dumps({"stages": stages[:2]}))
    # joint360 without its selection stage in the run (the bench's pool_all arm): not a method arm.
    (tmp_path / "control").mkdir()
    (tmp_path / "control" / "pipeline.json").write_text(json.dumps({"stages": stages[2:]}))
    assert pool_oracle.method_runs(tmp_path) == [run]
    assert pool_oracle.first_selection(pool_oracle.stages_of(run)) == Path("pools/a")


def test_a_method_arm_never_scored_is_a_one_line_error_before_any_training(tmp_path, capsys):
    run = tmp_path / "runs" / "method"
    run.mkdir(parents=True)
    stages = [{"name": "select_a", "kind": "select", "after": [], "selection": str(tmp_path / "nowhere")},
              {"name": pool_oracle.STAGE, "kind": "train", "after": ["select_a"], "eval": None,
               "command": ["python", "train.py"]}]
    (run / "pipeline.json").write_text(json.dumps({"stages": stages}))
    out = tmp_path / "oracle"
    assert pool_oracle.main([str(tmp_path / "runs"), "--test", str(tmp_path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(run) in err and "was not scored on a test set" in err and "--test" in err
    assert not out.exists()
    # A scores file named but gone (the run was moved or cleaned): the same error, naming the file.
    stages[1]["eval"] = str(run / "joint360" / "test_sdr.json")
    (run / "pipeline.json").write_text(json.dumps({"stages": stages}))
    assert pool_oracle.main([str(tmp_path / "runs"), "--test", str(tmp_path), "--out", str(out)]) == 2
    assert "joint360/test_sdr.json" in capsys.readouterr().err
