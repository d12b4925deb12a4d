#!/usr/bin/env bash
# overlay demo: a "remote environment" and a "laptop" on this machine, in network namespaces.
#
#   sudo scripts/demo.sh           run the demo, then remove everything it made
#   sudo scripts/demo.sh --keep    leave the world running to explore (remove it with --clean)
#   sudo scripts/demo.sh --clean   remove a world left by --keep or by an interrupted run
#
# The remote environment runs the relay (unprivileged, as in a container) and two services,
# orders and inventory. The laptop joins with a fresh token and runs checkout (and a v2 of it)
# with `overlay dev`. checkout calls orders and inventory by plain name; orders calls checkout
# back through its callback URL. Every step prints what was called, by which name, and the answer.
# Exit status 0 when every step worked. Nothing outside the namespaces it creates is touched.
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PREFIX=ovd
REMOTE=$PREFIX-remote
LAPTOP=$PREFIX-laptop
DIR=/tmp/overlay-demo
DEMO_UID=${SUDO_UID:-65534}
DEMO_GID=${SUDO_GID:-65534}
KEEP=0
# The services run as an ordinary user, so they need a python3 every user can run.
PYTHON=$(command -v /usr/bin/python3 || command -v python3)

case ${1:-} in
--keep) KEEP=1 ;;
--clean) CLEAN_ONLY=1 ;;
"") ;;
-h | --help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
*) echo "demo.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
esac

if [[ $(id -u) -ne 0 ]]; then
    echo "demo.sh needs root to create network namespaces: run sudo scripts/demo.sh" >&2
    exit 1
fi

bold=$'\e[1m' green=$'\e[32m' red=$'\e[31m' dim=$'\e[2m' reset=$'\e[0m'
if [[ ! -t 1 || -n ${NO_COLOR:-} ]]; then bold='' green='' red='' dim='' reset=''; fi
PASSED=0
FAILED=0
say() { printf '\n%s== %s%s\n' "$bold" "$*" "$reset"; }
ok() { PASSED=$((PASSED + 1)); printf '   %sok%s   %s\n' "$green" "$reset" "$*"; }
bad() { FAILED=$((FAILED + 1)); printf '   %sFAIL%s %s\n' "$red" "$reset" "$*"; }
show() { sed 's/^/   | /'; }

in_remote() { ip netns exec "$REMOTE" "$@"; }
in_laptop() {
    ip netns exec "$LAPTOP" env OVERLAY_STATE_DIR="$DIR/laptop/state" OVERLAY_RUN_DIR="$DIR/laptop/run" \
        SUDO_UID="$DEMO_UID" SUDO_GID="$DEMO_GID" "$@"
}
# `overlay dev` and its companions run as the developer, with the developer's own state
# directory for logs (as ~/.local/state/overlay would be), and the daemon's run directory.
in_dev() {
    ip netns exec "$LAPTOP" env OVERLAY_STATE_DIR="$DIR/dev" OVERLAY_RUN_DIR="$DIR/laptop/run" \
        SUDO_UID="$DEMO_UID" SUDO_GID="$DEMO_GID" "$ROOT/target/release/overlay" "$@"
}
overlay() { in_laptop "$ROOT/target/release/overlay" "$@"; }
relay_admin() { in_remote "$ROOT/target/release/overlay-relay" --state "$DIR/relay" "$@"; }

# Bounded wait: wait_for SECONDS COMMAND...
wait_for() {
    local deadline=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
}

cleanup() {
    for ns in "$LAPTOP" "$REMOTE"; do
        if ip netns list | grep -qw "$ns"; then
            ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
        fi
    done
    sleep 0.3
    for ns in "$LAPTOP" "$REMOTE"; do
        if ip netns list | grep -qw "$ns"; then
            ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
            ip netns del "$ns" 2>/dev/null || true
        fi
        rm -rf "/etc/netns/$ns"
    done
    rm -rf "$DIR"
}

on_exit() {
    local status=$?
    if ((KEEP)) && ((status == 0)); then return; fi
    cleanup
    exit "$status"
}

if [[ -n ${CLEAN_ONLY:-} ]]; then
    cleanup
    echo "removed the demo world"
    exit 0
fi

# A world left by an interrupted run goes first.
cleanup
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "Building overlay (if needed)"
if [[ ! -x $ROOT/target/release/overlay || ! -x $ROOT/target/release/overlay-relay ]]; then
    (cd "$ROOT" && cargo build --release --bins) 2>&1 | tail -n 2 | show
