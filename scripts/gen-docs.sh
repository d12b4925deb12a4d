#!/usr/bin/env bash
# Regenerates what docs/ derives from the code: the command-line reference sections of
# docs/configuration.md, man pages (docs/man/) and shell completions (docs/completions/).
# tests/tests/docs.rs fails when these drift from the binaries, so run this after changing a flag.
#   scripts/gen-docs.sh            (builds the binaries if needed; no root needed)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
BIN=${OVERLAY_BIN_DIR:-$ROOT/target/release}
if [[ ! -x $BIN/overlay || ! -x $BIN/overlay-relay ]]; then
    cargo build --release --bins
fi
mkdir -p docs/man docs/completions
for b in overlay overlay-relay; do
    "$BIN/$b" manpage >"docs/man/$b.1"
    "$BIN/$b" completions bash >"docs/completions/$b.bash"
    "$BIN/$b" completions zsh >"docs/completions/_$b"
    "$BIN/$b" completions fish >"docs/completions/$b.fish"
done
# Replace each generated section (between its BEGIN/END markers) with the binary's reference.
python3 - "$BIN" <<'PY'
import re, subprocess, sys
bin_dir = sys.argv[1]
path = "docs/configuration.md"
text = open(path).read()
for b in ["overlay-relay", "overlay"]:
    ref = subprocess.run([f"{bin_dir}/{b}", "reference"], check=True, capture_output=True, text=True).stdout
    begin, end = f"<!-- BEGIN GENERATED: {b} reference -->", f"<!-- END GENERATED: {b} reference -->"
    pattern = re.escape(begin) + r".*?" + re.escape(end)
    if not re.search(pattern, text, flags=re.S):
        sys.exit(f"{path} has no {begin} ... {end} section")
    text = re.sub(pattern, lambda _: f"{begin}\n{ref}{end}", text, flags=re.S)
open(path, "w").write(text)
PY
echo "docs regenerated: docs/configuration.md, docs/man/, docs/completions/"
