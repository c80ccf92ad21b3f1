#!/usr/bin/env bash
# A Slurm cluster in a folder, for the tests of slurm/ (Debian 12, as root).
#
#     bash tests/slurm/cluster.sh start DIR   # install slurm-wlm + munge if missing, start munged,
#                                             # slurmctld and slurmd; print the SLURM_CONF to export
#     bash tests/slurm/cluster.sh start DIR 2 # two nodes on this machine: two slurmd (slurmd -N)
#     export SLURM_CONF=DIR/slurm.conf        # then sbatch, squeue, scontrol talk to it
#     bash tests/slurm/cluster.sh stop DIR    # cancel every job, stop the daemons by their PID files
#
# With N nodes, node 1 is this machine's short host name (jobs reach a node
# by its name, and torchrun's rendezvous runs on the first node of a job) and
# nodes 2..N are HOST-n2, ...: each its own slurmd on its own port, spool
# folder, PID file and log (%n in slurm.conf), all with this machine's CPUs
# and memory. A job on two nodes thus runs both tasks here.
#
# Everything the cluster writes (state, spool, logs, PID files, the munge
# key and socket) lives in DIR; nothing under /etc or /run is changed, so a
# site Slurm on the same machine is not touched. The ports are free ones
# picked at start. Exit codes: 0 done; 1 failed (the reason on stderr);
# 2 this machine cannot run it (not root, or no slurm and no apt-get).
set -euo pipefail

usage() { echo "usage: $0 start DIR [NODES] | stop DIR" >&2; exit 1; }
[ $# -eq 2 ] || [ $# -eq 3 ] || usage
action=$1
dir=$2
nodes=${3:-1}
case $nodes in ''|*[!0-9]*|0) usage ;; esac

# A killed daemon whose parent is not an init stays a zombie for a while: it counts as gone.
alive() {
    local pid=$1
    [ -r "/proc/$pid/status" ] || return 1
    ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status"
}

stop_pidfile() {
    local file=$1 pid
    [ -s "$file" ] || return 0
    pid=$(cat "$file")
    if alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 100); do alive "$pid" || break; sleep 0.1; done
        if alive "$pid"; then
            echo "cluster: $file: pid $pid ignored SIGTERM for 10 s; killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$file"
}

install_slurm() {
    command -v sbatch >/dev/null && command -v slurmctld >/dev/null && command -v munged >/dev/null && return 0
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
        echo "cluster: slurm is not installed and this machine cannot install it (needs root and apt-get)" >&2
        exit 2
    fi
    local apt=(apt-get -o DPkg::Lock::Timeout=300 install -y --no-install-recommends slurm-wlm munge)
    if ! DEBIAN_FRONTEND=noninteractive "${apt[@]}" >"$dir/apt.log" 2>&1; then
        # A fresh machine may have no package lists yet.
        apt-get -o DPkg::Lock::Timeout=300 update >>"$dir/apt.log" 2>&1
        DEBIAN_FRONTEND=noninteractive "${apt[@]}" >>"$dir/apt.log" 2>&1 ||
            { echo "cluster: apt-get install slurm-wlm munge failed; see $dir/apt.log" >&2; exit 1; }
    fi
}

