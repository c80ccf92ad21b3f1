# shellcheck shell=bash
# Shared by slurm/part1.sh, slurm/part2.sh and the slurm/*.sbatch stage scripts
# (sourced from the repository root, never run): the settings, submitting a
# chain of stages with afterok, and running one stage inside its job.
#
# Settings: environment variables with the seed's defaults (1 node x 8 A100).
# An empty CONSTRAINT asks for no feature; GPUS=0 is the CPU mode the tests use.
#
#     PARTITION=       sbatch --partition (empty: the cluster's default)
#     ACCOUNT=         sbatch --account (empty: your default account)
#     CONSTRAINT=a100  sbatch --constraint for the GPU stages
#     NODES=1          nodes per GPU stage (torchrun --nnodes)
#     GPUS=8           GPUs per node (--gres=gpu:GPUS, torchrun --nproc_per_node);
#                      inside a job that holds GPUs it defaults to the job's count
#     NPROC=2          processes per node when GPUS=0 (CPU, gloo, no --gres)
#     CPUS=64          CPUs per node of a GPU stage (data.workers=10 loader processes per GPU share them)
#     MEM=0            memory per node of a GPU stage (0: all of the node's memory)
#     TIME_LIMIT=24:00:00   per job; a stage that needs longer saves and requeues itself
#     CPU_CPUS=8  CPU_MEM=32G  CPU_TIME_LIMIT=04:00:00  CPU_PARTITION=$PARTITION
#                      the one-process stages (auto_filter.py, the bag)
#     ENV_SETUP="source .venv/bin/activate"   run before python in every job
#                      (default: that line when .venv exists, else nothing)
#     PYTHON=python    the interpreter after ENV_SETUP
#     RDZV_PORT=       torchrun's rendezvous port (default: 20000 + job id % 20000)
#
# Any other sbatch option goes through sbatch's own variables (SBATCH_QOS,
# SBATCH_RESERVATION, ...), which every submission here reads.

# The defaults live in slurm/defaults.env (submit.py reads the same file); a variable already set wins.
while IFS='=' read -r name value; do
    case $name in '' | '#'*) continue ;; esac
    if [ -z "${!name+set}" ]; then
        if [ "$name" = GPUS ] && [ -n "${SLURM_GPUS_ON_NODE:-}" ]; then value=$SLURM_GPUS_ON_NODE; fi
        printf -v "$name" '%s' "$value"
    fi
done <slurm/defaults.env
CPU_PARTITION=${CPU_PARTITION:-$PARTITION}
if [ -z "${ENV_SETUP+set}" ]; then
    if [ -f .venv/bin/activate ]; then ENV_SETUP="source .venv/bin/activate"; else ENV_SETUP=""; fi
fi
PYTHON=${PYTHON:-python}
# The jobs of a chain read the same settings: sbatch passes the environment on.
export PARTITION ACCOUNT CONSTRAINT NODES GPUS NPROC CPUS MEM TIME_LIMIT CPU_CPUS CPU_MEM CPU_TIME_LIMIT \
    CPU_PARTITION ENV_SETUP PYTHON

# Seconds before the time limit at which Slurm sends USR1 to the batch shell (as the headers say).
SIGNAL_SECONDS=300

die() {
    echo "error: $*" >&2
    exit 1
}

for name in NODES GPUS NPROC CPUS CPU_CPUS; do
    [[ ${!name} =~ ^[0-9]+$ ]] || die "$name=${!name}: expected a whole number"
done

check_repo_root() {
    if [ ! -f slurm/common.sh ] || [ ! -f train.py ]; then
        die "$(pwd): not the repository root (run sbatch and the slurm/ scripts from the folder holding train.py)"
    fi
}

setup_env() {
    if [ -n "$ENV_SETUP" ]; then
        # shellcheck disable=SC1090  # the user's activation line, e.g. "source .venv/bin/activate"
        eval "$ENV_SETUP" || die "ENV_SETUP failed: $ENV_SETUP"
    fi
    command -v "$PYTHON" >/dev/null || die "PYTHON=$PYTHON: not found after ENV_SETUP=\"$ENV_SETUP\""
}

