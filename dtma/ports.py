"""The engine's ports: what it needs from the outside world, as Protocols (Cosmic Python).

The engine (dtma/engine) is written against these only; bootstrap.py wires the real adapters in,
and tests/fakes.py holds a hand-written in-memory fake of each. Who implements what:

| port             | real adapter                                   | fake (tests/fakes.py)  |
|------------------|------------------------------------------------|------------------------|
| ContainerRuntime | adapters/docker_runtime.DockerRuntime          | FakeRuntime            |
| StateStore       | adapters/state_repo.StateRepository (SQLite)   | FakeStore              |
| SecretSource     | adapters/vault.VaultClient                     | FakeSecretSource       |
| SecretFiles      | adapters/secret_files.SecretFileStore (tmpfs)  | FakeSecretFiles        |
| ProbeFactory     | bootstrap's factory of engine/probes.ContainerProbe | FakeProber        |
| Clock            | time.monotonic                                 | ManualClock, loop time |

Contracts shared by every implementation: methods are coroutines that never block the event loop
(real adapters run docker-py/hvac/sqlite on threads); expected failures raise a DtmaError
(transient or permanent), never a library exception; nothing returns or raises a secret value.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from dtma.domain.access import ClientToken, ToolCall
from dtma.domain.containers import ContainerRequest, ObservedContainer, ObservedNetwork
from dtma.domain.probe import ProbeResult
from dtma.domain.records import (
    EventRecord,
    OperationRecord,
    RestartState,
    RevisionRecord,
    ToolboxListing,
    ToolboxRecord,
)
from dtma.domain.retention import Pruned, RetentionPolicy
from dtma.domain.tool_pins import Pins
from dtma.spec.models import ServerSpec


class EnginePing(Protocol):
    async def ping(self) -> None:
        """Return if the container engine answers; raise DockerUnavailable otherwise."""


class EngineFaults(Protocol):
    """Whether a failure is the engine's rather than a server's (engine/engine_watch.py)."""

    @property
    def epoch(self) -> int:
        """Counts the engine's discontinuities (outages, daemon restarts)."""

    @property
    def last_outage_s(self) -> float:
        """How long the outage that the current epoch closed lasted."""

    async def confirm(self, epoch: int) -> bool:
        """Ping now: True when the engine answers and is still in `epoch`."""

    async def moved_from(self, epoch: int) -> None:
        """Return once the epoch is past `epoch`."""

    async def wait_up(self) -> None:
        """Return once the engine answers."""


class Readiness(Protocol):
    def check(self) -> list[str]:
        """Reasons the agent is not ready; an empty list means ready. Never blocks."""


class Clock(Protocol):
    """Monotonic seconds. The engine never reads the wall clock for its decisions."""

    def __call__(self) -> float: ...


class ContainerRuntime(Protocol):
    """Containers and networks of this agent (labelled dtma.*, dtma.agent=<id>). Idempotent
    where it can be: removing what is gone, ensuring what exists, are no-ops."""

    async def ensure_network(self, toolbox: str, internal: bool, prefix: int) -> str: ...
    async def join_network(self, toolbox: str) -> None: ...
    async def remove_network(self, toolbox: str, legacy: bool = True) -> None: ...
    async def list_networks(self) -> list[ObservedNetwork]: ...
    async def engine_version(self) -> tuple[str, str]: ...
    async def ensure_image(self, image: str) -> None: ...
    async def image_owner(self, image: str) -> tuple[int, int] | None: ...
    async def create_and_start(self, req: ContainerRequest) -> ObservedContainer: ...
    async def start(self, container_id: str) -> None: ...
    async def stop(self, container_id: str, timeout: int = 10) -> None: ...
    async def remove(self, container_id: str) -> None: ...
    async def inspect(self, container_id: str) -> ObservedContainer | None: ...
    async def list_managed(
        self, toolbox: str | None = None, *, brief: bool = False
    ) -> list[ObservedContainer]: ...
    async def logs(self, container_id: str, tail: int) -> str: ...


