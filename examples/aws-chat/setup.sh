#!/bin/sh
# Installs the example's npm dependencies into examples/aws-chat/node_modules once;
# later runs return at once. Needs node and npm on PATH.
set -e
cd "$(dirname "$0")"
if [ -f node_modules/@aws-sdk/client-apigatewaymanagementapi/package.json ]; then
    exit 0
fi
npm install --no-audit --no-fund --loglevel=error
