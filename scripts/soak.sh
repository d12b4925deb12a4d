#!/usr/bin/env bash
# overlay soak test: a relay and three nodes in network namespaces (prefix "ovs-") under mixed load
# for a bounded time, watching the daemons' memory and file descriptors. Not part of CI.
#
#   sudo scripts/soak.sh [--minutes N] [--relay-every M]
#
# World: ovs-hub runs overlay-relay (10.79.0.1:51820) with a catalog naming "upstream", an HTTP
# server on ovs-r (a host of the remote environment); nodes a, b, c join with a token; b serves
# "web" (an HTTP server on its 127.0.0.1, registered with `overlay register web --target`).
# Until the time is up, in rounds:
#   - iperf3 burst (3 s) from a to b's overlay address, through the relay;
#   - 20 curls from a to http://web:8080 and 20 from c to http://upstream:8080 (relay gateway);
#   - 20 DNS queries on c (web, remote) to 100.100.100.100;
#   - every 2nd round: an extra node d joins (fresh key, name "d"), pings the relay, leaves;
#   - every 3rd round: `overlay down` then `overlay up` on c;
#   - every --relay-every minutes (default 3; at half time when the run is shorter than two of
#     them): the relay is stopped (SIGTERM) and started again, and the time until a reaches b
#     again is taken.
# RSS (VmRSS) and open file descriptors (/proc/PID/fd) of the relay and the node daemons of a, b
# and c are sampled at the start, after the warm-up (the first round that ends a quarter of the
# run, at most a minute, after the start), every minute, and at the end, always between rounds
# (no request in flight). A process is "flat" when its end RSS is within 20 % + 5 MB of the
# warm-up sample and its descriptors within 20 % + 5.
#
# Exit status: 0 when nothing crashed (failed requests are counted and reported, not fatal); 1
# when the relay or a node daemon died on its own or logged a panic, or the world could not be
# set up; 2 on bad usage. Everything runs in ovs-* namespaces, removed on exit (also on Ctrl-C).
# Logs: target/soak/ (emptied at each start).

# Functions run from traps look unreachable to shellcheck (whole file):
# shellcheck disable=SC2317
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORLD_PREFIX=ovs-
# shellcheck source=scripts/lib/world.sh
source "$ROOT/scripts/lib/world.sh"

usage() { sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'; }
die_usage() {
    printf 'soak.sh: %s\n' "$1" >&2
    printf "run 'scripts/soak.sh --help' for usage.\n" >&2
    exit 2
}

MINUTES=10
RELAY_EVERY=3
while (($#)); do
    case $1 in
    -h | --help) usage; exit 0 ;;
    --minutes | --relay-every)
        [[ $# -ge 2 && $2 =~ ^[1-9][0-9]*$ ]] || die_usage "$1 needs a positive whole number."
        case $1 in
        --minutes) MINUTES=$2 ;;
        --relay-every) RELAY_EVERY=$2 ;;
        esac
        shift 2
        ;;
    --minutes=* | --relay-every=*) set -- "${1%%=*}" "${1#*=}" "${@:2}" ;;
    *) die_usage "unknown argument '$1'." ;;
    esac
done
((MINUTES <= 24 * 60)) || die_usage "--minutes is at most 1440."

world_require_root "soak.sh needs root (network namespaces): run sudo scripts/soak.sh"
world_require_tools ip timeout awk flock python3 curl dig iperf3 ping || exit 1

OVERLAY_BIN=${OVERLAY_BIN:-$ROOT/target/release/overlay}
RELAY_BIN=${OVERLAY_RELAY_BIN:-$ROOT/target/release/overlay-relay}
if [[ ! -x $OVERLAY_BIN || ! -x $RELAY_BIN ]]; then
    echo "soak.sh: $OVERLAY_BIN or $RELAY_BIN is missing; build them with: cargo build --release --bins" >&2
    exit 1
fi

exec 9>/run/ovs-soak.lock
flock -n 9 || { echo "another soak.sh is already running." >&2; exit 1; }

