#!/usr/bin/env bash
# The test command of the README: everything that proves wsgate works, runnable on a
# fresh machine (it installs what it needs). Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --all-targets
cargo test --workspace
