#!/usr/bin/env bash
# Part 2 of the method as SLURM jobs, chained with afterok:
#
#     filter_pretrain3 -> select_pretrain3 -> joint360 -> filter_filtered360 -> select_filtered360
#         -> {vocals, bass, drums, other_trunc -> other} -> bag
#
# The filters are sharded over the GPUs of one job, the four fine-tunes run
# as four jobs at once, the bag waits for all of them.
#
#     sbatch slurm/part2.sh                 # this job (1 node x 8 A100) runs filter_pretrain3; it first
#                                           # queues the later stages to start after it
#     bash slurm/part2.sh                   # from a login node: submit the whole chain
#     bash slurm/part2.sh --from joint360   # start later in the chain (finished stages are skipped anyway)
#     bash slurm/part2.sh --threshold keep=0.6              # any option of `python -m labelnoise.pipeline list`
#
# Run it from the repository root after part 1 (runs/step3/model.th). The
# settings are environment variables listed in slurm/common.sh and printed at
# submission; logs go to runs/<stage>/slurm-<job id>.out (docs/CLUSTER.md).
#SBATCH --job-name=part2
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
if [ -z "${SLURM_JOB_ID:-}" ] || [ "${0##*/}" = part2.sh ]; then cd "$(dirname "${BASH_SOURCE[0]}")/.."; fi
# shellcheck source=slurm/common.sh
source slurm/common.sh
run_chain part2 part2.sh "$@"
