"""schemathesis hooks for scripts/fuzz-api.

Three adjustments to what is sent, each for a rule no JSON Schema can state
or a habit of the tool:

- A valid `Idempotency-Key` is made unique per request. The generator draws
  short keys ("0", "A") again and again; the server rightly answers a key
  reused for another body 422 `idempotency_key_reused`, which is not what a
  schema-valid request is about. Invalid keys are left alone (negative tests).
- Integral floats in JSON bodies (`1.0`) are sent as integers. JSON Schema
  counts `1.0` as an `integer`; the server's serde does not (400).
- A `device_id` a stateful link drew from a null field ("None") is the
  run's own device instead.
"""

import os
import re
import uuid

import schemathesis

VALID_KEY = re.compile(r"^[!-~](?:[\t -~]{0,253}[!-~])?$")


def _integral(value):
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    if isinstance(value, list):
        return [_integral(v) for v in value]
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    return value


@schemathesis.hook
def before_call(context, case, kwargs):
    headers = case.headers or {}
    for name, value in list(headers.items()):
        if name.lower() == "idempotency-key" and isinstance(value, str) and VALID_KEY.match(value):
            headers[name] = f"fuzz-{uuid.uuid4()}"
    if isinstance(case.body, (dict, list)):
        case.body = _integral(case.body)
    _no_none(case.path_parameters)


def _no_none(path_parameters):
    # A stateful link from `GET /api/me` to `/api/devices/{device_id}` takes
    # the `device` of a user token, which is null: Python's "None" is no id.
    # The run's own device stands in.
    for name, value in list((path_parameters or {}).items()):
        if str(value) == "None" and name == "device_id":
            path_parameters[name] = os.environ["FUZZ_DEVICE"]
