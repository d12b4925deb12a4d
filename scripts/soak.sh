#!/usr/bin/env bash
# overlay soak test: a relay and three nodes in network namespaces (prefix "ovs-") under mixed load
# for a bounded time, watching the daemons' memory and file descriptors. Not part of CI.
#
#   sudo scripts/soak.sh [--minutes N] [--relay-every M]
#   scripts/soak.sh --help
#
# A thin wrapper: it builds the binaries (cargo build --release --bins, as the user who ran sudo)
# and execs `target/release/overlay-bench soak` with the same arguments; the soak itself is
# tests/src/bin/bench/soak.rs. Exit status: 0 when nothing crashed (failed requests are counted
# and reported, not fatal); 1 when the relay or a node daemon died on its own or logged a panic,
# or the world could not be set up; 2 on bad usage. Logs: target/soak/.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=${OVERLAY_BENCH_BIN:-$ROOT/target/release/overlay-bench}
export OVB_ROOT=$ROOT

build=1
for a in "$@"; do
    case $a in
    -h | --help) [[ -x $BENCH ]] && build=0 ;;
    esac
done
if ((build)); then
    # shellcheck disable=SC2016 # $1 is expanded by the inner bash
    cmd='cd "$1" && cargo build --release --bins'
    echo "== building (cargo build --release --bins)" >&2
    if [[ -n ${SUDO_USER:-} && $SUDO_USER != root ]]; then
        runuser -u "$SUDO_USER" -- bash -lc "$cmd" bash "$ROOT" >&2 || { echo "soak.sh: the build failed." >&2; exit 1; }
    elif command -v cargo >/dev/null 2>&1; then
        bash -c "$cmd" bash "$ROOT" >&2 || { echo "soak.sh: the build failed." >&2; exit 1; }
    fi
fi
if [[ ! -x $BENCH ]]; then
    echo "soak.sh: $BENCH is missing; build it with: cargo build --release --bins" >&2
    exit 1
fi
exec "$BENCH" soak "$@"
