"""Submit the method's stages through submitit: a part, or named stages, chained with afterok.

From the repository root, with the environment variables of slurm/common.sh
(GPUS, NODES, CPUS, MEM, TIME_LIMIT, PARTITION, ACCOUNT, CONSTRAINT, CPU_*,
ENV_SETUP, NPROC; their defaults in slurm/defaults.env, read by both) and the
options of ``python -m labelnoise.pipeline list``:

    python slurm/submit.py part1                    # step1 -> step2 -> step3 as SLURM jobs, then wait
    python slurm/submit.py part2 --from joint360    # later in the chain; finished stages are skipped
    python slurm/submit.py vocals other_trunc other # named stages, in the pipeline's order
    python slurm/submit.py part1 --no-wait          # print the job ids and return
    python slurm/submit.py part1 --local            # the same chain here, one stage after the other
    GPUS=0 NPROC=2 python slurm/submit.py part1 --local --preset tiny --data data/tiny --set optim.epochs=1

The stages and their order come from labelnoise/pipeline.py (also read by
slurm/part1.sh, slurm/part2.sh and the Makefile); each job runs one stage's
command (torchrun over the job's GPUs for training and filtering) and returns
{"stage", "status", "seconds", "done"}. Near the time limit submitit sends
USR2 and calls :meth:`StageRun.checkpoint`: the training processes get USR1,
save and exit 3 (see train.py), and the job is requeued with the same id, so
the chain's afterok holds; the requeued job continues from the run's
checkpoint. Logs: RUNS/<stage>/submitit/. Exit codes: 0 every stage
finished; 1 a stage failed or never ran (its log is named); 2 bad arguments.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import submitit

from labelnoise import pipeline
from labelnoise.cli.pipeline import add_chain_arguments, layout_from

log = logging.getLogger("submit")

DEFAULTS_FILE = Path(__file__).resolve().parent / "defaults.env"
# Seconds between submitit's USR2 and the time limit, as --signal=B:USR1@300 in the sbatch scripts.
SIGNAL_SECONDS = 300
# Time-limit requeues a stage may use (submitit's own default, 3, is far too few for 500 epochs).
MAX_REQUEUES = 1000


class SubmitError(RuntimeError):
    """A stage that failed or never ran."""


def defaults(path: Path = DEFAULTS_FILE) -> dict:
    """``NAME=value`` lines of slurm/defaults.env, the one list of the settings' defaults."""
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            out[name.strip()] = value.strip()
    return out


def settings(env=os.environ) -> dict:
    """The settings as slurm/common.sh reads them: a variable that is set (even empty) wins over its default."""
    out = {key: env[key] if key in env else default for key, default in defaults().items()}
    if "GPUS" not in env and env.get("SLURM_GPUS_ON_NODE"):
        out["GPUS"] = env["SLURM_GPUS_ON_NODE"]
    out["CPU_PARTITION"] = env.get("CPU_PARTITION") or out["PARTITION"]
    out["ENV_SETUP"] = env.get("ENV_SETUP", "")
    for key in ("NODES", "GPUS", "NPROC", "CPUS", "CPU_CPUS"):
        if not out[key].isdigit():
            raise SubmitError(f"{key}={out[key]!r}: expected a whole number")
    return out


def minutes(limit: str) -> int:
    """A Slurm time limit in minutes, rounded up: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS."""
    days, dash, clock = limit.rpartition("-")
    try:
        parts = [int(p) for p in clock.split(":")]
        if dash:
            hours, mins, secs = (parts + [0, 0])[:3]
        else:
            hours, mins, secs = {1: [0, *parts, 0], 2: [0, *parts], 3: parts}.get(len(parts), [])
        return int(days or 0) * 1440 + hours * 60 + mins + (1 if secs else 0)
    except ValueError:
        raise SubmitError(f"TIME_LIMIT={limit!r}: not a Slurm time limit (MM, HH:MM:SS, D-HH:MM:SS)") from None


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid``, from /proc (torchrun starts its workers in their own sessions)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # ended meanwhile
        # Fields after the command name, which is in parentheses and may hold spaces.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _ignore_job_signals() -> None:
    # In the stage's processes: submitit's USR2 goes to every process of a SLURM step and would kill
    # them; USR1 is for the training processes only, which install their own handler (torchrun must
    # not die of it).
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


