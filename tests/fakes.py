"""Hand-written fakes for unit tests of pure logic and of the engine's decisions (the ports in
dtma/ports.py). Typed, no mock library. The state store's fake is in tests/fake_store.py; the
virtual-time event loop the engine tests run on is in tests/virtual_time.py."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from dtma.domain import probe as probe_reasons
from dtma.domain.containers import (
    LABEL_REVISION,
    LABEL_SECRETS_HASH,
    LABEL_SERVER,
    LABEL_SPEC_HASH,
    LABEL_TOOLBOX,
    ContainerRequest,
    ObservedContainer,
    ObservedNetwork,
)
from dtma.domain.probe import ProbeResult
from dtma.errors import (
    ContainerNotFound,
    DockerError,
    DockerUnavailable,
    ImageNotFound,
    IssuerUnavailable,
    SecretNotFound,
    ServerUnavailable,
    VaultUnavailable,
)
from dtma.spec.models import ServerSpec


class StaticReadiness:
    """Readiness with fixed reasons."""

    def __init__(self, reasons: list[str] | None = None) -> None:
        self.reasons = reasons or []

    def check(self) -> list[str]:
        return list(self.reasons)


class FakeEnginePing:
    """An engine that answers, or always fails when `up` is False (or when the FakeRuntime
    it follows has its daemon stopped)."""

    def __init__(self, up: bool = True, runtime: FakeRuntime | None = None) -> None:
        self.up = up
        self.runtime = runtime
        self.calls = 0

    async def ping(self) -> None:
        self.calls += 1
        if not self.up or (self.runtime is not None and self.runtime.down):
            raise DockerUnavailable("Docker engine unreachable: fake is down")


# -- clocks ----------------------------------------------------------------------------------


class ManualClock:
    """A Clock that moves only when told to."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# -- the container runtime -------------------------------------------------------------------


_STREAM_BREAK = "__stream_break__"