Recorded = dict[str, tuple[str, dict[str, Any]]]  # tool contracts: server -> (hash, contract)


class ContractStore(Protocol):
    async def tool_contracts(self, toolbox_id: str, revision: int) -> Recorded: ...
    async def save_tool_contracts(
        self, toolbox_id: str, revision: int, contracts: Mapping[str, tuple[str, dict[str, Any]]]
    ) -> None: ...
    async def tool_pins(self, toolbox_id: str, revision: int) -> dict[str, Pins]: ...
    async def save_tool_pins(
        self, toolbox_id: str, revision: int, pins: Mapping[str, Pins]
    ) -> None: ...


class ToolboxStore(ContractStore, Protocol):
    """The state one toolbox's runner writes (a ToolboxRunner's narrow view of the store)."""

    async def update_toolbox(self, toolbox_id: str, **fields: Any) -> None: ...
    async def mark_stable(self, toolbox_id: str, number: int) -> None: ...
    async def set_tools(
        self, toolbox_id: str, server: str, revision: int, tools: list[str]
    ) -> None: ...
    async def toolbox(self, toolbox_id: str) -> ToolboxRecord | None: ...
    async def revision(self, toolbox_id: str, number: int) -> RevisionRecord | None: ...
    async def newest_stable_other_than(
        self, toolbox_id: str, number: int | None
    ) -> RevisionRecord | None: ...
    async def finish_operation(
        self, op_id: str, state: str, error: str | None = None, revision: int | None = None
    ) -> None: ...
    async def delete_toolbox(self, toolbox_id: str) -> None: ...
    async def save_restart_state(
        self, toolbox_id: str, server: str, state: RestartState
    ) -> None: ...
    async def restart_states(self, toolbox_id: str) -> dict[str, RestartState]: ...
    async def clear_target(self, toolbox_id: str, number: int) -> None: ...


class RecoveryStore(Protocol):
    """What recovery reads before it takes each toolbox's lock."""

    async def running_operations(self) -> list[OperationRecord]: ...
    async def toolboxes(self) -> list[ToolboxRecord]: ...
    async def finish_operation(
        self, op_id: str, state: str, error: str | None = None, revision: int | None = None
    ) -> None: ...


class TokenStore(Protocol):
    async def add_token(
        self, token_id: str, toolbox: str, name: str, digest: str, limit: int
    ) -> ClientToken | None: ...
    async def client_tokens(self, toolbox: str | None = None) -> list[ClientToken]: ...
    async def token_hashes(self) -> list[tuple[str, str, str]]: ...
    async def delete_token(self, toolbox: str, token_id: str) -> bool: ...
    async def touch_tokens(self, last_used: Mapping[str, float]) -> None: ...


class CallStore(Protocol):
    async def append_calls(self, calls: Sequence[ToolCall]) -> None: ...
    async def calls(self, toolbox: str, since: int, limit: int) -> list[dict[str, Any]]: ...


class EventStore(Protocol):
    """Where the journal stores each event before anyone sees it."""

    async def append_event(
        self,
        kind: str,
        *,
        toolbox: str | None = None,
        server: str | None = None,
        revision: int | None = None,
        operation: str | None = None,
        reason: str = "",
        message: str = "",
    ) -> EventRecord: ...


