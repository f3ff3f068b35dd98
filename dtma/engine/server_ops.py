"""The stop, start and restart operations on some or all of a toolbox's serving servers.

A start or restart recreates the container (secrets are read afresh before every create)
through the executor's start path (engine/start_gate.start_container: admission, image, create),
then supervises it. Every function runs under tb.lock, inside an operation.
"""

from __future__ import annotations

from dtma.engine import event_kinds as ev
from dtma.engine.server_runner import ServerRunner
from dtma.engine.start_gate import start_container
from dtma.engine.toolbox_runner import ToolboxRunner
from dtma.errors import DtmaError


async def stop_servers(tb: ToolboxRunner, names: list[str] | None) -> tuple[str, str | None]:
    for runner in _select(tb, names):
        await tb.stop_server(runner)
    await tb.set_stopped(all(r.state == "stopped" for r in tb.servers.values()))
    return "succeeded", None


async def start_servers(tb: ToolboxRunner, names: list[str] | None) -> tuple[str, str | None]:
    for runner in _select(tb, names):
        if runner.state == "running":
            continue
        await _replace(tb, runner, reason="started")
    await tb.set_stopped(False)
    return "succeeded", None


async def restart_servers(tb: ToolboxRunner, names: list[str] | None) -> tuple[str, str | None]:
    for runner in _select(tb, names):
        await _replace(tb, runner, reason="restart requested")
    await tb.set_stopped(False)
    return "succeeded", None


async def _replace(tb: ToolboxRunner, runner: ServerRunner, reason: str) -> None:
    """Recreate one server's container (fresh secrets on create), then supervise it."""
    assert tb.spec is not None
    assert tb.revision is not None
    history = runner.restart_history  # an asked-for restart does not refill the budget
    # Write-ahead: a kill -9 between the remove and the new runner keeps the count.
    await tb.save_restarts(
        runner.name, tb.revision, runner.restarts + 1, history, False, pending=True
    )
    await runner.remove()
    try:
        container = await start_container(tb, runner.spec, tb.revision, tb.spec, None)
    except Exception:
        # The old container is gone and no new one runs: the server is failed (the toolbox
        # degraded), and the restart it was counted for did happen (attempted), not pending.
        runner.mark_failed()
        await tb.save_restarts(runner.name, tb.revision, runner.restarts, history, False)
        raise
    fresh = tb.new_runner(
        runner.spec,
        tb.revision,
        container,
        fresh=True,
        spec=tb.spec,
        restarts=runner.restarts + 1,
        history=history,
    )
    tb.replace_server(fresh)
    await fresh.save_restarts()
    await tb.emit(
        ev.SERVER_RESTARTED,
        server=runner.name,
        revision=tb.revision,
        reason=reason,
        message=f"container {container.id[:12]}",
    )
    fresh.start_steady()


def _select(tb: ToolboxRunner, names: list[str] | None) -> list[ServerRunner]:
    if not names:
        return list(tb.servers.values())
    unknown = sorted(set(names) - set(tb.servers))
    if unknown:
        raise DtmaError(f"unknown servers: {', '.join(unknown)}")
    return [tb.servers[n] for n in names]