@dataclass
class StageRun:
    """One stage as a submitit job: runs its command, returns a summary; checkpointable."""
    stage: pipeline.Stage
    nproc: int = 1      # processes per node for a parallel stage
    nodes: int = 1
    wait_seconds: float = SIGNAL_SECONDS - 60  # for the processes to save after a signal

    def command(self) -> list[str]:
        if not (self.stage.parallel and self.nproc * self.nodes > 1):
            return [sys.executable, *self.stage.argv]
        if self.nodes == 1:
            return self.stage.command(sys.executable, self.nproc)
        # Several nodes: one task per node; node 0 holds torch's rank 0, the one that saves.
        env = submitit.JobEnvironment()
        port = 20000 + int(env.job_id.split("_")[0]) % 20000
        return [sys.executable, "-m", "torch.distributed.run", f"--nnodes={self.nodes}",
                f"--node_rank={env.node}", f"--nproc_per_node={self.nproc}",
                f"--master_addr={env.hostnames[0]}", f"--master_port={port}", *self.stage.argv]

    def __call__(self) -> dict:
        start = time.monotonic()
        if self.stage.is_done():
            return {"stage": self.stage.name, "status": "finished already", "seconds": 0.0, "done": self.stage.done}
        cmd = self.command()
        log.info("stage %s: %s", self.stage.name, " ".join(cmd))
        self._proc = subprocess.Popen(cmd, preexec_fn=_ignore_job_signals)
        # Poll rather than wait(): submitit's signal handler runs in this thread and must find the lock free.
        while (code := self._proc.poll()) is None:
            time.sleep(1.0)
        if code != 0 or not self.stage.is_done():
            raise SubmitError(f"stage {self.stage.name} exited with code {code}"
                              f"{'' if code else f' but {self.stage.done} is missing'}: {' '.join(cmd)}")
        return {"stage": self.stage.name, "status": "finished", "seconds": round(time.monotonic() - start, 1),
                "done": self.stage.done}

    def stop(self) -> int | None:
        """Make the running command save and exit; returns its exit code (None: still running)."""
        proc = getattr(self, "_proc", None)
        if proc is None or proc.poll() is not None:
            return None if proc is None else proc.returncode
        if self.stage.kind == "train":
            # The training processes save at the end of their step on USR1; torchrun ignores it.
            for pid in [proc.pid, *_descendants(proc.pid)]:
                try:
                    os.kill(pid, signal.SIGUSR1)
                except ProcessLookupError:
                    pass
        else:
            proc.terminate()  # the other stages keep what they finished
        deadline = time.monotonic() + self.wait_seconds
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        return proc.poll()

    def checkpoint(self) -> submitit.helpers.DelayedSubmission:
        """submitit's hook before a requeue (time limit, preemption): save, then run the stage again."""
        code = self.stop()
        log.warning("stage %s stopped for a requeue (exit code %s); it continues from its checkpoint",
                    self.stage.name, code)
        return submitit.helpers.DelayedSubmission(StageRun(self.stage, self.nproc, self.nodes, self.wait_seconds))

    def __getstate__(self) -> dict:
        # A running process does not travel in a pickle.
        return {k: v for k, v in self.__dict__.items() if k != "_proc"}


def _executor(stage: pipeline.Stage, conf: dict, folder: Path, local: bool, after: list[str]):
    executor = submitit.AutoExecutor(folder=folder, cluster="local" if local else "slurm",
                                     slurm_max_num_timeout=MAX_REQUEUES)
    gpus = int(conf["GPUS"])
    extra = {"requeue": True}
    if stage.parallel:
        params = dict(nodes=1 if local else int(conf["NODES"]), tasks_per_node=1, cpus_per_task=int(conf["CPUS"]),
                      timeout_min=minutes(conf["TIME_LIMIT"]))
        if gpus:
            params["gpus_per_node"] = gpus
        extra["mem"] = conf["MEM"]
        if conf["CONSTRAINT"]:
            params["slurm_constraint"] = conf["CONSTRAINT"]
        partition = conf["PARTITION"]
    else:
        params = dict(nodes=1, tasks_per_node=1, cpus_per_task=int(conf["CPU_CPUS"]),
                      timeout_min=minutes(conf["CPU_TIME_LIMIT"]))
        extra["mem"] = conf["CPU_MEM"]
        partition = conf["CPU_PARTITION"]
    if partition:
        params["slurm_partition"] = partition
    if conf["ACCOUNT"]:
        params["slurm_account"] = conf["ACCOUNT"]
    if after:
        extra.update({"dependency": "afterok:" + ":".join(after), "kill-on-invalid-dep": "yes"})
    if conf["ENV_SETUP"]:
        params["slurm_setup"] = [conf["ENV_SETUP"]]
    executor.update_parameters(name=stage.name, slurm_signal_delay_s=SIGNAL_SECONDS,
                               slurm_additional_parameters=extra, **params)
    return executor


def _stage_run(stage: pipeline.Stage, conf: dict, local: bool) -> StageRun:
    gpus = int(conf["GPUS"])
    # submitit's local executor has one node: this machine.
    return StageRun(stage, nproc=gpus if gpus else int(conf["NPROC"]), nodes=1 if local else int(conf["NODES"]))


