"""slurm/ on a real one-node Slurm cluster started for this module (tests/slurm/cluster.sh).

    .venv/bin/python -m pytest tests/test_slurm.py -q
    make slurm-test

The cluster tests need root and either slurm-wlm + munge installed or apt-get
to install them; elsewhere they are skipped with the reason. Every job runs on
the CPU: GPUS=0, two gloo processes per stage (NPROC=2), one CPU per job, the
tiny configs at 16 kHz. The chains are submitted together at the first
cluster test and checked one by one, so that the two cores stay busy.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from labelnoise import SOURCES, pipeline
from labelnoise.synth import generate
from labelnoise.yamlio import read_mapping

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "tests" / "slurm" / "cluster.sh"
# Far more than any job here needs; a hung chain fails the test instead of hanging it.
CHAIN_TIMEOUT = 900


def _load_submit():
    spec = importlib.util.spec_from_file_location("slurm_submit", REPO / "slurm" / "submit.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


submit = _load_submit()


# ---------------------------------------------------------------- without a cluster
def test_submit_py_reads_the_settings_as_common_sh_does():
    # The values themselves come from slurm/defaults.env for both (tests/test_one_definition.py).
    conf = submit.settings({"CONSTRAINT": "", "GPUS": "0"})
    assert conf["CONSTRAINT"] == "" and conf["GPUS"] == "0" and conf["NODES"] == "1"
    assert submit.settings({})["CONSTRAINT"] == "a100"
    assert submit.settings({"SLURM_GPUS_ON_NODE": "4"})["GPUS"] == "4"
    assert submit.settings({"PARTITION": "gpu"})["CPU_PARTITION"] == "gpu"
    with pytest.raises(submit.SubmitError, match="GPUS='eight'"):
        submit.settings({"GPUS": "eight"})


def test_time_limits_in_minutes():
    assert [submit.minutes(t) for t in ("30", "24:00:00", "04:00:30", "1-00:00:00", "2-12", "10:30")] == \
        [30, 1440, 241, 1440, 3600, 11]
    with pytest.raises(submit.SubmitError, match="TIME_LIMIT='soon'"):
        submit.minutes("soon")


def test_submit_py_chooses_parts_and_stages_in_pipeline_order():
    layout = pipeline.PRESETS["tiny"]
    assert [s.name for s in submit.choose(["part1"], layout, "step2")] == ["step2", "step3"]
    assert [s.name for s in submit.choose(["other", "vocals"], layout, None)] == ["vocals", "other"]
    with pytest.raises(submit.SubmitError, match="unknown stage.*nope"):
        submit.choose(["nope"], layout, None)


def _apt_install(package: str, command: str) -> None:
    if shutil.which(command) is None and os.geteuid() == 0 and shutil.which("apt-get"):
        apt = ["apt-get", "-o", "DPkg::Lock::Timeout=300"]
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = apt + ["install", "-y", "--no-install-recommends", package]
        if subprocess.run(install, capture_output=True, env=env).returncode != 0:
            subprocess.run(apt + ["update"], capture_output=True, env=env)
            subprocess.run(install, capture_output=True, env=env)
    if shutil.which(command) is None:
        pytest.skip(f"{command} is not installed and cannot be installed here (needs root and apt-get)")


def test_shell_scripts_pass_shellcheck():
    _apt_install("shellcheck", "shellcheck")
    scripts = sorted(str(p.relative_to(REPO)) for p in (REPO / "slurm").iterdir() if p.suffix in (".sh", ".sbatch"))
    scripts.append("tests/slurm/cluster.sh")
    out = subprocess.run(["shellcheck", *scripts], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("slurm_data") / "tracks"
    generate(root, tracks=4, seconds=4, noise_rate=0.3, seed=0, samplerate=16000, progress=False)
    return root


def _wait_for(predicate, timeout: float, what: str, poll: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _has_step_record(run_dir: Path) -> bool:
    metrics = run_dir / "metrics.jsonl"
    return metrics.exists() and '"kind": "step"' in metrics.read_text()


def test_stage_run_checkpoint_saves_and_the_requeued_run_resumes(tmp_path, tiny_data, capfd, monkeypatch):
    """submitit's hook: checkpoint() makes the torchrun workers save, and returns the stage to run again."""
    layout = pipeline.Layout(configs="configs/tiny", data=str(tiny_data), runs=str(tmp_path / "runs"),
                             overrides=("optim.epochs=4",))
    stage = pipeline.stages("part1", layout)[0]
    run = submit.StageRun(stage, nproc=2, wait_seconds=120)
    outcome = {}

    def call():
        try:
            outcome["result"] = run()
        except submit.SubmitError as exc:
            outcome["error"] = exc

    monkeypatch.chdir(REPO)  # the stage's command names train.py and configs/ from the repository root
    thread = threading.Thread(target=call)
    thread.start()
    run_dir = tmp_path / "runs" / "step1"
    _wait_for(lambda: _has_step_record(run_dir), 300, "the first training step")
    delayed = run.checkpoint()
    thread.join(60)
    assert "error" in outcome, outcome  # stopped before the end: the stage did not finish
    assert (run_dir / "checkpoint.th").exists() and not (run_dir / "done").exists()
    assert isinstance(delayed.function, submit.StageRun) and delayed.function.stage == stage
    assert "_proc" not in delayed.function.__getstate__()
    result = delayed.result()
    assert result["status"] == "finished" and (run_dir / "done").exists() and (run_dir / "model.th").exists()
    err = capfd.readouterr().err
    assert "got SIGUSR1" in err
    assert "starting from its own checkpoint" in err
    assert "done (4 epochs, 8 steps" in err