print_settings() {
    local procs
    if [ "$GPUS" -gt 0 ]; then procs="GPUS=$GPUS per node"; else procs="GPUS=0 (CPU, gloo: NPROC=$NPROC per node)"; fi
    echo "settings (environment variables, see slurm/common.sh):"
    echo "  PARTITION=${PARTITION:-(default)} ACCOUNT=${ACCOUNT:-(default)} CONSTRAINT=${CONSTRAINT:-(none)}"
    echo "  NODES=$NODES $procs CPUS=$CPUS MEM=$MEM TIME_LIMIT=$TIME_LIMIT"
    echo "  CPU stages: CPU_PARTITION=${CPU_PARTITION:-(default)} CPU_CPUS=$CPU_CPUS CPU_MEM=$CPU_MEM" \
        "CPU_TIME_LIMIT=$CPU_TIME_LIMIT"
    echo "  ENV_SETUP=${ENV_SETUP:-(none)} PYTHON=$PYTHON"
}

# The sbatch options of one stage (into the array `options`); they override the script's headers.
stage_options() {
    local name=$1 parallel=$2 logs=$3
    options=(--parsable --job-name="$name" --output="$logs/slurm-%j.out" --open-mode=append
             --chdir="$(pwd)" --export=ALL --requeue --signal="B:USR1@$SIGNAL_SECONDS")
    if [ "$parallel" = 1 ]; then
        options+=(--nodes="$NODES" --ntasks-per-node=1 --cpus-per-task="$CPUS" --mem="$MEM"
                  --time="$TIME_LIMIT" --constraint="$CONSTRAINT")
        if [ "$GPUS" -gt 0 ]; then options+=(--gres="gpu:$GPUS"); else options+=(--gres=none); fi
        [ -n "$PARTITION" ] && options+=(--partition="$PARTITION")
    else
        options+=(--nodes=1 --ntasks=1 --cpus-per-task="$CPU_CPUS" --mem="$CPU_MEM" --time="$CPU_TIME_LIMIT"
                  --gres=none --constraint=)
        [ -n "$CPU_PARTITION" ] && options+=(--partition="$CPU_PARTITION")
    fi
    [ -n "$ACCOUNT" ] && options+=(--account="$ACCOUNT")
    return 0
}

# The batch script and its arguments for one stage (into the array `script`), from the
# pipeline's kind and argv: train.sbatch CONFIG KEY=VALUE..., filter.sbatch ARGS..., cpu.sbatch DONE ARGV...
stage_script() {
    local kind=$1 done_file=$2
    shift 2
    case $kind in
        train) [ "$1" = train.py ] || die "train stage runs $1, not train.py"
               script=(slurm/train.sbatch "${@:2}") ;;
        filter) [ "$1" = filter.py ] || die "filter stage runs $1, not filter.py"
                script=(slurm/filter.sbatch "${@:2}") ;;
        *) script=(slurm/cpu.sbatch "$done_file" "$@") ;;
    esac
}

