#!/usr/bin/env python3
"""Drives wsgate's management API with the official AWS SDK (boto3's
``apigatewaymanagementapi`` client), unchanged: PostToConnection, GetConnection,
DeleteConnection and the GoneException mapping (SPEC §8).

Run by tests/integration/sdk.rs with the venv of scripts/sdk-venv.sh:

    management_sdk.py --url http://127.0.0.1:PORT/prod --id CONNECTION_ID \
        --mode ok|forbidden --message TEXT [--access-key K --secret-key S]

``--mode ok``: posts ``--message`` to the connection, checks GetConnection's fields,
deletes the connection, then expects GoneException for Post/Get/Delete on it and for a
well-formed unknown id, and BadRequestException for a malformed id.
``--mode forbidden``: expects every call to fail with HTTP 403 ForbiddenException
(wrong credentials) and nothing to be posted or deleted.

Exits 0 when everything matched; otherwise prints what did not and exits 1.
"""

import argparse
import datetime
import sys
import time

import boto3
import botocore
from botocore.config import Config
from botocore.exceptions import ClientError

FAILURES = []


def check(cond, what):
    if not cond:
        FAILURES.append(what)
        print(f"MISMATCH: {what}", file=sys.stderr)
    return cond


def status_of(resp):
    return resp["ResponseMetadata"]["HTTPStatusCode"]


def expect_error(call, status, code, what):
    """Runs call(); it must raise ClientError with `status` and error `code`."""
    try:
        resp = call()
    except ClientError as e:
        got_status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        got_code = e.response.get("Error", {}).get("Code")
        check(
            (got_status, got_code) == (status, code),
            f"{what}: expected {status} {code}, got {got_status} {got_code} ({e})",
        )
        return e
    check(False, f"{what}: expected {status} {code}, got success {resp}")
    return None


def client_for(args):
    config = Config(
        region_name=args.region,
        connect_timeout=5,
        read_timeout=5,
        retries={"total_max_attempts": 1, "mode": "standard"},
    )
    return boto3.client(
        "apigatewaymanagementapi",
        endpoint_url=args.url,
        aws_access_key_id=args.access_key,
        aws_secret_access_key=args.secret_key,
        region_name=args.region,
        config=config,
        # https:// management (SPEC §10.1): trust the test CA (None: the defaults).
        verify=args.ca,
    )


