#!/usr/bin/env bash
# Coverage-guided fuzzing of overlay-core with cargo-fuzz (libFuzzer); see docs/security.md,
# section "Fuzzing".
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# Defaults: 60 seconds for each target, every target of fuzz/Cargo.toml. For each target the
# checked-in seeds (fuzz/seeds/TARGET/) are copied into the working corpus (fuzz/corpus/TARGET/,
# not in git, kept between runs so coverage accumulates), then one libFuzzer process (a single
# job: the machine has two cores) runs for the given time. At the end a table shows, per target:
# executions, new coverage units, corpus size, coverage and crashes.
#
# Builds on stable Rust: cargo-fuzz needs nightly flags (-Zsanitizer, sancov passes), which stable
# accepts with RUSTC_BOOTSTRAP=1. Build flags: -O (optimised; fuzz/Cargo.toml's release profile
# keeps debug assertions and overflow checks on for overlay-core and the targets, so arithmetic
# overflow is found too) and AddressSanitizer (cargo-fuzz's default). Override with
# FUZZ_BUILD_FLAGS, e.g. FUZZ_BUILD_FLAGS="-O -a" scripts/fuzz.sh (checks in every crate, slower).
#
# Exit status: 0 when no target crashed, 1 when a target crashed (artifact paths and the command
# to reproduce are printed) or a build failed, 2 on bad usage. Does not need root. Logs:
# fuzz/logs/TARGET.log; the table also goes to fuzz/logs/summary.tsv.
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
if [[ ! -f fuzz/Cargo.toml || ! -f core/Cargo.toml || ! -d fuzz/fuzz_targets ]]; then
    echo "fuzz.sh: $ROOT does not look like the overlay repository root (no fuzz/Cargo.toml)" >&2
    exit 2
fi

usage() {
    echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]" >&2
    echo "targets: $(all_targets | tr '\n' ' ')" >&2
}