fi
ok "binaries: target/release/overlay, target/release/overlay-relay"

say "Creating the world: remote environment ($REMOTE) and laptop ($LAPTOP)"
mkdir -p "$DIR"/{relay,laptop/state,laptop/run,logs,dev}
chown "$DEMO_UID:$DEMO_GID" "$DIR/dev"
chown 65534:65534 "$DIR/relay"
# Like /run: the daemon's socket and the developer's session sockets live side by side.
chmod 1777 "$DIR/laptop/run"
for ns in "$REMOTE" "$LAPTOP"; do
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    mkdir -p "/etc/netns/$ns"
    printf '# overlay demo: %s has no upstream resolver\n' "$ns" >"/etc/netns/$ns/resolv.conf"
    printf '127.0.0.1 localhost\n' >"/etc/netns/$ns/hosts"
done
ip -n "$REMOTE" link add eth0 type veth peer name eth0 netns "$LAPTOP"
ip -n "$REMOTE" addr add 10.88.0.1/24 dev eth0
ip -n "$LAPTOP" addr add 10.88.0.2/24 dev eth0
ip -n "$REMOTE" link set eth0 up
ip -n "$LAPTOP" link set eth0 up
ok "remote environment 10.88.0.1, laptop 10.88.0.2 (a veth pair; nothing on the host changes)"

say "Remote environment: orders and inventory (ordinary processes, not on the overlay)"
in_remote setpriv --reuid 65534 --regid 65534 --clear-groups \
    "$PYTHON" "$ROOT/demo/services/orders.py" 10.88.0.1 9001 >"$DIR/logs/orders.log" 2>&1 &
in_remote setpriv --reuid 65534 --regid 65534 --clear-groups \
    "$PYTHON" "$ROOT/demo/services/inventory.py" 10.88.0.1 9002 >"$DIR/logs/inventory.log" 2>&1 &
cat >"$DIR/catalog.toml" <<TOML
[services.orders]
address = "10.88.0.1:9001"
port = 8080

[services.inventory]
address = "10.88.0.1:9002"
port = 8080
TOML
chmod 644 "$DIR/catalog.toml"
if wait_for 10 in_remote curl -sf http://10.88.0.1:9002/stock/x; then
    ok "orders on 10.88.0.1:9001, inventory on 10.88.0.1:9002; the relay's catalog names them"
else
    bad "the remote services did not start"; cat "$DIR/logs/"*.log | show
fi

say "Remote environment: the relay, as an unprivileged user with no capabilities"
in_remote setpriv --reuid 65534 --regid 65534 --clear-groups --inh-caps=-all --bounding-set=-all \
    "$ROOT/target/release/overlay-relay" --state "$DIR/relay" serve \
    --listen 10.88.0.1:51820 --catalog "$DIR/catalog.toml" \
    --callback-listen 10.88.0.1:8000 --callback-ports 20000-20999 --callback-host 10.88.0.1 \
    >"$DIR/logs/relay.log" 2>&1 &
if wait_for 10 test -S "$DIR/relay/admin.sock"; then
    ok "overlay-relay serving on udp 10.88.0.1:51820 (uid 65534, no capabilities)"
else
    bad "the relay did not start"; tail -n 20 "$DIR/logs/relay.log" | show; exit 1
fi
TOKEN=$(relay_admin token create --uses 1 --ttl 10m)
ok "token created: ${TOKEN:0:24}..."

say "Laptop: sudo overlay join <token>"
if overlay join "$TOKEN" --name laptop 2>&1 | show; then
    ok "joined"
else
    bad "join failed"; exit 1
fi

