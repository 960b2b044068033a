"""schemathesis hooks for scripts/check-api: sign `POST /offboard` as a calling system does.

run-local's handler has WEBHOOK_HMAC_SECRET, so an unsigned offboard request is 401 and the
tester would never reach the API behind it. This hook signs each request's body exactly as it
goes on the wire (`X-Signature: sha256=<hex HMAC-SHA256(key, "<timestamp>.<body>")>`,
`X-Signature-Timestamp`), with the key run-local wrote to its ready file
(RUN_LOCAL_WEBHOOK_KEY). Cases that carry no JSON object body stay unsigned (and are 401 or
400, both documented).
"""

import hashlib
import hmac
import json
import os
import time

import schemathesis

KEY = os.environ.get("RUN_LOCAL_WEBHOOK_KEY", "").encode()


@schemathesis.hook
def before_call(context, case, kwargs):
    if not KEY or case.operation.method.upper() != "POST" or case.operation.path != "/offboard":
        return
    if not isinstance(case.body, dict):
        return
    # The bytes requests sends for a `json=` body: json.dumps(body, allow_nan=False) in UTF-8.
    raw = json.dumps(case.body, allow_nan=False).encode("utf-8")
    ts = str(int(time.time()))
    digest = hmac.new(KEY, ts.encode() + b"." + raw, hashlib.sha256).hexdigest()
    headers = dict(case.headers or {})
    headers["X-Signature"] = f"sha256={digest}"
    headers["X-Signature-Timestamp"] = ts
    case.headers = headers
