# shellcheck shell=bash
# Network-namespace "world" helpers shared by scripts/bench.sh and scripts/soak.sh.
#
# Source this file; it defines functions only and changes no shell options. Everything it creates
# lives in network namespaces named "$WORLD_PREFIX*" (default "ovb-"): the host's addresses, routes
# and DNS are never touched. Every wait is bounded.
#
#   world_require_root "bench.sh needs root: run sudo scripts/bench.sh"
#   world_remove_stale                  # delete leftover $WORLD_PREFIX* namespaces
#   world_ns_add ovb-hub                # namespace with lo up and its own /etc/resolv.conf
#   world_bridge ovb-hub br0 10.77.0.1/24
#   world_attach ovb-a ovb-hub br0 10.77.0.2/24   # veth eth0 in ovb-a, plugged into br0
#   world_bg ovb-a LOGFILE cmd args...  # background process inside ovb-a; pid in $WORLD_LAST_PID
#   world_exec_shielded 30 ovb-a cmd... # foreground, at most 30 s, no D-Bus / resolved reachable
#   world_wait 10 "what" cmd args...    # poll cmd until it succeeds, at most 10 s
#   world_rss_kb PID; world_fds PID     # VmRSS in kB and open file descriptors of a process
#   world_cleanup                       # kill processes, delete namespaces (use in a trap)

WORLD_PREFIX=${WORLD_PREFIX:-ovb-}
WORLD_NAMESPACES=()
WORLD_PIDS=()
WORLD_LAST_PID=
WORLD_FG_PID=
WORLD_ETC_NETNS_EXISTED=0
[[ -d /etc/netns ]] && WORLD_ETC_NETNS_EXISTED=1

world_log() { printf '%s\n' "$*" >&2; }

world_require_root() {
    if [[ $(id -u) -ne 0 ]]; then
        printf '%s\n' "$1" >&2
        exit 1
    fi
}