# ---------------------------------------------------------------- the cluster
def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    # A killed daemon whose parent is not an init lingers as a zombie: it is gone all the same.
    return not re.search(r"^State:\s*Z", status, flags=re.M)


@pytest.fixture(scope="module")
def cluster():
    """A one-node Slurm for this module; stopped at the end, every daemon by its PID file."""
    folder = tempfile.mkdtemp(prefix="labelnoise-slurm-", dir="/tmp")
    start = subprocess.run(["bash", str(CLUSTER), "start", folder], capture_output=True, text=True)
    if start.returncode == 2:
        shutil.rmtree(folder, ignore_errors=True)
        reason = start.stderr.strip().splitlines()[-1] if start.stderr.strip() else "cannot start a cluster"
        print(f"test_slurm: skipped: {reason}", file=sys.stderr)
        pytest.skip(reason)
    pid_files = [Path(folder, "slurmctld.pid"), Path(folder, "slurmd.pid"), Path(folder, "munge", "munged.pid")]
    try:
        assert start.returncode == 0, f"cluster start failed:\n{start.stdout}\n{start.stderr}"
        yield {"SLURM_CONF": f"{folder}/slurm.conf", "folder": folder}
    finally:
        pids = [int(p.read_text()) for p in pid_files if p.exists()]
        stop = subprocess.run(["bash", str(CLUSTER), "stop", folder], capture_output=True, text=True)
        left = [pid for pid in pids if _alive(pid)]
        shutil.rmtree(folder, ignore_errors=True)
        assert stop.returncode == 0, stop.stderr
        assert not left, f"daemons still running after stop: {left}"


@pytest.fixture(scope="module")
def slurm_env(cluster):
    """What every command here runs with: this cluster, CPU mode, this interpreter."""
    return {**os.environ, "SLURM_CONF": cluster["SLURM_CONF"], "GPUS": "0", "NPROC": "2", "CPUS": "1",
            "MEM": "0", "CONSTRAINT": "", "CPU_CPUS": "1", "CPU_MEM": "500M", "TIME_LIMIT": "30:00",
            "CPU_TIME_LIMIT": "30:00", "ENV_SETUP": "", "PYTHON": sys.executable}


def _run(cmd, env, **kwargs):
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, **kwargs)
    assert out.returncode == 0, f"{cmd} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}"
    return out.stdout


def _job_ids(text: str) -> dict[str, str]:
    """The 'stage  job id' lines part1.sh / part2.sh print."""
    return dict(re.findall(r"^  (\w+)\s+(\d+)\b", text, flags=re.M))


def _job(job_id: str, env) -> dict:
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return dict(re.findall(r"(\w+)=(\S*)", out.stdout))