say "Laptop: overlay dev -f demo/overlay.toml (checkout and checkout v2, as uid $DEMO_UID)"
(cd "$ROOT/demo" && in_dev dev -f "$ROOT/demo/overlay.toml" >"$DIR/logs/dev.log" 2>&1) &
services_up() { overlay services --json | grep -q '"tag": "v2"' && curl_laptop http://v2.checkout:8080/healthz; }
curl_laptop() { in_laptop curl -sf --max-time 5 "$@"; }
if wait_for 40 services_up; then
    ok "checkout and v2.checkout are running and registered"
else
    bad "overlay dev did not bring the services up"; tail -n 30 "$DIR/logs/dev.log" | show
fi

say "overlay services (what every name resolves to, and where it runs)"
overlay services | show

step_request() { # what url pattern-the-answer-must-contain
    local what=$1 url=$2 want=$3 out
    printf '   %s$ curl %s%s\n' "$dim" "$url" "$reset"
    out=$(in_laptop curl -s --max-time 10 "$url" || true)
    if grep -q "$want" <<<"$out"; then
        printf '%s\n' "$out" | python3 -m json.tool 2>/dev/null | head -n 30 | show
        ok "$what"
    else
        printf '%s\n' "${out:-no answer}" | show
        bad "$what"
    fi
}

say "checkout (local, v1) calls orders and inventory (remote) by plain name"
step_request "http://checkout:8080 answered, with the remote orders and inventory in it" \
    http://checkout:8080/checkout '"where": "remote"'

say "The second version, side by side: v2.checkout"
step_request "http://v2.checkout:8080 is v2, running beside v1" http://v2.checkout:8080/checkout '"checkout": "v2"'

say "orders (remote) called checkout back through its callback URL (a webhook)"
if wait_for 5 bash -c "ip netns exec $LAPTOP curl -sf http://checkout:8080/webhooks | grep -q confirmed"; then
    curl_laptop http://checkout:8080/webhooks | python3 -m json.tool | head -n 12 | show
    ok "the webhook from the remote environment reached the laptop"
else
    { curl_laptop http://checkout:8080/webhooks || true; echo; } | show
    tail -n 5 "$DIR/logs/orders.log" | show
    bad "no webhook arrived (see the orders log above)"
fi

say "A process in the remote environment calls checkout at its callback URL"
CALLBACK=$(overlay services --json | python3 -c '
import json, sys
for s in json.load(sys.stdin):
    if s["name"] == "checkout" and not s["tag"] and s.get("callback_url"):
        print(s["callback_url"]); break')
printf '   %s$ curl %s/healthz   (from the remote environment)%s\n' "$dim" "$CALLBACK" "$reset"
if [[ -n $CALLBACK ]] && { in_remote curl -sf --max-time 5 "$CALLBACK/healthz" && echo; } | show; then
    ok "remote -> $CALLBACK -> relay -> overlay -> laptop"
else
    bad "calling back at '${CALLBACK:-no callback URL}' failed"
fi

say "overlay status"
overlay status | show

say "overlay logs (the last lines of every service, interleaved by time)"
in_dev logs -n 12 2>&1 | show || true

say "A restart of checkout while requests keep flowing"
REQS="$DIR/requests"
: >"$REQS"
in_laptop bash -c "end=\$((SECONDS+8)); while ((SECONDS<end)); do
    if curl -sf --max-time 10 -o /dev/null http://checkout:8080/healthz; then echo ok; else echo fail; fi
    sleep 0.05; done" >>"$REQS" 2>/dev/null &
LOOP=$!
sleep 1
if in_dev restart checkout 2>&1 | show; then
    ok "overlay restart checkout"
else
    bad "overlay restart checkout failed"
fi
wait "$LOOP" || true
total=$(wc -l <"$REQS")
failed=$(grep -c fail "$REQS" || true)
if ((total > 0 && failed == 0)); then
    ok "$total requests during the restart, $failed failed"
else
    bad "$total requests during the restart, $failed failed"
fi

say "Traffic inspector"
if url=$(overlay inspect 2>/dev/null); then
    printf '   %s\n' "$url"
    ok "open it from the laptop: sudo ip netns exec $LAPTOP curl $url (or a browser in that namespace)"
else
    printf '   (the traffic inspector is not available in this build)\n'
fi

say "Result"
printf '   %d steps worked, %d failed\n' "$PASSED" "$FAILED"
if ((KEEP)); then
    cat <<EOF

The world is still running. Explore it:
   sudo ip netns exec $LAPTOP env OVERLAY_STATE_DIR=$DIR/laptop/state OVERLAY_RUN_DIR=$DIR/laptop/run $ROOT/target/release/overlay status
   sudo ip netns exec $LAPTOP curl http://checkout:8080/checkout
   sudo ip netns exec $REMOTE $ROOT/target/release/overlay-relay --state $DIR/relay nodes
   sudo ip netns exec $LAPTOP env OVERLAY_STATE_DIR=$DIR/dev OVERLAY_RUN_DIR=$DIR/laptop/run $ROOT/target/release/overlay logs -f
Logs: $DIR/logs/. Remove everything with: sudo scripts/demo.sh --clean
EOF
fi
((FAILED == 0))
