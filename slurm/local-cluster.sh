#!/usr/bin/env bash
# A real SLURM cluster on this one machine, laid out as a site is, for tests and for trying
# tsforge out.
#
#   sudo bash slurm/local-cluster.sh up       # the hosts, tsforge's wheel, the playbook, sinfo
#   sudo bash slurm/local-cluster.sh status   # hosts, daemons, sinfo, squeue
#   sudo bash slurm/local-cluster.sh down     # stop and remove everything `up` started or made
#
# As root, without systemd, on Debian 12 (slurm-wlm 22.05). This machine is the controller
# (munged, MariaDB, slurmdbd so that `sacct` answers, slurmctld, TensorBoard on 127.0.0.1);
# the two GPU nodes, gpu-node01 and gpu-node02 (partition `debug`), are hosts of their own:
# each slurmd runs in a network namespace with its own address on the bridge tsforge0
# (10.77.0.11 and .12; the controller is 10.77.0.1 there) and in a UTS namespace with its own
# hostname, and the jobs it starts inherit both. Nothing on the bridge routes anywhere else.
# Each node has 2 GPUs as SLURM sees them (gres gpu:virtual:2, AutoDetect=off), backed by
# character devices made here (/dev/tsforge-cluster/<node>/nvidia0, 1): GPU requests are
# scheduled and bound for real, and training runs on the CPU (trainer.device=cpu). Each node
# claims 2 CPUs whatever the machine has, so a 2-node job and a 2-element array run at once.
#
# `up` first builds what the inventory describes (ansible/inventories/local/host_vars/
# localhost.yml: node names, addresses, GPUs, device files) and tsforge's wheel from this
# checkout (/var/lib/tsforge-cluster/wheels), then runs the project's playbook, the same one
# that provisions real clusters (ansible/README.md):
#     ansible-playbook -i ansible/inventories/local ansible/site.yml
# which installs SLURM, writes the configs, starts the daemons (each slurmd inside its node's
# namespaces) and installs tsforge from that wheel into a virtual environment on the shared
# folder, /var/lib/tsforge-cluster/shared/venvs/tsforge-<version>: jobs run from it, e.g.
#     /var/lib/tsforge-cluster/shared/venvs/tsforge-0.1.0/bin/python -m tsforge.launch \
#         launcher=slurm launcher.nodes=2
# Every step is idempotent: a second `up` changes nothing. It needs ansible-playbook (pip
# install ansible-core, or pip install -e '.[dev]') and python3 with pip (PYTHON to choose).
# `down` stops only what `up` started (MariaDB and munged are left alone if they already ran)
# and removes the namespaces, the bridge, the /etc/hosts lines and the device files; state
# (accounting, the environment, logs) stays under /var/lib/tsforge-cluster for the next `up`.
#
# Files: configs in /etc/slurm (where every SLURM client looks for them; an existing
# slurm.conf not written by the playbook or by this script is never overwritten), the
# rest under /var/lib/tsforge-cluster (set in ansible/inventories/local/group_vars/all.yml).
set -euo pipefail

HOSTS_BLOCK="tsforge cluster hosts (ansible common role)"
HOSTS_MARK="# tsforge local-cluster nodes"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
INVENTORY=$ROOT/ansible/inventories/local
STATE=/var/lib/tsforge-cluster
CONF_DIR=/etc/slurm
PARTITION=debug
# What the inventory's paths name (slurm_slurmd_command_prefix, tsforge_wheel, ...).
BRIDGE=tsforge0
VETH=tsforge-v            # + the node's number: the bridge's end of its cable
NETNS_DIR=/run/netns      # where `ip netns` keeps them
UTS_DIR=/run/tsforge-cluster/uts
DEV_DIR=/dev/tsforge-cluster
WHEELS=$STATE/wheels
GPU_MAJOR=195             # NVIDIA's character-device major, as on a real GPU node
PYTHON=${PYTHON:-python3}
# Files with either mark were written by this project; any other slurm.conf is left alone.
MARKS=("rendered from the inventory by tsforge's slurm" "# written by tsforge slurm/local-cluster.sh")

log() { printf 'local-cluster: %s\n' "$*"; }
die() { printf 'local-cluster: error: %s\n' "$*" >&2; exit 1; }
usage_error() { printf 'local-cluster: error: %s\n' "$*" >&2; exit 2; }

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