LOG_DIR=$ROOT/target/soak
WORK=
CLEANED=0
exec 7>&1 8>&2
cleanup() {
    ((CLEANED)) && return 0
    CLEANED=1
    trap - ERR
    set +e
    world_cleanup
    [[ -n $WORK ]] && rm -rf "$WORK"
    if [[ -n ${SUDO_UID:-} && -n ${SUDO_GID:-} ]]; then
        chown -R "$SUDO_UID:$SUDO_GID" "$LOG_DIR" 2>/dev/null
    fi
}
on_exit() {
    local rc=$?
    exec 1>&7 2>&8
    cleanup
    exit "$rc"
}
on_signal() {
    trap - INT TERM
    exec 1>&7 2>&8
    echo "soak.sh: interrupted, cleaning up." >&2
    cleanup
    exit "$1"
}
trap on_exit EXIT
trap 'on_signal 130' INT
trap 'on_signal 143' TERM
trap 'echo "soak.sh: '"'"'$BASH_COMMAND'"'"' failed (line ${BASH_LINENO[0]})." >&8' ERR

world_remove_stale
rm -rf "$LOG_DIR"
mkdir -p "$LOG_DIR"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ovs-soak.XXXXXX")

T0=$SECONDS
say() { printf '[%4ds] %s\n' $((SECONDS - T0)) "$*"; }

HUB=10.79.0.1
RELAY_EP=$HUB:51820
RELAY_OVL=100.64.0.1
NODE_DNS=100.100.100.100
CLI_LOG=$LOG_DIR/cli.log
RELAY_PID=
CRASHES=()
declare -A ADDR PID
declare -A OK FAIL
ACTIVITIES=(iperf3 curl-web curl-remote dns join-leave down-up relay-restart)
for a in "${ACTIVITIES[@]}"; do OK[$a]=0 FAIL[$a]=0; done
RECONNECT=() # seconds until a reached b again after each relay restart

# ovl NODE ARGS...: `overlay ARGS` against node NODE (at most 20 s).
ovl() {
    local n=$1
    shift
    world_run timeout 20 ip netns exec "ovs-$n" env RUST_LOG=warn \
        OVERLAY_STATE_DIR="$WORK/$n/state" OVERLAY_RUN_DIR="$WORK/$n/run" "$OVERLAY_BIN" "$@" 2>>"$CLI_LOG"
}

# ovl_shielded NODE ARGS...: the same, for commands that start the daemon (join, up): the daemon
# must not reach the host's D-Bus or resolver (see world_bg_shielded).
ovl_shielded() {
    local n=$1
    shift
    world_run world_exec_shielded 30 "ovs-$n" env RUST_LOG=warn \
        OVERLAY_STATE_DIR="$WORK/$n/state" OVERLAY_RUN_DIR="$WORK/$n/run" "$OVERLAY_BIN" "$@" 2>>"$CLI_LOG"
}

# node_pid NODE: the daemon's pid from `overlay status --json`.
node_pid() {
    { ovl "$1" status --json 2>/dev/null || true; } |
        awk -F'[:,]' '$1 ~ /"pid"/ { gsub(/[^0-9]/, "", $2); print $2; exit }'
}
node_connected() { ovl "$1" status --json 2>/dev/null | grep -q '"state": *"connected"'; }

# join NODE: `overlay join` as NODE; its overlay address in ADDR[NODE], daemon pid in PID[NODE].
join() {
    local n=$1 out
    mkdir -p "$WORK/$n/state" "$WORK/$n/run"
    out=$(ovl_shielded "$n" join "$TOKEN" --name "$n") || return 1
    ADDR[$n]=$(awk '$1 == "address:" { print $2 }' <<<"$out")
    PID[$n]=$(node_pid "$n")
    [[ -n ${ADDR[$n]} && -n ${PID[$n]} ]]
}

relay_start() {
    world_bg ovs-hub "$LOG_DIR/relay.log" env RUST_LOG=warn "$RELAY_BIN" --state "$WORK/relay" \
        serve --listen "$RELAY_EP" --catalog "$WORK/catalog.toml"
    RELAY_PID=$WORLD_LAST_PID
    world_wait 10 "the relay's admin socket" test -S "$WORK/relay/admin.sock" && world_alive "$RELAY_PID"
}

