#!/usr/bin/env bash
# Runs the Autobahn|Testsuite (cases 1-10) against wsgate serving examples/echo.toml on
# a free loopback port, prints the per-category table, and fails unless nothing FAILED
# and at least MIN_STRICT (default 290) of the 301 cases are strictly OK.
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${WSGATE_SHARED:-../shared}
min_strict=${MIN_STRICT:-290}
out=${AUTOBAHN_OUT:-target/autobahn-report}
cargo build --release --bin wsgate
log=$(mktemp)
./target/release/wsgate --config examples/echo.toml --listen 127.0.0.1:0 --management-listen 127.0.0.1:0 --log-level warn >"$log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 1 100); do
  grep -q '^wsgate ready' "$log" && break
  sleep 0.1
done
port=$(sed -n 's/^wsgate ready listen=[0-9.]*:\([0-9]*\).*/\1/p' "$log")
[ -n "$port" ] || { echo "wsgate did not start:"; cat "$log"; exit 1; }
AUTOBAHN_OUT=$out bash "$shared/conformance/autobahn.sh" "ws://127.0.0.1:$port/" | tee "$out.log"
strict=$(awk '$1 == "total" { print $2 }' "$out.log")
failed=$(awk '$1 == "total" { print $5 }' "$out.log")
echo "autobahn strictly OK: $strict of 301 (need >= $min_strict), FAILED: $failed"
[ "${failed:-1}" -eq 0 ] && [ "${strict:-0}" -ge "$min_strict" ]
