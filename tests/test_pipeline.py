"""The stage order: dependencies, commands, presets, the bag, and the local runner."""
import json
import re
import shlex
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from labelnoise import SOURCES, final_bag, pipeline, report_stats, runner
from labelnoise.yamlio import read_mapping
from labelnoise.bag import load_bag
from labelnoise.config import load_config
from labelnoise.inference import apply


def test_every_stage_comes_after_what_it_needs():
    chain = pipeline.stages("all")
    seen = set()
    for stage in chain:
        assert set(stage.after) <= seen, stage.name
        seen.add(stage.name)
    assert [s.name for s in chain[:3]] == ["step1", "step2", "step3"]
    assert chain[-1].name == "bag"


def test_part2_chains_the_filters_and_finetunes():
    by_name = {s.name: s for s in pipeline.stages("part2")}
    assert by_name["filter_pretrain3"].after == ("step3",)
    assert by_name["joint360"].after == ("select_pretrain3",)
    assert by_name["other"].after == ("other_trunc",)
    assert set(by_name["bag"].after) == {"vocals", "bass", "drums", "other"}
    # The first filter overlap-adds, the second runs plain normalised chunks.
    assert "overlap" in by_name["filter_pretrain3"].argv
    assert "plain" in by_name["filter_filtered360"].argv
    # joint360 trains on the pool the first selection writes, the fine-tunes on the second's.
    first = pipeline.pool_dir("pretrain3", pipeline.Layout())
    assert f"data.root={first}" in by_name["joint360"].argv
    assert by_name["select_pretrain3"].done == f"{first}/selection.json"
    second = pipeline.pool_dir("filtered360", pipeline.Layout())
    for name in ("vocals", "bass", "drums", "other_trunc", "other"):
        assert f"data.root={second}" in by_name[name].argv


def test_presets_point_at_configs_that_load():
    for preset in ("full", "tiny"):
        layout = pipeline.PRESETS[preset]
        for stage in pipeline.stages("all", layout):
            if stage.kind == "train":
                cfg = load_config(stage.argv[1], stage.argv[2:])
                assert cfg["run"]["root"] == layout.runs


def test_full_preset_uses_the_seeds_names():
    by_name = {s.name: s for s in pipeline.stages("part2")}
    assert by_name["select_pretrain3"].argv[:5] == ("auto_filter.py", "pretrain3", "6", "200", "20")
    assert "data/labelnoise_clean_dataset_predicted_by_pretrain3_key6_speed200" in by_name["select_pretrain3"].argv
    keep = pipeline.stages("part2", replace(pipeline.Layout(), threshold="keep=0.6"))
    select = next(s for s in keep if s.name == "select_pretrain3")
    assert select.argv[4:7] == ("20", "--keep-fraction", "0.6")


def test_parallel_stages_go_through_torchrun():
    step1 = pipeline.stages("part1")[0]
    assert step1.command("py", 1) == ["py", *step1.argv]
    assert step1.command("py", 8)[:5] == ["py", "-m", "torch.distributed.run", "--standalone",
                                          "--nproc_per_node=8"]
    bag = pipeline.stages("part2")[-1]
    assert bag.command("py", 8) == ["py", *bag.argv]


def test_from_starts_later_and_rejects_unknown_names():
    chain = pipeline.stages("part2")
    assert pipeline.stages_between(chain, "joint360")[0].name == "joint360"
    with pytest.raises(pipeline.PipelineError, match="unknown stage 'nope'.*step3"):
        pipeline.stages_between(pipeline.stages("all"), "nope")


def test_tsv_listing_round_trips(capsys):
    assert pipeline.main(["list", "part2", "--format", "tsv", "--runs", "/tmp/r x"]) == 0
    lines = capsys.readouterr().out.strip().split("\n")
    stages = pipeline.stages("part2", replace(pipeline.Layout(), runs="/tmp/r x"))
    assert len(lines) == len(stages)
    for line, stage in zip(lines, stages):
        name, kind, after, parallel, done, argv = line.split("\t")
        assert (name, kind, done) == (stage.name, stage.kind, stage.done)
        assert after == (",".join(stage.after) or "-")
        assert tuple(shlex.split(argv)) == stage.argv


def _per_track(*values):
    return {f"track_{i}": v for i, v in enumerate(values)}


