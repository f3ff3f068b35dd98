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
