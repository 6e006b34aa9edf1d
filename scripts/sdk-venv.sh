#!/usr/bin/env bash
# Creates target/sdk-venv (python3 -m venv) with boto3 and websockets from PyPI, for
# the AWS SDK test of the management API (tests/sdk/management_sdk.py, driven by
# tests/integration/sdk.rs) and the Python wss:// client (tests/sdk/wss_echo.py,
# driven by tests/integration/tls.rs). Idempotent: does nothing when
# target/sdk-venv/.ok exists and both import (an older venv gets websockets added). Safe to run concurrently (a lock serialises installs).
# Usage: scripts/sdk-venv.sh   (prints the venv's python on success)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${SDK_VENV:-$PWD/target/sdk-venv}"
py="$venv/bin/python"

ready() {
    [ -f "$venv/.ok" ] && [ -x "$py" ] && "$py" -c 'import boto3, websockets' >/dev/null 2>&1
}

if ready; then
    echo "$py"
    exit 0
fi

mkdir -p "$(dirname "$venv")"
install() {
    if ready; then
        return 0
    fi
    python="${PYTHON:-python3}"
    command -v "$python" >/dev/null || { echo "sdk-venv: $python not found" >&2; exit 1; }
    if [ -f "$venv/.ok" ] && [ -x "$py" ] && "$py" -c 'import boto3' >/dev/null 2>&1; then
        # A venv from before websockets was needed: add it.
        "$py" -m pip install --quiet --disable-pip-version-check 'websockets>=12'
        "$py" -c 'import websockets' && return 0
    fi
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$py" -m pip install --quiet --disable-pip-version-check 'boto3>=1.28' 'websockets>=12'
    "$py" -c 'import boto3, botocore; print("sdk-venv: boto3", boto3.__version__, "botocore", botocore.__version__)' >&2
    touch "$venv/.ok"
}

if command -v flock >/dev/null; then
    (
        flock -w 600 9 || { echo "sdk-venv: timed out waiting for the lock" >&2; exit 1; }
        install
    ) 9>"$(dirname "$venv")/.sdk-venv.lock"
else
    install
fi
echo "$py"
