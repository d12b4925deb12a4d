#!/usr/bin/env bash
# Supply-chain checks: banned crates, licenses, and sources (crates.io only). Advisories need the
# RustSec database from the network; run `cargo deny check advisories` where one exists.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! cargo deny --version >/dev/null 2>&1; then
    echo "deny.sh: installing cargo-deny (once)" >&2
    cargo install cargo-deny --locked >&2
fi
cargo deny check bans licenses sources
