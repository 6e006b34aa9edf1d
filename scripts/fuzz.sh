#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time (default 30 s each) and prints its
# execution count. cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP=1 allows them on
# the stable toolchain. Usage: scripts/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
mkdir -p target
for t in $(sed -n 's/^name = "\(.*\)"$/\1/p' tests/fuzz/Cargo.toml | grep -v '^wsgate-fuzz$'); do
  work=target/fuzz-corpus/$t
  mkdir -p "$work"
  # The first corpus dir receives new inputs; the committed seeds stay read-only.
  cargo fuzz run --fuzz-dir tests/fuzz "$t" "$work" "tests/fuzz/corpus/$t" -- \
    -max_total_time="$secs" -print_final_stats=1 >"target/fuzz-$t.log" 2>&1 || {
    echo "fuzz target $t failed:"; tail -40 "target/fuzz-$t.log"; exit 1; }
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "target/fuzz-$t.log")
  echo "fuzz $t: ${runs:-?} executions in ${secs}s, no crash"
done