# crashed WHAT: remember a crash (the exit status becomes 1).
crashed() {
    CRASHES+=("$1")
    say "CRASH: $1"
}

# check_alive: the relay and the daemons of a, b, c must still run.
check_alive() {
    local n
    if [[ -n $RELAY_PID ]] && ! world_alive "$RELAY_PID"; then
        crashed "the relay (pid $RELAY_PID) exited on its own; see target/soak/relay.log"
        relay_start || true
    fi
    for n in a b c; do
        [[ -n ${PID[$n]:-} ]] || continue
        if [[ ! -d /proc/${PID[$n]} ]]; then
            crashed "the daemon of node $n (pid ${PID[$n]}) exited on its own; see its daemon.log"
            PID[$n]=
            ovl_shielded "$n" up >/dev/null && PID[$n]=$(node_pid "$n")
        fi
    done
    return 0
}

# count ACTIVITY OK: one more success (OK=1) or failure for ACTIVITY.
count() {
    if (($2)); then OK[$1]=$((OK[$1] + 1)); else FAIL[$1]=$((FAIL[$1] + 1)); fi
}

# ---------------------------------------------------------------------------------------------
# samples: "label elapsed role pid rss_kb fds" lines

SAMPLES=$LOG_DIR/samples.txt
: >"$SAMPLES"
sample() {
    local label=$1 role pid rss fds
    for role in relay a b c; do
        if [[ $role == relay ]]; then pid=$RELAY_PID; else pid=${PID[$role]:-}; fi
        rss=$(world_rss_kb "${pid:-0}")
        fds=$(world_fds "${pid:-0}")
        printf '%s %d %s %s %s %s\n' "$label" $((SECONDS - T0)) "$role" "${pid:--}" "${rss:--}" "${fds:--}" >>"$SAMPLES"
    done
    say "sample $label: $(awk -v l="$label" '$1 == l { printf "%s %s kB %s fds; ", $3, $5, $6 }' "$SAMPLES")"
}

# ---------------------------------------------------------------------------------------------
# activities

IPERF_PORT=5301
iperf_burst() {
    local port=$((IPERF_PORT++)) spid ok=0
    world_bg ovs-b "$LOG_DIR/iperf3-server.log" iperf3 -s -1 -p "$port" -B "${ADDR[b]}"
    spid=$WORLD_LAST_PID
    if world_wait 5 "iperf3 server" bash -c "ip netns exec ovs-b ss -Hltn 'sport = :$port' | grep -q ." &&
        world_run timeout 20 ip netns exec ovs-a iperf3 -c "${ADDR[b]}" -p "$port" -t 3 -f m \
            --connect-timeout 3000 >>"$LOG_DIR/iperf3.log" 2>&1; then
        ok=1
    fi
    world_stop "$spid"
    count iperf3 "$ok"
}

curls() { # ACTIVITY NODE URL
    local i
    for ((i = 0; i < 20; i++)); do
        if world_run timeout 10 ip netns exec "ovs-$2" curl -sf --max-time 5 -o /dev/null "$3" 2>>"$LOG_DIR/curl.log"; then
            count "$1" 1
        else
            count "$1" 0
            echo "$(date +%T) $2 $3 failed" >>"$LOG_DIR/curl.log"
        fi
    done
}

dns_queries() {
    local i name ans
    for ((i = 0; i < 10; i++)); do
        for name in web.ovl.internal upstream.ovl.internal; do
            ans=$(world_run timeout 5 ip netns exec ovs-c dig +short +tries=1 +time=2 @"$NODE_DNS" "$name" 2>/dev/null) || ans=
            if [[ $ans =~ ^[0-9.]+$ ]]; then count dns 1; else count dns 0; echo "$(date +%T) $name: '$ans'" >>"$LOG_DIR/dns.log"; fi
        done
    done
}

JOINS=0
join_leave() {
    local ok=0
    JOINS=$((JOINS + 1))
    rm -rf "$WORK/d"
    if join d && world_wait 10 "d to reach the relay" ip netns exec ovs-d ping -n -c 1 -W 1 "$RELAY_OVL"; then
        ok=1
    fi
    if ! ovl d leave >>"$CLI_LOG"; then
        ok=0
        world_ns_kill ovs-d # the daemon, so that the next round starts clean
    fi
    ((ok)) || echo "$(date +%T) join/leave $JOINS failed" >>"$CLI_LOG"
    count join-leave "$ok"
}

