#!/usr/bin/env bash
# Runs every test: unit tests in core and the end-to-end namespace worlds in tests/.
# Usage: sudo scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "test.sh needs root to build network namespaces: run sudo scripts/test.sh" >&2
  exit 1
fi
for tool in ip nft iperf3 ping wireguard-go wg; do
  command -v "$tool" >/dev/null || { echo "test.sh needs '$tool': install iproute2 nftables iperf3 iputils-ping wireguard-go wireguard-tools (see .ci/run)" >&2; exit 1; }
done
# The end-to-end tests drive the real binaries; build them once, optimised, before the tests run.
cargo build --release --bins
export OVERLAY_BIN_DIR="$PWD/target/release"
# Namespace worlds are cheap but not free on two cores: run two tests at a time.
# overlay-core's tests turn on its feature sim-time (boringtun on a simulated clock), and Cargo
# unifies features over one invocation: they run on their own, so that no binary the end-to-end
# tests use is ever built with it (such a binary refuses to start).
cargo test -p overlay-core --release --no-fail-fast -- "$@"
cargo test --workspace --exclude overlay-core --release --no-fail-fast -- --test-threads=2 "$@"
