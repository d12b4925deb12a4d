#!/usr/bin/env bash
# overlay benchmarks, run entirely inside throw-away network namespaces (prefix "ovb-").
#
#   sudo scripts/bench.sh [all|dataplane]... [--runs N] [--time S] [--pings N] [--no-build]
#
# Parts (run in this order by "all", the default):
#   dataplane  iperf3 TCP throughput and ping latency for: raw veth, stock wireguard-go point to
#              point, and overlay node -> relay -> node. Results: stdout (plain and markdown
#              tables) and target/bench/dataplane.json.
# New parts (join, dns, gateway, restart, traffic) are added as a function part_NAME plus an
# entry in PARTS.
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

PARTS=(dataplane)

usage() {
    cat <<EOF
usage: scripts/bench.sh [all|$(IFS='|'; echo "${PARTS[*]}")]... [options]

  --runs N     iperf3 runs per setup; the median is reported (default 3)
  --time S     seconds per iperf3 run, after a 1 s omitted warm-up (default 10)
  --pings N    pings per setup for the latency figures (default 200, 5 ms apart)
  --no-build   do not run cargo when the overlay binaries are missing
  -h, --help   this help

Environment: OVERLAY_BIN, OVERLAY_RELAY_BIN (default target/release/overlay{,-relay}),
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

RUNS=3
TIME=10
PINGS=200
NO_BUILD=0
SELECTED=()
while (($#)); do
    case $1 in
    -h | --help) usage; exit 0 ;;
    --runs | --time | --pings)
        [[ $# -ge 2 && $2 =~ ^[1-9][0-9]*$ ]] || die_usage "$1 needs a positive whole number."
        case $1 in
        --runs) RUNS=$2 ;;
        --time) TIME=$2 ;;
        --pings) PINGS=$2 ;;
        esac
        shift 2
        ;;
    --runs=* | --time=* | --pings=*)
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

world_require_root "bench.sh needs root: run sudo scripts/bench.sh"
world_require_tools ip iperf3 ping wg wireguard-go timeout awk sort flock || exit 1

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

