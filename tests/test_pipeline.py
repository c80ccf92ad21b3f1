"""The stage order: dependencies, commands, presets, the bag, and the local runner."""
import shlex
import sys
from dataclasses import replace

import pytest
import torch

from labelnoise import SOURCES, pipeline
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
    assert pipeline.select_from(chain, "joint360")[0].name == "joint360"
    with pytest.raises(pipeline.PipelineError, match="unknown stage 'nope'.*step3"):
        pipeline.select_from(pipeline.stages("all"), "nope")


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


def test_bag_takes_each_source_from_its_own_model(tmp_path):
    with pytest.raises(pipeline.PipelineError, match="drums.*not found"):
        pipeline.write_bag(tmp_path)
    for name in SOURCES:
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.th").write_bytes(b"")
    path = pipeline.write_bag(tmp_path)
    loaded = []

    def loader(p):
        loaded.append(p.parent.name)
        return _Constant(len(loaded))

    bag = load_bag(path, loader=loader)
    assert loaded == list(SOURCES)
    out = apply(bag, torch.zeros(1, 2, 16000))
    # Source k comes from model k alone (model k outputs the value k + 1).
    assert out[0, :, 0, 0].tolist() == [1.0, 2.0, 3.0, 4.0]


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


def test_run_local_skips_finished_stages_and_stops_at_a_failure(tmp_path, capsys):
    def stage(name, code, done):
        marker = tmp_path / done
        script = f"import pathlib, sys; pathlib.Path({str(marker)!r}).touch(); sys.exit({code})"
        return pipeline.Stage(name, "train", (), ("-c", script), str(marker))

    (tmp_path / "a.done").touch()
    chain = [stage("a", 1, "a.done"), stage("b", 0, "b.done"), stage("c", 5, "c.done"),
             stage("d", 0, "d.done")]
    with pytest.raises(pipeline.PipelineError, match="stage c exited with code 5"):
        pipeline.run_local(chain, python=sys.executable)
    out = capsys.readouterr().out
    assert "a: done already" in out and "b: finished" in out
    assert (tmp_path / "b.done").exists() and not (tmp_path / "d.done").exists()


def test_a_stage_that_exits_0_without_its_marker_is_an_error(tmp_path):
    stage = pipeline.Stage("x", "filter", (), ("-c", "pass"), str(tmp_path / "never"))
    with pytest.raises(pipeline.PipelineError, match="exited 0 but .*never is missing"):
        pipeline.run_stage(stage, python=sys.executable)
