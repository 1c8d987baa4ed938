#!/usr/bin/env python3
"""Cross-tenant authorization check of scripts/schemathesis (stdlib only).

Usage: authz.py BASE_URL IDS_JSON

IDS_JSON names two tenants, `a` and `b`, each with `tenant`, `key` (a tenant API key),
`key_id`, `runs`, `campaigns`, `dead_letters`. Every protected operation of the served
openapi.json (an operation without `security: [{}]`, i.e. not public) is called:

- with a path naming B's things (B's tenant id, B's run ids, campaign ids, api-key ids),
  with A's key: it must answer 404 (a tenant key learns nothing, not even that B exists);
  with no key: 401.
- operations without a path parameter of B's, with A's key (a `tenant`/`tenant_id` query
  parameter set to B's id must answer 404; without one, a 2xx answer must not mention any of
  B's ids);
- A dismissing B's dead-letter ids through A's own tenant must dismiss nothing.

Afterwards B must be as it was: its tenant unchanged, its key still valid, its runs not
cancelled, its dead letters unresolved. The operations come from the document, so a new
endpoint is covered without editing this file; a path parameter of an unknown kind fails the
check (say here which id it takes). Exit 0 when everything held, 1 otherwise.
"""

import json
import sys
import urllib.error
import urllib.request

BASE, IDS_FILE = sys.argv[1].rstrip("/"), sys.argv[2]
with open(IDS_FILE, encoding="utf-8") as f:
    IDS = json.load(f)
A, B = IDS["a"], IDS["b"]

# The path segment before a parameter -> B's value for it.
B_BY_SEGMENT = {
    "tenants": [B["tenant"]],
    "runs": [str(r) for r in B["runs"]],
    "campaigns": B["campaigns"],
    "api-keys": [B["key_id"]],
}
# Query parameters that name a tenant.
TENANT_QUERY = {"tenant", "tenant_id"}

failures = []
calls = 0