def _wait_jobs(ids, env, timeout=CHAIN_TIMEOUT):
    """Poll squeue until none of the jobs is pending or running (sbatch --wait polls far too slowly)."""
    def gone():
        out = subprocess.run(["squeue", "-h", "-o", "%i", "-j", ",".join(ids)], env=env,
                             capture_output=True, text=True)
        return out.returncode == 0 and not out.stdout.strip()
    _wait_for(gone, timeout, f"jobs {', '.join(ids)}", poll=1.0)
    return {job_id: _job(job_id, env) for job_id in ids}


def _pipeline_args(data, runs, *extra):
    return ["--preset", "tiny", "--data", str(data), "--runs", str(runs), *extra]


@pytest.fixture(scope="module")
def chains(cluster, slurm_env, tiny_data, tmp_path_factory):
    """The part 1 chains of the tests below, submitted at once:

    failing: `bash slurm/part1.sh` with a bad config key (step1 fails at once)
    login:   `bash slurm/part1.sh`, 1 epoch per stage
    batch:   `sbatch slurm/part1.sh`, 4 epochs per stage; its step1 gets USR1 after its first step
    """
    root = tmp_path_factory.mktemp("slurm_chains")
    failing = _run(["bash", "slurm/part1.sh", *_pipeline_args(tiny_data, root / "failing", "--set", "optim.bogus=1")],
                   slurm_env)
    login = _run(["bash", "slurm/part1.sh", *_pipeline_args(tiny_data, root / "login", "--set", "optim.epochs=1")],
                 slurm_env)
    # The test machine has no GPU and no a100 feature: the options override part1.sh's headers.
    batch_log = root / "part1-%j.out"
    batch_id = _run(["sbatch", "--parsable", "--gres=none", "--constraint=", "--cpus-per-task=1",
                     f"--output={batch_log}", "slurm/part1.sh",
                     *_pipeline_args(tiny_data, root / "batch", "--set", "optim.epochs=4")], slurm_env).strip()
    step1 = root / "batch" / "step1"
    _wait_for(lambda: _has_step_record(step1), 300, "the first training step of the sbatch chain")
    _run(["scancel", "--signal=USR1", "--batch", batch_id], slurm_env)
    return {"root": root, "failing": _job_ids(failing), "login": _job_ids(login), "batch_id": batch_id,
            "batch_log": Path(str(batch_log).replace("%j", batch_id))}


def _ran_in_order(runs: Path, names) -> None:
    """Each stage started after the one before it had finished (done written before config.yaml)."""
    for earlier, later in zip(names, names[1:]):
        finished = (runs / earlier / "done").stat().st_mtime_ns
        started = (runs / later / "config.yaml").stat().st_mtime_ns
        assert finished <= started, f"{later} started before {earlier} had finished"


def test_failed_stage_leaves_its_dependants_never_run(chains, slurm_env):
    ids = chains["failing"]
    assert list(ids) == ["step1", "step2", "step3"]
    jobs = _wait_jobs(list(ids.values()), slurm_env)
    assert jobs[ids["step1"]]["JobState"] == "FAILED"
    runs = chains["root"] / "failing"
    assert "optim.bogus" in (runs / "step1" / f"slurm-{ids['step1']}.out").read_text()
    for name in ("step2", "step3"):
        job = jobs[ids[name]]
        assert (job["JobState"], job["Reason"]) == ("CANCELLED", "DependencyNeverSatisfied")
        assert not (runs / name / f"slurm-{ids[name]}.out").exists()  # never started
        assert not (runs / name / "config.yaml").exists()


def test_login_node_submission_runs_part1_in_order(chains, slurm_env):
    ids = chains["login"]
    assert list(ids) == ["step1", "step2", "step3"]
    jobs = _wait_jobs(list(ids.values()), slurm_env)
    assert {job["JobState"] for job in jobs.values()} == {"COMPLETED"}
    runs = chains["root"] / "login"
    for name in ids:
        assert (runs / name / "done").exists() and (runs / name / "model.th").exists()
        assert (runs / name / f"slurm-{ids[name]}.out").exists()
    _ran_in_order(runs, list(ids))
    assert [jobs[ids[name]]["JobName"] for name in ids] == list(ids)


