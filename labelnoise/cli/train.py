"""Train one stage from one config: ``configs/<stage>.yaml`` plus ``a.b=value`` overrides.

One process (CPU, or the first GPU):

    python train.py configs/step1.yaml data.root=/data/labelnoise
    python train.py configs/tiny/step1.yaml data.root=data/tiny optim.epochs=1

One node, 8 GPUs (NCCL; the batch is per GPU: 4 items x 8 GPUs = 32 per step):

    torchrun --standalone --nproc_per_node=8 train.py configs/step1.yaml

Two processes on a CPU (gloo), as the tests do:

    torchrun --standalone --nproc_per_node=2 train.py configs/tiny/step1.yaml data.root=data/tiny

Several nodes (SLURM, one task per node):

    srun torchrun --nnodes=$SLURM_NNODES --nproc_per_node=8 --rdzv_backend=c10d \\
        --rdzv_endpoint=$MASTER_ADDR:29500 --rdzv_id=$SLURM_JOB_ID train.py configs/joint360.yaml

The run goes to ``<run.root>/<run.name>/`` (``runs/step1/`` by default).
Running the same command again continues from that run's ``checkpoint.th``;
a finished run (it has ``done``) exits 0 at once. Chaining is by path:
``run.init_from`` (weights only, steps 2-3) and ``run.resume_from`` (weights,
optimizer and epoch counter, the fine-tunes); see labelnoise/trainer.py.

Exit codes: 0 finished; 3 preempted (SIGUSR1 or SIGTERM to the training
processes: the state was saved, run the same command again / requeue);
1 the run failed (diverged, every step skipped as non-finite, data or
checkpoint errors, another trainer in the same run dir, a read-only or full
disk); 2 a bad config (unknown key, wrong type, a value out of range).
Under torchrun, SIGTERM to torchrun is forwarded to every worker, which
saves and exits 3, but torchrun itself then exits 1 (it re-raises the
signal); SIGUSR1 must go to the workers themselves (torchrun 2.x does not
forward it and dies of it, leaving the workers running). A requeue script therefore decides from the signal it trapped,
or from the run dir (no ``done``), not from torchrun's exit code.
"""
from __future__ import annotations

import argparse
import logging
import sys

from labelnoise.config import ConfigError, load_config
from labelnoise.distributed import env_rank, setup_logging
from labelnoise.errors import command_line
from labelnoise.trainer import TrainingError, train

log = logging.getLogger("train")


@command_line(log)
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="a stage config, e.g. configs/step1.yaml")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    args = parser.parse_args(argv)
    setup_logging(env_rank())
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    try:
        return train(cfg, device=args.device)
    except TrainingError as exc:
        log.error("%s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
