#!/usr/bin/env bash
# overlay benchmarks, run entirely inside throw-away network namespaces (prefix "ovb-").
#
#   sudo scripts/bench.sh [all|dataplane|join|dns|registry|gateway|restart|scale]... [options, see --help]
#
# Parts (run in this order by "all", the default):
#   dataplane  iperf3 TCP throughput and ping latency for: raw veth, stock wireguard-go point to
#              point, boringtun-cli point to point (installed into target/bench-tools with cargo
#              when missing, unless --no-build), and overlay node -> relay -> node; then the
#              overlay's ping latency again with the nodes' quick CPU wake-ups off.
#   join       time from starting `overlay join TOKEN` to the first ping answered through the
#              tunnel, and the time `overlay join` itself takes, over fresh joins.
#   dns        dnsperf against a node's DNS server (100.100.100.100) and against dnsmasq serving
#              the same names from a hosts file, in the same namespace; node daemon RSS.
#   registry   propagation: `overlay register` on one node until another node's DNS answers the
#              name, with no other services and with --fill services registered elsewhere.
#   gateway    iperf3 laptop -> remote host through the relay's userspace stack, and the same
#              through stock wireguard-go with kernel forwarding; relay RSS with 1000 proxied
#              TCP connections.
#   restart    `overlay dev` running a small HTTP service: the latency its listener on the overlay
#              address adds per request (against calling $PORT directly, same run), and the time
#              from `overlay restart` to serving again minus the service's own start time.
#   scale      overlay-loadgen: 1000 simulated peers against a relay; time until all have a
#              session, relay RSS, relay CPU at steady keepalive.
#   flood      overlay-flood: one host sends 10k, 50k and 100k anonymous join datagrams a
#              second; meanwhile a node's ping loss and RTT to the relay and the time a valid
#              join takes, beside idle in the same run; the relay's CPU, RSS and log growth.
# Each part prints a plain and a markdown table on stdout and writes target/bench/PART.json.
# New parts (traffic) are added as a function part_NAME plus an entry in PARTS.
#
# Exit status: 0 when every part ran (slow figures never fail the script), 1 when a tool or
# component failed to run (the remaining setups are still measured and reported), 2 on bad usage.
# The host's addresses, routes and DNS are never touched; everything created is removed on exit,
# including on Ctrl-C.

# Functions run from traps and as "part_$name" look unreachable to shellcheck (whole file):
# shellcheck disable=SC2317
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib/world.sh
source "$ROOT/scripts/lib/world.sh"

PARTS=(dataplane join dns registry gateway restart scale flood tcp)

usage() {
    cat <<EOF
usage: scripts/bench.sh [all|$(IFS='|'; echo "${PARTS[*]}")]... [options]

  --runs N           dataplane: iperf3 runs per setup, the median is reported (default 3);
                     join: fresh joins measured (default 10)
  --time S           seconds per iperf3 run, after a 1 s omitted warm-up, and seconds per
                     dnsperf run (default 10)
  --pings N          pings per setup for the latency figures (default 200, 5 ms apart)
  --services N       dns: services registered and queried, 50 per node (default 100)
  --rate Q           dns: queries per second of the paced dnsperf runs (default 5000)
  --registrations N  registry: registrations measured per round (default 100)
  --fill N           registry: services registered on other nodes before the second round
                     (default 1000; 0 skips that round)
  --requests N       restart: requests per address and connection mode (default 1000)
  --restarts N       restart: restarts measured, and direct starts (default 5)
  --peers N          scale: simulated peers (default 1000)
  --steady S         scale: seconds of steady state the relay's CPU is measured over (default 10)
  --no-build         do not run cargo when the overlay binaries are missing
  -h, --help         this help

The join, registry and restart parts time with scripts/bench-probe.py (python3): see
docs/benchmarks.md. Environment: OVERLAY_BIN, OVERLAY_RELAY_BIN, OVERLAY_LOADGEN_BIN
(default target/release/overlay{,-relay,-loadgen}),
OVB_RUST_LOG (RUST_LOG for relay and nodes, default "warn").
Output: stdout, target/bench/<part>.json, logs in target/bench/logs/.
Needs root (network namespaces); run as: sudo scripts/bench.sh dataplane
EOF
}

die_usage() {
    printf 'bench.sh: %s\n' "$1" >&2
    printf "run 'scripts/bench.sh --help' for usage.\n" >&2
    exit 2
}

# ---------------------------------------------------------------------------------------------
# arguments

RUNS= # empty: each part's own default
TIME=10
PINGS=200
SERVICES=100
RATE=5000
REGISTRATIONS=100
FILL=1000
REQUESTS=1000
RESTARTS=5
PEERS=1000
STEADY=10
MAX_PER_NODE=62 # services a node may register (its /26 minus the network and node addresses)
NO_BUILD=0
SELECTED=()
while (($#)); do
    case $1 in
    -h | --help) usage; exit 0 ;;
    --runs | --time | --pings | --services | --rate | --registrations | --requests | --restarts | --peers | --steady)
        [[ $# -ge 2 && $2 =~ ^[1-9][0-9]*$ ]] || die_usage "$1 needs a positive whole number."
        case $1 in
        --runs) RUNS=$2 ;;
        --time) TIME=$2 ;;
        --pings) PINGS=$2 ;;
        --services) SERVICES=$2 ;;
        --rate) RATE=$2 ;;
        --registrations) REGISTRATIONS=$2 ;;
        --requests) REQUESTS=$2 ;;
        --restarts) RESTARTS=$2 ;;
        --peers) PEERS=$2 ;;
        --steady) STEADY=$2 ;;
        esac
        shift 2
        ;;
    --fill)
        [[ $# -ge 2 && $2 =~ ^(0|[1-9][0-9]*)$ ]] || die_usage "$1 needs a whole number."
        FILL=$2
        shift 2
        ;;
    --runs=* | --time=* | --pings=* | --services=* | --rate=* | --registrations=* | --fill=* | \
        --requests=* | --restarts=* | --peers=* | --steady=*)
        set -- "${1%%=*}" "${1#*=}" "${@:2}"
        ;;
    --no-build) NO_BUILD=1; shift ;;
    -*) die_usage "unknown option $1." ;;
    all) SELECTED+=("${PARTS[@]}"); shift ;;
    *)
        known=0
        for p in "${PARTS[@]}"; do [[ $1 == "$p" ]] && known=1; done
        ((known)) || die_usage "unknown part '$1' (choose from: all ${PARTS[*]})."
        SELECTED+=("$1")
        shift
        ;;
    esac
done
((${#SELECTED[@]})) || SELECTED=("${PARTS[@]}")
# Each part once, in PARTS order.
RUN_PARTS=()
for p in "${PARTS[@]}"; do
    for s in "${SELECTED[@]}"; do
        if [[ $s == "$p" ]]; then RUN_PARTS+=("$p"); break; fi
    done
done

DP_RUNS=${RUNS:-3}
JOIN_RUNS=${RUNS:-10}
((SERVICES <= 50 * 200)) || die_usage "--services is at most 10000 (50 per node, 200 nodes)."
((REGISTRATIONS <= 2 * MAX_PER_NODE)) || die_usage "--registrations is at most $((2 * MAX_PER_NODE)) (two registering nodes)."
((FILL <= 60 * 200)) || die_usage "--fill is at most 12000 (60 per node, 200 nodes)."
((REQUESTS <= 100000)) || die_usage "--requests is at most 100000."
((RESTARTS <= 100)) || die_usage "--restarts is at most 100."
((PEERS <= 50000)) || die_usage "--peers is at most 50000."
((STEADY <= 3600)) || die_usage "--steady is at most 3600 seconds."

world_require_root "bench.sh needs root: run sudo scripts/bench.sh"
NEED_TOOLS=(ip timeout awk sort flock)
for p in "${RUN_PARTS[@]}"; do
    case $p in
    dataplane) NEED_TOOLS+=(iperf3 ping wg wireguard-go) ;;
    tcp) NEED_TOOLS+=(iperf3 ping nft) ;;
    join | registry) NEED_TOOLS+=(python3) ;;
    dns) NEED_TOOLS+=(python3 dig dnsperf dnsmasq) ;;
    restart) NEED_TOOLS+=(python3 setpriv curl) ;;
    esac
done
world_require_tools "${NEED_TOOLS[@]}" || exit 1

# ---------------------------------------------------------------------------------------------
# run-wide state, lock, cleanup

exec 9>/run/ovb-bench.lock
flock -n 9 || { echo "another bench.sh is already running." >&2; exit 1; }

OUT_DIR=$ROOT/target/bench
LOG_DIR=$OUT_DIR/logs
TARGET_EXISTED=0
[[ -d $ROOT/target ]] && TARGET_EXISTED=1
WG_RUN_EXISTED=0
[[ -d /var/run/wireguard ]] && WG_RUN_EXISTED=1
RC=0 # becomes 1 when a component failed to run; figures never change it

give_back_outputs() {
    # Under sudo, leave target/bench owned by the invoking user so cargo and editors keep working.
    if [[ -n ${SUDO_UID:-} && -n ${SUDO_GID:-} ]]; then
        chown -R "$SUDO_UID:$SUDO_GID" "$OUT_DIR" 2>/dev/null || true
        ((TARGET_EXISTED)) || chown "$SUDO_UID:$SUDO_GID" "$ROOT/target" 2>/dev/null || true
    fi
}

WORK= # private temporary directory (keys, state), made once the traps are in place
PUB_DIR= # part restart: a directory the unprivileged `overlay dev` user can reach (see there)

# The traps can run while a command's output is redirected to a file (world_run ... >FILE): they
# write to the script's original stdout/stderr, saved here.
exec 7>&1 8>&2

CLEANED=0
cleanup() {
    ((CLEANED)) && return 0
    CLEANED=1
    trap - ERR
    set +e
    world_cleanup
    rm -f /var/run/wireguard/ovbwg*.sock
    ((WG_RUN_EXISTED)) || rmdir /var/run/wireguard 2>/dev/null
    [[ -n $WORK ]] && rm -rf "$WORK"
    [[ -n $PUB_DIR ]] && rm -rf "$PUB_DIR"
    give_back_outputs
}
on_exit() {
    local rc=$?
    exec 1>&7 2>&8
    cleanup
    if ((rc != 0 && rc != 2)); then
        echo "bench.sh stopped (exit $rc); logs are in ${LOG_DIR#"$ROOT"/}/." >&2
    fi
    exit "$rc"
}
on_signal() { # $1: exit status, 128 + signal number
    trap - INT TERM
    exec 1>&7 2>&8
    echo "bench.sh: interrupted, cleaning up." >&2
    cleanup
    exit "$1"
}
on_err() {
    echo "bench.sh: '$BASH_COMMAND' failed (line ${BASH_LINENO[0]})." >&8
}
trap on_exit EXIT
trap 'on_signal 130' INT
trap 'on_signal 143' TERM
trap on_err ERR

rm -rf "$LOG_DIR"
mkdir -p "$LOG_DIR"
give_back_outputs # now, so that a build run as the invoking user can write to target/
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ovb-bench.XXXXXX")

log() { printf '== %s\n' "$*" >&2; }

# tail_log FILE: show the end of a component's log after it failed.
tail_log() {
    [[ -s $1 ]] || return 0
    echo "-- last lines of ${1#"$ROOT"/}:" >&2
    tail -n 15 "$1" | sed 's/^/   /' >&2
}

# ---------------------------------------------------------------------------------------------
# measurement helpers

# ping_stats NS ADDR LOG: sets PING_STATS to "median_us p99_us received" from the individual RTTs
# (empty when no reply came back).
ping_stats() {
    local ns=$1 addr=$2 logf=$3 out=$WORK/ping.out
    world_run timeout $((PINGS / 50 + 30)) ip netns exec "$ns" \
        ping -n -c "$PINGS" -i 0.005 -W 1 "$addr" >"$out" 2>&1 || true
    cat "$out" >>"$logf"
    PING_STATS=$(awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^time=/) print substr($i, 6) * 1000 }' "$out" |
        sort -n |
        awk '{ v[NR] = $1 }
             END {
                 if (NR == 0) exit
                 med = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
                 k = int(0.99 * NR); if (k < 0.99 * NR) k++; if (k < 1) k = 1
                 printf "%.0f %.0f %d\n", med, v[k], NR
             }')
}

IPERF_PORT=5201

iperf_server_ready() { ip netns exec "$1" ss -Hltn "sport = :$2" | grep -q .; }