# The targets: the [[bin]] entries of fuzz/Cargo.toml (what `cargo fuzz list` shows), so a file
# in fuzz/fuzz_targets/ that is not registered yet is not picked up.
all_targets() {
    awk '/^\[\[bin\]\]/ { bin = 1; next }
         /^\[/ { bin = 0 }
         bin && $1 == "name" { gsub(/"/, "", $3); print $3 }' fuzz/Cargo.toml
}

SECONDS_PER_TARGET=60
if [[ $# -gt 0 && $1 =~ ^[0-9]+$ ]]; then
    SECONDS_PER_TARGET=$1
    shift
fi
if [[ $# -gt 0 && ($1 == -h || $1 == --help) ]]; then
    usage
    exit 0
fi
if ((SECONDS_PER_TARGET < 1)); then
    echo "fuzz.sh: SECONDS_PER_TARGET must be at least 1" >&2
    exit 2
fi
TARGETS=("$@")
if [[ ${#TARGETS[@]} -eq 0 ]]; then
    mapfile -t TARGETS < <(all_targets)
fi
for t in "${TARGETS[@]}"; do
    if ! all_targets | grep -qx -- "$t" || [[ ! -f fuzz/fuzz_targets/$t.rs ]]; then
        echo "fuzz.sh: no fuzz target '$t'" >&2
        usage
        exit 2
    fi
done

export RUSTC_BOOTSTRAP=1
# Two cores: never more than two compile jobs, and one fuzzing process at a time.
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}
read -r -a BUILD_FLAGS <<<"${FUZZ_BUILD_FLAGS:--O}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== cargo-fuzz is not installed; installing it (takes a few minutes)"
    cargo install cargo-fuzz --locked
fi

echo "== building fuzz targets: RUSTC_BOOTSTRAP=1 cargo fuzz build ${BUILD_FLAGS[*]}"
if ! cargo fuzz build "${BUILD_FLAGS[@]}"; then
    echo "fuzz.sh: the fuzz targets did not build (see above)" >&2
    exit 1
fi

mkdir -p fuzz/logs
# Value of "stat::NAME: N" in a log, or "?".
final_stat() {
    local v
    v=$(grep -a -m1 "^stat::$2:" "$1" | awk '{print $2}' || true)
    echo "${v:-?}"
}

declare -A EXECS NEW CORPUS COV CRASHES EXEC_RATE
FAILED=()
REPORT=()
for t in "${TARGETS[@]}"; do
    corpus=fuzz/corpus/$t
    artifacts=fuzz/artifacts/$t
    log=fuzz/logs/$t.log
    mkdir -p "$corpus" "$artifacts"
    if [[ -d fuzz/seeds/$t ]]; then
        # -n: never overwrite; corpus files are named by content hash, seeds by what they are.
        cp -n fuzz/seeds/"$t"/* "$corpus"/ 2>/dev/null || true
    fi
    before=$(find "$artifacts" -type f | sort)
    echo "== fuzzing $t for ${SECONDS_PER_TARGET}s (corpus $corpus: $(find "$corpus" -type f | wc -l) inputs)"
    status=0
    RUST_BACKTRACE=1 cargo fuzz run "${BUILD_FLAGS[@]}" "$t" "$corpus" -- \
        -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -timeout=20 \
        -print_final_stats=1 >"$log" 2>&1 || status=$?
    EXECS[$t]=$(final_stat "$log" number_of_executed_units)
    NEW[$t]=$(final_stat "$log" new_units_added)
    EXEC_RATE[$t]=$(final_stat "$log" average_exec_per_sec)
    CORPUS[$t]=$(find "$corpus" -type f | wc -l)
    COV[$t]=$(grep -a -oE '(DONE|NEW|REDUCE|pulse|INITED) +cov: [0-9]+' "$log" | tail -1 | awk '{print $3}' || true)
    COV[$t]=${COV[$t]:-?}
    after=$(find "$artifacts" -type f | sort)
    new_artifacts=$(comm -13 <(echo "$before") <(echo "$after") | sed '/^$/d')
    CRASHES[$t]=$(echo -n "$new_artifacts" | grep -c . || true)
    { grep -a -E '^#[0-9]+[[:space:]]+(DONE|INITED|NEW|REDUCE|pulse)' "$log" | tail -n 1 || true
        grep -a -E 'panicked at|^==[0-9]+==ERROR|Test unit written to' "$log" || true; } | sed "s/^/   [$t] /"
    if [[ $status -ne 0 || ${CRASHES[$t]} -gt 0 ]]; then
        FAILED+=("$t")
        msg=$(grep -a -A2 -m1 "panicked at" "$log" | head -3 || true)
        [[ -n $msg ]] || msg=$(grep -a -m1 -E "ERROR: (libFuzzer|AddressSanitizer)" "$log" || echo "exit status $status, see $log")
        REPORT+=("-- $t (exit status $status, log $log)")
        while IFS= read -r line; do
            REPORT+=("   $line")
        done <<<"$msg"
        while IFS= read -r a; do
            [[ -n $a ]] || continue
            REPORT+=("   artifact:  $a")
            REPORT+=("   reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run ${BUILD_FLAGS[*]} $t $a")
        done <<<"$new_artifacts"
        if [[ -z $new_artifacts ]]; then
            REPORT+=("   no artifact was written (build or setup failure?): see $log")
        fi
    fi
done

{
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' target seconds executions exec/s new_units corpus cov crashes
    for t in "${TARGETS[@]}"; do
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$SECONDS_PER_TARGET" "${EXECS[$t]}" \
            "${EXEC_RATE[$t]}" "${NEW[$t]}" "${CORPUS[$t]}" "${COV[$t]}" "${CRASHES[$t]}"
    done
} >fuzz/logs/summary.tsv

echo
echo "== results ($(date -u +%Y-%m-%dT%H:%MZ), ${SECONDS_PER_TARGET}s per target, build: ${BUILD_FLAGS[*]})"
column -t -s $'\t' fuzz/logs/summary.tsv 2>/dev/null || cat fuzz/logs/summary.tsv
echo "(new_units: inputs that reached new coverage in this run; corpus: inputs kept in fuzz/corpus/TARGET;"
echo " cov: coverage points reached; crashes: new files in fuzz/artifacts/TARGET)"

if [[ ${#FAILED[@]} -gt 0 ]]; then
    echo
    echo "== CRASHES in: ${FAILED[*]}"
    printf '%s\n' "${REPORT[@]}"
    exit 1
fi
echo "== no crashes"
