#!/usr/bin/env bash
# A real SLURM cluster on this one machine, for tests and for trying tsforge out.
#
#   sudo bash slurm/local-cluster.sh up       # install what is missing, start, wait, sinfo
#   sudo bash slurm/local-cluster.sh status   # which daemons run; sinfo; squeue
#   sudo bash slurm/local-cluster.sh down     # cancel jobs, stop every daemon `up` started
#
# As root, without systemd, on Debian 12 (slurm-wlm 22.05): munged, MariaDB, slurmdbd (so
# `sacct` answers), slurmctld and two slurmd daemons, `slurmd -N n1` and `slurmd -N n2`: two
# nodes on this host that share its hostname and listen on their own ports. Partition `debug`
# holds both. Each node claims 2 CPUs whatever the machine has (config_overrides), so a
# 2-node x 1-task job and a 2-element array run at the same time; on a 2-core machine that
# oversubscribes the cores, which is what a test cluster wants.
#
# `up` is idempotent: it installs only what is missing, rewrites the configs, restarts the
# SLURM daemons only if a config changed, and starts only what is not running. `down` stops
# only what `up` started (MariaDB and munged are left alone if they were already running).
#
# Files: configs in /etc/slurm (where every SLURM client looks for them; an existing
# slurm.conf not written by this script is never overwritten), everything else (state,
# spool, logs, pid files) under $TSFORGE_CLUSTER_DIR (default /var/lib/tsforge-cluster).
set -euo pipefail

STATE=${TSFORGE_CLUSTER_DIR:-/var/lib/tsforge-cluster}
CONF_DIR=/etc/slurm
CLUSTER=tsforge
PARTITION=debug
NODES=(n1 n2)
NODE_PORTS=(17001 17002)
CPUS_PER_NODE=2
CTLD_PORT=6817
DBD_PORT=6819
DB_NAME=slurm_acct_db
DB_USER=slurm
MARKER="# written by tsforge slurm/local-cluster.sh"
PACKAGES=(slurm-wlm munge slurmdbd mariadb-server)

log() { printf 'local-cluster: %s\n' "$*"; }
die() { printf 'local-cluster: error: %s\n' "$*" >&2; exit 1; }