def choose(targets: list[str], layout: pipeline.Layout, start: str | None,
           stop: str | None = None) -> list[pipeline.Stage]:
    """The stages of a part, or the named stages in the pipeline's order."""
    if len(targets) == 1 and targets[0] in pipeline.PARTS:
        return pipeline.stages_between(pipeline.stages(targets[0], layout), start, stop)
    chain = pipeline.stages("all", layout)
    names = [s.name for s in chain]
    unknown = [t for t in targets if t not in names]
    if unknown:
        raise SubmitError(f"unknown stage(s) {', '.join(unknown)}; parts: {', '.join(pipeline.PARTS)}; "
                          f"stages: {', '.join(names)}")
    return pipeline.stages_between([s for s in chain if s.name in targets], start, stop)


def _in_queue(job_id: str) -> bool:
    out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True)
    return out.returncode == 0 and bool(out.stdout.strip())


def _outcome(stage: pipeline.Stage, job, folder: Path) -> dict:
    """A finished job's result; SubmitError when it failed or ended without one (cancelled)."""
    try:
        # A stage over several nodes is one task per node, each with the same result: task 0's stands for it.
        return job.results()[0]
    except Exception as exc:  # submitit re-raises the job's exception, or says why there is none
        raise SubmitError(f"stage {stage.name} (job {job.job_id}) failed: {str(exc).strip().splitlines()[-1]}; "
                          f"log: {folder}") from None


def run_slurm(chain: list[pipeline.Stage], conf: dict, runs: str, wait: bool, poll: float = 2.0) -> list[dict]:
    """Submit the chain with afterok (finished stages skipped), print the ids, wait for the results."""
    jobs, results = {}, []
    for stage in chain:
        if stage.is_done():
            print(f"  {stage.name:<20} -          finished ({stage.done})", flush=True)
            results.append({"stage": stage.name, "status": "finished already", "seconds": 0.0, "done": stage.done})
            continue
        after = [jobs[name][0].job_id for name in stage.after if name in jobs]
        folder = Path(runs) / stage.name / "submitit"
        job = _executor(stage, conf, folder, False, after).submit(_stage_run(stage, conf, False))
        jobs[stage.name] = (job, folder)
        print(f"  {stage.name:<20} {job.job_id:<10} {'after ' + ','.join(stage.after) if after else ''}", flush=True)
    if not jobs:
        print("nothing to submit: every stage has finished")
        return results
    print(f"watch: squeue -j {','.join(j.job_id for j, _ in jobs.values())} -o '%.10i %.20j %.10T %.12M %.30R'",
          flush=True)
    if not wait:
        return results
    # submitit's own wait asks sacct, which clusters without accounting lack, and cannot tell a
    # cancelled job from a pending one there: look for the result file, and ask squeue.
    for stage in chain:
        if stage.name not in jobs:
            continue
        job, folder = jobs[stage.name]
        while not job.paths.result_pickle.exists() and _in_queue(job.job_id):
            time.sleep(poll)
        if not job.paths.result_pickle.exists():
            raise SubmitError(f"stage {stage.name} (job {job.job_id}) left the queue without a result "
                              f"(cancelled, or a stage it needs failed); log: {folder}")
        results.append(_outcome(stage, job, folder))
        print(f"result {json.dumps(results[-1])}", flush=True)
    return results


def run_local(chain: list[pipeline.Stage], conf: dict, runs: str) -> list[dict]:
    """The chain on this machine through submitit's local executor, one stage after the other."""
    results = []
    for stage in chain:
        folder = Path(runs) / stage.name / "submitit"
        executor = _executor(stage, conf, folder, True, [])
        job = executor.submit(_stage_run(stage, conf, True))
        print(f"  {stage.name:<20} {job.job_id:<10} running here (log: {folder})", flush=True)
        results.append(_outcome(stage, job, folder))
        print(f"result {json.dumps(results[-1])}", flush=True)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("targets", nargs="+", metavar="part1|part2|all|STAGE",
                        help="a part, or stage names (python -m labelnoise.pipeline list all)")
    parser.add_argument("--local", action="store_true", help="run here with submitit's local executor")
    parser.add_argument("--no-wait", action="store_true", help="submit and return (SLURM only)")
    add_chain_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not Path("train.py").is_file():
        print(f"error: {Path.cwd()}: not the repository root (run from the folder holding train.py)",
              file=sys.stderr)
        return 2
    try:
        layout = layout_from(args)
        conf = settings()
        chain = choose(args.targets, layout, args.start, args.stop)
    except (SubmitError, pipeline.PipelineError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("settings: " + " ".join(f"{k}={v}" for k, v in conf.items()), flush=True)
    try:
        if args.local:
            run_local(chain, conf, layout.runs)
        else:
            run_slurm(chain, conf, layout.runs, wait=not args.no_wait)
    except SubmitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
