"""Checks Lambda Invoke API requests as wsgate signed them, with botocore's own
SigV4Auth (an implementation independent of wsgate's), for tests/integration/lambda.rs.

Usage: lambda_sigv4.py CASES.json
CASES.json: a list of {method, host, target, headers: [[name, value]...], body,
key, secret, token (or null), region}. Each request's signed headers are handed to
botocore with the request's X-Amz-Date as its clock; botocore computes the
Authorization header for service `lambda`, which must equal the one wsgate sent.
Prints "ok N" or exits 1 naming the first mismatch.
"""
import json
import sys

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials


def main():
    cases = json.load(open(sys.argv[1]))
    for i, c in enumerate(cases):
        headers = {k.lower(): v for k, v in c["headers"]}
        sent = headers["authorization"]
        signed = sent.split("SignedHeaders=")[1].split(",")[0].split(";")
        amz_date = headers["x-amz-date"]
        # Only what wsgate signed (botocore signs every header it is given); `host`
        # comes from the URL, as botocore does.
        give = {k: v for k, v in headers.items() if k in signed and k != "host"}
        req = AWSRequest(
            method=c["method"],
            url="http://" + c["host"] + c["target"],
            data=c["body"].encode(),
            headers=give,
        )
        req.context["timestamp"] = amz_date
        auth = SigV4Auth(
            Credentials(c["key"], c["secret"], c["token"]), "lambda", c["region"]
        )
        canonical = auth.canonical_request(req)
        sts = auth.string_to_sign(req, canonical)
        signature = auth.signature(sts, req)
        expected = "AWS4-HMAC-SHA256 Credential=%s, SignedHeaders=%s, Signature=%s" % (
            auth.scope(req),
            auth.signed_headers(auth.headers_to_sign(req)),
            signature,
        )
        if expected != sent:
            print("case %d: botocore computes\n  %s\nwsgate sent\n  %s\ncanonical request:\n%s"
                  % (i, expected, sent, canonical))
            sys.exit(1)
    print("ok %d" % len(cases))


main()
