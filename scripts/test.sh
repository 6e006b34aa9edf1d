#!/usr/bin/env bash
# The test command of the README: everything that proves wsgate works, runnable on a
# fresh machine (it installs what it needs). Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# The AWS SDK test (tests/integration/sdk.rs) drives the management API with boto3
# from a venv under target/; installed once, reused after.
scripts/sdk-venv.sh >/dev/null
# The cluster tests (tests/integration/cluster.rs) start their own nats-server
# processes on free loopback ports: install Debian's package when it is missing.
if ! command -v nats-server >/dev/null && [ ! -x /usr/sbin/nats-server ]; then
    sudo=""
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null || { echo "test.sh: nats-server is missing and there is no sudo: apt-get install nats-server" >&2; exit 1; }
        sudo="sudo"
    fi
    echo "test.sh: installing nats-server (apt-get install -y nats-server)" >&2
    $sudo apt-get install -y nats-server >&2 || { $sudo apt-get update >&2 && $sudo apt-get install -y nats-server >&2; }
fi
cargo build --workspace --all-targets
cargo test --workspace
