#!/usr/bin/env bash
# The test command of the README: everything that proves wsgate works, runnable on a
# fresh machine (it installs what it needs). Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# The AWS SDK test (tests/integration/sdk.rs) drives the management API with boto3
# from a venv under target/; installed once, reused after.
scripts/sdk-venv.sh >/dev/null
cargo build --workspace --all-targets
cargo test --workspace
