"""Secret rotation: re-read values and replace exactly the servers whose values changed, one at a
time, start-first and gated (Nomad's change_mode = restart). Planned by
domain/rollout_plan.plan_rotation, run by engine/executor.rotate_server."""

from __future__ import annotations

from dtma.domain.rollout_plan import FAILED, SUCCEEDED, plan_rotation
from dtma.engine import event_kinds as ev
from dtma.engine.executor import rotate_server
from dtma.engine.toolbox_runner import ToolboxRunner


async def refresh_secrets(tb: ToolboxRunner) -> tuple[str, str | None]:
    """Re-read every server's secrets; roll exactly the servers whose values changed, one at a
    time, start-first and gated. The first failure stops the rotation. Caller holds tb.lock."""
    if tb.secrets is None or tb.spec is None or tb.revision is None:
        return SUCCEEDED, None
    revision = tb.revision
    changed = []
    for runner in list(tb.servers.values()):
        if runner.spec.secrets:
            resolved = await tb.secrets.resolve(runner.spec)  # SecretsError: fail closed
            if resolved.fingerprint != runner.container.secrets_hash:
                changed.append(runner.name)
    await tb.emit(
        ev.SECRETS_CHECKED,
        revision=revision,
        message=f"{len(changed)} server(s) with changed values: {', '.join(changed) or 'none'}",
    )
    for step in plan_rotation(changed, revision):
        failure = await rotate_server(tb, step)
        if failure is not None:
            return FAILED, failure
    return SUCCEEDED, None