alive() {  # alive PIDFILE: the process named in PIDFILE runs
    [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

wait_for() {  # wait_for SECONDS WHAT CMD...: poll CMD every half second
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "timed out waiting for $what (logs: $STATE/log)"
        sleep 0.5
    done
}

stop_pidfile() {  # stop_pidfile NAME PIDFILE: SIGTERM, then SIGKILL after 15 s
    local name=$1 pidfile=$2 pid
    alive "$pidfile" || { rm -f "$pidfile"; return 0; }
    pid=$(cat "$pidfile")
    kill "$pid"
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid"; fi
    rm -f "$pidfile"
    log "stopped $name (pid $pid)"
}

# -- install ---------------------------------------------------------------------------------
install_missing() {
    local missing=()
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$p")
    done
    ((${#missing[@]} == 0)) && return 0
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get: install them"
    log "installing ${missing[*]}"
    # Package scripts must not start daemons: this script starts (and stops) its own.
    local policy=/usr/sbin/policy-rc.d added_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && added_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    ((added_policy)) && rm -f "$policy"
    return 0
}

# -- configs ---------------------------------------------------------------------------------
db_password() {  # a random password made once and kept with the state
    [[ -s $STATE/db.password ]] || (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' \
        >"$STATE/db.password")
    cat "$STATE/db.password"
}

render_slurm_conf() {
    local host
    host=$(hostname -s)
    cat <<EOF
$MARKER: do not edit, run it again.
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$STATE/slurmctld
SlurmdSpoolDir=$STATE/slurmd/%n
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd-%n.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd-%n.log
# No systemd and no cgroup delegation here: track processes through /proc.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# Nodes claim what this file says, not what the host has (two nodes share one host).
SlurmdParameters=config_overrides
ReturnToService=2
JobRequeue=1
# A task that fails ends its whole step at once, so a crashed rank never hangs its peers.
KillOnBadExit=1
KillWait=10
MinJobAge=600
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=60
NodeName=${NODES[0]} NodeHostname=$host NodeAddr=127.0.0.1 Port=${NODE_PORTS[0]} CPUs=$CPUS_PER_NODE RealMemory=4096 State=UNKNOWN
NodeName=${NODES[1]} NodeHostname=$host NodeAddr=127.0.0.1 Port=${NODE_PORTS[1]} CPUs=$CPUS_PER_NODE RealMemory=4096 State=UNKNOWN
PartitionName=$PARTITION Nodes=$(IFS=,; echo "${NODES[*]}") Default=YES MaxTime=INFINITE State=UP
EOF
}

render_slurmdbd_conf() {
    cat <<EOF
$MARKER: do not edit, run it again.
AuthType=auth/munge
DbdHost=localhost
DbdPort=$DBD_PORT
SlurmUser=root
LogFile=$STATE/log/slurmdbd.log
PidFile=$STATE/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=$DB_USER
StoragePass=$(db_password)
StorageLoc=$DB_NAME
EOF
}

install_conf() {  # install_conf PATH MODE < text; prints "changed" when the file changed
    local path=$1 mode=$2 tmp
    tmp=$(mktemp "$path.XXXXXX")
    cat >"$tmp"
    chmod "$mode" "$tmp"
    if [[ -f $path ]] && cmp -s "$tmp" "$path"; then
        rm -f "$tmp"
    else
        mv -f "$tmp" "$path"
        echo changed
    fi
}

write_configs() {  # prints "changed" if slurm.conf or slurmdbd.conf changed
    mkdir -p "$CONF_DIR"
    for f in slurm.conf slurmdbd.conf; do
        if [[ -f $CONF_DIR/$f ]] && ! grep -qF "$MARKER" "$CONF_DIR/$f"; then
            die "$CONF_DIR/$f exists and was not written by this script; move it away first"
        fi
    done
    {
        render_slurm_conf | install_conf "$CONF_DIR/slurm.conf" 644
        render_slurmdbd_conf | install_conf "$CONF_DIR/slurmdbd.conf" 600
    } | grep -q changed && echo changed
    return 0
}

# -- daemons ---------------------------------------------------------------------------------
munge_ok() { { munge -n </dev/null | unmunge; } >/dev/null 2>&1; }

start_munge() {
    if [[ ! -s /etc/munge/munge.key ]]; then
        log "creating the munge key"
        if command -v mungekey >/dev/null; then
            runuser -u munge -- mungekey --create --keyfile=/etc/munge/munge.key
        else
            (umask 077; dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none)
        fi
        chown munge:munge /etc/munge/munge.key
        chmod 400 /etc/munge/munge.key
    fi
    munge_ok && return 0
    mkdir -p /run/munge && chown munge:munge /run/munge && chmod 755 /run/munge
    runuser -u munge -- /usr/sbin/munged
    echo munged >>"$STATE/started"
    wait_for 20 munged munge_ok
    log "started munged"
}

mariadb_ok() { mysqladmin --protocol=socket ping >/dev/null 2>&1; }

start_mariadb() {
    if ! mariadb_ok; then
        /etc/init.d/mariadb start >"$STATE/log/mariadb-start.log" 2>&1 \
            || die "MariaDB did not start (see $STATE/log/mariadb-start.log)"
        echo mariadb >>"$STATE/started"
        wait_for 60 MariaDB mariadb_ok
        log "started MariaDB"
    fi
    local pass
    pass=$(db_password)
    mysql --protocol=socket <<EOF
CREATE DATABASE IF NOT EXISTS $DB_NAME;
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$pass';
ALTER USER '$DB_USER'@'localhost' IDENTIFIED BY '$pass';
GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'localhost';
FLUSH PRIVILEGES;
EOF
}

dbd_ok() { sacctmgr -n show cluster format=cluster >/dev/null 2>&1; }

start_slurmdbd() {
    if ! alive "$STATE/run/slurmdbd.pid"; then
        slurmdbd
        wait_for 60 slurmdbd dbd_ok
        log "started slurmdbd"
    fi
    if ! sacctmgr -n -P show cluster format=cluster | grep -qx "$CLUSTER"; then
        sacctmgr -i add cluster "$CLUSTER" >/dev/null
        log "registered cluster $CLUSTER with slurmdbd"
    fi
}

ctld_ok() { scontrol ping | grep -q 'UP'; }

start_slurmctld() {
    alive "$STATE/run/slurmctld.pid" && return 0
    slurmctld
    wait_for 60 slurmctld ctld_ok
    log "started slurmctld"
}

start_slurmd() {
    local node
    for node in "${NODES[@]}"; do
        mkdir -p "$STATE/slurmd/$node"
        alive "$STATE/run/slurmd-$node.pid" && continue
        slurmd -N "$node"
        log "started slurmd -N $node"
    done
}

HOSTS_MARK="# tsforge local-cluster nodes"

add_host_names() {
    # Jobs find their rendezvous host from SLURM_JOB_NODELIST, by node name, as on a real
    # cluster; here the node names are not host names, so make them resolve to this host.
    grep -qF "$HOSTS_MARK" /etc/hosts || echo "127.0.0.1 ${NODES[*]} $HOSTS_MARK" >>/etc/hosts
}

remove_host_names() {
    local kept
    grep -qF "$HOSTS_MARK" /etc/hosts || return 0
    kept=$(grep -vF "$HOSTS_MARK" /etc/hosts)
    # Rewrite in place: /etc/hosts is often a bind mount that cannot be replaced by a rename.
    printf '%s\n' "$kept" >/etc/hosts
}

nodes_idle() {  # every node idle (or running jobs: mixed/allocated), none down or drained
    local states
    states=$(sinfo -h -N -p "$PARTITION" -o '%t' | sort -u | tr '\n' ' ')
    [[ -n $states && ! $states =~ (down|drain|drng|unk|fail|inval|\*) ]]
}

stop_slurm() {
    local node
    for node in "${NODES[@]}"; do
        stop_pidfile "slurmd -N $node" "$STATE/run/slurmd-$node.pid"
    done
    stop_pidfile slurmctld "$STATE/run/slurmctld.pid"
    stop_pidfile slurmdbd "$STATE/run/slurmdbd.pid"
}

# -- commands --------------------------------------------------------------------------------
cmd_up() {
    mkdir -p "$STATE"/{run,log,slurmctld,slurmd}
    install_missing
    local changed
    changed=$(write_configs)
    if [[ $changed == changed ]] && alive "$STATE/run/slurmctld.pid"; then
        log "configuration changed: restarting the SLURM daemons"
        stop_slurm
    fi
    add_host_names
    start_munge
    start_mariadb
    start_slurmdbd
    start_slurmctld
    start_slurmd
    # A node that was down when slurmctld last ran may need a nudge; harmless when idle.
    scontrol update nodename="$(IFS=,; echo "${NODES[*]}")" state=resume >/dev/null 2>&1 || true
    wait_for 90 "both nodes idle" nodes_idle
    sinfo
}

cmd_down() {
    if alive "$STATE/run/slurmctld.pid"; then
        scancel --full "--partition=$PARTITION" >/dev/null 2>&1 || true
        local deadline=$((SECONDS + 30))
        while [[ -n $(squeue -h -t running,completing 2>/dev/null) ]] && ((SECONDS < deadline)); do
            sleep 1
        done
    fi
    stop_slurm
    remove_host_names
    if [[ -f $STATE/started ]]; then
        if grep -qx mariadb "$STATE/started"; then
            /etc/init.d/mariadb stop >/dev/null 2>&1 || true
            log "stopped MariaDB"
        fi
        if grep -qx munged "$STATE/started"; then
            stop_pidfile munged /run/munge/munged.pid
        fi
        rm -f "$STATE/started"
    fi
}

cmd_status() {
    local rc=0 node
    report() {  # report NAME OK?
        if "${@:2}" >/dev/null 2>&1; then echo "  $1: running"; else echo "  $1: stopped"; rc=1; fi
    }
    echo "daemons:"
    report munged munge_ok
    report MariaDB mariadb_ok
    report slurmdbd alive "$STATE/run/slurmdbd.pid"
    report slurmctld alive "$STATE/run/slurmctld.pid"
    for node in "${NODES[@]}"; do report "slurmd -N $node" alive "$STATE/run/slurmd-$node.pid"; done
    if ctld_ok 2>/dev/null; then
        sinfo
        squeue
    fi
    return "$rc"
}

[[ $(id -u) == 0 ]] || die "run it as root (it installs packages and starts daemons)"
case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    *) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
