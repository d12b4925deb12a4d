#!/usr/bin/env bash
# overlay benchmarks, run inside throw-away network namespaces (prefix "ovb-").
#
#   sudo scripts/bench.sh [all|dataplane|join|dns|registry|gateway|restart|scale|flood|tcp|storm|capture|intercept]... [options]
#   scripts/bench.sh --help            # the parts and every option
#
# A thin wrapper: it builds the binaries (cargo build --release --bins, as the user who ran sudo;
# skipped with --no-build) and execs target/release/overlay-bench with the same arguments. The
# benches themselves are Rust, one module per part in tests/src/bin/bench/parts/, on the tests'
# World (tests/src/world.rs). Output: stdout, target/bench/PART.json, logs in target/bench/logs/.
#
# Exit status: 0 when every part ran (slow figures never fail it), 1 when a tool or component
# failed to run (the other setups and parts are still measured and reported), 2 on bad usage.
# The host's addresses, routes and DNS are never touched; everything created is removed on exit,
# including on Ctrl-C.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=${OVERLAY_BENCH_BIN:-$ROOT/target/release/overlay-bench}
export OVB_ROOT=$ROOT

build=1
for a in "$@"; do
    case $a in
    --no-build) build=0 ;;
    -h | --help) [[ -x $BENCH ]] && build=0 ;;
    esac
done

if ((build)); then
    # As the user who ran sudo, when there is one (their toolchain, and target/ stays theirs).
    # shellcheck disable=SC2016 # $1 is expanded by the inner bash
    cmd='cd "$1" && cargo build --release --bins'
    echo "== building (cargo build --release --bins)" >&2
    if [[ -n ${SUDO_USER:-} && $SUDO_USER != root ]]; then
        runuser -u "$SUDO_USER" -- bash -lc "$cmd" bash "$ROOT" >&2 || { echo "bench.sh: the build failed." >&2; exit 1; }
    elif command -v cargo >/dev/null 2>&1; then
        bash -c "$cmd" bash "$ROOT" >&2 || { echo "bench.sh: the build failed." >&2; exit 1; }
    else
        echo "bench.sh: cargo not found; build with cargo build --release --bins, or pass --no-build." >&2
        exit 1
    fi
fi
if [[ ! -x $BENCH ]]; then
    echo "bench.sh: $BENCH is missing; build it with: cargo build --release --bins" >&2
    exit 1
fi
exec "$BENCH" "$@"
