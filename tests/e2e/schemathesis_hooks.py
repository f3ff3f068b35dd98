"""schemathesis hooks for test_openapi_fuzz.py, loaded by the schemathesis CLI (not by pytest).

The guard: every server in a generated PUT body gets one more secret. The agent under test has
no Vault, so a spec that passes every other rule is still refused (422, "no Vault configured")
and nothing is ever deployed: thousands of generated specs must not become Docker networks and
containers on a shared engine. The added secret is itself schema-valid, so a positive case stays
positive. The test checks afterwards that no toolbox exists.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from schemathesis.core.parameters import ParameterLocation

GUARD_SECRET = {
    "name": "DTMA_SCHEMATHESIS_GUARD",
    "vault": {"mount": "secret", "path": "schemathesis", "key": "guard"},
}


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    if case.method.upper() != "PUT" or not isinstance(case.body, dict):
        return
    servers = case.body.get("servers")
    if not isinstance(servers, list):
        return
    for server in servers:
        if isinstance(server, dict):
            secrets = server.setdefault("secrets", [])
            if isinstance(secrets, list):
                secrets.append(dict(GUARD_SECRET))


GUARD_MESSAGE = "this agent has no Vault configured"


@schemathesis.check
def schema_invalid_spec_refused_by_its_own_fault(ctx: Any, response: Any, case: Any) -> bool | None:
    """The guard must not hide a lax validator: a schema-invalid spec has to be refused for
    what is wrong with it, not only because of the guard's secret."""
    meta = case.meta
    if case.method.upper() != "PUT" or meta is None:
        return None
    if not meta.is_negative_at(ParameterLocation.BODY):
        return None  # e.g. an unknown extra header: not the spec's fault
    if response.status_code != 422:
        return None
    details = response.json().get("error", {}).get("details", [])
    if details and all(str(d.get("msg", "")).startswith(GUARD_MESSAGE) for d in details):
        raise AssertionError(
            "a schema-invalid spec passed the agent's validation; only the guard's secret "
            "(no Vault) refused it"
        )
    return None
