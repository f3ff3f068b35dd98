"""A server's restart is counted in the state DB before its old container goes (a write-ahead,
`pending`), so a kill -9 of the agent at any moment of the restart keeps the count and the
budget; the write-ahead is settled once the replacement runs, or undone if it cannot start."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from dtma.domain.containers import ObservedContainer
from dtma.engine.engine_watch import EngineWatch
from dtma.engine.probes import ContainerProbe
from dtma.engine.server_runner import ServerRunner
from dtma.engine.supervisor import Supervisor
from dtma.errors import DockerError
from dtma.spec.models import Restart, ServerSpec
from tests.fakes import FakeEnginePing
from tests.unit.test_gateway_drain import BlockingProbe, Host


def _container(cid: str) -> ObservedContainer:
    return ObservedContainer(
        cid, f"dtma-tb-time-r1-{cid}", "tb", "time", 1, "h", "running", None, None, None, ""
    )


class RecordingHost(Host):
    """Records every saved (restarts, pending) and what was saved when a create began."""

    def __init__(self, failures: int = 0) -> None:
        super().__init__()
        self.saved: list[tuple[int, bool]] = []
        self.at_create: list[list[tuple[int, bool]]] = []
        self.failures = failures

    async def create_container(self, server: ServerSpec, revision: int) -> ObservedContainer:
        self.at_create.append(list(self.saved))
        if self.failures:
            self.failures -= 1
            raise DockerError("no such image")
        return _container(f"c{len(self.at_create) + 1}")

    async def save_restarts(
        self,
        server: str,
        revision: int,
        restarts: int,
        history: Sequence[float],
        gave_up: bool,
        pending: bool = False,
    ) -> None:
        self.saved.append((restarts, pending))


def _runner(host: RecordingHost) -> ServerRunner:
    return ServerRunner(
        host,
        ServerSpec(name="time", image="i"),
        1,
        _container("c1"),
        fresh=False,
        restart_policy=Restart(attempts=5, delay=0.1, max_delay=0.1),
        probe_factory=lambda *_: cast(ContainerProbe, BlockingProbe()),
        clock=lambda: 0.0,
        supervisor=Supervisor(),
        engine=EngineWatch(FakeEnginePing()),
    )


async def test_the_restart_is_saved_before_the_old_container_is_removed() -> None:
    host = RecordingHost()
    runner = _runner(host)
    await runner._on_failure("server_crashed", "exited", "exit 137")
    assert host.removed == ["c1"]
    assert host.at_create == [[(1, True)]]  # counted before anything was touched
    assert host.saved == [(1, True), (1, False)]  # then settled
    assert (runner.restarts, runner.container.id, runner.state) == (1, "c2", "running")


async def test_a_replacement_that_cannot_start_undoes_its_count() -> None:
    host = RecordingHost(failures=1)
    runner = _runner(host)
    await runner._on_failure("server_crashed", "exited", "exit 137")
    assert host.saved == [(1, True), (0, False), (1, True), (1, False)]
    assert runner.restarts == 1