# read_chain PART [pipeline options: --preset, --data, --runs, --pools, --threshold, --set, --from]
#
# The stages of PART from `python -m labelnoise.pipeline list` (the one
# definition of their order), into arrays indexed alike: stage_name,
# stage_kind, stage_after (comma-separated), stage_parallel (1: torchrun),
# stage_done (exists once finished), stage_argv (python's arguments, quoted
# for the shell); and chain_runs, the run root (each stage logs to
# chain_runs/<stage>/slurm-<job id>.out).
read_chain() {
    local part=$1
    shift
    local listing name kind after parallel done_file argv
    listing=$("$PYTHON" -m labelnoise.pipeline list "$part" --format tsv "$@") || die "cannot list the stages of $part"
    chain_runs=$("$PYTHON" -m labelnoise.pipeline list "$part" --format runs "$@") || die "cannot list the stages"
    stage_name=() stage_kind=() stage_after=() stage_parallel=() stage_done=() stage_argv=()
    while IFS=$'\t' read -r name kind after parallel done_file argv; do
        stage_name+=("$name") stage_kind+=("$kind") stage_after+=("$after") stage_parallel+=("$parallel")
        stage_done+=("$done_file") stage_argv+=("$argv")
    done <<<"$listing"
    [ ${#stage_name[@]} -gt 0 ] || die "the pipeline listed no stages for $part $*"
}

# submit_chain FIRST_JOB: submit the stages read by read_chain as sbatch jobs chained
# with afterok. With FIRST_JOB (a job id: the batch job of part1.sh / part2.sh) the
# first stage is not submitted: that job runs it. Finished stages are skipped.
# Prints the job ids and a squeue command to watch them.
submit_chain() {
    local first_job=$1
    local -A job=()
    local -a ids=() argv after_list deps
    local i name logs dep id
    echo "stages (logs in $chain_runs/<stage>/slurm-<job id>.out):"
    for i in "${!stage_name[@]}"; do
        name=${stage_name[$i]}
        logs=$chain_runs/$name
        mkdir -p "$logs"  # sbatch does not make the folder of --output
        if [ "$i" = 0 ] && [ -n "$first_job" ]; then
            job[$name]=$first_job
            ids+=("$first_job")
            printf '  %-20s %-10s this job\n' "$name" "$first_job"
            continue
        fi
        if [ -e "${stage_done[$i]}" ]; then
            printf '  %-20s %-10s finished (%s)\n' "$name" - "${stage_done[$i]}"
            continue
        fi
        # afterok on the stages of this chain that were submitted; a finished or earlier one needs no wait.
        deps=()
        IFS=, read -r -a after_list <<<"${stage_after[$i]}"
        for dep in "${after_list[@]}"; do
            if [ -n "${job[$dep]:-}" ]; then deps+=("${job[$dep]}"); fi
        done
        stage_options "$name" "${stage_parallel[$i]}" "$logs"
        if [ ${#deps[@]} -gt 0 ]; then
            options+=(--dependency="afterok:$(IFS=:; echo "${deps[*]}")" --kill-on-invalid-dep=yes)
        fi
        eval "argv=(${stage_argv[$i]})"  # the pipeline quotes argv for the shell (shlex.join)
        stage_script "${stage_kind[$i]}" "${stage_done[$i]}" "${argv[@]}"
        id=$(sbatch "${options[@]}" "${script[@]}") || die "sbatch failed for stage $name"
        id=${id%%;*}  # --parsable prints "id" or "id;cluster"
        job[$name]=$id
        ids+=("$id")
        if [ ${#deps[@]} -gt 0 ]; then
            printf '  %-20s %-10s after %s\n' "$name" "$id" "${stage_after[$i]}"
        else
            printf '  %-20s %-10s\n' "$name" "$id"
        fi
    done
    if [ ${#ids[@]} -gt 0 ]; then
        echo "watch: squeue -j $(IFS=,; echo "${ids[*]}") -o '%.10i %.20j %.10T %.12M %.30R'"
    else
        echo "nothing to submit: every stage has finished"
    fi
}

# run_chain PART ARGS...: what slurm/part1.sh and slurm/part2.sh do. From a login
# node (bash slurm/partN.sh) it submits the chain; as the batch script of
# `sbatch slurm/partN.sh` it queues the later stages after this job at its first
# start (not again when requeued) and then runs the first stage here.
run_chain() {
    local part=$1 script_name=$2
    shift 2
    check_repo_root
    setup_env
    read_chain "$part" "$@"
    if [ -n "${SLURM_JOB_ID:-}" ] && [ "${0##*/}" != "$script_name" ]; then
        local logs=$chain_runs/${stage_name[0]} argv
        # This job's own allocation runs the first stage; NODES sizes only the jobs it queues.
        if [ "${stage_parallel[0]}" = 1 ] && [ "${SLURM_NNODES:-1}" != "$NODES" ]; then
            die "NODES=$NODES but this job has ${SLURM_NNODES:-1} node(s) for ${stage_name[0]}: sbatch --nodes=$NODES slurm/$script_name"
        fi
        if [ "${SLURM_RESTART_COUNT:-0}" = 0 ]; then
            print_settings
            submit_chain "$SLURM_JOB_ID"
        fi
        echo "stage ${stage_name[0]} runs in this job; its log: $logs/slurm-$SLURM_JOB_ID.out"
        exec >>"$logs/slurm-$SLURM_JOB_ID.out" 2>&1
        eval "argv=(${stage_argv[0]})"
        run_stage "${stage_kind[0]}" "${stage_parallel[0]}" "${stage_done[0]}" "${argv[@]}"
    else
        print_settings
        submit_chain ""
    fi
}

alive() {
    kill -0 "$1" 2>/dev/null
}

# After USR1, a stage that has not ended a minute before the time limit (it was still starting and
# had no handler yet, or it hangs) is requeued anyway; it continues from its last periodic checkpoint.
requeue_later() {
    sleep $((SIGNAL_SECONDS - 60))
    echo "[$(date '+%F %T')] the stage is still running $((SIGNAL_SECONDS - 60)) s after USR1: requeueing job $SLURM_JOB_ID"
    scontrol requeue "$SLURM_JOB_ID"
}

# run_stage KIND PARALLEL DONE PYTHON_ARGS...
#
# Inside a batch job: run one stage and decide what comes next. A parallel
# stage is `srun torchrun` over the job's nodes and GPUs (NPROC CPU processes
# when GPUS=0); the others are one process. Either runs in the background so
# that the shell can trap USR1 (the time-limit warning, --signal=B:USR1@300,
# or `scancel --signal=USR1 --batch JOBID`) and pass a stop signal through
# srun to every process of the step: USR1 for training (the training
# processes save at the end of their step and exit 3, while torchrun,
# started with USR1 ignored, stays to collect them), TERM for the other
# stages (they keep what they finished and die). The job then requeues
# itself (same id: the chain's afterok holds) unless DONE exists. SIGTERM
# (scancel, preemption) is passed on too, but never requeues here.
run_stage() {
    local kind=$1 parallel=$2 done_file=$3
    shift 3
    local stop_signal=TERM
    if [ "$kind" = train ]; then stop_signal=USR1; fi
    local -a launch
    # srun 22.05 does not pass the job's --cpus-per-task on to the step by itself.
    local step_cpus=()
    if [ -n "${SLURM_CPUS_PER_TASK:-}" ]; then step_cpus=(--cpus-per-task="$SLURM_CPUS_PER_TASK"); fi
    if [ "$parallel" = 1 ]; then
        local nproc=$GPUS first_node port
        [ "$GPUS" -gt 0 ] || nproc=$NPROC
        first_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
        # One port per job: two jobs on one node must not meet at the same rendezvous.
        port=${RDZV_PORT:-$((20000 + SLURM_JOB_ID % 20000))}
        # shellcheck disable=SC2016  # $@ expands in the inner shell, on each node
        launch=(srun --nodes="$SLURM_NNODES" --ntasks-per-node=1 ${step_cpus[@]+"${step_cpus[@]}"} --kill-on-bad-exit=1
                bash -c 'trap "" USR1; exec "$@"' torchrun
                "$PYTHON" -m torch.distributed.run --nnodes="$SLURM_NNODES" --nproc_per_node="$nproc"
                --rdzv_backend=c10d --rdzv_endpoint="$first_node:$port" --rdzv_id="$SLURM_JOB_ID"
                "$@")
    else
        launch=(srun --nodes=1 --ntasks=1 ${step_cpus[@]+"${step_cpus[@]}"} "$PYTHON" "$@")
    fi
    echo "[$(date '+%F %T')] job $SLURM_JOB_ID start (restart ${SLURM_RESTART_COUNT:-0}) on $(hostname -s):" \
        "${launch[*]}"

    local trapped="" pid status
    trap 'trapped=USR1; echo "[$(date "+%F %T")] got USR1: sending $stop_signal to the stage"
          kill -"$stop_signal" "$pid" 2>/dev/null || true; requeue_later &' USR1
    trap 'trapped=TERM; echo "[$(date "+%F %T")] got TERM: passing it on"; kill -TERM "$pid" 2>/dev/null || true' TERM
    "${launch[@]}" &
    pid=$!
    # wait returns early when a trapped signal arrives; wait again until the step has ended.
    while :; do
        status=0
        wait "$pid" || status=$?
        alive "$pid" || break
    done
    trap - USR1 TERM

    if [ -e "$done_file" ]; then
        echo "[$(date '+%F %T')] finished: $done_file"
        return 0
    fi
    if [ "$trapped" = USR1 ]; then
        echo "[$(date '+%F %T')] not finished ($done_file missing): requeueing job $SLURM_JOB_ID"
        scontrol requeue "$SLURM_JOB_ID"
        # requeue ends this job; the next start continues from the run's checkpoint.
        sleep 60
        return 0
    fi
    echo "[$(date '+%F %T')] failed: exit code $status and $done_file missing" >&2
    return $(( status == 0 ? 1 : status ))
}
