"""A Python `websockets` client over wss:// against wsgate (SPEC §10.1).

Connects with the test CA, sends a text and a binary message to an echo gateway and
checks both come back unchanged. Driven by tests/integration/tls.rs.
Usage: wss_echo.py --url wss://localhost:PORT/prod --ca ca.pem
"""
import argparse
import asyncio
import ssl
import sys

import websockets


async def run(url, ca):
    context = ssl.create_default_context(cafile=ca)
    async with websockets.connect(url, ssl=context, open_timeout=10) as ws:
        await ws.send("héllo from python websockets ✓")
        text = await asyncio.wait_for(ws.recv(), 10)
        if text != "héllo from python websockets ✓":
            return f"text echo {text!r}"
        data = bytes(range(256)) * 64
        await ws.send(data)
        back = await asyncio.wait_for(ws.recv(), 10)
        if back != data:
            return f"binary echo of {len(back)} bytes differs"
    return None


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True)
    p.add_argument("--ca", required=True)
    args = p.parse_args()
    problem = asyncio.run(run(args.url, args.ca))
    if problem:
        print(f"wss_echo.py: {problem}", file=sys.stderr)
        return 1
    print(f"wss_echo.py: ok (websockets {websockets.version.version})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