def test_sbatch_part1_requeues_its_stage_on_usr1_and_resumes(chains, slurm_env):
    batch_id = chains["batch_id"]
    _wait_for(lambda: chains["batch_log"].exists(), 60, "the batch log")
    ids = _job_ids(chains["batch_log"].read_text())
    assert list(ids) == ["step1", "step2", "step3"] and ids["step1"] == batch_id
    jobs = _wait_jobs(list(ids.values()), slurm_env)
    assert {job["JobState"] for job in jobs.values()} == {"COMPLETED"}
    assert jobs[batch_id]["Restarts"] == "1"  # requeued once, same job id
    # The later stages were queued once, at the first start only.
    assert chains["batch_log"].read_text().count("stages (logs in") == 1
    runs = chains["root"] / "batch"
    log = (runs / "step1" / f"slurm-{batch_id}.out").read_text()
    assert len(re.findall(r"job \d+ start \(restart \d\)", log)) == 2
    assert "got USR1" in log and "requeueing job" in log
    assert "starting from its own checkpoint" in log
    for name in ids:
        assert (runs / name / "done").exists() and (runs / name / "model.th").exists()
    assert (runs / "step1" / "done").read_text().startswith("epoch 4 step 8")
    _ran_in_order(runs, list(ids))


def test_part2_chain_runs_to_the_final_bag(chains, slurm_env, tiny_data):
    runs = chains["root"] / "login"
    _wait_jobs(list(chains["login"].values()), slurm_env)
    assert (runs / "step3" / "done").exists()
    # keep=0.5 keeps half of every source, so no pool is empty after a 1-epoch model.
    out = _run(["bash", "slurm/part2.sh",
                *_pipeline_args(tiny_data, runs, "--pools", str(chains["root"] / "pools"), "--threshold", "keep=0.5")],
               slurm_env)
    ids = _job_ids(out)
    assert list(ids) == [s.name for s in pipeline.stages("part2")]
    jobs = _wait_jobs(list(ids.values()), slurm_env)
    failed = {name: jobs[i]["JobState"] for name, i in ids.items() if jobs[i]["JobState"] != "COMPLETED"}
    assert not failed, failed
    # The bag holds models the chain trained, one choice per source (which ones: labelnoise.final_bag's rule).
    bag = read_mapping(runs / "final.yaml")
    assert set(bag["choices"]) == set(SOURCES)
    assert bag["models"] and all((runs / m).is_file() and m.split("/")[0] in pipeline.PART2_MODELS
                                 for m in bag["models"])
    _ran_in_order(runs, ["joint360", "vocals"])
    _ran_in_order(runs, ["other_trunc", "other"])
    bag_start = (runs / "bag" / f"slurm-{ids['bag']}.out").stat().st_mtime_ns
    assert all((runs / name / "done").stat().st_mtime_ns <= bag_start for name in ("vocals", "bass", "drums", "other"))


def _results(stdout: str) -> list[str]:
    return re.findall(r'^result \{"stage": "(\w+)", "status": "finished"', stdout, flags=re.M)


def test_submit_py_chain_on_slurm_returns_results(slurm_env, tiny_data, tmp_path):
    out = _run([sys.executable, "slurm/submit.py", "step1", "step2",
                *_pipeline_args(tiny_data, tmp_path / "runs", "--set", "optim.epochs=1")],
               slurm_env, timeout=CHAIN_TIMEOUT)
    assert _results(out) == ["step1", "step2"]
    assert re.search(r"^  step2\s+\d+\s+after step1", out, flags=re.M)
    _ran_in_order(tmp_path / "runs", ["step1", "step2"])
    assert list((tmp_path / "runs" / "step1" / "submitit").glob("*_result.pkl"))


def test_submit_py_local_runs_the_chain_here(tiny_data, tmp_path):
    env = {**os.environ, "GPUS": "0", "NPROC": "2"}
    out = _run([sys.executable, "slurm/submit.py", "step1", "--local",
                *_pipeline_args(tiny_data, tmp_path / "runs", "--set", "optim.epochs=1")], env, timeout=600)
    assert _results(out) == ["step1"]
    assert (tmp_path / "runs" / "step1" / "done").exists()
