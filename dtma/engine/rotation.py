"""Secret rotation: re-read values and replace exactly the servers whose values changed, one at a
time, start-first and gated (Nomad's change_mode = restart)."""

from __future__ import annotations

from dtma.domain.gate import GateState
from dtma.engine import event_kinds as ev
from dtma.engine.gating import hold_gate, new_tracker
from dtma.engine.rollout import FAILED, SUCCEEDED
from dtma.engine.toolbox_runner import ToolboxRunner


async def refresh_secrets(tb: ToolboxRunner) -> tuple[str, str | None]:
    """Re-read every server's secrets; roll exactly the servers whose values changed, one at a
    time, start-first and gated (Nomad's change_mode = restart). Caller holds tb.lock."""
    if tb.secrets is None or tb.spec is None or tb.revision is None:
        return SUCCEEDED, None
    spec, revision = tb.spec, tb.revision
    changed = []
    for runner in list(tb.servers.values()):
        if runner.spec.secrets:
            resolved = await tb.secrets.resolve(runner.spec)  # SecretsError: fail closed
            if resolved.fingerprint != runner.container.secrets_hash:
                changed.append(runner)
    await tb.emit(
        ev.SECRETS_CHECKED,
        revision=revision,
        message=f"{len(changed)} server(s) with changed values: "
        f"{', '.join(r.name for r in changed) or 'none'}",
    )
    for old in changed:
        async with tb.admission.hold():
            new_container = await tb.create_container(old.spec, revision, spec)
        new = tb.new_runner(
            old.spec, revision, new_container, fresh=True, spec=spec, restarts=old.restarts + 1
        )
        tracker = new_tracker(tb, spec, only=[old.name])
        tb.gate_runners = {old.name: new}
        try:
            decision = await hold_gate(tb, {old.name: new}, tracker)
        finally:
            tb.gate_runners = {}
        if decision.state is not GateState.PASSED:
            await new.remove()
            await tb.emit(
                ev.SECRETS_ROTATION_FAILED,
                server=old.name,
                revision=revision,
                reason=decision.reason,
                message=decision.detail,
            )
            return FAILED, f"{old.name}: {decision.reason}: {decision.detail}"
        await old.remove()
        tb.servers[old.name] = new
        new.start_steady()
        await tb.emit(
            ev.SECRETS_ROTATED,
            server=old.name,
            revision=revision,
            message=f"container {new_container.id[:12]} replaces {old.container.id[:12]}",
        )
    return SUCCEEDED, None