def test_the_bag_keeps_joint360_unless_a_candidate_proves_a_gain(tmp_path):
    # Hand-built held-out scores per track: the drums fine-tune beats joint360 on every track, the bass
    # fine-tune is below it, other_trunc and other both beat it on other (other_trunc more), vocals has
    # no score but joint360's.
    flat = _per_track(3.0, 3.0, 3.0, 3.0)
    scores = {"joint360": {"drums": flat, "bass": _per_track(4.0, 4.0, 4.0, 4.0),
                           "other": _per_track(1.0, 1.0, 1.0, 1.0), "vocals": _per_track(5.0, 5.0, 5.0, 5.0)},
              "drums": {"drums": _per_track(3.5, 3.6, 3.4, 3.5)}, "bass": {"bass": _per_track(3.9, 3.9, 3.8, 4.0)},
              "other_trunc": {"other": _per_track(1.8, 1.7, 1.9, 1.8)},
              "other": {"other": _per_track(1.2, 1.3, 1.1, 1.2)}, "vocals": {"vocals": {}}}
    choices = final_bag.pick(scores)
    assert {s: c["model"] for s, c in choices.items()} == \
        {"drums": "drums", "bass": "joint360", "other": "other_trunc", "vocals": "joint360"}
    assert choices["other"]["why"] == ("beat joint360 on the held-out tracks by +0.80 ± 0.04 dB over 4 track(s) "
                                       "(other 1.20, other_trunc 1.80, joint360 1.00)")
    assert choices["bass"]["why"].startswith("no other model beat it by more than 2 standard errors on the "
                                             "held-out tracks (closest: bass -0.10 ± 0.04 dB over 4 track(s)")
    # A larger mean gain that swings from track to track proves nothing; one track proves nothing.
    noisy = {**scores, "drums": {"drums": _per_track(4.5, 2.1, 4.2, 2.4)}}
    assert report_stats.paired(noisy["drums"]["drums"], flat)["diff"] == pytest.approx(0.3)
    assert final_bag.pick(noisy)["drums"]["model"] == "joint360"
    one = {"joint360": {"drums": {"track_0": 3.0}}, "drums": {"drums": {"track_0": 9.0}}}
    assert final_bag.pick(one)["drums"]["model"] == "joint360"
    gain = report_stats.paired({"track_0": 9.0}, {"track_0": 3.0})
    assert (gain["diff"], gain["se"], gain["n"]) == (6.0, None, 1)
    # Every model of Part 2 is a candidate for every source: other_trunc's drums beat the drums fine-tune's,
    # the vocals fine-tune's bass beats joint360's; the own fine-tune is listed first and wins a tie.
    wider = {**scores, "other_trunc": {**scores["other_trunc"], "drums": _per_track(3.8, 3.9, 3.7, 3.8)},
             "vocals": {"bass": _per_track(4.5, 4.6, 4.4, 4.5)}}
    assert {s: c["model"] for s, c in final_bag.pick(wider).items()} == \
        {"drums": "other_trunc", "bass": "vocals", "other": "other_trunc", "vocals": "joint360"}
    tie = {**wider, "other_trunc": {"drums": scores["drums"]["drums"]}}
    assert final_bag.pick(tie)["drums"]["model"] == "drums"
    assert all(names[0] == pipeline.BAG_SOURCES[s] and names[-1] == pipeline.JOINT
               and set(names) == {pipeline.JOINT, "other", *pipeline.FINETUNES}
               for s, names in pipeline.BAG_CANDIDATES.items())
    # Without joint360's score the best mean; without any score the source's own fine-tune.
    assert final_bag.pick({"drums": {"drums": flat}, "bass": {"drums": _per_track(4.0)}})["drums"]["model"] == "bass"
    assert final_bag.pick({})["vocals"] == {"model": "vocals",
                                           "why": "no held-out reference for this source: its fine-tune"}
    thin = final_bag.thin_pools({"counts": {"vocals": {"kept": 9, "total": 24}, "bass": {"kept": 20, "total": 24}}})
    assert thin == {"vocals": "its fine-tune trained on a thin pool: 9 of 24 vocals stems kept"}

    with pytest.raises(pipeline.PipelineError, match="drums.*not found"):
        final_bag.write(tmp_path, choices, thin)
    for name in ("drums", "joint360", "other_trunc"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.th").write_bytes(b"")
    path = final_bag.write(tmp_path, choices, {"bass": "thin"})
    spec = read_mapping(path)
    assert spec["models"] == ["drums/model.th", "joint360/model.th", "other_trunc/model.th"]
    assert spec["weights"] == [[1, 0, 0, 0], [0, 1, 0, 1], [0, 0, 1, 0]]
    assert spec["choices"]["bass"] == {"model": "joint360", "why": choices["bass"]["why"], "warning": "thin"}
    loaded = []

    def loader(p):
        loaded.append(p.parent.name)
        return _Constant(len(loaded))

    bag = load_bag(path, loader=loader)
    assert loaded == ["drums", "joint360", "other_trunc"]
    out = apply(bag, torch.zeros(1, 2, 16000))
    # drums from model 1, bass and vocals from model 2 (joint360), other from model 3.
    assert out[0, :, 0, 0].tolist() == [1.0, 2.0, 3.0, 2.0]


class _Constant(torch.nn.Module):
    sources = list(SOURCES)
    samplerate = 16000
    audio_channels = 2
    segment = 1.0

    def __init__(self, value):
        super().__init__()
        self.value = float(value)

    def forward(self, mix):
        return torch.full((mix.shape[0], 4, *mix.shape[1:]), self.value)


def _fake_stage(tmp_path, name, code, after=()):
    marker = tmp_path / f"{name}.done"
    script = f"import pathlib, sys; pathlib.Path({str(marker)!r}).touch(); sys.exit({code})"
    return pipeline.Stage(name, "select", tuple(after), ("-c", script), str(marker))


def test_a_near_silent_stem_is_no_reference_for_the_bag(tmp_path):
    # Two held-out tracks; in t1 the bass recording went into another stem, leaving bass.wav 40 dB down.
    import numpy as np
    import soundfile as sf
    rng = np.random.default_rng(0)
    for track, bass_gain in (("t0", 1.0), ("t1", 0.01)):
        (tmp_path / track).mkdir()
        for s in SOURCES:
            gain = bass_gain if s == "bass" else 1.0
            sf.write(str(tmp_path / track / f"{s}.wav"), gain * rng.uniform(-0.2, 0.2, (8000, 2)), 8000)
    held = {"t0": list(SOURCES), "t1": ["bass", "drums"]}
    assert final_bag.audible(tmp_path, held) == {"t0": list(SOURCES), "t1": ["drums"]}
    assert final_bag.audible(tmp_path) == {"t0": list(SOURCES), "t1": ["drums", "other", "vocals"]}
    refs = final_bag.reference_set({"held_out": {**held, "t2": []}}, tmp_path, None, "cpu")
    assert refs.keep == {"t0": list(SOURCES), "t1": ["drums"]} and refs.names == ["t0", "t1"]
    assert final_bag.reference_set({"held_out": {"t1": ["bass"]}}, tmp_path, None, "cpu") is None
    assert final_bag.reference_set(None, tmp_path, tmp_path, "cpu").keep == final_bag.audible(tmp_path)


def test_the_runner_skips_finished_stages_and_stops_at_a_failure(tmp_path, capsys):
    layout = pipeline.Layout(runs=str(tmp_path / "runs"), data=str(tmp_path / "none"))
    (tmp_path / "a.done").touch()
    chain = [_fake_stage(tmp_path, "a", 1), _fake_stage(tmp_path, "b", 0, ["a"]), _fake_stage(tmp_path, "c", 5),
             _fake_stage(tmp_path, "d", 0)]
    with pytest.raises(pipeline.PipelineError, match="stage c exited with code 5 .*logs/c.log"):
        runner.run(runner.plan(chain, layout), layout, python=sys.executable)
    out = capsys.readouterr().out
    assert re.search(r"\] a\s+done already$", out, re.M) and re.search(r"\] b\s+finished in 0:0\d$", out, re.M)
    assert (tmp_path / "b.done").exists() and not (tmp_path / "d.done").exists()
    manifest = json.loads((tmp_path / "runs" / runner.MANIFEST).read_text())
    assert [s["name"] for s in manifest["stages"]] == ["a", "b", "c", "d"] and "b" in manifest["timings"]


def test_a_stage_that_exits_0_without_its_marker_is_an_error(tmp_path):
    stage = pipeline.Stage("x", "filter", (), ("-c", "pass"), str(tmp_path / "never"))
    with pytest.raises(pipeline.PipelineError, match="exited 0 but .*never is missing"):
        runner.run_stage(stage, python=sys.executable)


def test_scoped_overrides_reach_their_stages_only():
    preset = pipeline.PRESETS["demo"]
    layout = replace(preset, arms=("baseline",), overrides=(*preset.overrides, "optim.lr=0.01", "step1:optim.lr=0.02",
                                                            "part2:run.seed=7", "baseline:run.seed=8"))
    by_name = {s.name: s for s in pipeline.stages("all", layout)}

    def after_data(name):  # the overrides a stage's command carries, in order
        argv = by_name[name].argv
        return [a for a in argv[3:] if not a.startswith(("data.root=", "run.name=", "run.init_from="))]

    assert after_data("step1") == ["optim.trunc_by=relative", "optim.lr=0.01", "optim.lr=0.02"]
    assert after_data("step2") == ["optim.trunc_by=relative", "optim.lr=0.01"]
    assert after_data("joint360") == ["optim.lr=0.01", "run.seed=7"]
    assert after_data("vocals") == ["optim.lr=0.01", "run.seed=7"]
    # An arm's stage keeps the budget of the step it repeats (step1:, part1:), then its own plain L1.
    assert after_data("baseline_step1") == ["optim.trunc_by=relative", "optim.lr=0.01", "optim.lr=0.02",
                                            "run.seed=8", "optim.loss=l1"]
    assert load_config(by_name["baseline_step1"].argv[1], list(by_name["baseline_step1"].argv[2:]))["optim"]["loss"] \
        == "l1"
    for bad, words in (("nope:optim.lr=1", "unknown scope 'nope'"), ("step1:optim.lr", "expected [SCOPE:]a.b=value")):
        with pytest.raises(pipeline.PipelineError, match=re.escape(words)):
            pipeline.stages("all", replace(layout, overrides=(bad,)))


def test_arms_follow_part1_and_the_clean_arm_needs_its_data():
    layout = replace(pipeline.PRESETS["demo"], arms=("baseline", "clean"), clean="data/demo/clean")
    part1 = pipeline.stages("part1", layout)
    assert [s.name for s in part1] == [*pipeline.PART1, *(f"{a}_{s}" for a in ("baseline", "clean")
                                                          for s in pipeline.PART1)]
    clean = {s.name: s for s in part1}["clean_step2"]
    assert "data.root=data/demo/clean" in clean.argv and clean.after == ("clean_step1",)
    assert "run.init_from=clean_step1" in clean.argv and clean.group == "clean" and clean.repeats == "step2"
    assert all(s.part == "part2" for s in pipeline.stages("part2", layout))
    with pytest.raises(pipeline.PipelineError, match="give --clean FOLDER"):
        pipeline.stages("all", replace(layout, clean=None))
    with pytest.raises(pipeline.PipelineError, match="unknown arm 'other'"):
        pipeline.stages("all", replace(layout, arms=("other",)))


def test_epochs_scale_keeps_finetunes_past_their_parent():
    def epochs(chain, name):
        argv = next(s for s in chain if s.name == name).argv
        return int(next(a for a in argv if a.startswith("optim.epochs=")).split("=")[1])

    layout = replace(pipeline.PRESETS["demo"], arms=("baseline",), epochs_scale=0.01)
    chain = pipeline.stages("all", layout)
    assert epochs(chain, "step1") == 1 and epochs(chain, "joint360") == 1 and epochs(chain, "baseline_step3") == 1
    assert epochs(chain, "vocals") == 2 and epochs(chain, "other_trunc") == 2 and epochs(chain, "other") == 3
    jobs = {j.name: j for j in runner.plan(chain, layout)}
    assert jobs["vocals"].epochs == 1  # what it runs: one epoch past joint360
    # At scale 1 the commands are the configs' own: nothing is added.
    assert not any(a.startswith("optim.epochs=") for s in pipeline.stages("all") for a in s.argv)
    full = {j.name: j for j in runner.plan(pipeline.stages("all", replace(layout, epochs_scale=1.0)), layout)}
    # The arms run exactly the budget of steps 1-3.
    steps = sum(full[s].steps for s in pipeline.PART1)
    assert steps > 0 and sum(full[f"baseline_{s}"].steps for s in pipeline.PART1) == steps
    assert "--epochs-scale 0: must be > 0" in _main_error(["list", "all", "--epochs-scale", "0"])


def _main_error(argv) -> str:
    import contextlib
    import io
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert pipeline.main(argv) == 1
    return err.getvalue()


def test_the_demo_preset_is_what_the_demo_runs(tmp_path):
    from labelnoise import demo
    preset = pipeline.PRESETS["demo"]
    layout = demo.layout_for(demo.Settings(), Path(preset.runs), Path(preset.pools))
    assert replace(layout, clean=None, arms=()) == preset
    assert [s.argv for s in pipeline.stages("all", preset)] == \
        [s.argv for s in pipeline.stages("all", layout) if s.group == "method"]
    step1 = {s.name: s for s in pipeline.stages("all", preset)}["step1"]
    assert load_config(step1.argv[1], list(step1.argv[2:]))["optim"]["trunc_by"] == "relative"


def test_help_shows_the_commands(capsys):
    with pytest.raises(SystemExit):
        pipeline.main(["--help"])
    out = capsys.readouterr().out
    assert "python -m labelnoise.pipeline run all --data TRAIN --clean CLEAN --test TEST --arms baseline,clean" in out
