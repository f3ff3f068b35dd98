"""The spec, API and heartbeat models build their validators on first use, not at import
(`defer_build` on their base classes; docs/benchmarks.md, "Idle agent"). Read in a fresh
interpreter that imports what `dtma serve` imports (and adds the route of the OpenAPI document,
which builds every API model when it is built), since other tests here have used the models.
The positive case too: the first validation builds the model."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

PROBE = textwrap.dedent(
    """
    import json, sys
    import pydantic
    from aiohttp import web
    import dtma.bootstrap, dtma.cli
    from dtma.api.routes_agent import add_agent_routes
    from dtma.spec.models import ToolboxSpec

    def models(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from models(sub)

    def built():
        return sorted(
            f"{m.__module__}.{m.__qualname__}"
            for m in set(models(pydantic.BaseModel))
            if m.__module__.startswith("dtma.") and m.__pydantic_complete__
        )

    add_agent_routes(web.Application())  # the OpenAPI document is built on its first GET
    before = built()
    ToolboxSpec.model_validate({"servers": [{"name": "a", "image": "busybox:1"}]})
    json.dump({"before": before, "after": built()}, sys.stdout)
    """
)

# Built at import on purpose: Settings is validated at start anyway; the rest are field
# defaults (a default instance builds its model) or have a config of their own.
BUILT_AT_IMPORT = {
    "dtma.config.Settings",
    "dtma.domain.oauth.OAuthIssuer",
    "dtma.api.schemas_heartbeat.HeartbeatAnswer",
    "dtma.spec.models.Resources",
    "dtma.spec.models.Health",
    "dtma.spec.models.Rollout",
    "dtma.spec.models.Restart",
    "dtma.spec.models.NetworkSpec",
    "dtma.spec.models.ToolFilter",
}


def test_models_are_built_on_first_use_not_at_import() -> None:
    run = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=True
    )
    seen = json.loads(run.stdout)
    assert set(seen["before"]) <= BUILT_AT_IMPORT
    assert "dtma.spec.models.ToolboxSpec" in seen["after"]
