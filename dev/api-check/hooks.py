"""schemathesis hooks for scripts/check-api: sign `POST /offboard` as a calling system does.

Unsigned offboard requests are 401 (design §9.1), so the tester would never reach the API
behind the signature check. This hook signs each request's body exactly as it goes on the
wire (`X-Signature: sha256=<hex HMAC-SHA256(key, "<timestamp>.<body>")>`,
`X-Signature-Timestamp`) as the caller run-local registered (`X-Caller-Id`), with the caller
id and key run-local wrote to its ready file (RUN_LOCAL_CALLER_ID, RUN_LOCAL_WEBHOOK_KEY). Cases that carry no JSON object body stay unsigned (and are 401 or
400, both documented).
"""

import hashlib
import hmac
import json
import os
import time

import schemathesis

KEY = os.environ.get("RUN_LOCAL_WEBHOOK_KEY", "").encode()
CALLER = os.environ.get("RUN_LOCAL_CALLER_ID", "")


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
    if CALLER:
        headers["X-Caller-Id"] = CALLER
    case.headers = headers
