#!/usr/bin/env bash
# A real Slurm cluster on this machine: munge, slurmctld, two compute nodes (two slurmd in Slurm's multiple-slurmd
# mode: one host, one port per node) and job accounting (slurmdbd on a private MariaDB server, so that `sacct`, which
# `torchx status` calls, works). For tests and for trying the `-s slurm` path of TorchX.
#
#   examples/slurm/local_cluster.sh up       install slurm-wlm, slurmdbd, munge, mariadb-server if missing
#                                            (apt-get), configure, start
#   examples/slurm/local_cluster.sh status   daemons, nodes (sinfo) and jobs (squeue)
#   examples/slurm/local_cluster.sh env      the exports that point Slurm's commands at this cluster
#   examples/slurm/local_cluster.sh down     stop every daemon, drop the /etc/hosts entries, delete the directory
# Exit status: 0, 1 (a daemon did not come up: see $DLF_SLURM_DIR/log), 2 (usage), 3 (apt-get failed).
#
# Everything (config, munge key and socket, database, state, spool, logs, pid files) lives under $DLF_SLURM_DIR
# (default /tmp/dlf-slurm). Slurm's commands find this cluster through SLURM_CONF (printed by `env`):
#   eval "$(examples/slurm/local_cluster.sh env)"; sinfo
# Needs root (the daemons run as root, apt-get, /etc/hosts). Tested on Debian 12 (slurm-wlm 22.05.8, munge 0.5.15).
# Settings: DLF_SLURM_DIR, DLF_SLURM_PORT (slurmctld port, default 16817; slurmd use the next two),
# DLF_SLURM_NODES (names, default "dlf-n1 dlf-n2"), DLF_SLURM_CPUS (CPUs per node, default: this machine's),
# DLF_SLURM_MEM_MB (memory per node, default 4096).
set -euo pipefail

