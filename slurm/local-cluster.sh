#!/usr/bin/env bash
# A real SLURM cluster on this one machine, for tests and for trying tsforge out.
#
#   sudo bash slurm/local-cluster.sh up       # provision with Ansible, start, wait, sinfo
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
# `up` is the project's playbook with the local inventory, the same one that provisions real
# clusters (ansible/README.md):
#     ansible-playbook -i ansible/inventories/local ansible/site.yml
# It is idempotent: it installs only what is missing, rewrites the configs, restarts the
# SLURM daemons only if a config changed, and starts only what is not running. It needs
# ansible-playbook (pip install ansible-core, or pip install -e '.[dev]'). `down` stops only
# what `up` started (MariaDB and munged are left alone if they were already running).
#
# Files: configs in /etc/slurm (where every SLURM client looks for them; an existing
# slurm.conf not written by the playbook or by this script is never overwritten),
# everything else (state, spool, logs, pid files) under /var/lib/tsforge-cluster (set in
# ansible/inventories/local/group_vars/all.yml).
set -euo pipefail

HOSTS_BLOCK="tsforge cluster hosts (ansible common role)"
HOSTS_MARK="# tsforge local-cluster nodes"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=/var/lib/tsforge-cluster
CONF_DIR=/etc/slurm
PARTITION=debug
NODES=(n1 n2)
# Files with either mark were written by this project; any other slurm.conf is left alone.
MARKS=("rendered from the inventory by tsforge's slurm" "# written by tsforge slurm/local-cluster.sh")

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

# -- provisioning ----------------------------------------------------------------------------
check_conf_ours() {  # an existing slurm.conf must be one this project wrote
    local f=$CONF_DIR/slurm.conf mark
    [[ -f $f ]] || return 0
    for mark in "${MARKS[@]}"; do grep -qF "$mark" "$f" && return 0; done
    die "$f exists and was not written by tsforge; move it away first"
}

run_playbook() {
    command -v ansible-playbook >/dev/null || die "ansible-playbook not found: install it \
with pip install 'ansible-core>=2.15' (or pip install -e '.[dev]' in this checkout), then run again"
    ansible-playbook -i "$ROOT/ansible/inventories/local" "$ROOT/ansible/site.yml" \
        || die "the playbook failed (its output is above; daemon logs: $STATE/log)"
}

# -- daemons ---------------------------------------------------------------------------------
munge_ok() { { munge -n </dev/null | unmunge; } >/dev/null 2>&1; }
mariadb_ok() { mysqladmin --protocol=socket ping >/dev/null 2>&1; }
ctld_ok() { scontrol ping | grep -q 'UP'; }

remove_host_names() {
    # The playbook's common role adds the node names to /etc/hosts in a marked block; older
    # versions of this script added one marked line.
    grep -qE "$HOSTS_BLOCK|$HOSTS_MARK" /etc/hosts || return 0
    local kept
    kept=$(sed -e "/# BEGIN $HOSTS_BLOCK/,/# END $HOSTS_BLOCK/d" -e "/$HOSTS_MARK/d" /etc/hosts)
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
    check_conf_ours
    run_playbook
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