# world_require_tools TOOL... : fail with one sentence naming every missing tool.
world_require_tools() {
    local missing=() pkgs=() t p
    for t in "$@"; do
        command -v "$t" >/dev/null 2>&1 && continue
        missing+=("$t")
        case $t in
        ip) p=iproute2 ;;
        ping) p=iputils-ping ;;
        wg) p=wireguard-tools ;;
        dig) p=bind9-dnsutils ;;
        dnsmasq) p=dnsmasq-base ;;
        timeout | sort) p=coreutils ;;
        flock) p=util-linux ;;
        awk) p=gawk ;;
        *) p=$t ;;
        esac
        [[ " ${pkgs[*]} " == *" $p "* ]] || pkgs+=("$p")
    done
    if ((${#missing[@]})); then
        world_log "missing tools: ${missing[*]} (Debian: apt-get install ${pkgs[*]})."
        return 1
    fi
}

# world_run CMD...: run CMD as a child and wait for it. A trapped signal (Ctrl-C) interrupts `wait`
# and runs the trap at once; waiting in the foreground instead, bash drops the SIGINT when the child
# handles it itself (ping, iperf3 do). The child's pid is in $WORLD_FG_PID for cleanup.
world_run() {
    local rc=0
    "$@" &
    WORLD_FG_PID=$!
    wait "$WORLD_FG_PID" || rc=$?
    WORLD_FG_PID=
    return "$rc"
}

# world_wait TIMEOUT_S DESCRIPTION CMD... : run CMD every 0.1 s until it succeeds or the time is up.
world_wait() {
    local timeout=$1 what=$2
    shift 2
    local deadline=$((SECONDS + timeout))
    while true; do
        if world_run "$@" >/dev/null 2>&1; then
            return 0
        fi
        if ((SECONDS >= deadline)); then
            world_log "timed out after ${timeout}s waiting for ${what}."
            return 1
        fi
        world_run sleep 0.1
    done
}

world_ns_exists() {
    ip netns list 2>/dev/null | awk '{print $1}' | grep -qxF -- "$1"
}

# world_ns_add NAME: a fresh namespace with loopback up. /etc/netns/NAME/resolv.conf is created so
# that anything running inside (e.g. a daemon that configures DNS) sees a private resolv.conf and
# cannot change the host's.
world_ns_add() {
    local ns=$1
    [[ $ns == "$WORLD_PREFIX"* ]] || { world_log "namespace $ns does not start with $WORLD_PREFIX."; return 1; }
    world_ns_exists "$ns" && world_ns_del "$ns"
    mkdir -p "/etc/netns/$ns"
    cat /etc/resolv.conf >"/etc/netns/$ns/resolv.conf" 2>/dev/null || : >"/etc/netns/$ns/resolv.conf"
    ip netns add "$ns"
    WORLD_NAMESPACES+=("$ns")
    ip -n "$ns" link set lo up
}

# world_ns_kill NAME: TERM every process in the namespace, KILL what is left after 3 s.
world_ns_kill() {
    local ns=$1 pids i
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    [[ -n $pids ]] || return 0
    # shellcheck disable=SC2086
    kill $pids 2>/dev/null || true
    for ((i = 0; i < 30; i++)); do
        pids=$(ip netns pids "$ns" 2>/dev/null || true)
        [[ -n $pids ]] || return 0
        sleep 0.1
    done
    # shellcheck disable=SC2086
    kill -9 $pids 2>/dev/null || true
    sleep 0.2
}

world_ns_del() {
    local ns=$1
    world_ns_kill "$ns"
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "/etc/netns/${ns:?}"
}

# world_remove_stale: delete every namespace with our prefix (left over from a killed run).
world_remove_stale() {
    local ns
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}'); do
        if [[ $ns == "$WORLD_PREFIX"* ]]; then
            world_log "removing stale namespace $ns"
            world_ns_del "$ns"
        fi
    done
    for ns in /etc/netns/"$WORLD_PREFIX"*; do
        [[ -d $ns ]] && rm -rf "$ns"
    done
    return 0
}

# world_bridge NS BRIDGE ADDR/LEN: a bridge ("switch") inside NS with an address on it.
world_bridge() {
    local ns=$1 br=$2 addr=$3
    ip -n "$ns" link add "$br" type bridge
    ip -n "$ns" addr add "$addr" dev "$br"
    ip -n "$ns" link set "$br" up
}

# world_attach NS SWITCH_NS BRIDGE ADDR/LEN [IFNAME]: a veth pair created inside SWITCH_NS (never in
# the host namespace), one end moved into NS as IFNAME (default eth0) with ADDR, the other end
# ("p-NS" minus the prefix) enslaved to BRIDGE.
world_attach() {
    local ns=$1 sw=$2 br=$3 addr=$4 ifname=${5:-eth0}
    local port="p-${ns#"$WORLD_PREFIX"}"
    port=${port:0:15}
    ip -n "$sw" link add "$port" type veth peer name "$ifname" netns "$ns"
    ip -n "$sw" link set "$port" master "$br"
    ip -n "$sw" link set "$port" up
    ip -n "$ns" addr add "$addr" dev "$ifname"
    ip -n "$ns" link set "$ifname" up
}

# world_bg NS LOGFILE CMD...: run CMD inside NS in the background, stdout+stderr to LOGFILE.
# `setsid` (no fork: a background child is not a group leader) and `ip netns exec` exec CMD, so the
# pid ($WORLD_LAST_PID) is the process itself. In its own session, a Ctrl-C on the terminal does not
# reach it: it is stopped by world_stop / world_cleanup only, in order.
world_bg() {
    local ns=$1 log=$2
    shift 2
    setsid ip netns exec "$ns" "$@" </dev/null >>"$log" 2>&1 &
    WORLD_LAST_PID=$!
    WORLD_PIDS+=("$WORLD_LAST_PID")
}

# world_bg_shielded NS LOGFILE CMD...: like world_bg, for programs that may try to change the
# system's DNS (the overlay node daemon). `ip netns exec` gives each command a private mount
# namespace; in it, the system bus and systemd-resolved's runtime directory are covered by empty
# tmpfs mounts, so resolvectl / D-Bus calls cannot reach the host's resolver, and /etc/resolv.conf
# is the namespace's own copy (see world_ns_add). Nothing of this is visible outside.
# shellcheck disable=SC2016 # expanded by the inner sh
WORLD_SHIELD_SH='
    for d in /run/dbus /run/systemd/resolve /run/NetworkManager; do
        if [ -d "$d" ]; then mount -t tmpfs -o size=64k,mode=755 ovb-shield "$d" || exit 1; fi
    done
    exec "$@"'
world_bg_shielded() {
    local ns=$1 log=$2
    shift 2
    world_bg "$ns" "$log" sh -c "$WORLD_SHIELD_SH" sh "$@"
}

# world_exec_shielded SECONDS NS CMD...: run CMD inside NS in the foreground, shielded like
# world_bg_shielded (for `overlay join`, which starts the daemon: it inherits the shield), killed
# after SECONDS. Wrap it in world_run to keep Ctrl-C working.
world_exec_shielded() {
    local secs=$1 ns=$2
    shift 2
    timeout "$secs" ip netns exec "$ns" sh -c "$WORLD_SHIELD_SH" sh "$@"
}

# world_state PID: the process state letter (R, S, Z...) if PID is a child of this script, else
# nothing. The parent check guards against a recycled pid after bash reaped the child.
world_state() {
    local stat state ppid
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    stat=${stat##*) } # drop "pid (comm) ", comm may hold spaces and parentheses
    read -r state ppid _ <<<"$stat"
    [[ $ppid == "$$" ]] && printf '%s' "$state"
    return 0
}

# world_alive PID: our child, running (not an exited, unreaped zombie).
world_alive() {
    local st
    st=$(world_state "$1")
    [[ -n $st && $st != Z && $st != X ]]
}

# world_stop PID...: TERM those of the processes that are still our children, KILL whatever is
# left after 3 s.
world_stop() {
    local pid i pids=()
    for pid in "$@"; do
        [[ -n $(world_state "$pid") ]] && pids+=("$pid")
    done
    ((${#pids[@]})) || return 0
    kill "${pids[@]}" 2>/dev/null || true
    for ((i = 0; i < 30; i++)); do
        local left=()
        for pid in "${pids[@]}"; do
            world_alive "$pid" && left+=("$pid")
        done
        ((${#left[@]})) || break
        sleep 0.1
    done
    for pid in "${pids[@]}"; do
        world_alive "$pid" && kill -9 "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null || true
    done
}

# world_rss_kb PID: the process's resident set (VmRSS) in kB; nothing when it is gone.
world_rss_kb() { awk '$1 == "VmRSS:" { print $2 }' "/proc/$1/status" 2>/dev/null || true; }

# world_fds PID: how many file descriptors the process has open; nothing when it is gone.
world_fds() {
    local fds=("/proc/$1/fd/"*)
    ((${#fds[@]})) && [[ -e ${fds[0]} ]] && printf '%s\n' "${#fds[@]}"
    return 0
}

# world_cleanup: kill every process we started and delete every namespace we created. Everything
# started with world_bg runs inside one of our namespaces, so killing by namespace covers it.
world_cleanup() {
    local ns i
    if [[ -n $WORLD_FG_PID ]]; then
        kill "$WORLD_FG_PID" 2>/dev/null || true
    fi
    for ((i = ${#WORLD_NAMESPACES[@]} - 1; i >= 0; i--)); do
        ns=${WORLD_NAMESPACES[i]}
        world_ns_del "$ns"
    done
    world_stop "${WORLD_PIDS[@]}"
    WORLD_PIDS=()
    WORLD_NAMESPACES=()
    ((WORLD_ETC_NETNS_EXISTED)) || rmdir /etc/netns 2>/dev/null || true
    # Reap our background children so no zombies or "Terminated" notices are left behind.
    wait 2>/dev/null || true
}
