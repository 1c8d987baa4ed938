"""Schemathesis hooks of scripts/schemathesis: make generated requests hit real ids sometimes.

Random strings in `{id}`, `{key_id}`, `{campaign_id}` only ever reach the 404 branch. The
script writes the ids it created (tenants, runs, campaigns, api keys, dead letters) to the
JSON file named by ADSYNC_ST_IDS; here about half of the generated path parameters are swapped
for one of them, picked by the path segment before the parameter (`/tenants/{id}` takes a
tenant id, `/runs/{id}` a run id), and a dismiss body's `ids` sometimes holds real dead-letter
ids. Loaded by schemathesis through SCHEMATHESIS_HOOKS=hooks (with this folder on PYTHONPATH).
"""

import json
import os

import schemathesis
from hypothesis import strategies as st

with open(os.environ["ADSYNC_ST_IDS"], encoding="utf-8") as f:
    IDS = json.load(f)

# The path segment before a parameter -> which kind of id it takes.
KIND_BY_SEGMENT = {
    "tenants": "tenant",
    "runs": "run",
    "campaigns": "campaign",
    "api-keys": "api_key",
}


def _kinds(path):
    """{param: kind} for the parameters of `path` whose kind is known."""
    kinds = {}
    segments = path.strip("/").split("/")
    for i, seg in enumerate(segments):
        if seg.startswith("{") and seg.endswith("}") and i > 0:
            kind = KIND_BY_SEGMENT.get(segments[i - 1])
            if kind and IDS.get(kind):
                kinds[seg[1:-1]] = kind
    return kinds


def _maybe_real(value, kind):
    return st.one_of(st.just(value), st.sampled_from(IDS[kind]))


@schemathesis.hook
def flatmap_path_parameters(context, path_parameters):
    # Each known parameter is swapped for a real id about half the time, independently (so a
    # real tenant id also meets a random key id, and the other way around).
    op = context.operation
    kinds = _kinds(op.path) if op is not None else {}
    if not kinds or not path_parameters:
        return st.just(path_parameters)
    return st.fixed_dictionaries(
        {
            name: _maybe_real(value, kinds[name]) if name in kinds else st.just(value)
            for name, value in path_parameters.items()
        }
    )


@schemathesis.hook
def before_call(context, case, kwargs):
    # The caller must not revoke its own key halfway through the run (the stateful phase
    # finds key ids in list answers): that key id becomes one that does not exist.
    keep = os.environ.get("ADSYNC_ST_KEEP_KEY_ID")
    params = case.path_parameters or {}
    if keep and case.method.upper() == "DELETE" and params.get("key_id") == keep:
        params["key_id"] = keep + "_not"


@schemathesis.hook
def flatmap_body(context, body):
    op = context.operation
    if op is None or not op.path.endswith("/dead-letters/dismiss") or not IDS.get("dead_letter"):
        return st.just(body)
    real = st.fixed_dictionaries(
        {"ids": st.lists(st.sampled_from(IDS["dead_letter"]), min_size=1, max_size=3)}
    )
    return st.one_of(st.just(body), real)
