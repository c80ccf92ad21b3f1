"""Two nodes on one machine: training, the filter and the part 1 chain over two torchrun launches.

    .venv/bin/python -m pytest tests/test_multinode.py -q

Each "node" is its own `python -m torch.distributed.run --nnodes=2
--nproc_per_node=1 --rdzv_backend=c10d --rdzv_endpoint=127.0.0.1:PORT` in its
own folder (no --node_rank: the rendezvous hands out the ranks, so both
processes have LOCAL_RANK 0 and RANK 0 or 1), gloo on the CPU. What they
compute must equal one process with the same global batch: the tiny configs
with 2 items per node against 4 items in one process, global truncation, and
the batch augmentations off (they draw from each rank's own stream; the
pitch/tempo change in the loader is seeded by item and stays on).

A preemption is what Slurm does to a job step: SIGTERM to every process of
it, on every node (the launchers pass it on to their workers too). Every
Python process of a launch logs its file writes through an audit hook
(sitecustomize in a folder on PYTHONPATH), which shows who wrote what.

The Slurm tests start a two-node cluster on this machine (tests/slurm/cluster.sh
start DIR 2: two slurmd) and need root plus slurm-wlm or apt-get; elsewhere
they are skipped with the reason.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from labelnoise.checkpoint import load_model
from labelnoise.filtering import run_filter
from labelnoise.synth import generate

import test_slurm as slurm_jobs  # its helpers for jobs and logs

ROOT = Path(__file__).resolve().parents[1]
STEP1 = ROOT / "configs" / "tiny" / "step1.yaml"
CLUSTER = ROOT / "tests" / "slurm" / "cluster.sh"
# Per command; far more than any needs, so that a hang fails the test instead of the suite.
TIMEOUT = 240
# 4 tracks x 3 s = 12 one-second items: 3 steps of 4 per epoch, 2 epochs per stage.
SAME_ITEMS = ("optim.epochs=2", "optim.trunc_scope=global", "augment.shift=0", "augment.flip=false",
              "augment.scale.proba=0", "augment.remix.proba=0")
NODE_BATCH = "optim.batch_size=2"     # x 2 nodes
GLOBAL_BATCH = "optim.batch_size=4"   # x 1 process
SEED = 42  # configs/base.yaml run.seed

AUDIT_HOOK = '''\
"""Imported at start-up by every Python process of a test launch: logs the process (pid, torchrun
ranks, working folder) and each file it writes under LABELNOISE_TEST_WATCH, one JSON line each."""
import json
import os
import sys

RENAMES = ("os.rename", "os.symlink", "os.link")  # the written path is the second argument
WRITES = RENAMES + ("os.mkdir", "os.remove", "os.rmdir")


def _install(log, watch):
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)  # opened before the hook
    me = {"pid": os.getpid(), **{k.lower(): os.environ.get(k) for k in ("RANK", "LOCAL_RANK", "GROUP_RANK")}}

    def note(event, path):
        os.write(fd, (json.dumps({**me, "event": event, "path": path}) + "\\n").encode())

    def hook(event, args):
        try:
            if event == "open":  # open() and os.open(): (path, mode, flags)
                if not args[2] & (os.O_WRONLY | os.O_RDWR):
                    return
                path = args[0]
            elif event in WRITES:
                path = args[1] if event in RENAMES else args[0]
            else:
                return
            if isinstance(path, (str, bytes, os.PathLike)):
                path = os.path.abspath(os.fsdecode(path))
                if path.startswith(watch):
                    note(event, path)
        except Exception:  # an exception here would fail the write it watches
            pass

    note("start", os.getcwd())
    sys.addaudithook(hook)


if os.environ.get("LABELNOISE_TEST_AUDIT"):
    _install(os.environ["LABELNOISE_TEST_AUDIT"], os.environ["LABELNOISE_TEST_WATCH"])
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra) -> dict:
    """The environment of every command here: one thread, no torchrun variables, this checkout's code
    (also for `python slurm/submit.py`, whose own folder comes first on sys.path)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.update(extra)
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


