"""The stop, start and restart operations on some or all of a toolbox's serving servers.

A start or restart recreates the container (secrets are read afresh before every create)
through the executor's start path (engine/start_gate.start_container: admission, image, create),
then supervises it. Every function runs under tb.lock, inside an operation.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from dtma.engine import event_kinds as ev
from dtma.engine.server_runner import ServerRunner
from dtma.engine.start_gate import start_container
from dtma.engine.toolbox_runner import ToolboxRunner
from dtma.errors import DockerUnavailable, DtmaError


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


async def restart_servers(
    tb: ToolboxRunner, names: list[str] | None, began: dict[str, str] | None = None
) -> tuple[str, str | None]:
    """Restart each selected server once per operation. `began` (kept by the caller across the
    runs of one operation: an engine fault runs it again) maps each server to the container it
    had when the operation first ran. On a run again, a server whose container has changed
    since (this operation replaced it before the engine went, or the pass on the engine's
    return did) or whose replacement is under way (that pass's, which a restart here would cut
    short) has had its restart; one the pass only re-attached is restarted now."""
    began = {} if began is None else began
    again = bool(began)
    selected = _select(tb, names)
    for runner in selected:
        began.setdefault(runner.name, runner.container.id)
    for runner in selected:
        if again and (runner.container.id != began[runner.name] or runner.restarting):
            continue
        await _replace(tb, runner, reason="restart requested")
    await tb.set_stopped(False)
    return "succeeded", None


def server_work(
    kind: str, tb: ToolboxRunner, names: list[str] | None
) -> Callable[[], Awaitable[tuple[str, str | None]]]:
    """The work of one stop, start or restart operation. Each may be run again after an engine
    fault (engine_return.run_through_engine_faults); stop and start are idempotent as they are,
    and a restart remembers what it restarted."""
    if kind == "restart":
        began: dict[str, str] = {}
        return lambda: restart_servers(tb, names, began)
    work = {"stop": stop_servers, "start": start_servers}[kind]
    return lambda: work(tb, names)


async def _replace(tb: ToolboxRunner, runner: ServerRunner, reason: str) -> None:
    """Recreate one server's container (fresh secrets on create), then supervise it."""
    assert tb.spec is not None
    assert tb.revision is not None
    history = runner.restart_history  # an asked-for restart does not refill the budget
    epoch = tb.engine.epoch
    # Write-ahead: a kill -9 between the remove and the new runner keeps the count.
    await tb.save_restarts(
        runner.name, tb.revision, runner.restarts + 1, history, False, pending=True
    )
    try:
        await runner.remove()
        container = await start_container(tb, runner.spec, tb.revision, tb.spec, None)
    except Exception as exc:
        if isinstance(exc, DockerUnavailable) and not await tb.engine.confirm(epoch):
            # The engine went away under this restart: no attempt of the server's. The
            # write-ahead is taken back; the pass on the engine's return restarts what has no
            # container, and the operation, run again, does not restart it twice.
            await tb.save_restarts(runner.name, tb.revision, runner.restarts, history, False)
            raise
        if runner.state != "removed":
            # remove() failed: the old container is still there and no restart happened.
            await tb.save_restarts(runner.name, tb.revision, runner.restarts, history, False)
            raise
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