down_up() {
    local ok=0
    if ovl c down >>"$CLI_LOG" && ovl_shielded c up >>"$CLI_LOG" &&
        world_wait 15 "c to connect again" node_connected c; then
        ok=1
    fi
    PID[c]=$(node_pid c)
    count down-up "$ok"
}

relay_restart() {
    local t ok=0
    say "restarting the relay"
    world_stop "$RELAY_PID"
    RELAY_PID=
    rm -f "$WORK/relay/admin.sock"
    t=$EPOCHREALTIME
    if relay_start && world_wait 60 "a to reach b after the relay restart" \
        ip netns exec ovs-a ping -n -c 1 -W 1 "${ADDR[b]}"; then
        ok=1
        RECONNECT+=("$(awk -v a="$t" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')")
        say "the relay is back (pid $RELAY_PID); a reached b ${RECONNECT[-1]} s after the restart began"
    fi
    count relay-restart "$ok"
}

# ---------------------------------------------------------------------------------------------
# world

say "soak: $MINUTES minute(s); logs in ${LOG_DIR#"$ROOT"/}/"
world_ns_add ovs-hub
world_bridge ovs-hub br0 "$HUB/24"
octet=2
for n in a b c d r; do
    world_ns_add "ovs-$n"
    world_attach "ovs-$n" ovs-hub br0 "10.79.0.$octet/24"
    octet=$((octet + 1))
done
REMOTE_IP=10.79.0.6 # ovs-r
mkdir -p "$WORK/relay" "$WORK/www"
printf 'hello from the soak\n' >"$WORK/www/index.html"
printf '[services.upstream]\naddress = "%s:8081"\nport = 8080\n' "$REMOTE_IP" >"$WORK/catalog.toml"
world_bg ovs-r "$LOG_DIR/remote-http.log" python3 -m http.server --bind "$REMOTE_IP" --directory "$WORK/www" 8081
world_bg ovs-b "$LOG_DIR/web-http.log" python3 -m http.server --bind 127.0.0.1 --directory "$WORK/www" 18080

relay_start || { echo "soak.sh: the relay did not start." >&2; tail -n 20 "$LOG_DIR/relay.log" >&2; exit 1; }
TOKEN=$(world_run timeout 15 ip netns exec ovs-hub "$RELAY_BIN" --state "$WORK/relay" \
    token create --uses 10000 --ttl 48h 2>>"$CLI_LOG")