class TwoNodes:
    """One command as two torchrun launches here, meeting at a c10d rendezvous on 127.0.0.1."""

    def __init__(self, folder: Path, args_of_node, hook_dir: Path, watch: Path):
        folder.mkdir(parents=True)
        self.folder, self.audit = folder, folder / "audit.jsonl"
        port = free_port()
        env = clean_env(PYTHONPATH=f"{hook_dir}{os.pathsep}{ROOT}", LABELNOISE_TEST_AUDIT=str(self.audit),
                        LABELNOISE_TEST_WATCH=str(watch))
        self.dirs, self.logs, self.procs = [], [], []
        for node in range(2):
            cwd, log = folder / f"node{node}", folder / f"node{node}.log"
            cwd.mkdir()
            cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
                   "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}", f"--rdzv_id={folder.name}",
                   *args_of_node(node)]
            with open(log, "w") as out:
                self.procs.append(subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                                   start_new_session=True))
            self.dirs.append(cwd)
            self.logs.append(log)

    def wait(self, timeout: float = TIMEOUT) -> list[int]:
        deadline = time.monotonic() + timeout
        return [p.wait(timeout=max(1.0, deadline - time.monotonic())) for p in self.procs]

    def output(self) -> str:
        return "".join(f"--- node {n}\n{log.read_text()}" for n, log in enumerate(self.logs))

    def events(self) -> list[dict]:
        if not self.audit.exists():
            return []
        return [json.loads(line) for line in self.audit.read_text().splitlines()]

    def workers(self) -> dict[int, dict]:
        """{node: its worker's start record (pid, rank, local_rank, group_rank)}; agents have no rank."""
        return {self.dirs.index(Path(e["path"])): e for e in self.events()
                if e["event"] == "start" and e["rank"] is not None}

    def writes(self) -> list[dict]:
        return [e for e in self.events() if e["event"] != "start"]

    def _ours(self, pid: int) -> bool:
        try:
            return f"LABELNOISE_TEST_AUDIT={self.audit}".encode() in Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            return False

    def signal(self, signum: int) -> None:
        """``signum`` to every process of both launches, as slurmstepd does to a job step."""
        for pid in [p.pid for p in self.procs] + [w["pid"] for w in self.workers().values()]:
            if self._ours(pid):
                os.kill(pid, signum)

    def kill(self) -> None:
        """Teardown: SIGKILL to whatever is left (workers run in sessions of their own)."""
        for pid in [p.pid for p in self.procs] + [w["pid"] for w in self.workers().values()]:
            if slurm_jobs._alive(pid) and self._ours(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
        for p in self.procs:
            p.wait(timeout=30)


def wait_for(predicate, launch: TwoNodes, what: str, timeout: float = TIMEOUT, poll: float = 0.05):
    deadline = time.monotonic() + timeout
    while not predicate():
        if any(p.poll() is not None for p in launch.procs):
            raise AssertionError(f"a launch ended while waiting for {what}:\n{launch.output()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def steps(run: Path) -> list[dict]:
    return [m for m in metrics(run) if m["kind"] == "step"]


def assert_same_training(run: Path, ref: Path) -> None:
    """Weights within 1e-5 (an Adam step moves them by up to lr = 3e-4); the same truncation, step by step."""
    got, want = load_model(run / "model.th").state_dict(), load_model(ref / "model.th").state_dict()
    assert got.keys() == want.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=1e-5, msg=f"{run}: {key}")
    mine, theirs = steps(run), steps(ref)
    assert [m["step"] for m in mine] == [m["step"] for m in theirs] == list(range(1, len(theirs) + 1))
    for a, b in zip(mine, theirs):
        # The kept fraction per source and the noisy stems among the dropped and kept entries: which
        # entries the global quantile masked. Whole counts and their ratios, so equal exactly.
        assert (a["kept"], a["noisy_entries"]) == (b["kept"], b["noisy_entries"]), (run, a["step"])
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4), (run, a["step"])


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("multinode_data") / "tracks"
    generate(root, tracks=4, seconds=3.0, noise_rate=0.25, seed=0, samplerate=16000, progress=False)
    return root


@pytest.fixture(scope="module")
def stems(tmp_path_factory) -> Path:
    """What the filter tests run over: 2 tracks x 3 s, 8 stems."""
    root = tmp_path_factory.mktemp("multinode_stems") / "tracks"
    generate(root, tracks=2, seconds=3.0, noise_rate=0.5, seed=1, samplerate=16000, progress=False)
    return root


def pipeline_args(data: Path, runs: Path, batch: str) -> list[str]:
    sets = [arg for item in (*SAME_ITEMS, batch) for arg in ("--set", item)]
    return ["--preset", "tiny", "--data", str(data), "--runs", str(runs), *sets]


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> Path:
    """Part 1 (step1 -> step2 -> step3) in one process with the global batch: the run root."""
    runs = tmp_path_factory.mktemp("one_process") / "runs"
    cmd = [sys.executable, "-m", "labelnoise.pipeline", "run", "part1", *pipeline_args(data, runs, GLOBAL_BATCH)]
    out = subprocess.run(cmd, cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=3 * TIMEOUT)
    assert out.returncode == 0, out.stdout + out.stderr
    return runs