class StateStore(ToolboxStore, RecoveryStore, TokenStore, CallStore, EventStore, Protocol):
    """The whole state store as the Agent facade (and the API through it) uses it. Every
    method is one atomic transaction; rows never hold secret values."""

    async def toolbox(self, toolbox_id: str) -> ToolboxRecord | None: ...
    async def add_revision(
        self,
        toolbox_id: str,
        spec_json: str,
        spec_hash: str,
        if_match: int | None = None,
        *,
        retry: bool = False,
    ) -> tuple[RevisionRecord, bool]: ...
    async def latest_revision(self, toolbox_id: str) -> RevisionRecord | None: ...
    async def listing(self) -> list[ToolboxListing]: ...
    async def revisions(self, toolbox_id: str) -> list[RevisionRecord]: ...
    async def tools(self, toolbox_id: str) -> dict[str, tuple[int, list[str]]]: ...
    async def add_operation(
        self,
        op_id: str,
        kind: str,
        toolbox_id: str,
        revision: int | None,
        params: dict[str, Any] | None = None,
    ) -> OperationRecord: ...
    async def operation(self, op_id: str) -> OperationRecord | None: ...
    async def events(
        self, since: int = 0, toolbox: str | None = None, limit: int = 500
    ) -> list[EventRecord]: ...
    async def errors(
        self,
        *,
        toolbox: str | None = None,
        category: str | None = None,
        resolved: bool | None = None,
        limit: int = 200,
    ) -> list[dict[str, Any]]: ...
    async def idempotent_response(self, key: str) -> tuple[str, int, str] | None: ...
    async def store_idempotent_response(
        self, key: str, fingerprint: str, status: int, body: str, keep_seconds: float
    ) -> None: ...
    async def prune(self, policy: RetentionPolicy) -> Pruned: ...


class SecretSource(Protocol):
    """Vault (KV v2): one secret value, read just before a container create. Raises
    SecretsError naming the path (never the value) when it cannot."""

    async def read(self, mount: str, path: str, key: str, version: int | None = None) -> str: ...


class SecretFiles(Protocol):
    """Per-container secret directories on a host tmpfs (mode 0700, files 0400)."""

    async def write(
        self, container_name: str, files: dict[str, str], owner: tuple[int, int] | None
    ) -> Path: ...
    async def remove(self, container_name: str) -> None: ...
    async def sweep(self, keep: set[str], prefix: str = ..., min_age: float = ...) -> list[str]: ...


class HealthProbe(Protocol):
    """One container's health, as data: check() never raises because the server is unhealthy
    (only cancellation propagates). An HTTP server's probes run on the session the gateway
    holds for it once there is one (UpstreamClient), so N probes open no N sessions. close()
    is idempotent. Used by one ServerRunner at a time."""

    @property
    def endpoint(self) -> str | None: ...
    async def check(self, *, full: bool) -> ProbeResult: ...
    async def close(self) -> None: ...


class UpstreamClient(Protocol):
    """The gateway's calls to one server, on the MCP session held for it (stdio: the probe's
    attach session; HTTP: one held session, reopened after it ends). Results are wire JSON.
    Raises ServerUnavailable (retryable) when the session is not usable; an MCP error the
    server itself returned passes through."""

    async def tool_defs(self, timeout: float) -> list[dict[str, Any]]: ...
    def tool_list_changes(self) -> int:
        """`notifications/tools/list_changed` seen on the held sessions (moves when one comes;
        may go back to 0 with a new session): a changed value means "read the tools again"."""
        ...

    async def call_tool(
        self,
        name: str,
        arguments: dict[str, Any] | None,
        timeout: float,
        envelope: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]: ...
    async def offers(self) -> frozenset[str] | None: ...
    async def catalog_request(
        self, method: str, params: dict[str, Any] | None, timeout: float
    ) -> dict[str, Any]: ...


class Probe(HealthProbe, UpstreamClient, Protocol):
    """One container's MCP handle: its health probe and the gateway's client, which share the
    held session (only one reader can own a stdio container's stdout)."""


# (server, container, fresh) -> a probe for it; `fresh`: a new process (initialize it).
ProbeFactory = Callable[[ServerSpec, ObservedContainer, bool], Probe]


class JsonFetcher(Protocol):
    """GET a JSON object over HTTP(S) (an OAuth issuer's metadata and keys). Raises
    IssuerUnavailable when it cannot (unreachable, not 200, not a JSON object, too large)."""

    async def get_json(self, url: str) -> dict[str, Any]: ...