# measure ID NS SERVER_NS ADDR: latency then throughput from NS to ADDR, which is in SERVER_NS.
measure() {
    local id=$1 ns=$2 srv_ns=$3 addr=$4 r runs=() logf="$LOG_DIR/iperf3-$1.log"
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
    for ((r = 1; r <= RUNS; r++)); do
        if ! iperf_once "$ns" "$srv_ns" "$addr" "$logf"; then
            setup_failed "$id" "iperf3 run $r to $addr failed" "$logf"
            return 0
        fi
        log "  iperf3 run $r/$RUNS: $IPERF_MBPS Mbit/s"
        runs+=("$IPERF_MBPS")
    done
    S_TPUT_RUNS[$id]=${runs[*]}
    S_TPUT[$id]=$(median "${runs[@]}")
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

# wg_node NS IFNAME KEYFILE ADDR PEER_PUB PEER_ENDPOINT PEER_ALLOWED
wg_node() {
    local ns=$1 ifn=$2 key=$3 addr=$4 ppub=$5 pend=$6 pallowed=$7
    # Foreground mode so the pid is ours; the UAPI socket /var/run/wireguard/IFNAME.sock is shared by
    # all namespaces, hence one interface name per namespace ("ovbwg" prefix, removed at cleanup).
    world_bg "$ns" "$LOG_DIR/wireguard-go-$ns.log" env LOG_LEVEL=error WG_PROCESS_FOREGROUND=1 wireguard-go -f "$ifn"
    WG_PIDS+=("$WORLD_LAST_PID")
    world_wait 5 "wireguard-go $ifn in $ns" test -S "/var/run/wireguard/$ifn.sock" || return 1
    ip netns exec "$ns" wg set "$ifn" private-key "$key" listen-port "$WG_PORT" \
        peer "$ppub" endpoint "$pend" allowed-ips "$pallowed" || return 1
    ip -n "$ns" addr add "$addr" dev "$ifn" || return 1
    ip -n "$ns" link set "$ifn" mtu 1420 up
}

setup_wireguard_go() {
    setup_begin wggo "wireguard-go point to point"
    WG_PIDS=()
    local d=$WORK/wg
    mkdir -p "$d" # inside $WORK, which is 0700
    (umask 077 && wg genkey >"$d/a.key" && wg genkey >"$d/b.key")
    local apub bpub
    apub=$(wg pubkey <"$d/a.key")
    bpub=$(wg pubkey <"$d/b.key")
    if ! wg_node ovb-a ovbwga "$d/a.key" 10.99.0.1/24 "$bpub" "$B_UL:$WG_PORT" 10.99.0.2/32 ||
        ! wg_node ovb-b ovbwgb "$d/b.key" 10.99.0.2/24 "$apub" "$A_UL:$WG_PORT" 10.99.0.1/32; then
        setup_failed wggo "wireguard-go did not start" "$LOG_DIR/wireguard-go-ovb-a.log"
        tail_log "$LOG_DIR/wireguard-go-ovb-b.log"
    elif ! world_wait 10 "a WireGuard handshake between ovb-a and ovb-b" \
        ip netns exec ovb-a ping -n -c 1 -W 1 10.99.0.2; then
        setup_failed wggo "no traffic through wireguard-go" "$LOG_DIR/wireguard-go-ovb-a.log"
    else
        measure wggo ovb-a ovb-b 10.99.0.2
    fi
    world_stop "${WG_PIDS[@]}"
}

OVERLAY_BIN=${OVERLAY_BIN:-$ROOT/target/release/overlay}
RELAY_BIN=${OVERLAY_RELAY_BIN:-$ROOT/target/release/overlay-relay}

# ensure_binaries: 0 when both binaries are there (building them when missing and allowed).
ensure_binaries() {
    [[ -x $OVERLAY_BIN && -x $RELAY_BIN ]] && return 0
    ((NO_BUILD)) && return 1
    local blog=$LOG_DIR/build.log
    log "building overlay and overlay-relay (cargo build --release; log: ${blog#"$ROOT"/})"
    # shellcheck disable=SC2016 # $1 is expanded by the inner bash
    local cmd='cd "$1" && cargo build --release -p overlay-node -p overlay-relay'
    if [[ -n ${SUDO_USER:-} && $SUDO_USER != root ]]; then
        # Build as the invoking user (their toolchain, and target/ stays theirs).
        world_run timeout 3600 runuser -u "$SUDO_USER" -- bash -lc "$cmd" bash "$ROOT" >"$blog" 2>&1 || true
    elif command -v cargo >/dev/null 2>&1; then
        world_run timeout 3600 bash -c "$cmd" bash "$ROOT" >"$blog" 2>&1 || true
    else
        echo "cargo not found" >"$blog"
    fi
    [[ -x $OVERLAY_BIN && -x $RELAY_BIN ]] && return 0
    tail_log "$blog"
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

setup_overlay() {
    setup_begin overlay "overlay node -> relay -> node"
    if ! ensure_binaries; then
        setup_na overlay "binaries missing"
        return 0
    fi
    local d=$WORK/overlay rust_log=${OVB_RUST_LOG:-warn}
    mkdir -p "$d/relay" "$d/a/state" "$d/a/run" "$d/b/state" "$d/b/run"
    local rlog=$LOG_DIR/relay.log pids=()

    world_bg ovb-hub "$rlog" env RUST_LOG="$rust_log" "$RELAY_BIN" --state "$d/relay" \
        serve --listen "$HUB_UL:$RELAY_PORT" --public-endpoint "$HUB_UL:$RELAY_PORT"
    local relay_pid=$WORLD_LAST_PID
    pids+=("$relay_pid")
    if ! world_wait 10 "the relay's admin socket" relay_ready "$d/relay/admin.sock" "$relay_pid" ||
        ! world_alive "$relay_pid"; then
        setup_failed overlay "the relay did not start" "$rlog"
        world_stop "${pids[@]}"
        return 0
    fi

    local n
    for n in a b; do
        if ! world_run timeout 15 ip netns exec ovb-hub env RUST_LOG="$rust_log" "$RELAY_BIN" --state "$d/relay" \
            peer add "bench-$n" --wireguard-config >"$d/$n.conf" 2>"$LOG_DIR/peer-add-$n.log"; then
            setup_failed overlay "'overlay-relay peer add bench-$n' failed" "$LOG_DIR/peer-add-$n.log"
            world_stop "${pids[@]}"
            return 0
        fi
        cp "$d/$n.conf" "$LOG_DIR/node-$n.conf.txt"
        sed -i 's/^\([[:space:]]*PrivateKey[[:space:]]*=\).*/\1 (redacted)/I' "$LOG_DIR/node-$n.conf.txt"
    done
    local a_ip b_ip
    a_ip=$(conf_address "$d/a.conf")
    b_ip=$(conf_address "$d/b.conf")
    if [[ -z $a_ip || -z $b_ip ]]; then
        setup_failed overlay "no 'Address =' line in the config from 'peer add'" "$d/a.conf"
        world_stop "${pids[@]}"
        return 0
    fi

    for n in a b; do
        world_bg_shielded "ovb-$n" "$LOG_DIR/node-$n.log" env RUST_LOG="$rust_log" \
            OVERLAY_STATE_DIR="$d/$n/state" OVERLAY_RUN_DIR="$d/$n/run" \
            "$OVERLAY_BIN" daemon --config "$d/$n.conf" --interface ovl0
        pids+=("$WORLD_LAST_PID")
    done
    log "  nodes: ovb-a $a_ip, ovb-b $b_ip; waiting for ovb-a to reach $b_ip through the relay"
    if ! world_wait 15 "ovb-a to reach $b_ip over the overlay" \
        ip netns exec ovb-a ping -n -c 1 -W 1 "$b_ip"; then
        local p dead=""
        for p in "${pids[@]}"; do world_alive "$p" || dead=" (a process exited)"; done
        setup_failed overlay "no traffic between the nodes$dead" "$LOG_DIR/node-a.log"
        tail_log "$LOG_DIR/node-b.log"
        tail_log "$rlog"
    else
        measure overlay ovb-a ovb-b "$b_ip"
    fi
    world_stop "${pids[@]}"
}

# fmt_ratio A B: A/B with two decimals, or n/a.
fmt_ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "n/a"; else printf "%.3f\n", a / b }'; }
fmt_diff() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "") print "n/a"; else printf "%.0f\n", a - b }'; }
fmt_num() { awk -v a="$1" 'BEGIN { if (a == "") print "n/a"; else printf "%.0f\n", a }'; }
with_unit() { if [[ $1 == n/a ]]; then printf 'n/a'; else printf '%s %s' "$1" "$2"; fi; }
json_num() { if [[ -n $1 && $1 != n/a ]]; then printf '%s' "$1"; else printf null; fi; }
json_str() { local s=${1//\\/\\\\}; s=${s//\"/\\\"}; printf '"%s"' "$s"; }

dataplane_report() {
    local host cpu when
    when=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
    host="${cpu:-unknown CPU}, $(nproc) cores, Linux $(uname -r)"
    local r32 r21 lat31 lat21
    r32=$(fmt_ratio "${S_TPUT[overlay]:-}" "${S_TPUT[wggo]:-}")
    r21=$(fmt_ratio "${S_TPUT[wggo]:-}" "${S_TPUT[veth]:-}")
    lat31=$(fmt_diff "${S_P50[overlay]:-}" "${S_P50[veth]:-}")
    lat21=$(fmt_diff "${S_P50[wggo]:-}" "${S_P50[veth]:-}")

    local id
    echo
    echo "dataplane: $host"
    echo "iperf3 TCP, 1 stream, ${TIME} s per run (after 1 s warm-up), median of $RUNS run(s); $PINGS pings 5 ms apart"
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
    echo "throughput overlay / wireguard-go (3)/(2): $r32"
    echo "throughput wireguard-go / raw veth (2)/(1): $r21"
    echo "latency added by overlay over raw veth, (3)-(1) medians: $(with_unit "$lat31" µs)"
    echo "latency added by wireguard-go over raw veth, (2)-(1) medians: $(with_unit "$lat21" µs)"

    echo
    echo "markdown (for docs/benchmarks.md):"
    echo
    echo "Measured $when on $host."
    echo "iperf3 TCP, one stream, $TIME s per run (after 1 s warm-up), median of $RUNS run(s); $PINGS pings 5 ms apart."
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
    echo "| throughput wireguard-go / raw veth | $r21 |"
    echo "| latency added by overlay over raw veth (median) | $(with_unit "$lat31" µs) |"
    echo "| latency added by wireguard-go over raw veth (median) | $(with_unit "$lat21" µs) |"

    local json=$OUT_DIR/dataplane.json first=1
    {
        printf '{\n  "part": "dataplane",\n  "time": "%s",\n  "host": %s,\n' "$when" "$(json_str "$host")"
        printf '  "params": {"iperf3_seconds": %s, "runs": %s, "pings": %s, "ping_interval_ms": 5},\n' \
            "$TIME" "$RUNS" "$PINGS"
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
        printf '\n  ],\n  "ratios": {"throughput_overlay_over_wireguard_go": %s, "throughput_wireguard_go_over_veth": %s, "latency_added_overlay_over_veth_us": %s, "latency_added_wireguard_go_over_veth_us": %s}\n}\n' \
            "$(json_num "$r32")" "$(json_num "$r21")" "$(json_num "$lat31")" "$(json_num "$lat21")"
    } >"$json"
    echo
    echo "results: ${json#"$ROOT"/}"
}

part_dataplane() {
    log "part dataplane: ${TIME} s x $RUNS iperf3 runs and $PINGS pings per setup"
    dataplane_world
    setup_veth
    setup_wireguard_go
    setup_overlay
    dataplane_report
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