@pytest.fixture
def two_nodes(tmp_path):
    """Start launches with ``two_nodes(name, args_of_node)``; whatever is left is killed at the end."""
    hook_dir = tmp_path / "hook"
    hook_dir.mkdir()
    (hook_dir / "sitecustomize.py").write_text(AUDIT_HOOK)
    started: list[TwoNodes] = []

    def start(name: str, args_of_node) -> TwoNodes:
        started.append(TwoNodes(tmp_path / name, args_of_node, hook_dir, tmp_path))
        return started[-1]

    yield start
    for launch in started:
        launch.kill()


def train_args(runs: Path, data: Path) -> list[str]:
    return [str(ROOT / "train.py"), str(STEP1), f"run.root={runs}", f"data.root={data}", *SAME_ITEMS, NODE_BATCH]


def assert_ranks_by_node(launch: TwoNodes) -> dict[int, dict]:
    """One worker per node, LOCAL_RANK 0 on both; RANK and GROUP_RANK 0 on one node, 1 on the other."""
    workers = launch.workers()
    assert sorted(workers) == [0, 1], launch.output()
    assert sorted((w["rank"], w["local_rank"], w["group_rank"]) for w in workers.values()) == \
        [("0", "0", "0"), ("1", "0", "1")]
    return workers


# ---------------------------------------------------------------- Slurm: two nodes on this machine

@pytest.fixture(scope="module")
def cluster():
    """A two-node Slurm here (two slurmd); stopped at the end, every daemon by its PID file."""
    folder = Path(tempfile.mkdtemp(prefix="labelnoise-slurm2-", dir="/tmp"))
    start = subprocess.run(["bash", str(CLUSTER), "start", str(folder), "2"], capture_output=True, text=True,
                           timeout=900)
    if start.returncode == 2:
        shutil.rmtree(folder, ignore_errors=True)
        reason = start.stderr.strip().splitlines()[-1] if start.stderr.strip() else "cannot start a cluster"
        pytest.skip(reason)
    pid_files = [folder / "slurmctld.pid", *folder.glob("slurmd-*.pid"), folder / "munge" / "munged.pid"]
    try:
        assert start.returncode == 0, f"cluster start failed:\n{start.stdout}\n{start.stderr}"
        assert len(pid_files) == 4, pid_files
        yield str(folder / "slurm.conf")
    finally:
        pids = [int(p.read_text()) for p in pid_files if p.exists()]
        stop = subprocess.run(["bash", str(CLUSTER), "stop", str(folder)], capture_output=True, text=True,
                              timeout=300)
        left = [pid for pid in pids if slurm_jobs._alive(pid)]
        shutil.rmtree(folder, ignore_errors=True)
        assert stop.returncode == 0, stop.stderr
        assert not left, f"daemons still running after stop: {left}"