# iperf_once NS SERVER_NS ADDR LOG: one iperf3 TCP run from NS to ADDR (in SERVER_NS); sets
# IPERF_MBPS to the receiver's Mbit/s. Each run gets a fresh one-off server on a new port: a
# long-lived iperf3 server sometimes stays "busy" after a test and refuses every later one.
iperf_once() {
    local ns=$1 srv_ns=$2 addr=$3 logf=$4 out=$WORK/iperf.out rc=0 port=$((IPERF_PORT++)) spid
    IPERF_MBPS=
    world_bg "$srv_ns" "$LOG_DIR/iperf3-server.log" iperf3 -s -1 -p "$port"
    spid=$WORLD_LAST_PID
    if ! world_wait 10 "the iperf3 server in $srv_ns" iperf_server_ready "$srv_ns" "$port"; then
        world_stop "$spid"
        return 1
    fi
    world_run timeout $((TIME + 40)) ip netns exec "$ns" \
        iperf3 -c "$addr" -p "$port" -t "$TIME" -O 1 -f m --connect-timeout 5000 >"$out" 2>&1 || rc=$?
    world_stop "$spid"
    cat "$out" >>"$logf"
    ((rc == 0)) || return 1
    IPERF_MBPS=$(awk '/receiver/ { for (i = 2; i <= NF; i++) if ($i == "Mbits/sec") v = $(i - 1) }
                      END { if (v == "") exit 1; print v }' "$out") || return 1
}

median() {
    printf '%s\n' "$@" | sort -g |
        awk '{ v[NR] = $1 } END { if (NR == 0) exit; print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# Results, keyed by setup id.
SETUPS=()
declare -A S_TITLE S_STATUS S_TPUT S_TPUT_RUNS S_P50 S_P99 S_RECV

# setup_begin ID TITLE
setup_begin() {
    SETUPS+=("$1")
    S_TITLE[$1]=$2
    S_STATUS[$1]=ok
    S_TPUT[$1]=
    S_TPUT_RUNS[$1]=
    S_P50[$1]=
    S_P99[$1]=
    S_RECV[$1]=0
    log "setup: $2"
}

# setup_na ID REASON: not measured, not an error (e.g. binaries not built yet).
setup_na() { S_STATUS[$1]="n/a ($2)"; log "${S_TITLE[$1]}: n/a ($2)"; }

# setup_failed ID REASON [LOG]: a component failed to run; the script will exit 1 at the end.
setup_failed() {
    S_STATUS[$1]="failed ($2)"
    RC=1
    echo "bench.sh: ${S_TITLE[$1]}: $2." >&2
    [[ -n ${3:-} ]] && tail_log "$3"
    return 0
}

# iperf_runs ID NS SERVER_NS ADDR: DP_RUNS iperf3 runs from NS to ADDR (in SERVER_NS); their
# median in S_TPUT[ID].
iperf_runs() {
    local id=$1 ns=$2 srv_ns=$3 addr=$4 r runs=() logf="$LOG_DIR/iperf3-$1.log"
    for ((r = 1; r <= DP_RUNS; r++)); do
        if ! iperf_once "$ns" "$srv_ns" "$addr" "$logf"; then
            setup_failed "$id" "iperf3 run $r to $addr failed" "$logf"
            return 0
        fi
        log "  iperf3 run $r/$DP_RUNS: $IPERF_MBPS Mbit/s"
        runs+=("$IPERF_MBPS")
    done
    S_TPUT_RUNS[$id]=${runs[*]}
    S_TPUT[$id]=$(median "${runs[@]}")
}

# ping_only ID NS ADDR: the latency figures of a setup from NS to ADDR (PING_STATS stays empty,
# and the setup failed, when no reply came back).
ping_only() {
    local id=$1 ns=$2 addr=$3
    ping_stats "$ns" "$addr" "$LOG_DIR/ping-$id.log"
    if [[ -z $PING_STATS ]]; then
        setup_failed "$id" "no ping replies from $addr" "$LOG_DIR/ping-$id.log"
        return 0
    fi
    local p50 p99 recv
    read -r p50 p99 recv <<<"$PING_STATS"
    S_P50[$id]=$p50
    S_P99[$id]=$p99
    S_RECV[$id]=$recv
    log "  ping: median ${S_P50[$id]} µs, p99 ${S_P99[$id]} µs (${S_RECV[$id]}/$PINGS replies)"
}

# measure ID NS SERVER_NS ADDR: latency then throughput from NS to ADDR, which is in SERVER_NS.
measure() {
    local id=$1 ns=$2 srv_ns=$3 addr=$4
    ping_only "$id" "$ns" "$addr"
    [[ -n $PING_STATS ]] || return 0
    iperf_runs "$id" "$ns" "$srv_ns" "$addr"
}

# ---------------------------------------------------------------------------------------------
# part: dataplane

A_UL=10.77.0.2 # underlay addresses
B_UL=10.77.0.3
HUB_UL=10.77.0.1
WG_PORT=51821
RELAY_PORT=51820

dataplane_world() {
    world_ns_add ovb-hub
    world_ns_add ovb-a
    world_ns_add ovb-b
    world_bridge ovb-hub br0 "$HUB_UL/24"
    world_attach ovb-a ovb-hub br0 "$A_UL/24"
    world_attach ovb-b ovb-hub br0 "$B_UL/24"
}

setup_veth() {
    setup_begin veth "raw veth (a -> bridge -> b)"
    if ! world_wait 5 "ovb-a to reach $B_UL" ip netns exec ovb-a ping -n -c 1 -W 1 "$B_UL"; then
        setup_failed veth "ovb-a cannot reach $B_UL"
        return 0
    fi
    measure veth ovb-a ovb-b "$B_UL"
}

# wg_node IMPL NS IFNAME KEYFILE ADDR PEER_PUB PEER_ENDPOINT PEER_ALLOWED: a userspace WireGuard
# interface in NS, IMPL "wireguard-go" or a boringtun-cli binary, configured with wg(8).
wg_node() {
    local impl=$1 ns=$2 ifn=$3 key=$4 addr=$5 ppub=$6 pend=$7 pallowed=$8
    # Foreground mode so the pid is ours; the UAPI socket /var/run/wireguard/IFNAME.sock is shared by
    # all namespaces, hence one interface name per namespace ("ovbwg" prefix, removed at cleanup).
    if [[ $impl == wireguard-go ]]; then
        world_bg "$ns" "$LOG_DIR/wireguard-go-$ns.log" env LOG_LEVEL=error WG_PROCESS_FOREGROUND=1 wireguard-go -f "$ifn"
    else
        world_bg "$ns" "$LOG_DIR/boringtun-$ns.log" "$impl" -f --disable-drop-privileges \
            --log "$LOG_DIR/boringtun-$ns.out" "$ifn"
    fi
    WG_PIDS+=("$WORLD_LAST_PID")
    world_wait 5 "$impl $ifn in $ns" test -S "/var/run/wireguard/$ifn.sock" || return 1
    ip netns exec "$ns" wg set "$ifn" private-key "$key" listen-port "$WG_PORT" \
        peer "$ppub" endpoint "$pend" allowed-ips "$pallowed" || return 1
    ip -n "$ns" addr add "$addr" dev "$ifn" || return 1
    ip -n "$ns" link set "$ifn" mtu 1420 up
}

# wg_pair ID IMPL TITLE: two IMPL interfaces, ovb-a <-> ovb-b point to point, measured as ID.
wg_pair() {
    local id=$1 impl=$2
    setup_begin "$id" "$3"
    WG_PIDS=()
    local d=$WORK/$id
    mkdir -p "$d" # inside $WORK, which is 0700
    (umask 077 && wg genkey >"$d/a.key" && wg genkey >"$d/b.key")
    local apub bpub
    apub=$(wg pubkey <"$d/a.key")
    bpub=$(wg pubkey <"$d/b.key")
    if ! wg_node "$impl" ovb-a ovbwga "$d/a.key" 10.99.0.1/24 "$bpub" "$B_UL:$WG_PORT" 10.99.0.2/32 ||
        ! wg_node "$impl" ovb-b ovbwgb "$d/b.key" 10.99.0.2/24 "$apub" "$A_UL:$WG_PORT" 10.99.0.1/32; then
        setup_failed "$id" "$impl did not start" "$LOG_DIR/${impl##*/}-ovb-a.log"
        tail_log "$LOG_DIR/${impl##*/}-ovb-b.log"
    elif ! world_wait 10 "a WireGuard handshake between ovb-a and ovb-b" \
        ip netns exec ovb-a ping -n -c 1 -W 1 10.99.0.2; then
        setup_failed "$id" "no traffic through $impl" "$LOG_DIR/${impl##*/}-ovb-a.log"
    else
        measure "$id" ovb-a ovb-b 10.99.0.2
    fi
    world_stop "${WG_PIDS[@]}"
    # The interfaces go with their daemons; wait so the next pair can take the same names.
    world_wait 5 "ovbwga to disappear" bash -c '! ip -n ovb-a link show ovbwga >/dev/null 2>&1' || true
    rm -f /var/run/wireguard/ovbwg*.sock
}

setup_wireguard_go() { wg_pair wggo wireguard-go "wireguard-go point to point"; }

BORINGTUN_VERSION=0.7.1
BENCH_TOOLS=$ROOT/target/bench-tools

# boringtun_bin: the boringtun-cli to measure ($BORINGTUN_BIN, on PATH, or installed by cargo into
# target/bench-tools unless --no-build); nothing when there is none.
boringtun_bin() {
    local b=${BORINGTUN_BIN:-}
    [[ -z $b ]] && b=$(command -v boringtun-cli 2>/dev/null || true)
    [[ -z $b && -x $BENCH_TOOLS/bin/boringtun-cli ]] && b=$BENCH_TOOLS/bin/boringtun-cli
    if [[ -z $b ]] && ! ((NO_BUILD)); then
        log "installing boringtun-cli $BORINGTUN_VERSION into ${BENCH_TOOLS#"$ROOT"/} (cargo install; log: ${LOG_DIR#"$ROOT"/}/boringtun-install.log)"
        world_run timeout 1800 cargo install --locked --root "$BENCH_TOOLS" --version "$BORINGTUN_VERSION" \
            boringtun-cli >"$LOG_DIR/boringtun-install.log" 2>&1 || true
        [[ -x $BENCH_TOOLS/bin/boringtun-cli ]] && b=$BENCH_TOOLS/bin/boringtun-cli
    fi
    printf '%s' "$b"
}

setup_boringtun() {
    local b
    b=$(boringtun_bin)
    if [[ -z $b ]]; then
        setup_begin btun "boringtun-cli point to point"
        setup_na btun "boringtun-cli not installed: cargo install boringtun-cli, or BORINGTUN_BIN=path"
        return 0
    fi
    wg_pair btun "$b" "boringtun-cli point to point"
}

OVERLAY_BIN=${OVERLAY_BIN:-$ROOT/target/release/overlay}
RELAY_BIN=${OVERLAY_RELAY_BIN:-$ROOT/target/release/overlay-relay}
LOADGEN_BIN=${OVERLAY_LOADGEN_BIN:-$ROOT/target/release/overlay-loadgen}

# cargo_build LOG WHAT CARGO_ARGS...: `cargo build --release CARGO_ARGS` in $ROOT, as the user who
# ran sudo when there is one (their toolchain, and target/ stays theirs); output to LOG.
cargo_build() {
    local blog=$1 what=$2
    shift 2
    log "building $what (cargo build --release $*; log: ${blog#"$ROOT"/})"
    # shellcheck disable=SC2016 # $1 is expanded by the inner bash
    local cmd='cd "$1" && shift && cargo build --release "$@"'
    if [[ -n ${SUDO_USER:-} && $SUDO_USER != root ]]; then
        world_run timeout 3600 runuser -u "$SUDO_USER" -- bash -lc "$cmd" bash "$ROOT" "$@" >"$blog" 2>&1 || true
    elif command -v cargo >/dev/null 2>&1; then
        world_run timeout 3600 bash -c "$cmd" bash "$ROOT" "$@" >"$blog" 2>&1 || true
    else
        echo "cargo not found" >"$blog"
    fi
}

# ensure_binaries: 0 when both binaries are there (building them when missing and allowed).
ensure_binaries() {
    [[ -x $OVERLAY_BIN && -x $RELAY_BIN ]] && return 0
    ((NO_BUILD)) && return 1
    cargo_build "$LOG_DIR/build.log" "overlay and overlay-relay" -p overlay-node -p overlay-relay
    [[ -x $OVERLAY_BIN && -x $RELAY_BIN ]] && return 0
    tail_log "$LOG_DIR/build.log"
    return 1
}

# relay_ready SOCKET PID: the admin socket exists, or the relay is gone (no point waiting longer).
relay_ready() { [[ -S $1 ]] || ! world_alive "$2"; }

# conf_address FILE: the first address of the "Address =" line, without the prefix length.
conf_address() {
    awk -F= 'tolower($1) ~ /^[[:space:]]*address[[:space:]]*$/ {
                 split($2, a, ","); gsub(/[[:space:]]/, "", a[1]); sub(/\/.*/, "", a[1]); print a[1]; exit
             }' "$1"
}

# node_knows_rtt RUN_DIR: the node has measured its round trip to the relay.
node_knows_rtt() { OVERLAY_RUN_DIR=$1 "$OVERLAY_BIN" status --json 2>/dev/null | grep -q '"relay_rtt_us": [0-9]'; }

# wait_relay_rtt RUN_DIR: until the node knows how near the relay is (what its default
# --cpu-latency auto decides by; measured within a second of the tunnel coming up), at most 5 s.
wait_relay_rtt() { world_wait 5 "the node to measure its round trip to the relay" node_knows_rtt "$1" || true; }

# setup_overlay [ID TITLE NODE_FLAGS PINGS_ONLY]: relay and two nodes (default: setup "overlay",
# the nodes as they run by default, pings and iperf3).
# setup_overlay [ID TITLE NODE_FLAGS PINGS_ONLY RELAY_FLAGS]; SETUP_PRE_NODES, when set, runs
# (eval) after the relay is up and before the nodes start.
setup_overlay() {
    local id=${1:-overlay} title=${2:-"overlay node -> relay -> node"} node_flags=${3:-} pings_only=${4:-0} relay_flags=${5:-}
    setup_begin "$id" "$title"
    if ! ensure_binaries; then
        setup_na "$id" "binaries missing"
        return 0
    fi
    local d=$WORK/$id rust_log=${OVB_RUST_LOG:-warn}
    mkdir -p "$d/relay" "$d/a/state" "$d/a/run" "$d/b/state" "$d/b/run"
    local rlog=$LOG_DIR/relay-$id.log pids=()

    world_bg ovb-hub "$rlog" env RUST_LOG="$rust_log" "$RELAY_BIN" --state "$d/relay" \
        serve --listen "$HUB_UL:$RELAY_PORT" --public-endpoint "$HUB_UL:$RELAY_PORT" $relay_flags
    local relay_pid=$WORLD_LAST_PID
    pids+=("$relay_pid")
    if ! world_wait 10 "the relay's admin socket" relay_ready "$d/relay/admin.sock" "$relay_pid" ||
        ! world_alive "$relay_pid"; then
        setup_failed "$id" "the relay did not start" "$rlog"
        world_stop "${pids[@]}"
        return 0
    fi

    local n
    for n in a b; do
        if ! world_run timeout 15 ip netns exec ovb-hub env RUST_LOG="$rust_log" "$RELAY_BIN" --state "$d/relay" \
            peer add "bench-$n" --wireguard-config >"$d/$n.conf" 2>"$LOG_DIR/peer-add-$id-$n.log"; then
            setup_failed "$id" "'overlay-relay peer add bench-$n' failed" "$LOG_DIR/peer-add-$id-$n.log"
            world_stop "${pids[@]}"
            return 0
        fi
        cp "$d/$n.conf" "$LOG_DIR/node-$id-$n.conf.txt"
        sed -i 's/^\([[:space:]]*PrivateKey[[:space:]]*=\).*/\1 (redacted)/I' "$LOG_DIR/node-$id-$n.conf.txt"
    done
    local a_ip b_ip
    a_ip=$(conf_address "$d/a.conf")
    b_ip=$(conf_address "$d/b.conf")
    if [[ -z $a_ip || -z $b_ip ]]; then
        setup_failed "$id" "no 'Address =' line in the config from 'peer add'" "$d/a.conf"
        world_stop "${pids[@]}"
        return 0
    fi

    [[ -z ${SETUP_PRE_NODES:-} ]] || eval "$SETUP_PRE_NODES"
    for n in a b; do
        world_bg_shielded "ovb-$n" "$LOG_DIR/node-$id-$n.log" env RUST_LOG="$rust_log" \
            OVERLAY_STATE_DIR="$d/$n/state" OVERLAY_RUN_DIR="$d/$n/run" \
            "$OVERLAY_BIN" daemon --config "$d/$n.conf" --interface ovl0 $node_flags
        pids+=("$WORLD_LAST_PID")
    done
    log "  nodes: ovb-a $a_ip, ovb-b $b_ip; waiting for ovb-a to reach $b_ip through the relay"
    if ! world_wait 15 "ovb-a to reach $b_ip over the overlay" \
        ip netns exec ovb-a ping -n -c 1 -W 1 "$b_ip"; then
        local p dead=""
        for p in "${pids[@]}"; do world_alive "$p" || dead=" (a process exited)"; done
        setup_failed "$id" "no traffic between the nodes$dead" "$LOG_DIR/node-$id-a.log"
        tail_log "$LOG_DIR/node-$id-b.log"
        tail_log "$rlog"
    else
        wait_relay_rtt "$d/a/run"
        if ((pings_only)); then
            ping_only "$id" ovb-a "$b_ip"
        else
            measure "$id" ovb-a ovb-b "$b_ip"
        fi
    fi
    world_stop "${pids[@]}"
}

# fmt_ratio A B: A/B with two decimals, or n/a.
fmt_ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "n/a"; else printf "%.3f\n", a / b }'; }
fmt_diff() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "") print "n/a"; else printf "%.0f\n", a - b }'; }
fmt_num() { awk -v a="$1" 'BEGIN { if (a == "") print "n/a"; else printf "%.0f\n", a }'; }
with_unit() { if [[ $1 == n/a ]]; then printf 'n/a'; else printf '%s %s' "$1" "$2"; fi; }
json_num() { if [[ -n $1 && $1 != n/a ]]; then printf '%s' "$1"; else printf null; fi; }
# at_least A B / below A B: "yes", "no", or "n/a" when A is missing (figures, never a failure).
at_least() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || a == "n/a") print "n/a"; else print (a + 0 >= b + 0) ? "yes" : "no" }'; }
below() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || a == "n/a") print "n/a"; else print (a + 0 < b + 0) ? "yes" : "no" }'; }
json_bool() { case $1 in yes) printf true ;; no) printf false ;; *) printf null ;; esac; }
json_str() { local s=${1//\\/\\\\}; s=${s//\"/\\\"}; printf '"%s"' "$s"; }

dataplane_report() {
    local host cpu when
    when=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
    host="${cpu:-unknown CPU}, $(nproc) cores, Linux $(uname -r)"
    local r32 r21 lat31 lat21 rbt latbt
    r32=$(fmt_ratio "${S_TPUT[overlay]:-}" "${S_TPUT[wggo]:-}")
    rbt=$(fmt_ratio "${S_TPUT[overlay]:-}" "${S_TPUT[btun]:-}")
    latbt=$(fmt_diff "${S_P50[btun]:-}" "${S_P50[veth]:-}")
    r21=$(fmt_ratio "${S_TPUT[wggo]:-}" "${S_TPUT[veth]:-}")
    lat31=$(fmt_diff "${S_P50[overlay]:-}" "${S_P50[veth]:-}")
    lat21=$(fmt_diff "${S_P50[wggo]:-}" "${S_P50[veth]:-}")
    local latoff
    latoff=$(fmt_diff "${S_P50[overlay_nowake]:-}" "${S_P50[veth]:-}")

    local id
    echo
    echo "dataplane: $host"
    echo "iperf3 TCP, 1 stream, ${TIME} s per run (after 1 s warm-up), median of $DP_RUNS run(s); $PINGS pings 5 ms apart"
    echo
    # (µ is two bytes: one more column of width for the headers that contain it)
    printf '%-3s %-34s %18s %16s %14s\n' "" setup "throughput Mbit/s" "ping median µs" "ping p99 µs"
    local i=0
    for id in "${SETUPS[@]}"; do
        i=$((i + 1))
        if [[ ${S_STATUS[$id]} == ok ]]; then
            printf '%-3s %-34s %18s %15s %13s\n' "$i" "${S_TITLE[$id]}" \
                "$(fmt_num "${S_TPUT[$id]}")" "${S_P50[$id]}" "${S_P99[$id]}"
        else
            printf '%-3s %-34s %s\n' "$i" "${S_TITLE[$id]}" "${S_STATUS[$id]}"
        fi
    done
    echo
    echo "throughput overlay / wireguard-go: $r32"
    echo "throughput overlay / boringtun-cli: $rbt"
    echo "throughput wireguard-go / raw veth: $r21"
    echo "latency added by overlay over raw veth (medians): $(with_unit "$lat31" µs)"
    echo "latency added by overlay with --cpu-latency off (medians): $(with_unit "$latoff" µs)"
    echo "latency added by wireguard-go over raw veth (medians): $(with_unit "$lat21" µs)"
    echo "latency added by boringtun-cli over raw veth (medians): $(with_unit "$latbt" µs)"

    echo
    echo "markdown (for docs/benchmarks.md):"
    echo
    echo "Measured $when on $host."
    echo "iperf3 TCP, one stream, $TIME s per run (after 1 s warm-up), median of $DP_RUNS run(s); $PINGS pings 5 ms apart."
    echo
    echo "| setup | throughput (Mbit/s) | ping median (µs) | ping p99 (µs) |"
    echo "| --- | ---: | ---: | ---: |"
    for id in "${SETUPS[@]}"; do
        if [[ ${S_STATUS[$id]} == ok ]]; then
            echo "| ${S_TITLE[$id]} | $(fmt_num "${S_TPUT[$id]}") | ${S_P50[$id]} | ${S_P99[$id]} |"
        else
            echo "| ${S_TITLE[$id]} | ${S_STATUS[$id]} | | |"
        fi
    done
    echo
    echo "| ratio (same run) | value |"
    echo "| --- | ---: |"
    echo "| throughput overlay / wireguard-go | $r32 |"
    echo "| throughput overlay / boringtun-cli | $rbt |"
    echo "| throughput wireguard-go / raw veth | $r21 |"
    echo "| latency added by overlay over raw veth (median) | $(with_unit "$lat31" µs) |"
    echo "| latency added by overlay with --cpu-latency off (median) | $(with_unit "$latoff" µs) |"
    echo "| latency added by wireguard-go over raw veth (median) | $(with_unit "$lat21" µs) |"
    echo "| latency added by boringtun-cli over raw veth (median) | $(with_unit "$latbt" µs) |"

    local json=$OUT_DIR/dataplane.json first=1
    {
        printf '{\n  "part": "dataplane",\n  "time": "%s",\n  "host": %s,\n' "$when" "$(json_str "$host")"
        printf '  "params": {"iperf3_seconds": %s, "runs": %s, "pings": %s, "ping_interval_ms": 5},\n' \
            "$TIME" "$DP_RUNS" "$PINGS"
        printf '  "setups": [\n'
        for id in "${SETUPS[@]}"; do
            ((first)) || printf ',\n'
            first=0
            local runs_json=""
            [[ -n ${S_TPUT_RUNS[$id]} ]] && runs_json=$(printf '%s' "${S_TPUT_RUNS[$id]}" | tr ' ' ',')
            printf '    {"id": "%s", "title": %s, "status": %s, "throughput_mbps": %s, "throughput_runs_mbps": [%s], "ping_median_us": %s, "ping_p99_us": %s, "ping_replies": %s}' \
                "$id" "$(json_str "${S_TITLE[$id]}")" "$(json_str "${S_STATUS[$id]}")" \
                "$(json_num "${S_TPUT[$id]}")" "$runs_json" \
                "$(json_num "${S_P50[$id]}")" "$(json_num "${S_P99[$id]}")" "${S_RECV[$id]}"
        done
        printf '\n  ],\n  "ratios": {"throughput_overlay_over_wireguard_go": %s, "throughput_overlay_over_boringtun": %s, "throughput_wireguard_go_over_veth": %s, "latency_added_overlay_over_veth_us": %s, "latency_added_overlay_cpu_latency_off_over_veth_us": %s, "latency_added_wireguard_go_over_veth_us": %s, "latency_added_boringtun_over_veth_us": %s}\n}\n' \
            "$(json_num "$r32")" "$(json_num "$rbt")" "$(json_num "$r21")" "$(json_num "$lat31")" "$(json_num "$latoff")" "$(json_num "$lat21")" "$(json_num "$latbt")"
    } >"$json"
    echo
    echo "results: ${json#"$ROOT"/}"
}

part_dataplane() {
    log "part dataplane: ${TIME} s x $DP_RUNS iperf3 runs and $PINGS pings per setup"
    dataplane_world
    setup_veth
    setup_wireguard_go
    setup_boringtun
    setup_overlay
    # What the default's quick CPU wake-ups buy (node/src/cpu_latency.rs): latency only.
    setup_overlay overlay_nowake "overlay, --cpu-latency off (ping only)" "--cpu-latency off" 1
    dataplane_report
    world_cleanup
}

# ---------------------------------------------------------------------------------------------
# overlay relay and nodes joined with a token (parts join, dns, registry)

PROBE=$ROOT/scripts/bench-probe.py
RELAY_OVL=100.64.0.1 # the relay's overlay address (network 100.64.0.0/10, the default)
NODE_DNS=100.100.100.100
OVL_DIR=   # per-part directory in $WORK: relay/, one directory per node
OVL_LOG=   # the part's log of CLI output
OVL_TOKEN=
OVL_RELAY_PID=
OVL_NODES=() # short names ("a" -> namespace ovb-a, directory $OVL_DIR/a) of the joined nodes
declare -A OVL_ADDR OVL_RESOLV

host_desc() {
    local cpu
    cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
    printf '%s, %s cores, Linux %s' "${cpu:-unknown CPU}" "$(nproc)" "$(uname -r)"
}
now_utc() { date -u +%Y-%m-%dT%H:%M:%SZ; }

# stats FILE: "n median p90 p99 min max" of the numbers in FILE, one a line (percentiles by
# nearest rank: p99 of 100 values is the 99th smallest); nothing when FILE has no numbers.
stats() {
    sort -g "$1" | awk '
        function rank(p,   k) { k = int(p * n); if (k < p * n) k++; if (k < 1) k = 1; return v[k] }
        NF { v[++n] = $1 }
        END {
            if (n == 0) exit
            med = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
            printf "%d %.1f %.1f %.1f %.1f %.1f\n", n, med, rank(0.9), rank(0.99), v[1], v[n]
        }'
}

# ovl_begin PART [BASE]: a fresh world (ovb-hub with the bridge) and directories for PART, in
# BASE (default: the private $WORK).
ovl_begin() {
    OVL_DIR=${2:-$WORK}/$1
    OVL_LOG=$LOG_DIR/$1-cli.log
    OVL_TOKEN=
    OVL_RELAY_PID=
    OVL_NODES=()
    OVL_ADDR=()
    OVL_RESOLV=()
    mkdir -p "$OVL_DIR/relay"
    world_ns_add ovb-hub
    world_bridge ovb-hub br0 "$HUB_UL/24"
}

# ovl_host NAME OCTET: namespace ovb-NAME on the bridge with underlay address 10.77.0.OCTET.
ovl_host() {
    world_ns_add "ovb-$1"
    world_attach "ovb-$1" ovb-hub br0 "10.77.0.$2/24"
    mkdir -p "$OVL_DIR/$1/state" "$OVL_DIR/$1/run"
}

# ovl_relay_start PART: overlay-relay in ovb-hub; waits for its admin socket. 1 on failure.
ovl_relay_start() {
    local rlog=$LOG_DIR/$1-relay.log
    world_bg ovb-hub "$rlog" env RUST_LOG="${OVB_RUST_LOG:-warn}" "$RELAY_BIN" --state "$OVL_DIR/relay" \
        serve --listen "$HUB_UL:$RELAY_PORT"
    OVL_RELAY_PID=$WORLD_LAST_PID
    if ! world_wait 10 "the relay's admin socket" relay_ready "$OVL_DIR/relay/admin.sock" "$OVL_RELAY_PID" ||
        ! world_alive "$OVL_RELAY_PID"; then
        tail_log "$rlog"
        return 1
    fi
}

# ovl_token USES: a join token in OVL_TOKEN. 1 on failure.
ovl_token() {
    OVL_TOKEN=$(world_run timeout 15 ip netns exec ovb-hub "$RELAY_BIN" --state "$OVL_DIR/relay" \
        token create --uses "$1" --ttl 2h 2>>"$OVL_LOG") || OVL_TOKEN=
    OVL_TOKEN=${OVL_TOKEN//[[:space:]]/}
    [[ -n $OVL_TOKEN ]] || { tail_log "$OVL_LOG"; return 1; }
}

# ovl NAME ARGS...: `overlay ARGS` against node NAME (its namespace and directories), at most
# 20 s; stderr to the part's CLI log.
ovl() {
    local n=$1
    shift
    world_run timeout 20 ip netns exec "ovb-$n" env RUST_LOG="${OVB_RUST_LOG:-warn}" \
        OVERLAY_STATE_DIR="$OVL_DIR/$n/state" OVERLAY_RUN_DIR="$OVL_DIR/$n/run" \
        "$OVERLAY_BIN" "$@" 2>>"$OVL_LOG"
}

# ovl_join NAME: `overlay join` in ovb-NAME as node NAME; its address in OVL_ADDR[NAME]. 1 on
# failure. The namespace's resolv.conf is remembered, to check that `overlay down` restores it.
ovl_join() {
    local n=$1 out
    OVL_RESOLV[$n]=$(cat "/etc/netns/ovb-$n/resolv.conf")
    out=$(world_run world_exec_shielded 30 "ovb-$n" env RUST_LOG="${OVB_RUST_LOG:-warn}" \
        OVERLAY_STATE_DIR="$OVL_DIR/$n/state" OVERLAY_RUN_DIR="$OVL_DIR/$n/run" \
        "$OVERLAY_BIN" join "$OVL_TOKEN" --name "$n" 2>>"$OVL_LOG") || { tail_log "$OVL_LOG"; return 1; }
    OVL_ADDR[$n]=$(awk '$1 == "address:" { print $2 }' <<<"$out")
    OVL_NODES+=("$n")
    [[ -n ${OVL_ADDR[$n]} ]] || { echo "bench.sh: overlay join printed no address for $n." >&2; return 1; }
}

# no_route NS ADDR: NS has no route to ADDR.
no_route() { ! ip -n "$1" route get "$2" >/dev/null 2>&1; }

# dig_answers NS SERVER NAME ADDR: dig in NS asking SERVER for NAME gets exactly ADDR.
dig_answers() { [[ $(ip netns exec "$1" dig +short +tries=1 +time=1 @"$2" "$3" 2>/dev/null) == "$4" ]]; }

# ovl_pid NAME: the node daemon's pid, from `overlay status --json`.
ovl_pid() {
    ovl "$1" status --json | awk -F'[:,]' '$1 ~ /"pid"/ { gsub(/[^0-9]/, "", $2); print $2; exit }'
}

# rss_kb PID: the process's resident set (VmRSS) in kB.
rss_kb() { awk '$1 == "VmRSS:" { print $2 }' "/proc/$1/status" 2>/dev/null; }

# json_field FIELD: the string value of "FIELD" in the JSON object on stdin (flat objects only).
json_field() { sed -n "s/.*\"$1\"[[:space:]]*:[[:space:]]*\"\\([^\"]*\\)\".*/\\1/p" | head -n 1; }

# ovl_down_all: `overlay down` on every joined node, then check each namespace's resolv.conf is
# back to what it was before the join. Problems are reported (RC=1), never fatal.
ovl_down_all() {
    local n
    for n in "${OVL_NODES[@]}"; do
        if ! ovl "$n" down >/dev/null; then
            echo "bench.sh: 'overlay down' failed on node $n." >&2
            RC=1
        elif [[ $(cat "/etc/netns/ovb-$n/resolv.conf") != "${OVL_RESOLV[$n]}" ]]; then
            echo "bench.sh: node $n: 'overlay down' did not restore the namespace's resolv.conf." >&2
            RC=1
        fi
    done
    OVL_NODES=()
}

# part_failed PART REASON: a component failed to run: say so, the exit status becomes 1.
part_failed() {
    echo "bench.sh: $1: $2." >&2
    RC=1
}

# ---------------------------------------------------------------------------------------------
# part: join

J_STATUS=
J_REACH=() J_CMD=() J_REG=() J_START=() J_PROBES=()

# join_once R: one fresh `overlay join` in ovb-a (new state directory, new node name "jR"),
# timed by bench-probe.py, then `overlay leave`. 1 when something failed to run.
join_once() {
    local r=$1 n=j$1 res=$OVL_DIR/probe-$1 err=$OVL_DIR/join-$1.err
    mkdir -p "$OVL_DIR/$n/state" "$OVL_DIR/$n/run"
    # The previous node's route must be gone, or the first ping would not need the new tunnel.
    if ! no_route ovb-a "$RELAY_OVL" &&
        ! world_wait 5 "the previous node's route to go" no_route ovb-a "$RELAY_OVL"; then
        part_failed join "run $r: a route to $RELAY_OVL is left from the previous run"
        return 1
    fi
    : >"$res"
    world_run world_exec_shielded 40 ovb-a python3 "$PROBE" icmp "$RELAY_OVL" \
        --timeout 20 --result "$res" --cmd-out "$OVL_DIR/join-$r.out" -- \
        env RUST_LOG="${OVB_RUST_LOG:-warn}" OVERLAY_STATE_DIR="$OVL_DIR/$n/state" \
        OVERLAY_RUN_DIR="$OVL_DIR/$n/run" "$OVERLAY_BIN" join "$OVL_TOKEN" --name "$n" 2>"$err" || true
    { echo "-- run $r"; cat "$err" "$OVL_DIR/join-$r.out" 2>/dev/null; } >>"$LOG_DIR/join-runs.log"
    local reached cmd rc probes detail
    read -r reached cmd rc probes detail <"$res" || true
    if [[ -z ${rc:-} ]]; then
        part_failed join "run $r: bench-probe.py did not report"
        tail_log "$err"
        return 1
    fi
    if [[ $rc != 0 ]]; then
        part_failed join "run $r: overlay join exited with status $rc"
        tail_log "$err"
        return 1
    fi
    if [[ $reached == -1 ]]; then
        part_failed join "run $r: no ping answered through the tunnel within 20 s"
        tail_log "$OVL_DIR/$n/state/daemon.log"
        return 1
    fi
    J_REACH+=("$reached")
    J_CMD+=("$cmd")
    J_PROBES+=("$probes")
    # overlay join's own steps: "registering with the relay ... (N ms)", "starting the daemon ... (N ms)"
    J_REG+=("$(sed -n 's/.*registering with the relay.*(\([0-9]*\) ms)$/\1/p' "$err" | head -n 1)")
    J_START+=("$(sed -n 's/.*starting the daemon.*(\([0-9]*\) ms)$/\1/p' "$err" | head -n 1)")
    log "  run $r/$JOIN_RUNS: first ping through the tunnel after $reached ms, overlay join took $cmd ms ($probes pings sent)"

    local leave_rc=0
    world_run timeout 20 ip netns exec ovb-a env RUST_LOG="${OVB_RUST_LOG:-warn}" \
        OVERLAY_STATE_DIR="$OVL_DIR/$n/state" OVERLAY_RUN_DIR="$OVL_DIR/$n/run" \
        "$OVERLAY_BIN" leave >>"$LOG_DIR/join-runs.log" 2>&1 || leave_rc=$?
    if ((leave_rc != 0)); then
        part_failed join "run $r: overlay leave failed (status $leave_rc)"
        world_ns_kill ovb-a # the daemon, so the next run starts clean
    elif [[ -e $OVL_DIR/$n/state/node.json ]]; then
        part_failed join "run $r: overlay leave left the node's state behind"
    fi
    return 0
}

join_report() {
    local when host n=${#J_REACH[@]} reach cmd reg start f=$OVL_DIR/vals
    when=$(now_utc)
    host=$(host_desc)
    printf '%s\n' "${J_REACH[@]}" >"$f"; reach=$(stats "$f")
    printf '%s\n' "${J_CMD[@]}" >"$f"; cmd=$(stats "$f")
    printf '%s\n' "${J_REG[@]}" >"$f"; reg=$(stats "$f")
    printf '%s\n' "${J_START[@]}" >"$f"; start=$(stats "$f")
    local r_med r_p90 r_min r_max c_med c_p90 c_min c_max g_med s_med _x
    read -r _x r_med r_p90 _x r_min r_max <<<"${reach:-0}"
    read -r _x c_med c_p90 _x c_min c_max <<<"${cmd:-0}"
    read -r _x g_med _x _x _x _x <<<"${reg:-0}"
    read -r _x s_med _x _x _x _x <<<"${start:-0}"
    local status=${J_STATUS:-ok}
    echo
    echo "join: $host; $n of $JOIN_RUNS fresh joins measured ($status)"
    echo
    if ((n)); then
        printf '%-44s %10s %10s %10s %10s\n' "" "median ms" "p90 ms" "min ms" "max ms"
        printf '%-44s %10s %10s %10s %10s\n' "start of overlay join -> first ping through" "$r_med" "$r_p90" "$r_min" "$r_max"
        printf '%-44s %10s %10s %10s %10s\n' "overlay join (the command)" "$c_med" "$c_p90" "$c_min" "$c_max"
        echo "overlay join's own steps (medians): registering with the relay ${g_med:-n/a} ms; starting the daemon until connected ${s_med:-n/a} ms"
        echo "target: first packet through the tunnel in under 500 ms"
    fi
    echo
    echo "markdown (for docs/benchmarks.md):"
    echo
    echo "Measured $when on $host; $n fresh joins (new state directory and node name each, \`overlay leave\` in between)."
    echo
    echo "| from the start of \`overlay join\` to | median (ms) | p90 (ms) | min (ms) | max (ms) |"
    echo "| --- | ---: | ---: | ---: | ---: |"
    if ((n)); then
        echo "| the first ping answered through the tunnel | $r_med | $r_p90 | $r_min | $r_max |"
        echo "| \`overlay join\` returning | $c_med | $c_p90 | $c_min | $c_max |"
        echo "| (step) registering with the relay | ${g_med:-n/a} | | | |"
        echo "| (step) starting the daemon until connected | ${s_med:-n/a} | | | |"
    else
        echo "| the first ping answered through the tunnel | $status | | | |"
    fi
    local json=$OUT_DIR/join.json
    {
        printf '{\n  "part": "join",\n  "time": "%s",\n  "host": %s,\n  "status": %s,\n' "$when" "$(json_str "$host")" "$(json_str "$status")"
        printf '  "params": {"runs": %s, "probe_interval_ms": 1, "probe_target": "%s"},\n' "$JOIN_RUNS" "$RELAY_OVL"
        printf '  "first_ping_ms": {"median": %s, "p90": %s, "min": %s, "max": %s, "runs": [%s]},\n' \
            "$(json_num "${r_med:-}")" "$(json_num "${r_p90:-}")" "$(json_num "${r_min:-}")" "$(json_num "${r_max:-}")" \
            "$(IFS=,; echo "${J_REACH[*]}")"
        printf '  "join_command_ms": {"median": %s, "p90": %s, "min": %s, "max": %s, "runs": [%s]},\n' \
            "$(json_num "${c_med:-}")" "$(json_num "${c_p90:-}")" "$(json_num "${c_min:-}")" "$(json_num "${c_max:-}")" \
            "$(IFS=,; echo "${J_CMD[*]}")"
        printf '  "steps_median_ms": {"register": %s, "daemon_connected": %s},\n' "$(json_num "${g_med:-}")" "$(json_num "${s_med:-}")"
        printf '  "target_ms": 500\n}\n'
    } >"$json"
    echo
    echo "results: ${json#"$ROOT"/}"
}

part_join() {
    log "part join: $JOIN_RUNS fresh joins, each timed from the start of overlay join to the first ping answered by $RELAY_OVL"
    J_STATUS=ok
    J_REACH=() J_CMD=() J_REG=() J_START=() J_PROBES=()
    ovl_begin join
    ovl_host a 2
    if ! ensure_binaries; then
        J_STATUS="n/a (binaries missing)"
    elif ! ovl_relay_start join; then
        J_STATUS="failed (the relay did not start)"
        part_failed join "the relay did not start"
    elif ! ovl_token $((JOIN_RUNS + 1)); then
        J_STATUS="failed (no token)"
        part_failed join "overlay-relay token create failed"
    else
        local r
        for ((r = 1; r <= JOIN_RUNS; r++)); do
            join_once "$r" || { J_STATUS="failed in run $r"; break; }
        done
    fi
    join_report
    world_cleanup
}

# ---------------------------------------------------------------------------------------------
# part: dns

DNSMASQ_IP=10.88.0.53 # on ovb-a's loopback, next to the node's 100.100.100.100 on its TUN
D_STATUS=
D_IDS=()
declare -A D_TITLE D_QPS D_SENT D_DONE D_NOERR D_P50 D_P99 D_AVG D_MAX
D_RSS_IDLE=''
D_RSS_LOAD=''
D_REG_MS=''
# Every upstream dead (node a's resolv.conf names DEAD_UPSTREAM, which nobody has): the first
# forwarded query (waits out the deadline), the same query again (the upstream is skipped),
# `getent hosts nosuchhost` (glibc asks both nameservers), all in ms.
DEAD_UPSTREAM=10.77.0.250
D_DEAD_FIRST=''
D_DEAD_REPEAT=''
D_DEAD_GETENT=''

# dnsperf_run ID TITLE SERVER [RATE]: dnsperf for TIME s from ovb-a against SERVER with every
# name, per-query latencies (-v) turned into p50/p99. 1 when dnsperf failed to run.
dnsperf_run() {
    local id=$1 title=$2 server=$3 rate=${4:-} out=$WORK/dnsperf.out logf=$LOG_DIR/dnsperf.log
    local args=(-s "$server" -d "$OVL_DIR/queries" -l "$TIME" -v)
    [[ -n $rate ]] && args+=(-Q "$rate")
    D_IDS+=("$id")
    D_TITLE[$id]=$title
    echo "-- $id: dnsperf ${args[*]}" >>"$logf"
    if ! world_run timeout $((TIME + 30)) ip netns exec ovb-a dnsperf "${args[@]}" >"$out" 2>>"$logf"; then
        grep -v '^> ' "$out" >>"$logf"
        rm -f "$out"
        part_failed dns "dnsperf against $server failed"
        tail_log "$logf"
        return 1
    fi
    grep -v '^> ' "$out" >>"$logf"
    D_QPS[$id]=$(awk '/Queries per second:/ { printf "%.0f", $4 }' "$out")
    D_SENT[$id]=$(awk '/Queries sent:/ { print $3 }' "$out")
    D_DONE[$id]=$(awk '/Queries completed:/ { print $3 }' "$out")
    D_NOERR[$id]=$(awk '/Response codes:/ { for (i = 3; i < NF; i++) if ($i == "NOERROR") print $(i + 1) }' "$out")
    local st _x p50 p99 mx
    st=$(awk '$1 == ">" { printf "%.0f\n", $NF * 1000000 }' "$out" >"$WORK/lat" && stats "$WORK/lat")
    read -r _x p50 _x p99 _x mx <<<"${st:-0}"
    D_P50[$id]=${p50%.*}
    D_P99[$id]=${p99%.*}
    D_MAX[$id]=${mx%.*}
    D_AVG[$id]=$(awk '$1 == ">" { s += $NF; n++ } END { if (n) printf "%.0f", s / n * 1000000 }' "$out")
    rm -f "$out" "$WORK/lat"
    log "  $title: ${D_QPS[$id]:-?} queries/s, p50 ${D_P50[$id]:-?} µs, p99 ${D_P99[$id]:-?} µs (${D_NOERR[$id]:-0}/${D_DONE[$id]:-0} NOERROR)"
}

# dns_all_resolve FILE: every "ADDR NAME" line of FILE answers ADDR at the node's DNS in ovb-a.
dns_all_resolve() {
    # shellcheck disable=SC2016 # expanded by the inner bash
    ip netns exec ovb-a bash -c '
        while read -r addr name; do
            [[ $(dig +short +tries=1 +time=1 @"$2" "$name") == "$addr" ]] || exit 1
        done <"$1"' _ "$1" "$NODE_DNS"
}

dns_report() {
    local when host status=${D_STATUS:-ok} id
    when=$(now_utc)
    host=$(host_desc)
    local q_ratio p99_ratio pq_ratio
    q_ratio=$(fmt_ratio "${D_QPS[overlay]:-}" "${D_QPS[dnsmasq]:-}")
    p99_ratio=$(fmt_ratio "${D_P99[overlay]:-}" "${D_P99[dnsmasq]:-}")
    pq_ratio=$(fmt_ratio "${D_P99[overlay-paced]:-}" "${D_P99[dnsmasq-paced]:-}")
    local t_qps t_p99 t_p99p
    t_qps=$(at_least "$q_ratio" 1)
    t_p99=$(below "${D_P99[overlay]:-}" 1000)
    t_p99p=$(below "${D_P99[overlay-paced]:-}" 1000)
    echo
    echo "dns: $host ($status)"
    echo "$SERVICES services ($(( (SERVICES + 49) / 50 )) nodes), A queries for their names from ovb-a, dnsperf $TIME s per run"
    echo
    printf '%-40s %10s %9s %9s %9s %12s\n' "" "queries/s" "p50 µs" "p99 µs" "max µs" "NOERROR"
    for id in "${D_IDS[@]}"; do
        printf '%-40s %10s %8s %8s %8s %12s\n' "${D_TITLE[$id]}" "${D_QPS[$id]:-n/a}" "${D_P50[$id]:-n/a}" \
            "${D_P99[$id]:-n/a}" "${D_MAX[$id]:-n/a}" "${D_NOERR[$id]:-0}/${D_DONE[$id]:-0}"
    done
    echo
    echo "latencies: every response's time from dnsperf -v (µs resolution), nearest-rank percentiles"
    echo "queries/s overlay / dnsmasq (unpaced): $q_ratio; p99 overlay / dnsmasq: unpaced $p99_ratio, at $RATE/s $pq_ratio"
    echo "node daemon RSS with $((SERVICES < 50 ? SERVICES : 50)) services registered: idle $(with_unit "${D_RSS_IDLE:-n/a}" kB), after the dnsperf runs $(with_unit "${D_RSS_LOAD:-n/a}" kB)"
    echo "registering $SERVICES services one by one with overlay register: $(with_unit "${D_REG_MS:-n/a}" ms)"
    local t_dead1 t_dead2 t_getent
    t_dead1=$(below "${D_DEAD_FIRST:-}" 1500)
    t_dead2=$(below "${D_DEAD_REPEAT:-}" 10)
    t_getent=$(below "${D_DEAD_GETENT:-}" 3000)
    echo "every upstream dead: first forwarded query $(with_unit "${D_DEAD_FIRST:-n/a}" ms), repeated $(with_unit "${D_DEAD_REPEAT:-n/a}" ms), getent hosts nosuchhost $(with_unit "${D_DEAD_GETENT:-n/a}" ms)"
    echo "  met (informational): $t_dead1 first < 1.5 s; $t_dead2 repeated < 10 ms; $t_getent getent < 3 s"
    echo "targets: >= 50000 queries/s and >= dnsmasq; p99 < 1 ms; RSS < 30 MB"
    echo "  met (informational, never the exit status): $t_qps queries/s >= dnsmasq; $t_p99 p99 < 1 ms unpaced; $t_p99p p99 < 1 ms at $RATE/s"
    echo
    echo "markdown (for docs/benchmarks.md):"
    echo
    echo "Measured $when on $host; $SERVICES services, dnsperf $TIME s per run, client and both servers in one namespace."
    echo
    echo "Latencies: the time of every response, from dnsperf -v; nearest-rank percentiles."
    echo
    echo "| server, load | queries/s | p50 (µs) | p99 (µs) | max (µs) | NOERROR / completed |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: |"
    for id in "${D_IDS[@]}"; do
        echo "| ${D_TITLE[$id]} | ${D_QPS[$id]:-n/a} | ${D_P50[$id]:-n/a} | ${D_P99[$id]:-n/a} | ${D_MAX[$id]:-n/a} | ${D_NOERR[$id]:-0} / ${D_DONE[$id]:-0} |"
    done
    ((${#D_IDS[@]})) || echo "| overlay node DNS | $status | | | | |"
    echo
    echo "| ratio or figure (same run) | value |"
    echo "| --- | ---: |"
    echo "| queries/s overlay / dnsmasq (unpaced) | $q_ratio |"
    echo "| p99 overlay / dnsmasq (unpaced) | $p99_ratio |"
    echo "| p99 overlay / dnsmasq (at $RATE queries/s) | $pq_ratio |"
    echo "| overlay p99 < 1 ms: unpaced; at $RATE queries/s | $t_p99; $t_p99p |"
    echo "| node daemon RSS, $((SERVICES < 50 ? SERVICES : 50)) services registered, idle | $(with_unit "${D_RSS_IDLE:-n/a}" kB) |"
    echo "| node daemon RSS after the dnsperf runs | $(with_unit "${D_RSS_LOAD:-n/a}" kB) |"
    echo "| every upstream dead: first forwarded query (target < 1.5 s) | $(with_unit "${D_DEAD_FIRST:-n/a}" ms) ($t_dead1) |"
    echo "| every upstream dead: the same query again (target < 10 ms) | $(with_unit "${D_DEAD_REPEAT:-n/a}" ms) ($t_dead2) |"
    echo "| every upstream dead: \`getent hosts nosuchhost\` (target < 3 s) | $(with_unit "${D_DEAD_GETENT:-n/a}" ms) ($t_getent) |"
    local json=$OUT_DIR/dns.json first=1
    {
        printf '{\n  "part": "dns",\n  "time": "%s",\n  "host": %s,\n  "status": %s,\n' "$when" "$(json_str "$host")" "$(json_str "$status")"
        printf '  "params": {"services": %s, "seconds": %s, "paced_qps": %s, "server": "%s", "dnsmasq": "%s"},\n' \
            "$SERVICES" "$TIME" "$RATE" "$NODE_DNS" "$DNSMASQ_IP"
        printf '  "runs": [\n'
        for id in "${D_IDS[@]}"; do
            ((first)) || printf ',\n'
            first=0
            printf '    {"id": "%s", "title": %s, "qps": %s, "sent": %s, "completed": %s, "noerror": %s, "latency_us": {"p50": %s, "p99": %s, "avg": %s, "max": %s}}' \
                "$id" "$(json_str "${D_TITLE[$id]}")" "$(json_num "${D_QPS[$id]:-}")" "$(json_num "${D_SENT[$id]:-}")" \
                "$(json_num "${D_DONE[$id]:-}")" "$(json_num "${D_NOERR[$id]:-}")" "$(json_num "${D_P50[$id]:-}")" \
                "$(json_num "${D_P99[$id]:-}")" "$(json_num "${D_AVG[$id]:-}")" "$(json_num "${D_MAX[$id]:-}")"
        done
        printf '\n  ],\n  "latency_method": "dnsperf -v per-response times, nearest-rank percentiles",\n'
        printf '  "ratios": {"qps_overlay_over_dnsmasq": %s, "p99_overlay_over_dnsmasq": %s, "p99_paced_overlay_over_dnsmasq": %s},\n' \
            "$(json_num "$q_ratio")" "$(json_num "$p99_ratio")" "$(json_num "$pq_ratio")"
        printf '  "targets_met": {"qps_at_least_dnsmasq": %s, "p99_under_1ms_unpaced": %s, "p99_under_1ms_paced": %s},\n' \
            "$(json_bool "$t_qps")" "$(json_bool "$t_p99")" "$(json_bool "$t_p99p")"
        printf '  "dead_upstream_ms": {"first": %s, "repeat": %s, "getent_nosuchhost": %s},\n' \
            "$(json_num "${D_DEAD_FIRST:-}")" "$(json_num "${D_DEAD_REPEAT:-}")" "$(json_num "${D_DEAD_GETENT:-}")"
        printf '  "daemon_rss_kb": {"local_services": %s, "idle": %s, "after_load": %s},\n  "register_all_ms": %s\n}\n' \
            "$((SERVICES < 50 ? SERVICES : 50))" "$(json_num "${D_RSS_IDLE:-}")" "$(json_num "${D_RSS_LOAD:-}")" "$(json_num "${D_REG_MS:-}")"
    } >"$json"
    echo
    echo "results: ${json#"$ROOT"/}"
}

# dns_measure: the body of part dns once the world exists; 1 when something failed to run.
dns_measure() {
    local nodes=$(((SERVICES + 49) / 50)) i n hosts=$OVL_DIR/hosts out t0
    ensure_binaries || { D_STATUS="n/a (binaries missing)"; return 0; }
    ovl_relay_start dns || { part_failed dns "the relay did not start"; return 1; }
    ovl_token "$nodes" || { part_failed dns "overlay-relay token create failed"; return 1; }
    # Node a's only upstream is an address nobody answers on (no outside network needed).
    printf 'nameserver %s\n' "$DEAD_UPSTREAM" >/etc/netns/ovb-a/resolv.conf
    for ((i = 0; i < nodes; i++)); do
        n=$(dns_node "$i")
        ovl_join "$n" || { part_failed dns "overlay join failed for node $n"; return 1; }
    done
    log "  $nodes node(s) joined; registering $SERVICES services (50 per node)"
    : >"$hosts"
    : >"$OVL_DIR/queries"
    t0=$EPOCHREALTIME
    for ((i = 1; i <= SERVICES; i++)); do
        n=$(dns_node $(((i - 1) / 50)))
        out=$(ovl "$n" register "svc$i" --port 80 --json) || { part_failed dns "overlay register svc$i failed on node $n"; tail_log "$OVL_LOG"; return 1; }
        printf '%s svc%s.ovl.internal\n' "$(json_field address <<<"$out")" "$i" >>"$hosts"
        printf 'svc%s.ovl.internal A\n' "$i" >>"$OVL_DIR/queries"
    done
    D_REG_MS=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", (b - a) * 1000 }')
    cp "$hosts" "$LOG_DIR/dns-hosts.txt"
    if ! world_wait 30 "every name to resolve at $NODE_DNS in ovb-a" dns_all_resolve "$hosts"; then
        part_failed dns "the registered names did not all resolve at $NODE_DNS within 30 s"
        return 1
    fi
    local pid
    pid=$(ovl_pid a) || pid=
    sleep 2 # idle
    [[ -n $pid ]] && D_RSS_IDLE=$(rss_kb "$pid")
    log "  node a daemon (pid ${pid:-?}): RSS ${D_RSS_IDLE:-?} kB idle with $((SERVICES < 50 ? SERVICES : 50)) services"

    ip -n ovb-a addr add "$DNSMASQ_IP/32" dev lo
    world_bg ovb-a "$LOG_DIR/dnsmasq.log" dnsmasq --no-daemon --no-resolv --no-hosts --addn-hosts="$hosts" \
        --listen-address="$DNSMASQ_IP" --bind-interfaces --port 53 --pid-file= --log-facility=-
    local dpid=$WORLD_LAST_PID
    local first_addr first_name
    read -r first_addr first_name <"$hosts"
    if ! world_wait 10 "dnsmasq to answer" dig_answers ovb-a "$DNSMASQ_IP" "$first_name" "$first_addr"; then
        part_failed dns "dnsmasq did not start"
        tail_log "$LOG_DIR/dnsmasq.log"
        world_stop "$dpid"
        return 1
    fi
    # Unpaced (as fast as dnsperf's 100 outstanding queries allow), then paced at RATE; the two
    # servers alternate so that background load on the machine hits both alike.
    dnsperf_run overlay "overlay node DNS, unpaced" "$NODE_DNS" || true
    dnsperf_run dnsmasq "dnsmasq (hosts file), unpaced" "$DNSMASQ_IP" || true
    dnsperf_run overlay-paced "overlay node DNS, $RATE queries/s" "$NODE_DNS" "$RATE" || true
    dnsperf_run dnsmasq-paced "dnsmasq (hosts file), $RATE queries/s" "$DNSMASQ_IP" "$RATE" || true
    [[ -n $pid ]] && D_RSS_LOAD=$(rss_kb "$pid")
    [[ -n $pid && -z ${D_RSS_LOAD:-} ]] && part_failed dns "the node daemon of a is gone after the dnsperf runs"
    world_stop "$dpid"
    dns_dead_upstream
    return 0
}

# dig_ms NAME: dig's "Query time" (ms) for NAME at the node's DNS in ovb-a, and its status, as
# "MS STATUS"; nothing when dig got no answer.
dig_ms() {
    world_run timeout 10 ip netns exec ovb-a dig +tries=1 +time=5 +nocookie "@$NODE_DNS" "$1" 2>/dev/null |
        awk '/status:/ { s = $6; sub(",", "", s) } /Query time:/ { t = $4 } END { if (t != "") print t, s }'
}

# dns_dead_upstream: the answers node a gives while its only upstream is silent.
dns_dead_upstream() {
    local r t0 out
    # A name never asked: waits the forwarding deadline, then SERVFAIL.
    r=$(dig_ms "first-$RANDOM.example.") || r=
    log "  dead upstream, first forwarded query: ${r:-no answer} (ms status)"
    D_DEAD_FIRST=${r%% *}
    # The same again while the upstream is skipped.
    r=$(dig_ms "first-again.example.") || r=
    r=$(dig_ms "first-again.example.") || r=
    log "  dead upstream, repeated query: ${r:-no answer} (ms status)"
    D_DEAD_REPEAT=${r%% *}
    # glibc: nosuchhost.ovl.internal (NXDOMAIN or SERVFAIL from on demand), then nosuchhost
    # at both nameservers (ours, then the dead one with the one-second timeout overlay sets).
    t0=$EPOCHREALTIME
    out=$(world_run timeout 20 ip netns exec ovb-a getent hosts nosuchhost) || true
    D_DEAD_GETENT=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", (b - a) * 1000 }')
    log "  dead upstream, getent hosts nosuchhost: ${D_DEAD_GETENT} ms ${out:+(answered: $out)}"
}

# dns_node I: the short name of the I-th node (0 -> a, 1 -> b, ... then n27, n28, ...).
dns_node() {
    local letters=abcdefghijklmnopqrstuvwxyz
    if (($1 < 26)); then printf '%s' "${letters:$1:1}"; else printf 'n%d' "$1"; fi
}

part_dns() {
    local nodes=$(((SERVICES + 49) / 50)) i
    log "part dns: $SERVICES services on $nodes node(s); dnsperf ${TIME} s per run against the node's DNS and dnsmasq"
    D_STATUS=ok
    D_IDS=()
    D_RSS_IDLE='' D_RSS_LOAD='' D_REG_MS=''
    D_DEAD_FIRST='' D_DEAD_REPEAT='' D_DEAD_GETENT=''
    ovl_begin dns
    for ((i = 0; i < nodes; i++)); do
        ovl_host "$(dns_node "$i")" $((2 + i))
    done
    dns_measure || D_STATUS=failed
    ovl_down_all
    dns_report
    world_cleanup
}

# ---------------------------------------------------------------------------------------------
# part: registry

R_STATUS=
R_ROUNDS=()
declare -A R_TITLE R_FILLED R_STATS R_CMD R_VALUES R_MISMATCH
R_RSS_B=''
R_RSS_FILL=''
R_FILL_MS=''
R_B_KNOWS=''

# reg_once NODE NAME: `overlay register NAME` on NODE, timed by bench-probe.py from ovb-b until
# ovb-b's DNS answers NAME. Sets REG_LINE to "reached_ms cmd_ms"; 1 when something failed to run.
REG_LINE=
reg_once() {
    local node=$1 name=$2 res=$OVL_DIR/probe out=$OVL_DIR/register.out
    : >"$res"
    world_run timeout 30 ip netns exec ovb-b python3 "$PROBE" dns "$NODE_DNS" "$name.ovl.internal" \
        --timeout 10 --result "$res" --cmd-out "$out" -- \
        ip netns exec "ovb-$node" env RUST_LOG="${OVB_RUST_LOG:-warn}" OVERLAY_STATE_DIR="$OVL_DIR/$node/state" \
        OVERLAY_RUN_DIR="$OVL_DIR/$node/run" "$OVERLAY_BIN" register "$name" --port 80 --json 2>>"$OVL_LOG" || true
    local reached cmd rc probes detail addr
    read -r reached cmd rc probes detail <"$res" || true
    if [[ ${rc:-x} != 0 ]]; then
        part_failed registry "overlay register $name on node $node failed (status ${rc:-unknown})"
        tail_log "$OVL_LOG"
        return 1
    fi
    if [[ $reached == -1 ]]; then
        part_failed registry "$name.ovl.internal did not resolve in ovb-b within 10 s"
        return 1
    fi
    addr=$(json_field address <"$out")
    [[ $addr == "$detail" ]] || echo "$name: register printed ${addr:-nothing}, DNS answered $detail" >>"$OVL_DIR/mismatch"
    REG_LINE="$reached $cmd"
}

# reg_round ID TITLE PREFIX: REGISTRATIONS registrations named PREFIX-I, alternating between
# nodes a and c; figures under ID. 1 when something failed to run.
reg_round() {
    local id=$1 title=$2 prefix=$3 i node line vals=$OVL_DIR/$1.reach cmds=$OVL_DIR/$1.cmd
    R_ROUNDS+=("$id")
    R_TITLE[$id]=$title
    : >"$vals"
    : >"$cmds"
    : >"$OVL_DIR/mismatch"
    for ((i = 1; i <= REGISTRATIONS; i++)); do
        node=a
        ((i % 2)) || node=c
        reg_once "$node" "$prefix-$i" || return 1
        line=$REG_LINE
        printf '%s\n' "${line% *}" >>"$vals"
        printf '%s\n' "${line#* }" >>"$cmds"
        ((i % 25)) || log "  $title: $i/$REGISTRATIONS registrations"
    done
    R_STATS[$id]=$(stats "$vals")
    R_CMD[$id]=$(stats "$cmds")
    R_VALUES[$id]=$(paste -sd, "$vals")
    R_MISMATCH[$id]=$(wc -l <"$OVL_DIR/mismatch")
    cat "$OVL_DIR/mismatch" >>"$LOG_DIR/registry-mismatch.log"
    ((R_MISMATCH[$id] == 0)) || part_failed registry "$title: ${R_MISMATCH[$id]} names answered another address than overlay register printed"
    local _n med _p90 p99
    read -r _n med _p90 p99 _ <<<"${R_STATS[$id]}"
    log "  $title: propagation median $med ms, p99 $p99 ms"
}

# reg_count NODE: how many service instances `overlay services --json` lists on NODE.
reg_count() { ovl "$1" services --json | grep -c '"name":' || true; }
reg_lists() { (($(reg_count "$1") >= $2)); }

# reg_fill: FILL services on filler nodes f1, f2, ... (60 each), until ovb-b lists them all.
reg_fill() {
    local nodes=$(((FILL + 59) / 60)) i k=0 t0 n
    for ((i = 1; i <= nodes; i++)); do
        ovl_host "f$i" $((9 + i))
        ovl_join "f$i" || { part_failed registry "overlay join failed for filler node f$i"; return 1; }
    done
    log "  $nodes filler nodes joined; registering $FILL services on them"
    t0=$EPOCHREALTIME
    for ((i = 1; i <= FILL; i++)); do
        n=f$(((i - 1) / 60 + 1))
        ovl "$n" register "fill-$i" --port 80 >/dev/null || {
            part_failed registry "overlay register fill-$i failed on $n"
            tail_log "$OVL_LOG"
            tail_log "$OVL_DIR/$n/state/daemon.log"
            return 1
        }
        ((i % 200)) || log "  $i/$FILL"
    done
    R_FILL_MS=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", (b - a) * 1000 }')
    if ! world_wait 60 "ovb-b to list the $FILL services" reg_lists b "$FILL"; then
        k=$(reg_count b)
        part_failed registry "node b lists $k services, not the $FILL registered"
        return 1
    fi
}

registry_report() {
    local when host status=${R_STATUS:-ok} id
    when=$(now_utc)
    host=$(host_desc)
    echo
    echo "registry: $host ($status)"
    echo "$REGISTRATIONS registrations per round on nodes a and c (alternating), each timed until node b's DNS answers the name (probed every 1 ms)"
    echo
    printf '%-44s %10s %9s %9s %9s %14s\n' "" "median ms" "p90 ms" "p99 ms" "max ms" "register ms"
    local n med p90 p99 mn mx _x cmed
    for id in "${R_ROUNDS[@]}"; do
        read -r n med p90 p99 mn mx <<<"${R_STATS[$id]:-0}"
        read -r _x cmed _x <<<"${R_CMD[$id]:-0}"
        printf '%-44s %10s %9s %9s %9s %14s\n' "${R_TITLE[$id]}" "${med:-n/a}" "${p90:-n/a}" "${p99:-n/a}" "${mx:-n/a}" "${cmed:-n/a}"
    done
    echo
    [[ -n ${R_FILL_MS:-} ]] && echo "registering the $FILL filler services one by one took $R_FILL_MS ms"
    echo "node daemon RSS: node b (knows ${R_B_KNOWS:-?} services, none local) $(with_unit "${R_RSS_B:-n/a}" kB); filler node f1 (60 local) $(with_unit "${R_RSS_FILL:-n/a}" kB)"
    echo "target: p99 under 200 ms"
    echo
    echo "markdown (for docs/benchmarks.md):"
    echo
    echo "Measured $when on $host; $REGISTRATIONS registrations per round, probe every 1 ms."
    echo
    echo "| round | median (ms) | p90 (ms) | p99 (ms) | max (ms) | \`overlay register\` median (ms) |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: |"
    for id in "${R_ROUNDS[@]}"; do
        read -r n med p90 p99 mn mx <<<"${R_STATS[$id]:-0}"
        read -r _x cmed _x <<<"${R_CMD[$id]:-0}"
        echo "| ${R_TITLE[$id]} | ${med:-n/a} | ${p90:-n/a} | ${p99:-n/a} | ${mx:-n/a} | ${cmed:-n/a} |"
    done
    ((${#R_ROUNDS[@]})) || echo "| propagation | $status | | | | |"
    echo
    echo "| figure (same run) | value |"
    echo "| --- | ---: |"
    echo "| node daemon RSS, node knowing ${R_B_KNOWS:-?} services of other nodes | $(with_unit "${R_RSS_B:-n/a}" kB) |"
    echo "| node daemon RSS, 60 services registered on it | $(with_unit "${R_RSS_FILL:-n/a}" kB) |"
    local json=$OUT_DIR/registry.json first=1
    {
        printf '{\n  "part": "registry",\n  "time": "%s",\n  "host": %s,\n  "status": %s,\n' "$when" "$(json_str "$host")" "$(json_str "$status")"
        printf '  "params": {"registrations": %s, "fill": %s, "probe_interval_ms": 1},\n  "rounds": [\n' "$REGISTRATIONS" "$FILL"
        for id in "${R_ROUNDS[@]}"; do
            ((first)) || printf ',\n'
            first=0
            read -r n med p90 p99 mn mx <<<"${R_STATS[$id]:-0}"
            read -r _x cmed _x <<<"${R_CMD[$id]:-0}"
            printf '    {"id": "%s", "title": %s, "other_services": %s, "n": %s, "propagation_ms": {"median": %s, "p90": %s, "p99": %s, "min": %s, "max": %s, "values": [%s]}, "register_command_median_ms": %s, "address_mismatches": %s}' \
                "$id" "$(json_str "${R_TITLE[$id]}")" "${R_FILLED[$id]:-0}" "${n:-0}" "$(json_num "${med:-}")" "$(json_num "${p90:-}")" \
                "$(json_num "${p99:-}")" "$(json_num "${mn:-}")" "$(json_num "${mx:-}")" "${R_VALUES[$id]:-}" \
                "$(json_num "${cmed:-}")" "${R_MISMATCH[$id]:-0}"
        done
        printf '\n  ],\n  "fill_register_ms": %s,\n  "daemon_rss_kb": {"observer": %s, "observer_knows_services": %s, "filler_60_local": %s},\n  "target_p99_ms": 200\n}\n' \
            "$(json_num "${R_FILL_MS:-}")" "$(json_num "${R_RSS_B:-}")" "$(json_num "${R_B_KNOWS:-}")" "$(json_num "${R_RSS_FILL:-}")"
    } >"$json"
    echo
    echo "results: ${json#"$ROOT"/}"
}

# registry_measure: the body of part registry once a, b and c exist; 1 when something failed.
registry_measure() {
    local n i pid
    ensure_binaries || { R_STATUS="n/a (binaries missing)"; return 0; }
    ovl_relay_start registry || { part_failed registry "the relay did not start"; return 1; }
    ovl_token $((3 + (FILL + 59) / 60)) || { part_failed registry "overlay-relay token create failed"; return 1; }
    for n in b a c; do
        ovl_join "$n" || { part_failed registry "overlay join failed for node $n"; return 1; }
    done
    R_FILLED[empty]=0
    reg_round empty "no other services" p0 || return 1
    if ((FILL > 0)); then
        log "  removing round 1's services, then registering $FILL services on other nodes"
        for ((i = 1; i <= REGISTRATIONS; i++)); do
            n=a
            ((i % 2)) || n=c
            ovl "$n" unregister "p0-$i" >/dev/null || { part_failed registry "overlay unregister p0-$i failed"; return 1; }
        done
        reg_fill || return 1
        R_FILLED[filled]=$FILL
        reg_round filled "$FILL services registered on other nodes" p1 || return 1
    fi
    R_B_KNOWS=$(reg_count b)
    pid=$(ovl_pid b) || pid=
    [[ -n $pid ]] && R_RSS_B=$(rss_kb "$pid")
    if ((FILL > 0)); then
        pid=$(ovl_pid f1) || pid=
        [[ -n $pid ]] && R_RSS_FILL=$(rss_kb "$pid")
    fi
    return 0
}

part_registry() {
    local again=""
    ((FILL)) && again="; then again with $FILL services registered on other nodes"
    log "part registry: $REGISTRATIONS registrations, each timed until another node's DNS answers$again"
    R_STATUS=ok
    R_ROUNDS=()
    R_RSS_B='' R_RSS_FILL='' R_FILL_MS='' R_B_KNOWS=''
    ovl_begin registry
    ovl_host a 2
    ovl_host b 3
    ovl_host c 4
    registry_measure || R_STATUS=failed
    ovl_down_all
    registry_report
    world_cleanup
}

# ---------------------------------------------------------------------------------------------
# part: gateway

# ovb-a is the laptop, ovb-b a host in the remote environment, ovb-hub the relay's (or the
# WireGuard gateway's) host. Through the relay, ovb-a reaches "upstream" (catalog -> ovb-b); through
# stock wireguard-go, ovb-a reaches ovb-b's 10.98.0.3 routed by the hub's kernel.
part_gateway() {
    log "part gateway: iperf3 laptop -> remote host through the relay's userspace stack vs wireguard-go + kernel forwarding; relay RSS with 1000 proxied connections"
    SETUPS=()
    ovl_begin gateway
    ovl_host a 2
    ovl_host b 3
    local d=$OVL_DIR hole=10.98.0.3 g_rss='' g_conns=''

    # (1) stock wireguard-go a <-> hub, the hub's kernel forwards to b.
    setup_begin gw_wggo "wireguard-go + kernel forwarding"
    WG_PIDS=()
    mkdir -p "$d/wg"
    (umask 077 && wg genkey >"$d/wg/a.key" && wg genkey >"$d/wg/h.key")
    local apub hpub
    apub=$(wg pubkey <"$d/wg/a.key")
    hpub=$(wg pubkey <"$d/wg/h.key")
    ip -n ovb-b addr add "$hole/32" dev lo
    ip -n ovb-b route add 10.99.0.0/24 via "$HUB_UL"
    ip -n ovb-hub route add "$hole/32" via 10.77.0.3
    ip netns exec ovb-hub sysctl -qw net.ipv4.ip_forward=1
    if ! wg_node wireguard-go ovb-a ovbwga "$d/wg/a.key" 10.99.0.1/24 "$hpub" "$HUB_UL:$WG_PORT" "10.99.0.2/32,10.98.0.0/24" ||
        ! wg_node wireguard-go ovb-hub ovbwgh "$d/wg/h.key" 10.99.0.2/24 "$apub" "$A_UL:$WG_PORT" 10.99.0.1/32; then
        setup_failed gw_wggo "wireguard-go did not start" "$LOG_DIR/wireguard-go-ovb-a.log"
    else
        ip -n ovb-a route add 10.98.0.0/24 dev ovbwga
        if world_wait 10 "ovb-a to reach $hole through wireguard-go" ip netns exec ovb-a ping -n -c 1 -W 1 "$hole"; then
            iperf_runs gw_wggo ovb-a ovb-b "$hole"
        else
            setup_failed gw_wggo "no traffic through wireguard-go" "$LOG_DIR/wireguard-go-ovb-a.log"
        fi
    fi
    world_stop "${WG_PIDS[@]}"

    # (2) the overlay relay's gateway.
    setup_begin gw_overlay "overlay relay gateway (smoltcp)"
    if ! ensure_binaries; then
        setup_na gw_overlay "binaries missing"
    else
        printf '[services.upstream]\naddress = "10.77.0.3:5201"\n' >"$d/catalog.toml"
        local rlog=$LOG_DIR/gateway-relay.log
        world_bg ovb-hub "$rlog" env RUST_LOG="${OVB_RUST_LOG:-warn}" "$RELAY_BIN" --state "$d/relay" \
            serve --listen "$HUB_UL:$RELAY_PORT" --catalog "$d/catalog.toml"
        OVL_RELAY_PID=$WORLD_LAST_PID
        local remote_ip=
        if ! world_wait 10 "the relay's admin socket" relay_ready "$d/relay/admin.sock" "$OVL_RELAY_PID" ||
            ! ovl_token 1 || ! ovl_join a; then
            setup_failed gw_overlay "the relay or the node did not start" "$rlog"
        elif ! world_wait 10 "ovb-a to resolve upstream" ip netns exec ovb-a getent hosts upstream; then
            setup_failed gw_overlay "the name upstream does not resolve on the node" "$rlog"
        else
            remote_ip=$(ip netns exec ovb-a getent hosts upstream | awk '{ print $1; exit }')
            iperf_runs gw_overlay ovb-a ovb-b "$remote_ip"
            # 1000 concurrent proxied TCP connections, each with a little data, held open.
            cat >"$d/hold-server.py" <<'PY'
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("10.77.0.3", 7000)); s.listen(4096)
held = []
while True:
    c, _ = s.accept(); held.append(c)
PY
            cat >"$d/hold-client.py" <<'PY'
import socket, sys, time
ip, n = sys.argv[1], int(sys.argv[2])
socks = []
for i in range(n):
    s = socket.create_connection((ip, 7000), timeout=10); s.sendall(b"x" * 1024); socks.append(s)
print("open", len(socks), flush=True)
time.sleep(30)
PY
            world_bg ovb-b "$LOG_DIR/gateway-hold-server.log" python3 "$d/hold-server.py"
            local hs=$WORLD_LAST_PID
            sleep 0.5
            world_bg ovb-a "$LOG_DIR/gateway-hold-client.log" bash -c "ulimit -n 4096; exec python3 $d/hold-client.py $remote_ip 1000"
            local hc=$WORLD_LAST_PID
            if world_wait 60 "1000 connections through the relay" grep -q "open 1000" "$LOG_DIR/gateway-hold-client.log"; then
                sleep 2
                g_rss=$(rss_kb "$OVL_RELAY_PID")
                g_conns=1000
                log "  relay RSS with 1000 proxied connections: $g_rss kB"
            else
                part_failed gateway "the 1000 connections did not open"
                tail_log "$LOG_DIR/gateway-hold-client.log"
            fi
            world_stop "$hc" "$hs"
        fi
        ovl_down_all
        world_stop "$OVL_RELAY_PID"
    fi

    local ratio
    ratio=$(fmt_ratio "${S_TPUT[gw_overlay]:-}" "${S_TPUT[gw_wggo]:-}")
    echo
    echo "gateway: $(host_desc)"
    echo "iperf3 TCP laptop -> remote host, 1 stream, ${TIME} s per run, median of $DP_RUNS run(s)"
    local id
    for id in "${SETUPS[@]}"; do
        if [[ ${S_STATUS[$id]} == ok ]]; then
            printf '  %-40s %8s Mbit/s\n' "${S_TITLE[$id]}" "$(fmt_num "${S_TPUT[$id]}")"
        else
            printf '  %-40s %s\n' "${S_TITLE[$id]}" "${S_STATUS[$id]}"
        fi
    done
    echo "  throughput gateway / wireguard-go: $ratio (target >= 1.0)"
    echo "  relay RSS with ${g_conns:-n/a} proxied TCP connections: ${g_rss:-n/a} kB (target < 200 MB)"
    printf '{"part": "gateway", "time": "%s", "host": %s, "throughput_mbps": {"wireguard_go_kernel_forwarding": %s, "overlay_gateway": %s}, "ratio": %s, "relay_rss_kb_1000_connections": %s}\n' \
        "$(now_utc)" "$(json_str "$(host_desc)")" "$(json_num "${S_TPUT[gw_wggo]:-}")" \
        "$(json_num "${S_TPUT[gw_overlay]:-}")" "$(json_num "$ratio")" "$(json_num "$g_rss")" >"$OUT_DIR/gateway.json"
    echo "results: ${OUT_DIR#"$ROOT"/}/gateway.json"
    world_cleanup
}

# ---------------------------------------------------------------------------------------------
# part: restart

DEV_UID=65534               # `overlay dev` runs as this user (nobody), never as root
DEV_PYTHON=/usr/bin/python3 # the service's python: every user can run it (a pyenv one may not)
# Two services run the same server: "echo" with `exec` (python replaces the `sh -c` that overlay
# dev starts), "echo-sh" without (sh stays and python is its child, as with most commands
# written in overlay.toml). Latency is measured on echo; restarts on both.
RS_SERVICES=(echo echo-sh)
RS_STATUS=
RS_LAT=() # lines of bench-probe.py latency: "round address n median_us p99_us mean_us"
declare -A RS_CMD RS_ADDR RS_OWN RS_RST RS_PRINTED
# RS_OWN[svc]: the command's own start times (ms); RS_RST[svc]: from `overlay restart` until the
# new process answers at the overlay address (ms); RS_PRINTED[svc]: "restarted in N ms" as
# printed. Each a space-separated list.
RS_LAST_OWN=
# Workers and drains (issue 19): RS_WK_OWN / RS_WK_RST / RS_WK_PRINTED as above for a worker
# (a process that listens nowhere), "until serving" being until the new worker printed its
# first line; RS_DRAIN: lines "HOLD_S MS DRAINED CLOSED" of restarts of "held" with one open
# connection that its client closes after HOLD_S s (30: never, the drain timeout closes it).
RS_WK_OWN='' RS_WK_RST='' RS_WK_PRINTED='' RS_WK_FIRST=''
RS_DRAIN=()
RS_DRAIN_S=2 # drain = "2s" for the service "held"
RS_DEV_PID=
RS_DEV=() # VAR=VALUE... for `overlay` run as the developer (through env)
RS_LEFT=

# The service: answers every GET with "pid N" (so a client can tell the new process from the old
# one after a restart), HTTP/1.1 with keep-alive, one write per answer.
RS_SERVER_PY='import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BODY = b"pid %d\n" % os.getpid()
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_GET(self):
        self.wfile.write(ANSWER)

    def log_message(self, *args):
        pass


ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
'

# The worker: prints one line and sleeps (listens nowhere); exits after the line with WORKER_ONCE.
RS_WORKER_PY='import os, sys, time
print("worker up", os.getpid(), flush=True)
if os.environ.get("WORKER_ONCE"):
    sys.exit(0)
while True:
    time.sleep(3600)
'

# The drain client: one kept-alive GET, then the connection stays open until the server closes
# it or HOLD seconds pass; writes READY_FILE once the answer is in.
RS_HOLD_PY='import socket, sys
host, port, hold, ready = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
s = socket.create_connection((host, port))
s.sendall(b"GET / HTTP/1.1\r\nHost: held\r\n\r\n")
s.recv(4096)
open(ready, "w").write("held\n")
s.settimeout(hold)
try:
    while s.recv(4096):
        pass
    print("closed by the server")
except socket.timeout:
    print("closed by the client after", hold, "s")
s.close()
'

# rs_ms T0: milliseconds since EPOCHREALTIME T0.
rs_ms() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", (b - a) * 1000 }'; }

# rs_worker_lines LOG: how many "worker up" lines the worker printed so far.
rs_worker_lines() { grep -c '^[0-9:.]* worker *| worker up' "$1" || true; }

# rs_worker R: the worker's own start (its command run directly until it printed its line) and
# `overlay restart worker` until the new worker printed its line. 1 on failure.
rs_worker() {
    local r=$1 devlog=$LOG_DIR/restart-dev.log t0 own n0 out total printed end
    t0=$EPOCHREALTIME
    if ! world_run timeout 20 ip netns exec ovb-a setpriv --reuid "$DEV_UID" --regid "$DEV_UID" \
        --clear-groups env -C "$OVL_DIR/svc" WORKER_ONCE=1 PORT=1 sh -c "${RS_CMD[worker]}" >/dev/null 2>>"$LOG_DIR/restart-probe.log"; then
        part_failed restart "worker run $r: its command did not run directly"
        return 1
    fi
    own=$(rs_ms "$t0")
    n0=$(rs_worker_lines "$devlog")
    t0=$EPOCHREALTIME
    if ! out=$(world_run timeout 30 ip netns exec ovb-a env "${RS_DEV[@]}" "$OVERLAY_BIN" restart worker 2>&1); then
        part_failed restart "worker run $r: overlay restart failed: $out"
        return 1
    fi
    end=$((SECONDS + 10))
    while (($(rs_worker_lines "$devlog") <= n0)); do
        if ((SECONDS > end)); then
            part_failed restart "worker run $r: the new worker printed nothing within 10 s"
            tail_log "$devlog"
            return 1
        fi
        sleep 0.002
    done
    total=$(rs_ms "$t0")
    printed=$(sed -n 's/.*restarted in \([0-9]*\) ms.*/\1/p' <<<"$out" | head -n 1)
    echo "$out" >>"$LOG_DIR/restart-cli.log"
    RS_WK_OWN+="$own " RS_WK_RST+="$total " RS_WK_PRINTED+="${printed:-} "
    log "  worker $r/$RESTARTS: own start $own ms; overlay restart until the new worker printed $total ms (printed \"restarted in ${printed:-?} ms\")"
}

# rs_drain HOLD_S: restart "held" while one connection is open that its client closes after
# HOLD_S s; records "HOLD_S MS DRAINED CLOSED" in RS_DRAIN. 1 on failure.
rs_drain() {
    local hold=$1 addr=${RS_ADDR[held]} ready=$OVL_DIR/held.ready t0 out ms drained closed
    rm -f "$ready"
    world_bg ovb-a "$LOG_DIR/restart-hold.log" python3 "$OVL_DIR/svc/hold.py" "${addr%:*}" "${addr##*:}" "$hold" "$ready"
    if ! world_wait 10 "the drain client to hold its connection" test -e "$ready"; then
        part_failed restart "drain: the client did not get an answer from held at $addr"
        tail_log "$LOG_DIR/restart-hold.log"
        return 1
    fi
    t0=$EPOCHREALTIME
    if ! out=$(world_run timeout 60 ip netns exec ovb-a env "${RS_DEV[@]}" "$OVERLAY_BIN" restart held 2>&1); then
        part_failed restart "drain: overlay restart held failed: $out"
        return 1
    fi
    ms=$(rs_ms "$t0")
    echo "$out" >>"$LOG_DIR/restart-cli.log"
    drained=$(sed -n 's/.*; \([0-9]*\) connections\{0,1\} drained, \([0-9]*\) closed.*/\1/p' <<<"$out")
    closed=$(sed -n 's/.*; \([0-9]*\) connections\{0,1\} drained, \([0-9]*\) closed.*/\2/p' <<<"$out")
    RS_DRAIN+=("$hold $ms ${drained:-n/a} ${closed:-n/a}")
    log "  drain: a connection its client closes after $hold s, drain = ${RS_DRAIN_S}s: overlay restart took $ms ms; ${drained:-?} drained, ${closed:-?} closed"
}

# rs_ready_line LOG SERVICE: "PORT ADDRESS" from the last "SERVICE | [overlay] ready in N ms:
# pid P, local port PORT, at ADDRESS (...)" line of overlay dev's output.
rs_ready_line() {
    sed -n "s/^[0-9:.]* $2 *| .*ready in [0-9]* ms: pid [0-9]*, local port \\([0-9]*\\), at \\([0-9.]*:[0-9]*\\).*/\\1 \\2/p" "$1" |
        tail -n 1
}

# rs_own_start SERVICE R: start SERVICE's command directly (same user, same `sh -c`, a port of
# its own) and time it until it answers a GET. Appends to RS_OWN; 1 on failure.
rs_own_start() {
    local svc=$1 r=$2 port=$((19000 + $2)) res=$OVL_DIR/own reached _c rc _p _d
    : >"$res"
    world_run timeout 40 ip netns exec ovb-a python3 "$PROBE" http 127.0.0.1 "$port" --stop-cmd \
        --timeout 20 --result "$res" -- setpriv --reuid "$DEV_UID" --regid "$DEV_UID" --clear-groups \
        env -C "$OVL_DIR/svc" PORT="$port" sh -c "${RS_CMD[$svc]}" 2>>"$LOG_DIR/restart-probe.log" || true
    read -r reached _c rc _p _d <"$res" || true
    if [[ -z ${reached:-} || $reached == -1 ]]; then
        part_failed restart "$svc run $r: the command started directly did not answer within 20 s (status ${rc:-?})"
        tail_log "$LOG_DIR/restart-probe.log"
        return 1
    fi
    RS_OWN[$svc]+="$reached "
    RS_LAST_OWN=$reached
}

# rs_restart SERVICE R: `overlay restart SERVICE` as the developer, timed until a GET at the
# overlay address answers from the new process. Appends to RS_RST and RS_PRINTED; 1 on failure.
rs_restart() {
    local svc=$1 r=$2 addr=${RS_ADDR[$1]} res=$OVL_DIR/restart out=$OVL_DIR/restart.out
    local old reached cmd rc probes detail printed
    old=$(world_run timeout 10 ip netns exec ovb-a curl -s --max-time 5 "http://$addr/") || old=
    if [[ $old != pid* ]]; then
        part_failed restart "$svc run $r: the service did not answer at $addr before the restart"
        return 1
    fi
    : >"$res"
    : >"$out"
    world_run timeout 60 ip netns exec ovb-a python3 "$PROBE" http "${addr%:*}" "${addr##*:}" \
        --not-body "$old" --timeout 30 --result "$res" --cmd-out "$out" -- \
        env "${RS_DEV[@]}" "$OVERLAY_BIN" restart "$svc" 2>>"$LOG_DIR/restart-cli.log" || true
    cat "$out" >>"$LOG_DIR/restart-cli.log"
    read -r reached cmd rc probes detail <"$res" || true
    if [[ ${rc:-x} != 0 ]]; then
        part_failed restart "$svc run $r: overlay restart failed (status ${rc:-unknown})"
        tail_log "$LOG_DIR/restart-cli.log"
        return 1
    fi
    if [[ $reached == -1 ]]; then
        part_failed restart "$svc run $r: no answer from a new process at $addr within 30 s"
        tail_log "$LOG_DIR/restart-dev.log"
        return 1
    fi
    printed=$(sed -n 's/.*restarted in \([0-9]*\) ms.*/\1/p' "$out" | head -n 1)
    RS_RST[$svc]+="$reached "
    RS_PRINTED[$svc]+="${printed:-} "
    log "  $svc $r/$RESTARTS: own start $RS_LAST_OWN ms; overlay restart until the new process answers $reached ms (printed \"restarted in ${printed:-?} ms\", command done after $cmd ms; $old -> ${detail//_/ }; $probes GETs)"
}

# rs_dev_left: pids of the developer's processes still in ovb-a.
rs_dev_left() {
    local p
    for p in $(ip netns pids ovb-a 2>/dev/null); do
        [[ $(stat -c %u "/proc/$p" 2>/dev/null) == "$DEV_UID" ]] && printf '%s ' "$p"
    done
    return 0
}
rs_no_dev_left() { [[ -z $(rs_dev_left) ]]; }
rs_dev_gone() { ! world_alive "$RS_DEV_PID"; }
# rs_dev_ready LOG: overlay dev said every service is ready, or overlay dev is gone.
rs_dev_ready() {
    local svc
    rs_dev_gone && return 0
    for svc in "${RS_SERVICES[@]}" held; do
        [[ -n $(rs_ready_line "$1" "$svc") ]] || return 1
    done
    grep -q '^[0-9:.]* worker *| \[overlay\] ready in' "$1"
}

# restart_measure: the body of part restart; 1 when something failed to run.
restart_measure() {
    local d=$OVL_DIR svc port addr r
    ensure_binaries || { RS_STATUS="n/a (binaries missing)"; return 0; }
    [[ -x $DEV_PYTHON ]] || { part_failed restart "$DEV_PYTHON is missing (the service runs as uid $DEV_UID)"; return 1; }
    ovl_relay_start restart || { part_failed restart "the relay did not start"; return 1; }
    ovl_token 1 || { part_failed restart "overlay-relay token create failed"; return 1; }
    # Joined "through sudo" by the developer: the daemon lets that user register services.
    SUDO_UID=$DEV_UID SUDO_GID=$DEV_UID ovl_join a || { part_failed restart "overlay join failed"; return 1; }

    # Like /run: the daemon's socket and the developer's session sockets side by side. The
    # developer's own state directory (logs), and the service's files.
    chmod 1777 "$d/a/run"
    mkdir -p "$d/dev" "$d/svc"
    chown "$DEV_UID:$DEV_UID" "$d/dev"
    printf '%s' "$RS_SERVER_PY" >"$d/svc/server.py"
    RS_CMD[echo]="exec $DEV_PYTHON $d/svc/server.py"
    RS_CMD[echo-sh]="$DEV_PYTHON $d/svc/server.py"
    printf '%s' "$RS_WORKER_PY" >"$d/svc/worker.py"
    printf '%s' "$RS_HOLD_PY" >"$d/svc/hold.py"
    RS_CMD[worker]="exec $DEV_PYTHON $d/svc/worker.py"
    RS_CMD[held]="exec $DEV_PYTHON $d/svc/server.py"
    {
        for svc in "${RS_SERVICES[@]}"; do
            printf '[services.%s]\ncommand = "%s"\nport = 8080\nhealth = { http = "/" }\n\n' "$svc" "${RS_CMD[$svc]}"
        done
        # No health setting: overlay dev tells it is a worker from its sockets.
        printf '[services.worker]\ncommand = "%s"\n\n' "${RS_CMD[worker]}"
        printf '[services.held]\ncommand = "%s"\nport = 8080\nhealth = { http = "/" }\ndrain = "%ss"\n' "${RS_CMD[held]}" "$RS_DRAIN_S"
    } >"$d/svc/overlay.toml"
    chmod -R a+rX "$d/svc"
    cp "$d/svc/overlay.toml" "$LOG_DIR/restart-overlay.toml.txt"
    RS_DEV=(RUST_LOG="${OVB_RUST_LOG:-warn}" NO_COLOR=1 OVERLAY_STATE_DIR="$d/dev"
        OVERLAY_RUN_DIR="$d/a/run" SUDO_UID="$DEV_UID" SUDO_GID="$DEV_UID")
    local devlog=$LOG_DIR/restart-dev.log
    world_bg ovb-a "$devlog" env -C "$d/svc" "${RS_DEV[@]}" "$OVERLAY_BIN" dev -f "$d/svc/overlay.toml"
    RS_DEV_PID=$WORLD_LAST_PID
    if ! world_wait 30 "overlay dev to start the services" rs_dev_ready "$devlog" || rs_dev_gone; then
        part_failed restart "overlay dev did not bring the services up"
        tail_log "$devlog"
        return 1
    fi
    for svc in "${RS_SERVICES[@]}"; do
        read -r port addr <<<"$(rs_ready_line "$devlog" "$svc")"
        RS_ADDR[$svc]=$addr
        log "  overlay dev (uid $DEV_UID): $svc at $addr, local port $port"
        if ! world_wait 10 "$svc to answer at $addr" ip netns exec ovb-a curl -sf --max-time 2 -o /dev/null "http://$addr/"; then
            part_failed restart "$svc does not answer at its overlay address $addr"
            tail_log "$devlog"
            return 1
        fi
    done

    local res=$OVL_DIR/latency
    read -r port addr <<<"$(rs_ready_line "$devlog" echo)"
    : >"$res"
    log "  latency: $REQUESTS GETs each to 127.0.0.1:$port and $addr, on new connections, then on kept-alive ones"
    if ! world_run timeout $((REQUESTS / 5 + 120)) ip netns exec ovb-a python3 "$PROBE" latency \
        --direct "127.0.0.1:$port" --via "$addr" -n "$REQUESTS" --result "$res" \
        --raw "$LOG_DIR/restart-latency" 2>>"$LOG_DIR/restart-probe.log"; then
        part_failed restart "the latency probe failed"
        tail_log "$LOG_DIR/restart-probe.log"
        return 1
    fi
    mapfile -t RS_LAT <"$res"

    # Own starts and restarts alternate, so that background load hits both alike.
    for ((r = 1; r <= RESTARTS; r++)); do
        for svc in "${RS_SERVICES[@]}"; do
            rs_own_start "$svc" "$r" || return 1
            rs_restart "$svc" "$r" || return 1
            world_run sleep 0.2
        done
        rs_worker "$r" || return 1
    done
    RS_WK_FIRST=$(sed -n 's/^[0-9:.]* worker *| \[overlay\] ready in \([0-9]*\) ms: pid [0-9]*, a worker.*/\1/p' "$devlog" | head -n 1)
    read -r port addr <<<"$(rs_ready_line "$devlog" held)"
    RS_ADDR[held]=$addr
    if [[ -z $addr ]]; then
        part_failed restart "the service held did not start"
        tail_log "$devlog"
        return 1
    fi
    rs_drain 0.5 || return 1
    rs_drain 30 || return 1
    return 0
}

# rs_stop_dev: stop overlay dev with SIGINT, as Ctrl-C does, and check that none of the
# developer's processes is left in the namespace.
rs_stop_dev() {
    [[ -n $RS_DEV_PID ]] || return 0
    kill -INT "$RS_DEV_PID" 2>/dev/null || true
    world_wait 15 "overlay dev to stop after SIGINT" rs_dev_gone || true
    world_stop "$RS_DEV_PID"
    if ! world_wait 5 "the services of overlay dev to end" rs_no_dev_left; then
        RS_LEFT=$(rs_dev_left)
        echo "bench.sh: restart: processes of uid $DEV_UID left after overlay dev stopped: $RS_LEFT" >&2
    fi
    RS_DEV_PID=
}

# rs_lat ROUND ADDRESS FIELD: a figure of the latency probe's output (n, median, p99, mean).
rs_lat() {
    local l rnd who n med p99 mean
    for l in "${RS_LAT[@]}"; do
        read -r rnd who n med p99 mean <<<"$l"
        [[ $rnd == "$1" && $who == "$2" ]] || continue
        case $3 in
        n) printf '%s' "$n" ;;
        median) printf '%s' "$med" ;;
        p99) printf '%s' "$p99" ;;
        mean) printf '%s' "$mean" ;;
        esac
        return 0
    done
}

# rs_stats LIST: "n median p90 p99 min max" of the space-separated numbers in LIST.
rs_stats() {
    local f=$OVL_DIR/vals
    tr -s ' ' '\n' <<<"$1" >"$f"
    stats "$f"
}

restart_report() {
    local when host status=${RS_STATUS:-ok} rnd svc _x
    when=$(now_utc)
    host=$(host_desc)
    local -A dm dp vm vp am ap o_med r_med r_min r_max p_med over
    for rnd in fresh keepalive; do
        dm[$rnd]=$(rs_lat "$rnd" direct median)
        dp[$rnd]=$(rs_lat "$rnd" direct p99)
        vm[$rnd]=$(rs_lat "$rnd" via median)
        vp[$rnd]=$(rs_lat "$rnd" via p99)
        am[$rnd]=$(fmt_diff "${vm[$rnd]}" "${dm[$rnd]}")
        ap[$rnd]=$(fmt_diff "${vp[$rnd]}" "${dp[$rnd]}")
    done
    local a b c d e
    for svc in "${RS_SERVICES[@]}"; do
        read -r _x a _x _x _x _x <<<"$(rs_stats "${RS_OWN[$svc]:-}")"
        o_med[$svc]=${a:-}
        read -r _x b _x _x c d <<<"$(rs_stats "${RS_RST[$svc]:-}")"
        r_med[$svc]=${b:-} r_min[$svc]=${c:-} r_max[$svc]=${d:-}
        read -r _x e _x _x _x _x <<<"$(rs_stats "${RS_PRINTED[$svc]:-}")"
        p_med[$svc]=${e:-}
        over[$svc]=$(awk -v a="${b:-}" -v b="${a:-}" 'BEGIN { if (a == "" || b == "") print "n/a"; else printf "%.1f\n", a - b }')
        a='' b='' c='' d='' e=''
    done
    local t_fresh="a new connection per request" t_keep="one kept-alive connection"
    local -A title=([echo]="exec python3 server.py" [echo-sh]="python3 server.py (sh stays its parent)")
    echo
    echo "restart: $host ($status)"
    echo "overlay dev (as uid $DEV_UID) runs a python3 http.server answering \"pid N\"; the client runs on the same node"
    if ((${#RS_LAT[@]})); then
        echo
        echo "per-request latency in µs (service echo), $REQUESTS GETs to each address, alternating, after 50 not counted:"
        printf '%-30s %12s %11s %12s %12s %10s %10s\n' "" "direct med" "direct p99" "overlay med" "overlay p99" "added med" "added p99"
        for rnd in fresh keepalive; do
            local t=$t_fresh
            [[ $rnd == keepalive ]] && t=$t_keep
            printf '%-30s %12s %11s %12s %12s %10s %10s\n' "$t" "${dm[$rnd]}" "${dp[$rnd]}" "${vm[$rnd]}" "${vp[$rnd]}" "${am[$rnd]}" "${ap[$rnd]}"
        done
    fi
    echo
    echo "restarts ($RESTARTS per service), ms:"
    printf '%-42s %10s %14s %10s %14s %10s\n' "command" "own start" "restart until" "overhead" "restart" "printed"
    printf '%-42s %10s %14s %10s %14s %10s\n' "" "median" "serving, med" "" "min-max" "median"
    for svc in "${RS_SERVICES[@]}"; do
        printf '%-42s %10s %14s %10s %14s %10s\n' "${title[$svc]}" "${o_med[$svc]:-n/a}" "${r_med[$svc]:-n/a}" \
            "${over[$svc]}" "${r_min[$svc]:-?}-${r_max[$svc]:-?}" "${p_med[$svc]:-n/a}"
    done
    local wo wr wp wover wmin wmax
    read -r _x wo _x _x _x _x <<<"$(rs_stats "$RS_WK_OWN")"
    read -r _x wr _x _x wmin wmax <<<"$(rs_stats "$RS_WK_RST")"
    read -r _x wp _x _x _x _x <<<"$(rs_stats "$RS_WK_PRINTED")"
    wover=$(awk -v a="${wr:-}" -v b="${wo:-}" 'BEGIN { if (a == "" || b == "") print "n/a"; else printf "%.1f\n", a - b }')
    printf '%-42s %10s %14s %10s %14s %10s\n' "worker: exec python3 worker.py (no port)" "${wo:-n/a}" "${wr:-n/a}" \
        "$wover" "${wmin:-?}-${wmax:-?}" "${wp:-n/a}"
    echo "  (worker: \"until serving\" = until the new worker printed its first line; first start told as a worker after ${RS_WK_FIRST:-n/a} ms)"
    echo
    echo "drain (service held, drain = \"${RS_DRAIN_S}s\"; one open kept-alive connection during overlay restart):"
    printf '%-52s %12s %12s %10s %8s\n' "the client closes its connection" "restart (ms)" "expected" "ratio" "printed"
    local l hold ms dr cl expect
    for l in "${RS_DRAIN[@]}"; do
        read -r hold ms dr cl <<<"$l"
        expect=$(awk -v h="$hold" -v d="$RS_DRAIN_S" 'BEGIN { printf "%.0f", (h < d ? h : d) * 1000 }')
        printf '%-52s %12s %12s %10s %8s\n' "$( [[ $hold == 30 ]] && echo "never (the drain timeout closes it)" || echo "after $hold s")" \
            "$ms" "$expect" "$(awk -v a="$ms" -v b="$expect" 'BEGIN { printf "%.2f", a / b }')" "$dr/$cl"
    done
    [[ -n $RS_LEFT ]] && echo "processes of uid $DEV_UID left after overlay dev stopped: $RS_LEFT"
    echo "targets: added latency under 100 µs (median); restart overhead under 50 ms; a worker known within about 1 s; a drain ends when the last old connection closes (ratio near 1)"
    echo
    echo "markdown (for docs/benchmarks.md):"
    echo
    echo "Measured $when on $host; $REQUESTS requests per address and connection mode, $RESTARTS restarts per service."
    echo
    echo "| per-request latency (µs) | direct median | direct p99 | overlay address median | overlay address p99 | added median | added p99 |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    if ((${#RS_LAT[@]})); then
        echo "| $t_fresh | ${dm[fresh]} | ${dp[fresh]} | ${vm[fresh]} | ${vp[fresh]} | ${am[fresh]} | ${ap[fresh]} |"
        echo "| $t_keep | ${dm[keepalive]} | ${dp[keepalive]} | ${vm[keepalive]} | ${vp[keepalive]} | ${am[keepalive]} | ${ap[keepalive]} |"
    else
        echo "| latency | $status | | | | | |"
    fi
    echo
    echo "| \`command\` | own start, median (ms) | \`overlay restart\` until the new process answers, median (ms) | **overhead** (ms) | restart min–max (ms) | printed \"restarted in\", median (ms) |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: |"
    for svc in "${RS_SERVICES[@]}"; do
        echo "| \`${title[$svc]% (*}\`${title[$svc]#"${title[$svc]% (*}"} | ${o_med[$svc]:-n/a} | ${r_med[$svc]:-n/a} | ${over[$svc]} | ${r_min[$svc]:-?}–${r_max[$svc]:-?} | ${p_med[$svc]:-n/a} |"
    done
    echo "| \`exec python3 worker.py\` (a worker: no port; until it printed its first line) | ${wo:-n/a} | ${wr:-n/a} | $wover | ${wmin:-?}–${wmax:-?} | ${wp:-n/a} |"
    echo
    echo "A worker's first start: told as a worker after ${RS_WK_FIRST:-n/a} ms."
    echo
    echo "| drain (\`drain = \"${RS_DRAIN_S}s\"\`, one open connection) | \`overlay restart\` (ms) | expected (ms) | ratio | drained / closed |"
    echo "| --- | ---: | ---: | ---: | ---: |"
    for l in "${RS_DRAIN[@]}"; do
        read -r hold ms dr cl <<<"$l"
        expect=$(awk -v h="$hold" -v d="$RS_DRAIN_S" 'BEGIN { printf "%.0f", (h < d ? h : d) * 1000 }')
        echo "| $( [[ $hold == 30 ]] && echo "the client never closes it" || echo "the client closes it after $hold s") | $ms | $expect | $(awk -v a="$ms" -v b="$expect" 'BEGIN { printf "%.2f", a / b }') | $dr / $cl |"
    done
    local json=$OUT_DIR/restart.json first=1
    {
        printf '{\n  "part": "restart",\n  "time": "%s",\n  "host": %s,\n  "status": %s,\n' "$when" "$(json_str "$host")" "$(json_str "$status")"
        printf '  "params": {"requests": %s, "warmup": 50, "restarts": %s, "dev_uid": %s},\n' "$REQUESTS" "$RESTARTS" "$DEV_UID"
        printf '  "latency_us": {\n'
        for rnd in fresh keepalive; do
            printf '    "%s": {"direct": {"median": %s, "p99": %s}, "overlay": {"median": %s, "p99": %s}, "added": {"median": %s, "p99": %s}}' \
                "$rnd" "$(json_num "${dm[$rnd]}")" "$(json_num "${dp[$rnd]}")" "$(json_num "${vm[$rnd]}")" \
                "$(json_num "${vp[$rnd]}")" "$(json_num "${am[$rnd]}")" "$(json_num "${ap[$rnd]}")"
            [[ $rnd == fresh ]] && printf ','
            printf '\n'
        done
        printf '  },\n  "restarts": [\n'
        for svc in "${RS_SERVICES[@]}"; do
            ((first)) || printf ',\n'
            first=0
            printf '    {"service": "%s", "command": %s, "own_start_ms": {"median": %s, "runs": [%s]}, "restart_until_serving_ms": {"median": %s, "runs": [%s]}, "printed_ms": {"median": %s, "runs": [%s]}, "overhead_ms": %s}' \
                "$svc" "$(json_str "${RS_CMD[$svc]:-}")" "$(json_num "${o_med[$svc]:-}")" "$(tr -s ' ' , <<<"${RS_OWN[$svc]:-}" | sed 's/,$//')" \
                "$(json_num "${r_med[$svc]:-}")" "$(tr -s ' ' , <<<"${RS_RST[$svc]:-}" | sed 's/,$//')" \
                "$(json_num "${p_med[$svc]:-}")" "$(tr -s ' ' , <<<"${RS_PRINTED[$svc]:-}" | sed 's/,$//')" "$(json_num "${over[$svc]}")"
        done
        printf '\n  ],\n  "worker": {"first_start_told_ms": %s, "own_start_ms": {"median": %s, "runs": [%s]}, "restart_until_running_ms": {"median": %s, "runs": [%s]}, "printed_ms": {"median": %s}, "overhead_ms": %s},\n' \
            "$(json_num "${RS_WK_FIRST:-}")" "$(json_num "${wo:-}")" "$(tr -s ' ' , <<<"$RS_WK_OWN" | sed 's/,$//')" \
            "$(json_num "${wr:-}")" "$(tr -s ' ' , <<<"$RS_WK_RST" | sed 's/,$//')" "$(json_num "${wp:-}")" "$(json_num "$wover")"
        printf '  "drain": {"drain_secs": %s, "runs": [' "$RS_DRAIN_S"
        first=1
        for l in "${RS_DRAIN[@]}"; do
            read -r hold ms dr cl <<<"$l"
            ((first)) || printf ', '
            first=0
            printf '{"client_closes_after_s": %s, "restart_ms": %s, "drained": %s, "closed": %s}' "$hold" "$(json_num "$ms")" "$(json_num "$dr")" "$(json_num "$cl")"
        done
        printf ']},\n'
        printf '  "leftover_dev_processes": %s,\n' "$(json_str "$RS_LEFT")"
        printf '  "targets": {"added_latency_median_us": 100, "restart_overhead_ms": 50}\n}\n'
    } >"$json"
    echo
    echo "results: ${json#"$ROOT"/}"
}

part_restart() {
    log "part restart: overlay dev's listener latency ($REQUESTS requests each way) and restart overhead ($RESTARTS restarts per service)"
    RS_STATUS=ok
    RS_LAT=() RS_OWN=() RS_RST=() RS_PRINTED=() RS_ADDR=() RS_DEV_PID='' RS_LEFT=''
    # The developer (uid DEV_UID) must reach the node's run directory and the service's files,
    # which the private $WORK (0700) would hide: this part's files live in their own directory.
    PUB_DIR=$(mktemp -d "${TMPDIR:-/tmp}/ovb-restart.XXXXXX")
    chmod 711 "$PUB_DIR"
    ovl_begin restart "$PUB_DIR"
    ovl_host a 2
    restart_measure || RS_STATUS=failed
    rs_stop_dev
    ovl_down_all
    restart_report
    world_cleanup
    rm -rf "$PUB_DIR"
    PUB_DIR=
}

# ---------------------------------------------------------------------------------------------
# part: scale

SC_STATUS=
SC_JSON=
SC_IDLE_RSS=
SC_WALL_S=

# ensure_loadgen: 0 when overlay-loadgen is there (building it when missing and allowed).
ensure_loadgen() {
    [[ -x $LOADGEN_BIN ]] && return 0
    ((NO_BUILD)) && return 1
    cargo_build "$LOG_DIR/build-loadgen.log" overlay-loadgen -p overlay-tests --bin overlay-loadgen
    [[ -x $LOADGEN_BIN ]] && return 0
    tail_log "$LOG_DIR/build-loadgen.log"
    return 1
}

# sc_field NAME: a field of the loadgen's JSON line (null as nothing).
sc_field() {
    python3 -c 'import json, sys
v = json.loads(sys.argv[1]).get(sys.argv[2])
print("" if v is None else (round(v, 2) if isinstance(v, float) else v))' "$SC_JSON" "$1"
}

scale_measure() {
    local out=$OVL_DIR/loadgen.out err=$LOG_DIR/scale-loadgen.log t0 rc=0
    if ! ensure_binaries || ! ensure_loadgen; then
        SC_STATUS="n/a (binaries missing)"
        return 0
    fi
    ovl_relay_start scale || { part_failed scale "the relay did not start"; return 1; }
    world_run sleep 1
    SC_IDLE_RSS=$(rss_kb "$OVL_RELAY_PID")
    log "  relay pid $OVL_RELAY_PID, RSS ${SC_IDLE_RSS:-?} kB idle; registering $PEERS peers through its admin socket (about a minute per 1000), then handshakes and $STEADY s of steady state"
    t0=$EPOCHREALTIME
    world_run timeout $((PEERS / 5 + 600 + STEADY)) ip netns exec ovb-a "$LOADGEN_BIN" \
        --state "$OVL_DIR/relay" --relay "$HUB_UL:$RELAY_PORT" --relay-pid "$OVL_RELAY_PID" \
        --peers "$PEERS" --steady "$STEADY" >"$out" 2>"$err" || rc=$?
    SC_WALL_S=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
    cat "$out" >>"$err"
    if ((rc != 0)); then
        part_failed scale "overlay-loadgen failed (status $rc)"
        tail_log "$err"
        return 1
    fi
    SC_JSON=$(grep '^{' "$out" | tail -n 1)
    if [[ -z $SC_JSON ]]; then
        part_failed scale "overlay-loadgen printed no result"
        tail_log "$err"
        return 1
    fi
    if ! world_alive "$OVL_RELAY_PID"; then
        part_failed scale "the relay exited during the run"
        tail_log "$LOG_DIR/scale-relay.log"
        return 1
    fi
    return 0
}

scale_report() {
    local when host status=${SC_STATUS:-ok} peers='' hs='' secs='' rss='' cpu='' reg='' idle_mb
    when=$(now_utc)
    host=$(host_desc)
    if [[ -n $SC_JSON ]]; then
        peers=$(sc_field peers)
        hs=$(sc_field handshaken)
        secs=$(sc_field all_handshaken_secs)
        rss=$(sc_field relay_rss_mb)
        cpu=$(sc_field relay_cpu_percent_steady)
        # The loadgen registers, then handshakes, then holds the steady state: the rest of its
        # run time is registering (about).
        reg=$(awk -v w="$SC_WALL_S" -v h="${secs:-30}" -v s="$STEADY" 'BEGIN { printf "%.0f", w - h - s }')
        [[ -n $secs ]] || status="not every peer had a session within 30 s"
    fi
    idle_mb=$(awk -v k="${SC_IDLE_RSS:-}" 'BEGIN { if (k == "") print "n/a"; else printf "%.1f", k / 1024 }')
    echo
    echo "scale: $host ($status)"
    echo "overlay-loadgen in ovb-a: $PEERS peers registered through the relay's admin socket, handshakes 1 ms apart, keepalive 25 s, a ping every 5 s per peer"
    echo
    printf '  %-54s %12s %8s\n' "" value target
    printf '  %-54s %12s %8s\n' "peers with a session" "${hs:-n/a}/${peers:-$PEERS}" all
    printf '  %-54s %12s %8s\n' "all peers handshaken, from the first handshake (s)" "${secs:-n/a}" "< 5"
    printf '  %-54s %12s %8s\n' "relay RSS with the peers (MB)" "${rss:-n/a}" "< 100"
    printf '  %-54s %12s %8s\n' "relay CPU at steady keepalive (% of one core)" "${cpu:-n/a}" "< 5"
    printf '  %-54s %12s %8s\n' "relay RSS idle, before the peers (MB)" "$idle_mb" ""
    printf '  %-54s %12s %8s\n' "registering the peers, about (s)" "${reg:-n/a}" ""
    echo
    echo "markdown (for docs/benchmarks.md):"
    echo
    echo "Measured $when on $host; $PEERS simulated peers, $STEADY s steady state."
    echo
    echo "| figure | value | target |"
    echo "| --- | ---: | ---: |"
    if [[ -n $SC_JSON ]]; then
        echo "| peers with a session | ${hs:-n/a} / ${peers:-$PEERS} | all |"
        echo "| all peers handshaken, from the first handshake (s) | ${secs:-n/a} | < 5 |"
        echo "| relay RSS with $PEERS peers (MB) | ${rss:-n/a} | < 100 |"
        echo "| relay CPU at steady keepalive over $STEADY s (% of one core) | ${cpu:-n/a} | < 5 |"
        echo "| relay RSS idle, before the peers (MB) | $idle_mb | |"
        echo "| registering the peers through the admin socket, about (s) | ${reg:-n/a} | |"
    else
        echo "| scale | $status | |"
    fi
    printf '{"part": "scale", "time": "%s", "host": %s, "status": %s, "params": {"peers": %s, "steady_secs": %s}, "loadgen": %s, "relay_idle_rss_kb": %s, "loadgen_wall_secs": %s, "register_secs_about": %s, "targets": {"all_handshaken_secs": 5, "relay_rss_mb": 100, "relay_cpu_percent_steady": 5}}\n' \
        "$when" "$(json_str "$host")" "$(json_str "$status")" "$PEERS" "$STEADY" "${SC_JSON:-null}" \
        "$(json_num "${SC_IDLE_RSS:-}")" "$(json_num "${SC_WALL_S:-}")" "$(json_num "${reg:-}")" >"$OUT_DIR/scale.json"
    echo
    echo "results: ${OUT_DIR#"$ROOT"/}/scale.json"
}

part_scale() {
    log "part scale: $PEERS simulated peers (overlay-loadgen) against one relay, $STEADY s of steady state"
    SC_STATUS=ok SC_JSON='' SC_IDLE_RSS='' SC_WALL_S=''
    ovl_begin scale
    ovl_host a 2
    scale_measure || SC_STATUS=failed
    scale_report
    world_cleanup
}

# ---------------------------------------------------------------------------------------------
# flood: anonymous join datagrams against the relay (issue 15)

FLOOD_BIN=${OVERLAY_FLOOD_BIN:-$ROOT/target/release/overlay-flood}
FLOOD_RATES=(0 10000 50000 100000)

flood_ticks() { awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat" 2>/dev/null; }
flood_gone() { ! world_alive "$1"; }
flood_ping_ok() { ip netns exec ovb-a ping -n -q -c 1 -W 1 100.64.0.1 >/dev/null 2>&1; }

# flood_step RATE OCTET: one row of FL_ROWS: ping loss and RTT from ovb-a while ovb-f floods at
# RATE, the time a fresh node (ovb-cOCTET) needs to join, relay CPU, RSS and log growth.
flood_step() {
    local rate=$1 n=c$2 fpid='' t0 c0 c1 l0 l1 out loss rtt join_s cpu rss logkb
    if ((rate > 0)); then
        world_bg ovb-f "$LOG_DIR/flood-gen-$rate.log" "$FLOOD_BIN" anon --relay "$HUB_UL:$RELAY_PORT" \
            --rate "$rate" --secs 16
        fpid=$WORLD_LAST_PID
        sleep 1
    fi
    c0=$(flood_ticks "$OVL_RELAY_PID")
    l0=$(stat -c %s "$LOG_DIR/flood-relay.log")
    t0=$EPOCHREALTIME
    out=$(world_run timeout 30 ip netns exec ovb-a ping -q -n -c 200 -i 0.05 -W 1 100.64.0.1 2>&1) || true
    loss=$(awk -F', ' '/packet loss/ { for (i = 1; i <= NF; i++) if ($i ~ /packet loss/) { sub(/%.*/, "", $i); print $i } }' <<<"$out")
    rtt=$(awk -F'/' '/min\/avg\/max/ { print $5 }' <<<"$out")
    local j0=$EPOCHREALTIME
    if ovl_join "$n"; then
        join_s=$(awk -v a="$j0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')
    else
        join_s=failed
    fi
    c1=$(flood_ticks "$OVL_RELAY_PID")
    l1=$(stat -c %s "$LOG_DIR/flood-relay.log")
    cpu=$(awk -v a="$c0" -v b="$c1" -v t0="$t0" -v t1="$EPOCHREALTIME" 'BEGIN { printf "%.0f", (b - a) / (t1 - t0) }')
    rss=$(awk -v k="$(rss_kb "$OVL_RELAY_PID")" 'BEGIN { printf "%.1f", k / 1024 }')
    logkb=$(awk -v a="$l0" -v b="$l1" -v t0="$t0" -v t1="$EPOCHREALTIME" 'BEGIN { printf "%.2f", (b - a) / 1024 / (t1 - t0) * 60 }')
    [[ -z $fpid ]] || world_wait 30 "the flood to end" flood_gone "$fpid" || true
    FL_ROWS+=("$rate ${loss:-n/a} ${rtt:-n/a} $join_s $cpu $rss $logkb")
}

part_flood() {
    log "part flood: anonymous join datagrams at ${FLOOD_RATES[*]} per second from one host"
    FL_ROWS=()
    local status=ok when host row
    if [[ ! -x $FLOOD_BIN ]] && { ((NO_BUILD)) || ! cargo_build "$LOG_DIR/build-flood.log" overlay-flood -p overlay-tests --bin overlay-flood; }; then
        part_failed flood "overlay-flood is not built"
        return
    fi
    ovl_begin flood
    ovl_host a 2
    ovl_host f 3
    if ensure_binaries && ovl_relay_start flood && ovl_token 20 && ovl_join a; then
        # Every host first: a new bridge port can change the bridge's MAC address, and the
        # pinging node then loses packets until its ARP entry is renewed.
        local o
        for o in 10 11 12 13; do ovl_host "c$o" "$o"; done
        # Measure from a node whose tunnel carries pings already.
        world_wait 30 "a first ping from the node to the relay" flood_ping_ok || true
        local octet=10
        for rate in "${FLOOD_RATES[@]}"; do
            flood_step "$rate" "$octet"
            octet=$((octet + 1))
        done
    else
        status=failed
        part_failed flood "the relay or the first node did not start"
    fi
    when=$(now_utc)
    host=$(host_desc)
    echo
    echo "flood: $host ($status)"
    echo
    echo "markdown (for docs/benchmarks.md):"
    echo
    echo "Measured $when on $host; 200 pings at 50 ms from a node to the relay's overlay address during each flood."
    echo
    echo "| anonymous joins/s | ping loss (%) | ping RTT avg (ms) | a valid join (s) | relay CPU (% of one core) | relay RSS (MB) | relay log (KB/min) |"
    echo "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    local json=''
    for row in "${FL_ROWS[@]}"; do
        read -r r lo rt js cp rs lg <<<"$row"
        echo "| $( ((r == 0)) && echo idle || echo "$r") | $lo | $rt | $js | $cp | $rs | $lg |"
        json+="${json:+, }{\"rate\": $r, \"ping_loss_percent\": $(json_num "$lo"), \"ping_rtt_avg_ms\": $(json_num "$rt"), \"join_secs\": $(json_num "${js/failed/}"), \"relay_cpu_percent\": $(json_num "$cp"), \"relay_rss_mb\": $(json_num "$rs"), \"relay_log_kb_per_min\": $(json_num "$lg")}"
    done
    printf '{"part": "flood", "time": "%s", "host": %s, "status": %s, "rows": [%s], "targets": {"ping_loss_percent_at_100k": 5, "join_secs": 10, "relay_log_kb_per_min": 10}}\n' \
        "$when" "$(json_str "$host")" "$(json_str "$status")" "$json" >"$OUT_DIR/flood.json"
    echo
    echo "results: ${OUT_DIR#"$ROOT"/}/flood.json"
    world_cleanup
}

# ---------------------------------------------------------------------------------------------
# part: tcp (issue 20: the overlay over a WebSocket stream where UDP cannot pass)

TCP_PORT=8300

part_tcp() {
    log "part tcp: ${TIME} s x $DP_RUNS iperf3 runs per setup, UDP and the stream in the same run"
    dataplane_world
    local url="http://$HUB_UL:$TCP_PORT/overlay" relay_flags="--tcp-listen $HUB_UL:$TCP_PORT"
    setup_overlay tcp_udp "overlay over UDP (baseline)" "--transport udp" 0 "$relay_flags"
    setup_overlay tcp_tcp "overlay over the stream (--transport tcp)" \
        "--transport tcp --relay-url $url" 0 "$relay_flags"
    # auto with UDP to the relay dropped in ovb-a: the node gives up on UDP after ~3 s and logs
    # how long the first datagram over the stream took after that.
    SETUP_PRE_NODES="ip netns exec ovb-a nft -f - <<<'table inet ovbtcp { chain out { type filter hook output priority 0; ip daddr $HUB_UL udp dport $RELAY_PORT drop; }; }'" \
        OVB_RUST_LOG=info setup_overlay tcp_fallback "auto, UDP dropped in ovb-a (ping only)" \
        "--transport auto --relay-url $url" 1 "$relay_flags"
    local fallback_ms
    fallback_ms=$(sed 's/\x1b\[[0-9;]*m//g' "$LOG_DIR/node-tcp_fallback-a.log" 2>/dev/null |
        grep 'first datagram over the stream' | grep -o 'us=[0-9]*' | head -1 |
        awk -F= '{ printf "%.2f\n", $2 / 1000 }')
    local when host ratio
    when=$(now_utc)
    host=$(host_desc)
    ratio=$(fmt_ratio "${S_TPUT[tcp_tcp]:-}" "${S_TPUT[tcp_udp]:-}")
    echo
    echo "tcp: $host"
    echo "iperf3 TCP, 1 stream, ${TIME} s per run (after 1 s warm-up), median of $DP_RUNS run(s)"
    echo
    local id
    for id in tcp_udp tcp_tcp tcp_fallback; do
        if [[ ${S_STATUS[$id]} == ok ]]; then
            printf '%-44s %12s Mbit/s   ping median %s µs\n' "${S_TITLE[$id]}" "$(fmt_num "${S_TPUT[$id]:-}")" "${S_P50[$id]:-n/a}"
        else
            printf '%-44s %s\n' "${S_TITLE[$id]}" "${S_STATUS[$id]}"
        fi
    done
    echo
    echo "stream / UDP throughput: $ratio (target >= 0.5: $(at_least "$ratio" 0.5))"
    echo "giving up on UDP -> first datagram over the stream: ${fallback_ms:-n/a} ms (target < 1000: $(awk -v a="${fallback_ms:-}" 'BEGIN { if (a == "") print "n/a"; else print (a + 0 < 1000) ? "yes" : "no" }'))"
    printf '{"part": "tcp", "time": "%s", "host": %s, "udp_mbps": %s, "tcp_mbps": %s, "tcp_udp_ratio": %s, "fallback_first_datagram_ms": %s, "targets": {"tcp_udp_ratio": 0.5, "fallback_first_datagram_ms": 1000}}\n' \
        "$when" "$(json_str "$host")" "$(json_num "${S_TPUT[tcp_udp]:-}")" "$(json_num "${S_TPUT[tcp_tcp]:-}")" \
        "$(json_num "$ratio")" "$(json_num "${fallback_ms:-}")" >"$OUT_DIR/tcp.json"
    echo
    echo "results: ${OUT_DIR#"$ROOT"/}/tcp.json"
    world_cleanup
}

# ---------------------------------------------------------------------------------------------
# main

world_remove_stale
rm -f /var/run/wireguard/ovbwg*.sock
for part in "${RUN_PARTS[@]}"; do
    "part_$part"
done
exit "$RC"