TOKEN=${TOKEN//[[:space:]]/}
for n in a b c; do
    join "$n" || { echo "soak.sh: overlay join failed for node $n." >&2; tail -n 20 "$CLI_LOG" >&2; exit 1; }
    say "node $n: ${ADDR[$n]} (daemon pid ${PID[$n]})"
done
if ! ovl b register web --port 8080 --target 18080 >>"$CLI_LOG"; then
    echo "soak.sh: overlay register web failed on b." >&2
    exit 1
fi
world_wait 20 "web and remote to answer from a and c" bash -c \
    "ip netns exec ovs-a curl -sf --max-time 2 -o /dev/null http://web:8080/ &&
     ip netns exec ovs-c curl -sf --max-time 2 -o /dev/null http://upstream:8080/" ||
    say "warning: web or remote does not answer yet (the rounds count the failures)"

# ---------------------------------------------------------------------------------------------
# rounds

DURATION=$((MINUTES * 60))
EVERY=$((RELAY_EVERY * 60))
((DURATION >= 2 * EVERY)) || EVERY=$((DURATION / 2))
START=$SECONDS
END=$((START + DURATION))
NEXT_SAMPLE=$((START + 60))
NEXT_RESTART=$((START + EVERY))
WARM=$((DURATION / 4 < 60 ? DURATION / 4 : 60))
WARMED=0
sample start
round=0
while ((SECONDS < END)); do
    round=$((round + 1))
    iperf_burst
    check_alive
    curls curl-web a http://web:8080/
    curls curl-remote c http://upstream:8080/
    dns_queries
    check_alive
    ((round % 2)) || join_leave
    ((round % 3)) || down_up
    check_alive
    if ((!WARMED && SECONDS - START >= WARM)); then
        sample warm
        WARMED=1
    fi
    if ((SECONDS >= NEXT_RESTART && SECONDS < END)); then
        relay_restart
        NEXT_RESTART=$((NEXT_RESTART + EVERY))
        check_alive
    fi
    if ((SECONDS >= NEXT_SAMPLE && SECONDS < END)); then
        sample "min$(((SECONDS - START + 30) / 60))"
        NEXT_SAMPLE=$((NEXT_SAMPLE + 60))
    fi
done
check_alive
sleep 2 # let the last connections close
sample end

# ---------------------------------------------------------------------------------------------
# report

for f in "$LOG_DIR/relay.log" "$WORK"/*/state/daemon.log; do
    [[ -f $f ]] || continue
    if grep -q 'panicked' "$f"; then
        crashed "a panic in ${f#"$WORK"/}: $(grep -m 1 'panicked' "$f")"
    fi
    [[ $f == "$LOG_DIR/relay.log" ]] || cp "$f" "$LOG_DIR/daemon-$(basename "$(dirname "$(dirname "$f")")").log"
done

echo
echo "soak: $MINUTES minute(s), $round rounds, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo
printf '%-14s %8s %8s\n' activity ok failed
for a in "${ACTIVITIES[@]}"; do
    printf '%-14s %8s %8s\n' "$a" "${OK[$a]}" "${FAIL[$a]}"
done
((${#RECONNECT[@]})) && echo "after each relay restart, a reached b again after: ${RECONNECT[*]} s"
echo "iperf3 bursts a -> b (3 s each), Mbit/s: $(awk '/receiver/ { for (i = 2; i <= NF; i++) if ($i == "Mbits/sec") print $(i - 1) }' "$LOG_DIR/iperf3.log" |
    sort -g | awk '{ v[NR] = $1 } END { if (NR) printf "median %s, min %s, max %s over %d", v[int((NR + 1) / 2)], v[1], v[NR], NR; else printf "none" }')"
echo
echo "samples (RSS kB / open fds):"
awk '{ printf "  %-6s %5ss  %-5s pid %-7s %8s kB %5s fds\n", $1, $2, $3, $4, $5, $6 }' "$SAMPLES"
echo
FLAT=1
for role in relay a b c; do
    wpid='' wrss='' wfds='' epid='' erss='' efds=''
    read -r wpid wrss wfds < <(awk -v r="$role" '$1 == "warm" && $3 == r { print $4, $5, $6 }' "$SAMPLES") || true
    read -r epid erss efds < <(awk -v r="$role" '$1 == "end" && $3 == r { print $4, $5, $6 }' "$SAMPLES") || true
    if [[ ${wrss:--} == - || ${erss:--} == - ]]; then
        echo "$role: no warm-up or end sample"
        FLAT=0
        continue
    fi
    verdict=$(awk -v wr="$wrss" -v er="$erss" -v wf="$wfds" -v ef="$efds" 'BEGIN {
        rss = (er <= wr * 1.2 + 5120); fds = (ef <= wf * 1.2 + 5)
        printf "%s %s", rss ? "flat" : "GROWING", fds ? "flat" : "GROWING" }')
    note=""
    [[ $wpid == "$epid" ]] || note=" (restarted during the soak: pid $wpid -> $epid, so this compares two processes)"
    echo "$role: RSS $wrss -> $erss kB ${verdict% *}; fds $wfds -> $efds ${verdict#* }$note"
    [[ $verdict == "flat flat" ]] || FLAT=0
done
if ((FLAT)); then
    echo "memory and descriptors: flat (end within 20 % + 5 MB of RSS, 20 % + 5 fds of the warm-up sample)"
else
    echo "memory and descriptors: NOT flat for every process (see above)"
fi
if ((${#CRASHES[@]})); then
    echo "crashes: ${#CRASHES[@]}"
    printf '  %s\n' "${CRASHES[@]}"
    exit 1
fi
echo "crashes: none"
exit 0