stop_pids() {  # stop_pids NAME PID...: SIGTERM, then SIGKILL after 15 s
    local name=$1 pid left
    shift
    (($#)) || return 0
    kill "$@" 2>/dev/null || true
    for _ in $(seq 30); do
        left=0
        for pid in "$@"; do kill -0 "$pid" 2>/dev/null && left=1; done
        ((left)) || break
        sleep 0.5
    done
    ((left == 0)) || kill -9 "$@" 2>/dev/null || true
    log "stopped $name (pid $*)"
}

stop_pidfile() {  # stop_pidfile NAME PIDFILE
    alive "$2" && stop_pids "$1" "$(cat "$2")"
    rm -f "$2"
}

# -- the layout the inventory describes ------------------------------------------------------
NODES=() ADDRS=() CTL_ADDR="" GPUS=0 DEV_PREFIX=""

read_layout() {
    command -v ansible-inventory >/dev/null || die "ansible-inventory not found: install \
ansible-core with pip install 'ansible-core>=2.15' (or pip install -e '.[dev]' in this \
checkout), then run again"
    local vars line name addr
    vars=$(ansible-inventory -i "$INVENTORY" --host localhost) \
        || die "ansible-inventory could not read $INVENTORY (its message is above)"
    # The values are checked before any of them reaches a command: names and paths that
    # could read as options or leave their folder are refused.
    while read -r line; do
        case $line in
            error:*) usage_error "$INVENTORY/host_vars/localhost.yml: ${line#error: }" ;;
            node\ *) read -r _ name addr <<<"$line"; NODES+=("$name"); ADDRS+=("$addr") ;;
            controller\ *) CTL_ADDR=${line#controller } ;;
            gpus\ *) GPUS=${line#gpus } ;;
            devices\ *) DEV_PREFIX=${line#devices } ;;
        esac
    done < <("$PYTHON" -c '
import ipaddress, json, re, sys
v = json.load(sys.stdin)
def fail(msg):
    print("error:", msg)
    sys.exit()
names, addrs = v.get("slurm_node_names"), v.get("slurm_node_addresses")
ctl, gpus = v.get("slurm_address", ""), v.get("slurm_node_gpus", 0)
prefix = v.get("slurm_node_gpu_device_prefix", "")
if not (isinstance(names, list) and names and all(
        isinstance(n, str) and re.fullmatch(r"[a-z][a-z0-9-]{0,31}", n) for n in names)):
    fail(f"slurm_node_names is {names!r}: give a list of names such as gpu-node01 "
         "(lower-case letters, digits, -)")
if not isinstance(addrs, list) or len(addrs) != len(names):
    fail(f"slurm_node_addresses is {addrs!r}: give one address per node name")
try:
    net = ipaddress.ip_interface(f"{ctl}/24").network
    hosts = [ipaddress.ip_address(a) for a in addrs]
except ValueError:
    fail(f"slurm_address {ctl!r} and slurm_node_addresses {addrs!r} must be IPv4 addresses")
if not net.is_private or any(h not in net or str(h) == ctl for h in hosts) \
        or len(set(hosts)) != len(hosts):
    fail(f"slurm_node_addresses {addrs!r} must be distinct addresses of the private /24 of "
         f"slurm_address {ctl!r}, other than it")
if not isinstance(gpus, int) or not 0 <= gpus <= 16:
    fail(f"slurm_node_gpus is {gpus!r}: give a count from 0 to 16")
if gpus and not re.fullmatch(r"/dev/tsforge-cluster/%n/[a-z]+", prefix):
    fail(f"slurm_node_gpu_device_prefix is {prefix!r}: the test cluster makes its device "
         "files under /dev/tsforge-cluster/%n/, e.g. /dev/tsforge-cluster/%n/nvidia")
print("controller", ctl)
print("gpus", gpus)
print("devices", prefix)
for name, addr in zip(names, addrs):
    print("node", name, addr)
' <<<"$vars")
    ((${#NODES[@]})) || die "no nodes read from $INVENTORY"
}

# -- the hosts: a bridge, and a network + UTS namespace and GPU device files per node -------
hosts_up() {
    local i name addr uts dev g
    mkdir -p "$UTS_DIR"
    ip link show "$BRIDGE" >/dev/null 2>&1 || ip link add "$BRIDGE" type bridge
    ip -4 addr show dev "$BRIDGE" | grep -qF "inet $CTL_ADDR/24" \
        || ip addr add "$CTL_ADDR/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
    for i in "${!NODES[@]}"; do
        name=${NODES[i]} addr=${ADDRS[i]} uts=$UTS_DIR/${NODES[i]}
        # The UTS namespace first: `down` finds the nodes by these files.
        if ! findmnt -rn --mountpoint "$uts" >/dev/null; then
            : >"$uts"
            unshare --uts="$uts" hostname "$name"
        fi
        [[ -e $NETNS_DIR/$name ]] || ip netns add "$name"
        ip -n "$name" link set lo up
        if ! ip link show "$VETH$i" >/dev/null 2>&1; then
            ip link add "$VETH$i" type veth peer name eth0 netns "$name"
        fi
        ip link set "$VETH$i" master "$BRIDGE" up
        ip -n "$name" -4 addr show dev eth0 | grep -qF "inet $addr/24" \
            || ip -n "$name" addr add "$addr/24" dev eth0
        ip -n "$name" link set eth0 up
        dev=${DEV_PREFIX//%n/$name}
        ((GPUS == 0)) || mkdir -p "${dev%/*}"
        for ((g = 0; g < GPUS; g++)); do
            [[ -c $dev$g ]] || mknod -m 0666 "$dev$g" c "$GPU_MAJOR" "$g"
        done
    done
}

hosts_down() {
    local uts name link pids
    for uts in "$UTS_DIR"/*; do
        [[ -e $uts ]] || continue
        name=${uts##*/}
        # Whatever still runs on the node (a job step slurmd left behind) goes with it.
        if [[ -e $NETNS_DIR/$name ]]; then
            mapfile -t pids < <(ip netns pids "$name" 2>/dev/null)
            stop_pids "what ran on $name" "${pids[@]}"
            ip netns del "$name"
        fi
        umount "$uts" 2>/dev/null || true
        rm -f "$uts"
    done
    rmdir "$UTS_DIR" "${UTS_DIR%/*}" 2>/dev/null || true
    # A cable goes with its node's namespace, but the kernel frees a namespace a moment after
    # `ip netns del` returns: delete what is still listed (it may vanish meanwhile) and wait
    # until none is left. One left by an interrupted `up` goes the same way.
    for link in $(veths); do ip link del "$link" 2>/dev/null || true; done
    wait_for 30 "the nodes' links to go" no_veths
    if ip link show "$BRIDGE" >/dev/null 2>&1; then ip link del "$BRIDGE"; fi
    rm -rf "$DEV_DIR"
}

veths() {  # the bridge's ends of the nodes' cables
    ip -o link show | awk -F': ' -v v="$VETH" 'index($2, v) == 1 {sub(/@.*/, "", $2); print $2}'
}

no_veths() { [[ -z $(veths) ]]; }

# -- tsforge's wheel, from this checkout -------------------------------------------------------
build_wheel() {
    local src out stamp wheels
    src=$(mktemp -d)
    # A copy of the sources (what git tracks or would track, edits included): an in-tree
    # build would reuse build/ from earlier builds, where a removed module lingers.
    if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        git -C "$ROOT" ls-files -z --cached --others --exclude-standard \
            | while IFS= read -r -d '' f; do [[ -e $ROOT/$f ]] && printf '%s\0' "$f"; done \
            | tar -C "$ROOT" --null -T - -cf - | tar -C "$src" -xf -
    else
        tar -C "$ROOT" --exclude=./build --exclude=./dist --exclude='*.egg-info' -cf - . \
            | tar -C "$src" -xf -
    fi
    # The same sources as last time: that wheel stands (a build takes a while).
    stamp=$(tar -C "$src" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf - . \
        | sha256sum | cut -d' ' -f1)
    wheels=("$WHEELS"/*.whl)
    if [[ -e ${wheels[0]} && $(cat "$WHEELS/sources.sha256" 2>/dev/null) == "$stamp" ]]; then
        rm -rf "$src"
        return 0
    fi
    "$PYTHON" -m pip --version >/dev/null 2>&1 || die "$PYTHON has no pip to build tsforge's \
wheel: install it (apt-get install python3-pip) or name a Python that has it with PYTHON=..."
    out=$(mktemp -d)
    # A fixed timestamp makes the wheel depend on the sources only: the same sources give
    # the same bytes, and the playbook reinstalls only a wheel whose checksum changed.
    SOURCE_DATE_EPOCH=315532800 "$PYTHON" -m pip wheel --quiet --no-deps -w "$out" "$src" \
        || { rm -rf "$src" "$out"; die "could not build tsforge's wheel (pip's message is above)"; }
    mkdir -p "$WHEELS"
    rm -f "$WHEELS"/*.whl
    mv "$out"/*.whl "$WHEELS/"
    echo "$stamp" >"$WHEELS/sources.sha256"
    log "built $(cd "$WHEELS" && echo *.whl)"
    rm -rf "$src" "$out"
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
    ansible-playbook -i "$INVENTORY" "$ROOT/ansible/site.yml" \
        || die "the playbook failed (its output is above; daemon logs: $STATE/log)"
}

# -- daemons ---------------------------------------------------------------------------------
munge_ok() { { munge -n </dev/null | unmunge; } >/dev/null 2>&1; }
mariadb_ok() { mysqladmin --protocol=socket ping >/dev/null 2>&1; }
ctld_ok() { scontrol ping | grep -q 'UP'; }

remove_host_names() {
    # The playbook's common role adds the node names to /etc/hosts in a marked block; older
    # versions of this script added one marked line.
    grep -qF -e "$HOSTS_BLOCK" -e "$HOSTS_MARK" /etc/hosts || return 0
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

stop_daemons() {
    local pidfile
    # Every node's slurmd, also those of an older layout (slurmd-n1.pid, ...).
    for pidfile in "$STATE"/run/slurmd-*.pid; do
        [[ -e $pidfile ]] || continue
        pidfile=${pidfile##*/}
        stop_pidfile "slurmd -N ${pidfile:7:-4}" "$STATE/run/$pidfile"
    done
    stop_pidfile slurmctld "$STATE/run/slurmctld.pid"
    stop_pidfile slurmdbd "$STATE/run/slurmdbd.pid"
    stop_pidfile TensorBoard "$STATE/run/tensorboard.pid"
}

# -- commands --------------------------------------------------------------------------------
cmd_up() {
    check_conf_ours
    read_layout
    hosts_up
    build_wheel
    run_playbook
    wait_for 90 "every node idle" nodes_idle
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
    stop_daemons
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
    hosts_down
}

cmd_status() {
    local rc=0 uts name
    report() {  # report NAME OK?
        if "${@:2}" >/dev/null 2>&1; then echo "  $1: running"; else echo "  $1: stopped"; rc=1; fi
    }
    echo "hosts:"
    for uts in "$UTS_DIR"/*; do
        [[ -e $uts ]] || { echo "  (none)"; rc=1; break; }
        name=${uts##*/}
        echo "  $name: $(ip -n "$name" -4 -o addr show dev eth0 2>/dev/null | awk '{print $4}')" \
            "$(ls "$DEV_DIR/$name" 2>/dev/null | tr '\n' ' ')"
    done
    echo "daemons:"
    report munged munge_ok
    report MariaDB mariadb_ok
    report slurmdbd alive "$STATE/run/slurmdbd.pid"
    report slurmctld alive "$STATE/run/slurmctld.pid"
    for uts in "$UTS_DIR"/*; do
        [[ -e $uts ]] || continue
        report "slurmd -N ${uts##*/}" alive "$STATE/run/slurmd-${uts##*/}.pid"
    done
    report TensorBoard alive "$STATE/run/tensorboard.pid"
    if ctld_ok 2>/dev/null; then
        sinfo
        squeue
    fi
    return "$rc"
}

case "${1:-}" in
    up | down | status) ;;
    *) usage_error "unknown command '${1:-}': use one of up, down, status (bash $0 up)" ;;
esac
[[ $(id -u) == 0 ]] || die "run it as root (it installs packages, starts daemons and makes \
network namespaces)"
"cmd_$1"