def call(method, path, key=None, body=None):
    global calls
    calls += 1
    data = None
    headers = {"Accept": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(BASE + path, data=data, method=method.upper(), headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


def fail(message):
    failures.append(message)
    print(f"  FAIL {message}")


def body_for(spec, schema, depth=0):
    """A minimal valid value of `schema` (required fields only), so that a request is not
    refused for its body before the tenant is checked."""
    if depth > 8 or not isinstance(schema, dict):
        return None
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return body_for(spec, spec["components"]["schemas"][name], depth + 1)
    for combo in ("oneOf", "anyOf", "allOf"):
        if combo in schema:
            options = [s for s in schema[combo] if s.get("type") != "null"]
            return body_for(spec, options[0] if options else {}, depth + 1)
    if "example" in schema:
        return schema["example"]
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        return {
            name: body_for(spec, props.get(name, {}), depth + 1)
            for name in schema.get("required", [])
        }
    if kind == "array":
        return [body_for(spec, schema.get("items", {}), depth + 1)]
    if kind == "integer":
        return max(1, schema.get("minimum", 1))
    if kind == "number":
        return 1
    if kind == "boolean":
        return True
    if kind == "string":
        fmt = schema.get("format", "")
        return {"email": "authz@example.com", "uri": "http://127.0.0.1:9/"}.get(fmt, "authz")
    return None


# Bodies the minimal one would not make valid (a dismissal needs ids or all).
BODY_BY_OPERATION = {
    "dismiss_dead_letters": {"all": True},
}


def request_body(spec, op):
    if "requestBody" not in op:
        return None
    if op.get("operationId") in BODY_BY_OPERATION:
        return BODY_BY_OPERATION[op["operationId"]]
    content = op["requestBody"].get("content", {})
    schema = content.get("application/json", {}).get("schema", {})
    return body_for(spec, schema) or {}


def fill(path, values):
    """`path` with each parameter replaced by values[kind]; None when a parameter is of an
    unknown kind."""
    segments = path.split("/")
    out = []
    for i, seg in enumerate(segments):
        if seg.startswith("{") and seg.endswith("}"):
            choices = values.get(segments[i - 1])
            if not choices:
                return None
            out.append(urllib.request.quote(str(choices), safe=""))
        else:
            out.append(seg)
    return "/".join(out)


def variants(path):
    """Every filling of `path`'s parameters with one of B's ids each (all of B's run ids,
    campaign ids...), bounded."""
    segs = path.split("/")
    params = [(i, segs[i - 1]) for i, s in enumerate(segs) if s.startswith("{")]
    if any(not B_BY_SEGMENT.get(kind) for _, kind in params):
        return None
    combos = [{}]
    for _, kind in params:
        combos = [dict(c, **{kind: v}) for c in combos for v in B_BY_SEGMENT[kind][:5]]
    return [fill(path, c) for c in combos]


def snapshot():
    """What must not change about B."""
    tenant = call("get", f"/api/v1/tenants/{B['tenant']}", B["key"])
    keys = call("get", f"/api/v1/tenants/{B['tenant']}/api-keys", B["key"])
    runs = call("get", f"/api/v1/tenants/{B['tenant']}/runs?limit=200", B["key"])
    letters = call("get", f"/api/v1/tenants/{B['tenant']}/dead-letters", B["key"])
    for name, (status, _) in [("tenant", tenant), ("keys", keys), ("runs", runs), ("letters", letters)]:
        if status != 200:
            fail(f"B's key cannot read its own {name} ({status})")
    def strip(text, drop):
        try:
            value = json.loads(text)
        except ValueError:
            return text
        return json.dumps(value, sort_keys=True) if not drop else drop(value)
    return {
        "tenant": strip(tenant[1], lambda v: json.dumps(v, sort_keys=True)),
        "keys": strip(keys[1], lambda v: sorted((k["id"], k.get("revoked_at")) for k in v["data"])),
        "runs": strip(runs[1], lambda v: sorted((r["id"], r.get("cancel_requested_at")) for r in v["data"])),
        "letters": strip(letters[1], lambda v: sorted(d["id"] for d in v["data"])),
    }


def main():
    status, text = call("get", "/api/v1/openapi.json")
    if status != 200:
        print(f"authz: openapi.json answered {status}")
        return 1
    spec = json.loads(text)
    default_security = spec.get("security", [])
    before = snapshot()
    operations = 0
    b_ids = {B["tenant"], B["key_id"], *B["campaigns"]}

    for path, item in sorted(spec["paths"].items()):
        for method, op in item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            security = op.get("security", default_security)
            if not security or all(not s for s in security):
                continue  # public
            operations += 1
            failed_before = len(failures)
            body = request_body(spec, op)
            label = f"{method.upper()} {path}"
            query = [p["name"] for p in op.get("parameters", []) if p.get("in") == "query"]
            if "{" in path:
                filled = variants(path)
                if filled is None:
                    fail(f"{label}: a path parameter of unknown kind; tell authz.py which id it takes")
                    continue
                for p in filled:
                    status, text = call(method, p, A["key"], body)
                    if status != 404:
                        fail(f"{label} as {p} with A's key: {status} (want 404): {text[:200]}")
                    status, _ = call(method, p, None, body)
                    if status != 401:
                        fail(f"{label} as {p} without a key: {status} (want 401)")
            else:
                status, _ = call(method, path, None, body)
                if status != 401:
                    fail(f"{label} without a key: {status} (want 401)")
                for name in query:
                    if name in TENANT_QUERY:
                        q = f"{path}?{name}={urllib.request.quote(B['tenant'])}"
                        status, text = call(method, q, A["key"], body)
                        if status != 404:
                            fail(f"{label}?{name}=B with A's key: {status} (want 404): {text[:200]}")
                if method == "get":
                    status, text = call(method, path, A["key"])
                    if 200 <= status < 300:
                        leaked = sorted(i for i in b_ids if i and i in text)
                        if leaked:
                            fail(f"{label} with A's key mentions B's {leaked}")
                    elif not 400 <= status < 500:
                        fail(f"{label} with A's key: {status} (want 2xx or 4xx)")
            if len(failures) == failed_before:
                print(f"  ok   {label}")

    if B["dead_letters"]:
        status, text = call(
            "post", f"/api/v1/tenants/{A['tenant']}/dead-letters/dismiss", A["key"],
            {"ids": B["dead_letters"]},
        )
        if status != 200 or json.loads(text).get("dismissed") != 0:
            fail(f"A dismissing B's dead letters through A's tenant: {status} {text[:200]}")
    else:
        fail("B has no dead letters to try (the setup should have made some)")

    after = snapshot()
    for what in before:
        if before[what] != after[what]:
            fail(f"B's {what} changed during the check: {before[what]} -> {after[what]}")

    print(f"authz: {operations} protected operations, {calls} requests, {len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