DIR=${DLF_SLURM_DIR:-/tmp/dlf-slurm}
PORT=${DLF_SLURM_PORT:-16817}
read -r -a NODES <<< "${DLF_SLURM_NODES:-dlf-n1 dlf-n2}"
CPUS=${DLF_SLURM_CPUS:-$(nproc)}
MEM_MB=${DLF_SLURM_MEM_MB:-4096}
DBD_PORT=$((PORT + ${#NODES[@]} + 1))
DB_PORT=$((PORT + ${#NODES[@]} + 2))
HOSTS_TAG="# dlf-slurm local cluster $DIR"
export SLURM_CONF=$DIR/slurm.conf

log() { echo "[local_cluster] $*" >&2; }

install_packages() {
    local missing=()
    for cmd in slurmctld slurmd slurmdbd sbatch sacct munged mariadbd mariadb-install-db; do
        command -v "$cmd" >/dev/null || PATH=$PATH:/usr/sbin command -v "$cmd" >/dev/null || missing+=("$cmd")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing slurm-wlm, slurmdbd, munge and mariadb-server (missing: ${missing[*]})"
    export DEBIAN_FRONTEND=noninteractive
    if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends slurm-wlm slurmdbd munge \
            mariadb-server >/dev/null; }; then
        log "apt-get could not install the packages (no root, or no package mirror reachable?)"
        exit 3
    fi
    # The packages may start their own daemons (systemd); this cluster runs its own on other ports and sockets.
}

write_config() {
    mkdir -p "$DIR"/{munge,state,log,run,spool,db}
    chmod 0755 "$DIR" "$DIR"/munge
    if [ ! -s "$DIR/munge/munge.key" ]; then
        (umask 077; head -c 1024 /dev/urandom > "$DIR/munge/munge.key")
    fi
    if [ ! -s "$DIR/db/password" ]; then
        (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$DIR/db/password")
    fi
    local host nodes="" i=0
    host=$(hostname -s)
    for n in "${NODES[@]}"; do
        i=$((i + 1))
        nodes+="NodeName=$n NodeHostname=$host NodeAddr=127.0.0.1 Port=$((PORT + i)) CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN"$'\n'
    done
    cat > "$SLURM_CONF" <<CONF
# Written by examples/slurm/local_cluster.sh: ${#NODES[@]} compute nodes on one host (multiple-slurmd mode).
ClusterName=dlf
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire also delays the start of a requeued job (default 120 s).
AuthInfo=socket=$DIR/munge/munge.socket.2,cred_expire=10
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups: process groups track the job steps; no per-step resource sampling.
ProctrackType=proctrack/pgid
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
# Job records (sacct) through slurmdbd; no associations are enforced (any user, no account needed).
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
# For slurmdbd connections this names the munge socket (AuthInfo covers the others).
AccountingStoragePass=$DIR/munge/munge.socket.2
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
# Only the backfill scheduler starts heterogeneous jobs (torchx submits one het group per node): every second,
# not every 30 s.
SchedulerParameters=bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MinJobAge=300
KillWait=30
SlurmdTimeout=60
InactiveLimit=0
$nodes
PartitionName=debug Nodes=$(IFS=,; echo "${NODES[*]}") Default=YES MaxTime=INFINITE State=UP
CONF
    # slurmdbd reads slurmdbd.conf beside $SLURM_CONF; it must be private to SlurmUser (it holds the password).
    (umask 077; cat > "$DIR/slurmdbd.conf" <<DBD
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket.2
DbdHost=$host
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
LogFile=$DIR/log/slurmdbd.log
PidFile=$DIR/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$(cat "$DIR/db/password")
StorageLoc=slurm_acct_db
DBD
)
}

sql() { mariadb --no-defaults --socket="$DIR/db/mysqld.sock" -e "$1"; }

start_database() {  # a private MariaDB server for slurmdbd: TCP on 127.0.0.1 only, data under $DIR/db
    if [ ! -d "$DIR/db/data/mysql" ]; then
        mariadb-install-db --no-defaults --datadir="$DIR/db/data" --user=root --auth-root-authentication-method=socket \
            --skip-test-db > "$DIR/log/mariadb-install.log" 2>&1
    fi
    mariadbd --no-defaults --datadir="$DIR/db/data" --user=root --socket="$DIR/db/mysqld.sock" --port="$DB_PORT" \
        --bind-address=127.0.0.1 --pid-file="$DIR/run/mariadbd.pid" --log-error="$DIR/log/mariadbd.log" \
        --skip-name-resolve --innodb-buffer-pool-size=32M --innodb-log-file-size=8M </dev/null >/dev/null 2>&1 &
    wait_for 60 MariaDB sql "SELECT 1"
    local pw
    pw=$(cat "$DIR/db/password")
    sql "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$pw';
         GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
}

hosts_add() {
    hosts_remove
    [ -z "$(tail -c 1 /etc/hosts)" ] || echo >> /etc/hosts
    { for n in "${NODES[@]}"; do echo "127.0.0.1 $n $HOSTS_TAG"; done; } >> /etc/hosts
}

hosts_remove() {
    if grep -q "$HOSTS_TAG" /etc/hosts 2>/dev/null; then
        local kept
        kept=$(grep -v "$HOSTS_TAG" /etc/hosts)
        printf '%s\n' "$kept" > /etc/hosts  # rewrite in place (/etc/hosts may be a bind mount)
    fi
}

pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local timeout=$1 what=$2; shift 2
    local end=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        if [ $SECONDS -ge $end ]; then log "timed out waiting for $what"; return 1; fi
        sleep 0.2
    done
}

nodes_idle() {
    local idle
    idle=$(sinfo -h -N -o '%N %t' | awk '$2 == "idle" {n++} END {print n + 0}')
    [ "$idle" -eq "${#NODES[@]}" ]
}

up() {
    local t0=$SECONDS
    install_packages
    export PATH=$PATH:/usr/sbin
    if pid_alive "$DIR/run/slurmctld.pid"; then log "already up ($DIR)"; status; return 0; fi
    write_config
    hosts_add
    pid_alive "$DIR/run/munged.pid" || munged --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/munge.socket.2" \
        --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed"
    pid_alive "$DIR/run/mariadbd.pid" || start_database
    pid_alive "$DIR/run/slurmdbd.pid" || slurmdbd
    wait_for 30 slurmdbd sacctmgr -n list cluster
    slurmctld -f "$SLURM_CONF"
    wait_for 30 slurmctld scontrol ping
    for n in "${NODES[@]}"; do
        mkdir -p "$DIR/spool/$n"
        slurmd -f "$SLURM_CONF" -N "$n"
    done
    wait_for 60 "${#NODES[@]} idle nodes" nodes_idle || { status; return 1; }
    log "up in $((SECONDS - t0)) s: ${#NODES[@]} nodes under $DIR; run: export SLURM_CONF=$SLURM_CONF"
}

stop_all() {  # stop_all NAME...: SIGTERM the daemons of $DIR/run/NAME.pid together, SIGKILL after 10 s
    local pids=() name pid alive
    for name in "$@"; do
        if pid_alive "$DIR/run/$name.pid"; then pids+=("$(cat "$DIR/run/$name.pid")"); fi
    done
    [ ${#pids[@]} -eq 0 ] && return 0
    kill -TERM "${pids[@]}" 2>/dev/null || true
    for _ in $(seq 100); do
        alive=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ $alive -eq 0 ] && return 0
        sleep 0.1
    done
    log "$* still running 10 s after SIGTERM: SIGKILL"
    kill -KILL "${pids[@]}" 2>/dev/null || true
}

down() {
    export PATH=$PATH:/usr/sbin
    if [ -f "$SLURM_CONF" ] && pid_alive "$DIR/run/slurmctld.pid"; then
        scancel --full --quiet --user="$(id -un)" 2>/dev/null || true  # running job steps die with their slurmd
    fi
    stop_all "${NODES[@]/#/slurmd-}" slurmctld slurmdbd mariadbd  # ~2 s each, so together
    stop_all munged
    hosts_remove
    rm -rf "$DIR"
    log "down ($DIR removed)"
}

status() {
    export PATH=$PATH:/usr/sbin
    local name pidfile rc=0
    for name in munged mariadbd slurmdbd slurmctld "${NODES[@]/#/slurmd-}"; do
        pidfile=$DIR/run/$name.pid
        if pid_alive "$pidfile"; then echo "$name: running (pid $(cat "$pidfile"))"; else echo "$name: stopped"; rc=1; fi
    done
    if [ $rc -eq 0 ]; then
        sinfo -N -o '%N %P %t %c %m'
        squeue -o '%i %j %T %M %N %r'
    fi
    return $rc
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) status ;;
    env) echo "export SLURM_CONF=$SLURM_CONF" ;;
    *) echo "usage: $0 up|down|status|env" >&2; exit 2 ;;
esac
