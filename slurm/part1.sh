#!/usr/bin/env bash
# Part 1 of the method as SLURM jobs: step1 -> step2 -> step3, chained with afterok.
#
#     sbatch slurm/part1.sh                 # this job (1 node x 8 A100) runs step1; it first queues
#                                           # step2 and step3 to start after it
#     bash slurm/part1.sh                   # from a login node: submit all three jobs, hold no GPUs here
#     bash slurm/part1.sh --from step2      # start later in the chain (finished stages are skipped anyway)
#     GPUS=4 sbatch --gres=gpu:4 slurm/part1.sh           # 4 GPUs per job (the headers give step1's job)
#     PARTITION=gpu ACCOUNT=lab CONSTRAINT= bash slurm/part1.sh
#     bash slurm/part1.sh --preset tiny --data data/tiny  # any option of `python -m labelnoise.pipeline list`
#
# Run it from the repository root. The settings (partition, account,
# constraint, GPUs, nodes, time limit, the python environment) are environment
# variables listed in slurm/common.sh and printed at submission. Each stage
# logs to runs/<stage>/slurm-<job id>.out, saves and requeues itself at its time
# limit, and running this again resumes the chain (docs/CLUSTER.md).
#SBATCH --job-name=part1
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gres=gpu:8
#SBATCH --constraint=a100
#SBATCH --cpus-per-task=64
#SBATCH --mem=0
#SBATCH --time=24:00:00
#SBATCH --requeue
#SBATCH --signal=B:USR1@300
#SBATCH --open-mode=append
#SBATCH --output=slurm-%x-%j.out
set -euo pipefail
# From a login node the repository is this file's parent; a batch job starts where sbatch ran.
if [ -z "${SLURM_JOB_ID:-}" ] || [ "${0##*/}" = part1.sh ]; then cd "$(dirname "${BASH_SOURCE[0]}")/.."; fi
# shellcheck source=slurm/common.sh
source slurm/common.sh
run_chain part1 part1.sh "$@"