def _drain(queue: asyncio.Queue[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    while not queue.empty():
        out.append(queue.get_nowait())
    return out


class FakeRuntime:
    """A ContainerRuntime keeping containers and networks in dicts. Tell it what goes wrong:
    `missing_images` (ensure_image raises ImageNotFound), `create_fails[server]` (the next
    creates of that server raise it), `exit(container_id, code)` (the container exits now,
    and a Docker-shaped `die` event goes to `events()`)."""

    def __init__(self, agent_id: str = "fake") -> None:
        self.agent_id = agent_id
        self.containers: dict[str, ObservedContainer] = {}
        self.requests: dict[str, ContainerRequest] = {}
        self.networks: dict[str, ObservedNetwork] = {}
        self.missing_images: set[str] = set()
        self.create_fails: dict[str, BaseException] = {}
        self.start_fails: set[str] = set()
        self.create_hold: asyncio.Event | None = None  # the next create waits for it (once)
        self.output: dict[str, str] = {}  # container id -> its log tail
        self.created = 0
        self.removed: list[str] = []
        self._events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.down = False  # the daemon is stopped: every call raises DockerUnavailable

    async def ensure_network(self, toolbox: str, internal: bool, prefix: int) -> str:
        self._answer()
        name = f"dtma-{self.agent_id}-{toolbox}"
        self.networks.setdefault(toolbox, ObservedNetwork("n-" + name, name, toolbox, None))
        return name

    async def join_network(self, toolbox: str) -> None:
        self._answer()
        return None

    async def remove_network(self, toolbox: str, legacy: bool = True) -> None:
        self._answer()
        self.networks.pop(toolbox, None)

    async def list_networks(self) -> list[ObservedNetwork]:
        self._answer()
        return list(self.networks.values())

    async def engine_version(self) -> tuple[str, str]:
        self._answer()
        return "fake", "1.45"

    async def ensure_image(self, image: str) -> None:
        self._answer()
        if image in self.missing_images:
            raise ImageNotFound(f"image {image} not found")

    async def image_owner(self, image: str) -> tuple[int, int] | None:
        return None

    async def create_and_start(self, req: ContainerRequest) -> ObservedContainer:
        self._answer()
        if self.create_hold is not None:
            hold, self.create_hold = self.create_hold, None
            await hold.wait()
        server = req.labels[LABEL_SERVER]
        failure = self.create_fails.get(server)
        if failure is not None:
            raise failure
        if req.image in self.missing_images:
            raise ImageNotFound(f"image {req.image} not found")
        self.created += 1
        cid = f"{self.created:04d}" + secrets.token_hex(30)
        container = ObservedContainer(
            id=cid,
            name=req.name,
            toolbox=req.labels[LABEL_TOOLBOX],
            server=server,
            revision=int(req.labels[LABEL_REVISION]),
            spec_hash=req.labels[LABEL_SPEC_HASH],
            state="running",
            exit_code=None,
            ip=f"10.0.0.{self.created % 250 + 2}",
            host_port=None,
            started_at="now",
            secrets_hash=req.labels.get(LABEL_SECRETS_HASH, ""),
            agent=self.agent_id,
        )
        self.containers[cid] = container
        self.requests[cid] = req
        return container

    async def start(self, container_id: str) -> None:
        self._answer()
        c = self._get(container_id)
        if c.server in self.start_fails:
            raise DockerError(f"cannot start {c.name}")
        self.containers[container_id] = replace(c, state="running", exit_code=None)

    async def stop(self, container_id: str, timeout: int = 10) -> None:
        self._answer()
        if container_id not in self.containers:
            return  # as DockerRuntime.stop: a container already gone is stopped
        c = self._get(container_id)
        self.containers[container_id] = replace(c, state="exited", exit_code=0)

    async def remove(self, container_id: str) -> None:
        self._answer()
        if self.containers.pop(container_id, None) is not None:
            self.removed.append(container_id)

    async def inspect(self, container_id: str) -> ObservedContainer | None:
        self._answer()
        return self.containers.get(container_id)

    async def list_managed(
        self, toolbox: str | None = None, *, brief: bool = False
    ) -> list[ObservedContainer]:
        self._answer()
        # As the real runtime: ours and those made before agent ids, never another agent's.
        return [
            c
            for c in self.containers.values()
            if toolbox in (None, c.toolbox) and c.agent in (self.agent_id, "")
        ]

    async def logs(self, container_id: str, tail: int) -> str:
        self._answer()
        return "\n".join(self.output.get(container_id, "").splitlines()[-tail:])

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        self._answer()
        # A new connection: a break meant for an earlier one does not end this one.
        pending = [e for e in _drain(self._events) if not e.get(_STREAM_BREAK)]
        for event in pending:
            self._events.put_nowait(event)
        while True:
            event = await self._events.get()
            if event.get(_STREAM_BREAK):
                raise DockerError("Docker event stream ended: the daemon went away")
            yield event

    def _answer(self) -> None:
        if self.down:
            raise DockerUnavailable("Docker engine unreachable: the fake daemon is stopped")

    def _get(self, container_id: str) -> ObservedContainer:
        c = self.containers.get(container_id)
        if c is None:
            raise ContainerNotFound(f"no container {container_id[:12]}")
        return c

    # -- what a test makes happen -------------------------------------------------------------

    def exit(self, container_id: str, code: int = 1) -> None:
        """The container's process exits now (a crash, as Docker would report it)."""
        c = self._get(container_id)
        self.containers[container_id] = replace(c, state="exited", exit_code=code)
        self._events.put_nowait(
            {
                "Action": "die",
                "id": container_id,
                "Actor": {"Attributes": {LABEL_TOOLBOX: c.toolbox, "exitCode": str(code)}},
            }
        )

    def daemon_stops(self, *, live_restore: bool = False) -> None:
        """The daemon stops: its event stream ends and every call fails until daemon_starts().
        Without live_restore its containers exit (no die event: the stream went first)."""
        self.down = True
        self._events.put_nowait({_STREAM_BREAK: True})
        if not live_restore:
            for cid, c in list(self.containers.items()):
                if c.running:
                    self.containers[cid] = replace(c, state="exited", exit_code=143)

    def daemon_starts(self) -> None:
        self.down = False

    def add_container(self, container: ObservedContainer) -> None:
        """A container left by a previous agent process (for recovery)."""
        self.containers[container.id] = container

    def of(self, toolbox: str, *, revision: int | None = None) -> list[ObservedContainer]:
        return [
            c
            for c in self.containers.values()
            if c.toolbox == toolbox and revision in (None, c.revision)
        ]


# -- the prober ------------------------------------------------------------------------------

HEALTHY = ProbeResult.ok(1.0)
TIMEOUT = ProbeResult.failed(probe_reasons.TIMEOUT, 0.0, "no answer")


def unhealthy(reason: str = probe_reasons.CONNECT_FAILED, detail: str = "refused") -> ProbeResult:
    return ProbeResult.failed(reason, 1.0, detail)


class FakeProber:
    """A ProbeFactory whose answers a test scripts per server: `script(key, *answers)`, where
    key is "server@revision", an image, or a server name (the first that matches wins) and
    the last answer repeats. TIMEOUT answers take the server's health.timeout (of the loop's
    time). A container that is not running answers connect_failed, whatever the script."""

    def __init__(self, runtime: FakeRuntime) -> None:
        self.runtime = runtime
        self.scripts: dict[str, list[ProbeResult]] = {}
        self.checks = 0
        self.tool_list_changes = 0  # notifications/tools/list_changed "seen" by every probe

    def script(self, key: str, *answers: ProbeResult) -> None:
        self.scripts[key] = list(answers)

    def __call__(self, server: ServerSpec, container: ObservedContainer, fresh: bool) -> FakeProbe:
        return FakeProbe(self, server, container)

    def next_answer(self, server: ServerSpec, container: ObservedContainer) -> ProbeResult:
        for key in (f"{server.name}@{container.revision}", server.image, server.name):
            answers = self.scripts.get(key)
            if answers:
                return answers.pop(0) if len(answers) > 1 else answers[0]
        return ProbeResult.ok(1.0, server.health.expect_tools)


class FakeProbe:
    def __init__(
        self, prober: FakeProber, server: ServerSpec, container: ObservedContainer
    ) -> None:
        self._prober = prober
        self._server = server
        self._container = container
        self.closed = False

    @property
    def endpoint(self) -> str | None:
        return None

    async def check(self, *, full: bool) -> ProbeResult:
        self._prober.checks += 1
        seen = self._prober.runtime.containers.get(self._container.id)
        if seen is None or not seen.running:
            return unhealthy(probe_reasons.CONNECT_FAILED, "container is not running")
        answer = self._prober.next_answer(self._server, self._container)
        if answer.reason == probe_reasons.TIMEOUT:
            await asyncio.sleep(self._server.health.timeout)
        if answer.healthy and not answer.tools:
            return ProbeResult.ok(answer.latency_ms, self._server.health.expect_tools)
        return answer

    async def tool_defs(self, timeout: float) -> list[dict[str, Any]]:
        return [
            {"name": t, "inputSchema": {"type": "object"}} for t in self._server.health.expect_tools
        ]

    def tool_list_changes(self) -> int:
        return self._prober.tool_list_changes

    async def call_tool(
        self,
        name: str,
        arguments: dict[str, Any] | None,
        timeout: float,
        envelope: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        return {"content": [{"type": "text", "text": name}], "isError": False}

    async def offers(self) -> frozenset[str] | None:
        return frozenset()  # no prompts, no resources

    async def catalog_request(
        self, method: str, params: dict[str, Any] | None, timeout: float
    ) -> dict[str, Any]:
        raise ServerUnavailable(f"fake probe offers no {method}")

    async def close(self) -> None:
        self.closed = True


# -- secrets ---------------------------------------------------------------------------------


class FakeSecretSource:
    """A SecretSource over a dict of (mount, path, key) -> value; anything else is missing."""

    def __init__(self, values: dict[tuple[str, str, str], str] | None = None) -> None:
        self.values = dict(values or {})
        self.reads = 0
        self.down = False  # Vault unreachable: every read raises VaultUnavailable

    async def read(self, mount: str, path: str, key: str, version: int | None = None) -> str:
        self.reads += 1
        if self.down:
            raise VaultUnavailable(f"Vault unreachable reading {mount}/{path}")
        value = self.values.get((mount, path, key))
        if value is None:
            raise SecretNotFound(f"secret {mount}/{path} has no key {key}")
        return value


class FakeSecretFiles:
    """SecretFiles in memory: container name -> files. `fail_with` makes write() raise it."""

    def __init__(self) -> None:
        self.dirs: dict[str, dict[str, str]] = {}
        self.fail_with: BaseException | None = None
        self.sweep_ages: list[float] = []  # min_age of every sweep, in order

    async def write(
        self, container_name: str, files: dict[str, str], owner: tuple[int, int] | None
    ) -> Path:
        if self.fail_with is not None:
            raise self.fail_with
        self.dirs[container_name] = dict(files)
        return Path("/fake/secrets") / container_name

    async def remove(self, container_name: str) -> None:
        self.dirs.pop(container_name, None)

    async def sweep(self, keep: set[str], prefix: str = "dtma-", min_age: float = 0.0) -> list[str]:
        self.sweep_ages.append(min_age)
        gone = [n for n in self.dirs if n.startswith(prefix) and n not in keep]
        for name in gone:
            del self.dirs[name]
        return gone


class FakeJsonFetcher:
    """JsonFetcher over a dict of URL -> document (a callable gives a fresh one per GET); an
    absent URL is IssuerUnavailable, as is everything while `down`. Counts GETs per URL."""

    def __init__(self, documents: dict[str, Any]) -> None:
        self.documents = documents
        self.gets: dict[str, int] = {}
        self.down = False

    async def get_json(self, url: str) -> dict[str, Any]:
        self.gets[url] = self.gets.get(url, 0) + 1
        if self.down or url not in self.documents:
            raise IssuerUnavailable(f"GET {url} failed")
        doc = self.documents[url]
        return dict(doc() if callable(doc) else doc)
