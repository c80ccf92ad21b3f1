"""The trainer on CPU: it learns, writes its run dir, resumes exactly, chains by
path, saves and exits on preemption signals, skips non-finite steps, and runs
under torchrun with two gloo processes. Tiny model, 16 kHz, 1 s items."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import train as train_cli
from labelnoise.checkpoint import load_model
from labelnoise.config import load_config
from labelnoise.report_stats import noisy_share, noisy_shares
from labelnoise.synth import generate
from labelnoise.trainer import EXIT_DONE, EXIT_PREEMPTED, Trainer, TrainingError

ROOT = Path(__file__).resolve().parents[1]
STEP1 = ROOT / "configs" / "tiny" / "step1.yaml"
STEP2 = ROOT / "configs" / "tiny" / "step2.yaml"
JOINT = ROOT / "configs" / "tiny" / "joint360.yaml"
VOCALS = ROOT / "configs" / "tiny" / "vocals.yaml"


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    # 4 tracks x 3 s: 3 one-second items per track, 12 items, 3 steps of 4 per epoch.
    out = tmp_path_factory.mktemp("synth")
    generate(out, tracks=4, seconds=3.0, noise_rate=0.25, seed=0, samplerate=16000, progress=False)
    return out


def overrides(root: Path, data: Path, *extra: str) -> list[str]:
    return [f"run.root={root}", f"data.root={data}", *extra]


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def weights(path: Path) -> dict:
    return load_model(path).state_dict()


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_cli_trains_writes_run_dir_and_loss_falls(tmp_path, synth):
    # Augmentation off but flips, so 18 steps show the trend (the resume test runs all of it).
    args = overrides(tmp_path, synth, "optim.epochs=6", "optim.lr=1e-2", "augment.scale.proba=0",
                     "augment.remix.proba=0", "augment.repitch.proba=0", "augment.shift=0")
    assert train_cli.main([str(STEP1), *args]) == EXIT_DONE
    run = tmp_path / "step1"
    for name in ("config.yaml", "metrics.jsonl", "checkpoint.th", "model.th", "done"):
        assert (run / name).is_file(), name
    lines = metrics(run)
    steps = [m for m in lines if m["kind"] == "step"]
    epochs = [m for m in lines if m["kind"] == "epoch"]
    assert len(steps) == 6 * 3 and len(epochs) == 6
    assert set(steps[0]) >= {"loss", "loss_per_source", "kept", "lr", "items_per_s", "data_wait"}
    assert set(steps[0]["loss_per_source"]) == {"drums", "bass", "other", "vocals"}
    # l1_trunc with C = 0.7 on 4 items drops 1 of 4 per source.
    assert all(v == 0.75 for m in steps for v in m["kept"].values())
    assert epochs[-1]["loss"] < 0.8 * epochs[0]["loss"], [e["loss"] for e in epochs]
    model = load_model(run / "model.th")
    assert list(model.sources) == ["drums", "bass", "other", "vocals"]

    # A finished run returns at once and leaves its files alone.
    stamp = (run / "model.th").stat().st_mtime_ns
    assert train_cli.main([str(STEP1), *args]) == EXIT_DONE
    assert (run / "model.th").stat().st_mtime_ns == stamp
    assert len(metrics(run)) == len(lines)


def test_bad_config_exits_2(tmp_path, synth):
    assert train_cli.main([str(STEP1), *overrides(tmp_path, synth, "optim.lrr=1")]) == 2


def _run(cfg, stop_after=None) -> int:
    return Trainer(cfg).run(stop_after=stop_after)


def test_interrupted_run_resumes_to_the_same_weights(tmp_path, synth):
    # Gradient accumulation, repitch in the loader and every batch augmentation on;
    # 16 items / batch 2 / accumulate 2 = 4 steps per epoch, 2 epochs.
    extra = ("optim.batch_size=2", "optim.accumulate=2", "data.items_per_epoch=16", "optim.epochs=2",
             "augment.repitch.proba=0.5", "augment.remix.group_size=2", "optim.loss=l1_trunc",
             "optim.trunc_scope=running", "optim.trunc_window=8")
    whole = load_config(STEP1, overrides(tmp_path / "whole", synth, *extra))
    assert _run(whole) == EXIT_DONE
    parts = load_config(STEP1, overrides(tmp_path / "parts", synth, *extra))
    assert _run(parts, stop_after=5) == EXIT_PREEMPTED  # mid-way through epoch 1
    state = torch.load(tmp_path / "parts" / "step1" / "checkpoint.th", weights_only=True)
    assert (state["epoch"], state["step"], state["batch_in_epoch"]) == (1, 5, 2)
    assert not (tmp_path / "parts" / "step1" / "done").exists()
    assert _run(parts) == EXIT_DONE
    assert_same_weights(weights(tmp_path / "whole" / "step1" / "model.th"),
                        weights(tmp_path / "parts" / "step1" / "model.th"))
    # The resumed run cut metrics.jsonl back to its checkpoint: no step twice.
    steps = [m["step"] for m in metrics(tmp_path / "parts" / "step1") if m["kind"] == "step"]
    assert steps == list(range(1, 9))


def test_a_checkpoint_of_the_earlier_layout_resumes_to_the_same_weights(tmp_path, synth):
    # Earlier checkpoints held each rank's running-truncation window as "loss_history" (before the
    # loss had its own state_dict()), and no good_steps, start_step or EMA entries.
    extra = ("optim.batch_size=2", "optim.accumulate=2", "data.items_per_epoch=16", "optim.epochs=2",
             "augment.remix.group_size=2", "optim.trunc_scope=running", "optim.trunc_window=8")
    assert _run(load_config(STEP1, overrides(tmp_path / "whole", synth, *extra))) == EXIT_DONE
    parts = load_config(STEP1, overrides(tmp_path / "parts", synth, *extra))
    assert _run(parts, stop_after=5) == EXIT_PREEMPTED
    path = tmp_path / "parts" / "step1" / "checkpoint.th"
    state = torch.load(path, weights_only=True)
    for rank in state["ranks"]:
        rank["loss_history"] = rank.pop("loss")["history"]
        assert rank["loss_history"].shape == (8, 4)  # a full window, which the resumed steps need
    for key in ("good_steps", "start_step", "ema"):
        del state[key]
    torch.save(state, path)
    assert _run(parts) == EXIT_DONE
    assert_same_weights(weights(tmp_path / "whole" / "step1" / "model.th"),
                        weights(tmp_path / "parts" / "step1" / "model.th"))


def test_step2_starts_from_step1_weights_by_path(tmp_path, synth):
    args = overrides(tmp_path, synth, "optim.epochs=1")
    step2 = load_config(STEP2, args)
    assert step2["run"]["init_from"] == "step1"
    with pytest.raises(TrainingError, match="init_from"):
        Trainer(step2).state.restore()  # step1 has not run yet
    assert _run(load_config(STEP1, args)) == EXIT_DONE
    trainer = Trainer(step2)
    assert trainer.state.restore().startswith("init_from")
    assert_same_weights(weights(tmp_path / "step1" / "model.th"), trainer.model.state_dict())
    assert trainer.progress.epoch == 0 and trainer.progress.step == 0  # weights only
    assert not trainer.optimizer.state


def test_resume_from_takes_weights_optimizer_and_epoch(tmp_path, synth):
    args = overrides(tmp_path, synth)
    ft = load_config(STEP1, [*args, "run.name=ft", "run.resume_from=step1", "optim.epochs=3", "optim.lr=1e-4"])
    assert _run(load_config(STEP1, [*args, "optim.epochs=2"]), stop_after=1) == EXIT_PREEMPTED
    with pytest.raises(TrainingError, match="has not finished"):
        Trainer(ft).state.restore()  # a fine-tune continues a finished run only
    assert _run(load_config(STEP1, [*args, "optim.epochs=2"])) == EXIT_DONE
    trainer = Trainer(ft)
    assert trainer.state.restore().startswith("resume_from")
    source = torch.load(tmp_path / "step1" / "checkpoint.th", weights_only=True)
    assert (trainer.progress.epoch, trainer.progress.step) == (2, 6)
    assert trainer.optimizer.param_groups[0]["lr"] == 1e-4  # the config's, not the old run's
    saved = source["optimizer"]["state"]
    for i, state in trainer.optimizer.state_dict()["state"].items():
        assert torch.equal(state["exp_avg"], saved[i]["exp_avg"])
    assert _run(ft) == EXIT_DONE
    steps = [m for m in metrics(tmp_path / "ft") if m["kind"] == "step"]
    assert [m["epoch"] for m in steps] == [2, 2, 2]  # one more epoch


def test_noisy_share_of_dropped_and_kept_stems(tmp_path, synth):
    # One epoch is every item once (12 items: 3 per track); Remix only moves stems within a batch,
    # so the dropped and kept shares must add up to the set's own noisy fraction.
    cfg = load_config(STEP1, overrides(tmp_path, synth, "optim.epochs=1"))
    assert Trainer(cfg).run() == EXIT_DONE
    epoch = [m for m in metrics(tmp_path / "step1") if m["kind"] == "epoch"][0]
    labels = json.loads((synth / "noise_labels.json").read_text())
    noisy = sum(lab["noisy"] for track in labels.values() for lab in track.values()) / (4 * len(labels))
    assert 0 < noisy < 1
    assert "noisy_share" not in epoch  # counts are written, shares derived
    share = noisy_share(epoch)
    assert 0.25 * share["dropped"] + 0.75 * share["kept"] == pytest.approx(noisy)
    # The counts behind the shares: 12 items x 4 stems, a quarter of them dropped.
    counts = epoch["noisy_entries"]
    assert (counts["dropped"], counts["kept"]) == (12, 36)
    assert counts["noisy_dropped"] + counts["noisy_kept"] == round(noisy * 48)
    assert share == {"dropped": counts["noisy_dropped"] / 12, "kept": counts["noisy_kept"] / 36}
    # A report pools the steps' counts; records without counts (older runs) give the same shares.
    records = metrics(tmp_path / "step1")
    pooled = noisy_shares(records, cfg)
    assert pooled["totals"] == [counts["noisy_dropped"], 12, counts["noisy_kept"], 36]
    # Runs from before the counts wrote the shares alone.
    old = [{**{k: v for k, v in r.items() if k != "noisy_entries"}, "noisy_share": noisy_share(r)}
           if r["kind"] == "step" else r for r in records]
    legacy = noisy_shares(old, cfg)
    assert legacy["totals"] == pytest.approx(pooled["totals"])


def test_validation_keeps_best_and_ema_is_written(tmp_path, synth):
    cfg = load_config(STEP1, overrides(tmp_path, synth, "optim.epochs=2", f"valid.tracks={synth}",
                                       "valid.every=1", "optim.ema=0.5"))
    assert Trainer(cfg).run() == EXIT_DONE
    run = tmp_path / "step1"
    valid = [m for m in metrics(run) if m["kind"] == "valid"]
    assert [m["epoch"] for m in valid] == [1, 2]
    assert all(m["summary"]["tracks"] == 4 for m in valid)
    best = torch.load(run / "best.th", weights_only=True)
    assert best["sdr"] == max(m["sdr"] for m in valid)
    ema, final = weights(run / "model_ema.th"), weights(run / "model.th")
    assert ema.keys() == final.keys()
    assert any(not torch.equal(ema[k], final[k]) for k in ema)


@pytest.fixture(scope="module")
def pool(synth, tmp_path_factory) -> Path:
    """The synthetic stems as a Part 2 stem pool: train/<source>/<track>.wav."""
    out = tmp_path_factory.mktemp("pool")
    for track in sorted(p for p in synth.iterdir() if p.is_dir()):
        for source in ("drums", "bass", "other", "vocals"):
            (out / "train" / source).mkdir(parents=True, exist_ok=True)
            shutil.copy(track / f"{source}.wav", out / "train" / source / f"{track.name}.wav")
    return out


def test_part2_joint_then_a_finetune_continues_its_optimizer_and_epochs(tmp_path, pool):
    # tiny joint360: pool mode, P2 features, 16 items / batch 4 / accumulate 2 = 2 steps x 2 epochs;
    # the vocals vocoder repitch runs on the batch. tiny vocals: resume_from joint360, epochs 3 = one more.
    args = overrides(tmp_path, pool, "augment.repitch.backend=vocoder", "augment.repitch.proba=0.5")
    assert _run(load_config(JOINT, args)) == EXIT_DONE
    vocals = load_config(VOCALS, args)
    assert vocals["run"]["resume_from"] == "joint360" and vocals["optim"]["weights"] == [0, 0, 0, 1]
    trainer = Trainer(vocals)
    assert trainer.state.restore().startswith("resume_from")
    joint = torch.load(tmp_path / "joint360" / "checkpoint.th", weights_only=True)
    assert (trainer.progress.epoch, trainer.progress.step) == (joint["epoch"], joint["step"]) == (2, 4)
    for i, state in trainer.optimizer.state_dict()["state"].items():
        assert torch.equal(state["exp_avg_sq"], joint["optimizer"]["state"][i]["exp_avg_sq"])
    assert _run(vocals) == EXIT_DONE
    steps = [m for m in metrics(tmp_path / "vocals") if m["kind"] == "step"]
    assert [(m["epoch"], m["step"]) for m in steps] == [(2, 5), (2, 6)]
    # Only vocals is weighted; the loss is its loss.
    assert all(m["loss"] == pytest.approx(m["loss_per_source"]["vocals"]) for m in steps)


def _poison(model, calls: set, value: float) -> None:
    """Make the model's estimate non-finite on the forward calls numbered in ``calls`` (1-based)."""
    count = [0]

    def hook(module, inputs, output):
        count[0] += 1
        return output * value if count[0] in calls else output

    model.register_forward_hook(hook)