def unknown_id(conn_id):
    """A well-formed id that is not a live connection: the same bytes with the
    generation changed (SPEC §6)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    # Character 7 lies inside the generation bytes (bytes 4..7 = characters 5..9).
    c = conn_id[7]
    swapped = alphabet[(alphabet.index(c) + 1) % 64]
    return conn_id[:7] + swapped + conn_id[8:]


def parse_window(args):
    lo = datetime.datetime.fromtimestamp(args.not_before_ms / 1000.0, datetime.timezone.utc)
    return lo - datetime.timedelta(seconds=1)


def mode_ok(client, args):
    conn_id = args.id
    start = datetime.datetime.now(datetime.timezone.utc)

    # PostToConnection.
    resp = client.post_to_connection(ConnectionId=conn_id, Data=args.message.encode("utf-8"))
    check(status_of(resp) == 200, f"PostToConnection status {status_of(resp)}")

    # GetConnection.
    resp = client.get_connection(ConnectionId=conn_id)
    check(status_of(resp) == 200, f"GetConnection status {status_of(resp)}")
    connected = resp.get("ConnectedAt")
    last = resp.get("LastActiveAt")
    identity = resp.get("Identity", {})
    now = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=1)
    if check(isinstance(connected, datetime.datetime), f"ConnectedAt {connected!r} is a datetime"):
        check(
            parse_window(args) <= connected <= start + datetime.timedelta(seconds=1),
            f"ConnectedAt {connected} not between the test's start and this call ({start})",
        )
    if check(isinstance(last, datetime.datetime), f"LastActiveAt {last!r} is a datetime"):
        check(
            connected is None or connected <= last <= now,
            f"LastActiveAt {last} not within [{connected}, {now}]",
        )
    check(identity.get("SourceIp") == "127.0.0.1", f"Identity.SourceIp {identity!r}")
    check(
        identity.get("UserAgent") == args.user_agent,
        f"Identity.UserAgent {identity.get('UserAgent')!r} != {args.user_agent!r}",
    )

    # A well-formed id that is not a live connection, and a malformed one.
    other = unknown_id(conn_id)
    e = expect_error(
        lambda: client.post_to_connection(ConnectionId=other, Data=b"x"),
        410,
        "GoneException",
        f"PostToConnection to unknown id {other}",
    )
    try:
        client.get_connection(ConnectionId=other)
        check(False, "GetConnection of an unknown id succeeded")
    except client.exceptions.GoneException as e:
        check(
            e.response["ResponseMetadata"]["HTTPStatusCode"] == 410,
            f"GoneException with status {e.response['ResponseMetadata']['HTTPStatusCode']}",
        )
    except ClientError as e:
        check(False, f"GetConnection of an unknown id: expected GoneException, got {e}")
    expect_error(
        lambda: client.post_to_connection(ConnectionId="not-an-id", Data=b"x"),
        400,
        "BadRequestException",
        "PostToConnection to a malformed id",
    )

    # DeleteConnection.
    resp = client.delete_connection(ConnectionId=conn_id)
    check(status_of(resp) == 204, f"DeleteConnection status {status_of(resp)}")

    # After the delete: GoneException, mapped to the modelled exception class.
    deadline = time.monotonic() + 3
    while True:
        try:
            client.post_to_connection(ConnectionId=conn_id, Data=b"after delete")
            if time.monotonic() > deadline:
                check(False, "PostToConnection after DeleteConnection still succeeds")
                break
            time.sleep(0.05)
        except client.exceptions.GoneException as e:
            check(
                e.response["Error"]["Code"] == "GoneException",
                f"GoneException code {e.response['Error']!r}",
            )
            break
        except ClientError as e:
            check(False, f"PostToConnection after delete: expected GoneException, got {e}")
            break
    for name, call in [
        ("GetConnection", lambda: client.get_connection(ConnectionId=conn_id)),
        ("DeleteConnection", lambda: client.delete_connection(ConnectionId=conn_id)),
    ]:
        try:
            call()
            check(False, f"{name} after DeleteConnection succeeded")
        except client.exceptions.GoneException:
            pass
        except ClientError as e:
            check(False, f"{name} after delete: expected GoneException, got {e}")


def mode_forbidden(client, args):
    conn_id = args.id
    calls = [
        ("PostToConnection", lambda: client.post_to_connection(ConnectionId=conn_id, Data=args.message.encode())),
        ("GetConnection", lambda: client.get_connection(ConnectionId=conn_id)),
        ("DeleteConnection", lambda: client.delete_connection(ConnectionId=conn_id)),
    ]
    for name, call in calls:
        expect_error(call, 403, "ForbiddenException", f"{name} with wrong credentials")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True, help="management URL with the stage")
    p.add_argument("--id", required=True, help="a live connection id")
    p.add_argument("--mode", required=True, choices=["ok", "forbidden"])
    p.add_argument("--message", default="hello from boto3")
    p.add_argument("--access-key", default="AKIDEXAMPLE")
    p.add_argument("--secret-key", default="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    p.add_argument("--region", default="us-east-1")
    p.add_argument("--user-agent", default=None, help="the client's User-Agent (None: absent)")
    p.add_argument("--ca", default=None, help="PEM CA bundle for an https:// --url")
    p.add_argument("--not-before-ms", type=int, default=0, help="the test's start, ms since the epoch")
    args = p.parse_args()

    client = client_for(args)
    try:
        if args.mode == "ok":
            mode_ok(client, args)
        else:
            mode_forbidden(client, args)
    except (ClientError, botocore.exceptions.BotoCoreError) as e:
        FAILURES.append(f"unexpected SDK error: {e!r}")
        print(f"MISMATCH: unexpected SDK error: {e!r}", file=sys.stderr)

    if FAILURES:
        print(f"management_sdk.py ({args.mode}): {len(FAILURES)} mismatch(es):", file=sys.stderr)
        for f in FAILURES:
            print(f"  - {f}", file=sys.stderr)
        return 1
    print(f"management_sdk.py ({args.mode}): ok (boto3 {boto3.__version__}, botocore {botocore.__version__})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