# Node I of the cluster: this machine's name, then HOST-n2, HOST-n3, ...
node_name() {
    if [ "$2" = 1 ]; then echo "$1"; else echo "$1-n$2"; fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "cluster: needs root (slurmd runs jobs as their user; munged as the munge user)" >&2
        exit 2
    fi
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    # The munge user must reach its folder inside DIR.
    chmod 755 "$dir"
    install_slurm
    mkdir -p "$dir/state" "$dir/spool" "$dir/log" "$dir/munge"
    chown munge:munge "$dir/munge"
    # munged wants its socket folder searchable by everyone (clients connect there); the key stays 0600.
    chmod 755 "$dir/munge"
    if [ ! -s "$dir/munge/munge.key" ]; then
        runuser -u munge -- mungekey --create --keyfile="$dir/munge/munge.key"
    fi
    runuser -u munge -- munged --socket="$dir/munge/munge.socket" --key-file="$dir/munge/munge.key" \
        --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" \
        --seed-file="$dir/munge/munged.seed"

    local host node ctld_port slurmd_port name port i spool pid_file log_file node_lines=""
    host=$(hostname -s)
    # torchrun's rendezvous in the jobs connects to the node by this name.
    getent hosts "$host" >/dev/null ||
        { echo "cluster: the host name $host does not resolve (add it to /etc/hosts)" >&2; exit 1; }
    # slurmd -C prints this machine's NodeName line (CPUs, sockets, memory).
    node=$(slurmd -C | head -n 1)
    ctld_port=$(free_port)
    slurmd_port=$(free_port)
    if [ "$nodes" = 1 ]; then
        spool=$dir/spool pid_file=$dir/slurmd.pid log_file=$dir/log/slurmd.log
        node_lines="$node NodeAddr=127.0.0.1 State=UNKNOWN"
    else
        # One slurmd per node name (slurmd -N NAME), each with its own port; %n is the node name.
        spool=$dir/spool/%n pid_file=$dir/slurmd-%n.pid log_file=$dir/log/slurmd-%n.log
        for i in $(seq "$nodes"); do
            name=$(node_name "$host" "$i") port=$slurmd_port
            [ "$i" = 1 ] || port=$(free_port)
            node_lines+="${node/NodeName=$host /NodeName=$name NodeHostname=$host } NodeAddr=127.0.0.1"
            node_lines+=" Port=$port State=UNKNOWN"$'\n'
        done
    fi
    cat >"$dir/slurm.conf" <<EOF
# A $nodes-node test cluster on one machine (tests/slurm/cluster.sh).
ClusterName=labelnoise-test
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# cred_expire is also how long a requeued job waits before it may start again (default 120 s).
AuthInfo=socket=$dir/munge/munge.socket,cred_expire=10
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SchedulerType=sched/builtin
# Test every pending job each second (default 60 s): a requeued job starts soon after its delay.
SchedulerParameters=sched_interval=1
# Finished jobs stay visible to scontrol for 10 minutes (there is no accounting).
MinJobAge=600
KillWait=30
StateSaveLocation=$dir/state
SlurmdSpoolDir=$spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$pid_file
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$log_file
SlurmctldDebug=info
SlurmdDebug=info
$node_lines
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    export SLURM_CONF=$dir/slurm.conf
    slurmctld -f "$SLURM_CONF"
    if [ "$nodes" = 1 ]; then
        slurmd -f "$SLURM_CONF"
    else
        for i in $(seq "$nodes"); do
            name=$(node_name "$host" "$i")
            mkdir -p "$dir/spool/$name"
            slurmd -f "$SLURM_CONF" -N "$name"
        done
    fi
    for _ in $(seq 300); do
        # One line per node: every one idle.
        if [ "$(sinfo -h -N -o %T 2>/dev/null | grep -c '^idle')" = "$nodes" ]; then
            echo "SLURM_CONF=$SLURM_CONF"
            return 0
        fi
        sleep 0.1
    done
    echo "cluster: the $nodes node(s) did not become idle in 30 s; see $dir/log/" >&2
    exit 1
}

stop() {
    dir=$(cd "$dir" && pwd)
    export SLURM_CONF=$dir/slurm.conf
    if [ -s "$dir/slurmctld.pid" ] && alive "$(cat "$dir/slurmctld.pid")"; then
        # Jobs first: their slurmstepd processes outlive slurmd.
        scancel --full --signal=KILL --user=root 2>/dev/null || true
        scancel --user=root 2>/dev/null || true
        for _ in $(seq 100); do
            [ -z "$(squeue -h -t running,completing -o %i 2>/dev/null)" ] && break
            sleep 0.1
        done
    fi
    local file
    for file in "$dir"/slurmd.pid "$dir"/slurmd-*.pid; do stop_pidfile "$file"; done
    stop_pidfile "$dir/slurmctld.pid"
    stop_pidfile "$dir/munge/munged.pid"
}

case $action in
    start) start ;;
    stop) stop ;;
    *) usage ;;
esac