def test_non_finite_steps_are_skipped_then_stop_the_run(tmp_path, synth):
    cfg = load_config(STEP1, overrides(tmp_path, synth, "optim.epochs=1", "train.max_bad_steps=2"))
    trainer = Trainer(cfg)
    _poison(trainer.model, {2}, float("nan"))  # the second step only
    assert trainer.run() == EXIT_DONE
    steps = [m for m in metrics(tmp_path / "step1") if m["kind"] == "step"]
    assert [m["skipped"] for m in steps] == [False, True, False]
    assert steps[-1]["bad_steps"] == 1 and trainer.progress.bad_steps == 1

    cfg = load_config(STEP1, overrides(tmp_path / "inf", synth, "optim.epochs=1", "train.max_bad_steps=2"))
    trainer = Trainer(cfg)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    _poison(trainer.model, {1, 2, 3}, float("inf"))
    with pytest.raises(TrainingError, match="2 steps in a row"):
        trainer.run()
    assert_same_weights(before, trainer.model.state_dict())  # no bad step touched the weights


def _env() -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def test_kill_9_then_the_same_command_resumes_to_the_same_weights(tmp_path, synth):
    # A checkpoint after about every step (save_every_minutes=0.001); both runs in subprocesses
    # with the same thread count, so the arithmetic is the same.
    def command(root):
        return [sys.executable, str(ROOT / "train.py"), str(STEP1),
                *overrides(root, synth, "optim.epochs=3", "run.save_every_minutes=0.001")]

    subprocess.run(command(tmp_path / "whole"), cwd=tmp_path, env=_env(), capture_output=True, check=True,
                   timeout=120)
    run = tmp_path / "killed" / "step1"
    proc = subprocess.Popen(command(tmp_path / "killed"), cwd=tmp_path, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    try:
        while not ((run / "metrics.jsonl").is_file() and len(metrics_lines(run)) >= 3):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        assert proc.poll() is None, "finished before it could be killed"
        proc.kill()  # SIGKILL: no handler runs
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (run / "done").exists()
    result = subprocess.run(command(tmp_path / "killed"), cwd=tmp_path, env=_env(), capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "starting from its own checkpoint" in result.stderr
    assert_same_weights(weights(tmp_path / "whole" / "step1" / "model.th"), weights(run / "model.th"))
    steps = [m["step"] for m in metrics(run) if m["kind"] == "step"]
    assert steps == list(range(1, 10))


def metrics_lines(run: Path) -> list[str]:
    return [line for line in (run / "metrics.jsonl").read_text().splitlines() if line.endswith("}")]


def signal_after_first_step(cmd, cwd, run, signum):
    """Start ``cmd``, send ``signum`` once its first metrics line exists; (process, its output)."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    try:
        while not ((run / "metrics.jsonl").is_file() and (run / "metrics.jsonl").stat().st_size):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read().decode()
            time.sleep(0.1)
        proc.send_signal(signum)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc, out.decode()


@pytest.mark.parametrize("signum", [signal.SIGUSR1, signal.SIGTERM])
def test_signal_saves_and_exits_3(tmp_path, synth, signum):
    cmd = [sys.executable, str(ROOT / "train.py"), str(STEP1),
           *overrides(tmp_path, synth, "optim.epochs=1000", "run.save_every_minutes=1000")]
    run = tmp_path / "step1"
    proc, out = signal_after_first_step(cmd, tmp_path, run, signum)
    assert proc.returncode == EXIT_PREEMPTED, out
    state = torch.load(run / "checkpoint.th", weights_only=True)
    assert state["step"] >= 1
    assert not (run / "done").exists()


def _torchrun(tmp_path, synth, *extra) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            str(ROOT / "train.py"), str(STEP1),
            *overrides(tmp_path, synth, "optim.batch_size=2", "augment.remix.group_size=2",
                       "optim.accumulate=2", "data.items_per_epoch=16", *extra)]


def test_torchrun_two_cpu_processes(tmp_path, synth):
    cmd = _torchrun(tmp_path, synth, "optim.epochs=2", "optim.trunc_scope=global")
    result = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    run = tmp_path / "step1"
    assert (run / "done").is_file() and (run / "model.th").is_file()
    steps = [m for m in metrics(run) if m["kind"] == "step"]
    # 16 items shared by 2 ranks: 8 each = 2 steps of 2 items x 2 accumulation steps per epoch.
    assert len(steps) == 4
    # Global truncation over 2 x 2 items with C = 0.7 keeps 3 of 4: per rank 1 or 2 of 2, 0.75 on average.
    assert all(abs(v - 0.75) < 1e-6 for m in steps for v in m["kept"].values())
    assert "[rank 1] INFO" not in result.stderr  # only rank 0 logs


def test_torchrun_sigterm_saves_every_rank_then_resumes(tmp_path, synth):
    # torchrun forwards SIGTERM to its workers, which save and exit 3 (torchrun itself then exits 1).
    run = tmp_path / "step1"
    _, out = signal_after_first_step(_torchrun(tmp_path, synth, "optim.epochs=1000"), tmp_path, run,
                                     signal.SIGTERM)
    assert "exiting with 3" in out
    state = torch.load(run / "checkpoint.th", weights_only=True)
    assert state["world_size"] == 2 and len(state["ranks"]) == 2 and state["step"] >= 1
    # The same command (with an epoch limit it can reach) continues from there.
    epochs = state["epoch"] + 1
    result = subprocess.run(_torchrun(tmp_path, synth, f"optim.epochs={epochs}"), cwd=tmp_path, env=_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "starting from its own checkpoint" in result.stderr
    steps = [m["step"] for m in metrics(run) if m["kind"] == "step"]
    assert steps == list(range(1, 2 * epochs + 1))