@pytest.fixture(scope="module")
def on_two_nodes(cluster, data, tmp_path_factory):
    """Submitted together, checked by the tests below (2 items per node, CPU, one process per node):

    chain:  NODES=2 sbatch --nodes=2 slurm/part1.sh; its step1 gets USR1 after its first step
    submit: NODES=2 python slurm/submit.py step1
    """
    root = tmp_path_factory.mktemp("slurm_two_nodes")
    env = clean_env(SLURM_CONF=cluster, NODES="2", GPUS="0", NPROC="1", CPUS="1", MEM="0", CONSTRAINT="",
                    CPU_CPUS="1", CPU_MEM="500M", TIME_LIMIT="30:00", CPU_TIME_LIMIT="30:00", ENV_SETUP="",
                    PYTHON=sys.executable,
                    # Not 20000 + job id: another test cluster on this machine numbers its jobs from 1 too.
                    RDZV_PORT=str(free_port()))
    batch_log = root / "part1-%j.out"
    # The batch job runs step1 itself: its own allocation needs --nodes=2 (NODES sizes the jobs it queues).
    batch_id = slurm_jobs._run(["sbatch", "--parsable", "--nodes=2", "--gres=none", "--constraint=",
                                "--cpus-per-task=1", f"--output={batch_log}", "slurm/part1.sh",
                                *pipeline_args(data, root / "chain", NODE_BATCH)], env).strip()
    log = open(root / "submit.log", "w")
    submit = subprocess.Popen([sys.executable, "slurm/submit.py", "step1",
                               *pipeline_args(data, root / "submit", NODE_BATCH)],
                              cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        step1 = root / "chain" / "step1"
        slurm_jobs._wait_for(lambda: slurm_jobs._has_step_record(step1), TIMEOUT,
                             "the first step of the chain's step1", poll=0.05)
        slurm_jobs._run(["scancel", "--signal=USR1", "--batch", batch_id], env)
        yield {"env": env, "root": root, "batch_id": batch_id, "submit": submit,
               "batch_log": Path(str(batch_log).replace("%j", batch_id))}
    finally:
        if submit.poll() is None:
            os.killpg(submit.pid, signal.SIGKILL)
        submit.wait(timeout=30)
        log.close()


def test_sbatch_part1_on_two_nodes_requeues_and_equals_one_process(on_two_nodes, reference):
    env, root, batch_id = on_two_nodes["env"], on_two_nodes["root"], on_two_nodes["batch_id"]
    slurm_jobs._wait_for(on_two_nodes["batch_log"].exists, 60, "the batch log")
    ids = slurm_jobs._job_ids(on_two_nodes["batch_log"].read_text())
    assert list(ids) == ["step1", "step2", "step3"] and ids["step1"] == batch_id
    jobs = slurm_jobs._wait_jobs(list(ids.values()), env)
    assert {(job["JobState"], job["NumNodes"]) for job in jobs.values()} == {("COMPLETED", "2")}, jobs
    assert jobs[batch_id]["Restarts"] == "1"  # requeued once after USR1, same job id
    host = socket.gethostname().split(".")[0]
    for name, job_id in ids.items():
        log = (root / "chain" / name / f"slurm-{job_id}.out").read_text()
        # srun: one torchrun per node, meeting at the first node of the job.
        assert re.search(rf"srun --nodes=2 --ntasks-per-node=1 .*--nnodes=2 --nproc_per_node=1 "
                         rf"--rdzv_backend=c10d --rdzv_endpoint={host}:\d+ --rdzv_id={job_id} ", log), log
        assert "2 x 2 x 1 items each" in log  # batch x processes x accumulation
    log = (root / "chain" / "step1" / f"slurm-{batch_id}.out").read_text()
    assert "got USR1" in log and "requeueing job" in log and "starting from its own checkpoint" in log
    assert "[rank 1] WARNING labelnoise.trainer: got SIGUSR1" in log  # the second node's process saved too
    for name in ids:
        assert_same_training(root / "chain" / name, reference / name)

    # submit.py's two-node command (static rendezvous, --node_rank from the task) trains the same.
    on_two_nodes["submit"].wait(timeout=slurm_jobs.CHAIN_TIMEOUT)
    assert_same_training(root / "submit" / "step1", reference / "step1")


def test_submit_py_reports_the_two_node_stage_finished(on_two_nodes):
    submit = on_two_nodes["submit"]
    submit.wait(timeout=slurm_jobs.CHAIN_TIMEOUT)
    out = (on_two_nodes["root"] / "submit.log").read_text()
    assert submit.returncode == 0, out
    assert re.search(r'^result \{"stage": "step1", "status": "finished"', out, flags=re.M), out


# ---------------------------------------------------------------- training

def test_two_nodes_train_like_one_process_and_resume_after_sigterm(two_nodes, data, reference, tmp_path):
    runs = tmp_path / "runs"
    run = runs / "step1"
    first = two_nodes("first", lambda node: train_args(runs, data))
    wait_for(lambda: slurm_jobs._has_step_record(run), first, "the first step")
    first.signal(signal.SIGTERM)
    first.wait()
    out = first.output()
    assert all(f"[rank {r}] WARNING labelnoise.trainer: got SIGTERM" in out for r in (0, 1)), out
    assert "exiting with 3" in out
    state = torch.load(run / "checkpoint.th", weights_only=True)
    assert state["world_size"] == 2 and 1 <= state["step"] < 6, state["step"]
    assert not (run / "done").exists() and not (run / "model.th").exists()
    # The seed is offset by RANK (LOCAL_RANK is 0 on both nodes); with the batch augmentations off each
    # rank's augmentation stream is still as seeded.
    for rank, saved in enumerate(state["ranks"]):
        assert torch.equal(saved["rng"]["augment"], torch.Generator().manual_seed(SEED + 1000 * rank).get_state())

    second = two_nodes("second", lambda node: train_args(runs, data))  # the same commands again
    codes = second.wait()
    assert codes == [0, 0], second.output()
    assert "starting from its own checkpoint" in second.output()
    assert_same_training(run, reference / "step1")
    assert [m["epoch"] for m in metrics(run) if m["kind"] == "epoch"] == [0, 1]

    for launch in (first, second):
        workers = assert_ranks_by_node(launch)
        writers = {e["pid"] for e in launch.writes()}
        rank0 = next(w["pid"] for w in workers.values() if w["rank"] == "0")
        # Rank 0 alone wrote, and only into the run dir: nothing from rank 1 or the launchers.
        assert writers == {rank0}, [e for e in launch.writes() if e["pid"] != rank0]
        assert all(runs == Path(e["path"]) or runs in Path(e["path"]).parents for e in launch.writes())
        assert not [p for d in launch.dirs for p in d.iterdir()]
    finals = [Path(e["path"]).name for e in second.writes() if e["event"] == "os.rename"]
    assert finals.count("model.th") == finals.count("done") == 1
    assert "model.th" not in [Path(e["path"]).name for e in first.writes()]


def test_ranks_that_see_different_run_dirs_stop_with_the_reason(two_nodes, data, reference, tmp_path):
    """run.root on a node-local disk: one node finds the checkpoint, the other none. Both must stop at once
    (not train apart until their collectives no longer match)."""
    shared = tmp_path / "runs"
    shutil.copytree(reference / "step1", shared / "step1")
    for name in ("done", "model.th"):
        (shared / "step1" / name).unlink()
    stamp = (shared / "step1" / "checkpoint.th").stat().st_mtime_ns
    local = tmp_path / "node_local"

    launch = two_nodes("apart", lambda node: train_args(shared if node == 0 else local, data) + ["optim.epochs=3"])
    codes = launch.wait(timeout=120)
    out = launch.output()
    assert codes[0] != 0 and codes[1] != 0, out
    assert "found different states to start from" in out and "every node sees" in out, out
    assert (shared / "step1" / "checkpoint.th").stat().st_mtime_ns == stamp
    assert not (local / "step1").exists()


# ---------------------------------------------------------------- the filter

def filter_args(model: Path, data: Path, out: Path) -> list[str]:
    return [str(ROOT / "filter.py"), "--model", str(model), "--data", str(data), "--out", str(out), "--device", "cpu"]


def volumes(out: Path) -> dict:
    records = [json.loads(line) for line in (out / "volumes.jsonl").read_text().splitlines()]
    return {(r["track"], r["stem"]): r for r in records}


def test_filter_over_two_nodes_equals_one_process(two_nodes, stems, reference, tmp_path):
    model = reference / "step1" / "model.th"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the arithmetic of the one-thread subprocesses
    try:
        one = run_filter(stems, tmp_path / "one", load_model(model), progress=False)
    finally:
        torch.set_num_threads(threads)
    want = volumes(tmp_path / "one")
    assert one.done == len(want) == 8

    out = tmp_path / "out"
    launch = two_nodes("filter", lambda node: filter_args(model, stems, out))
    assert launch.wait() == [0, 0], launch.output()
    got = volumes(out)
    assert got.keys() == want.keys()
    for key, rec in want.items():
        assert got[key]["silent"] == rec["silent"] and got[key]["seconds"] == rec["seconds"], key
        for source, value in rec["volumes"].items():
            assert math.isclose(got[key]["volumes"][source], value, abs_tol=1e-4), (key, source)
    assert f"filtered {one.done} stems" in launch.output()  # rank 0 counts every rank's stems
    assert not list(out.glob("volumes.rank*.jsonl"))

    workers = assert_ranks_by_node(launch)
    pids = {w["rank"]: w["pid"] for w in workers.values()}
    paths = {rank: {Path(e["path"]) for e in launch.writes() if e["pid"] == pid} for rank, pid in pids.items()}
    # Each rank appends to its own file; rank 0 alone writes the settings and the merged volumes.
    assert paths["1"] <= {out, out / "volumes.rank1.jsonl"} and out / "volumes.rank1.jsonl" in paths["1"]
    assert {out / "volumes.jsonl", out / "filter.json", out / "volumes.rank0.jsonl"} <= paths["0"]
    assert {e["pid"] for e in launch.writes()} <= set(pids.values())
    assert not [p for d in launch.dirs for p in d.iterdir()]


def test_filter_into_node_local_folders_stops_with_the_reason(two_nodes, stems, reference, tmp_path):
    """--out on a node-local disk: rank 0 would merge its own records only and call the stage done."""
    model = reference / "step1" / "model.th"
    outs = [tmp_path / "node0_out", tmp_path / "node1_out"]
    launch = two_nodes("filter_apart", lambda node: filter_args(model, stems, outs[node]))
    codes = launch.wait(timeout=120)
    out = launch.output()
    assert codes[0] != 0 and codes[1] != 0, out
    assert "every node sees" in out, out
    assert not (outs[0] / "volumes.jsonl").exists() and not (outs[1] / "volumes.jsonl").exists()
