"""Request and response models of the control API. The OpenAPI document is generated from these
(api/openapi.py), and handlers build their JSON through them."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from dtma.spec.models import Name


class Out(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)


class HealthOut(Out):
    status: Literal["ok"]
    version: str


class ReadyOut(Out):
    status: Literal["ready"]


class ErrorDetail(Out):
    loc: list[str | int]
    msg: str


class ErrorInner(Out):
    code: str
    message: str
    details: list[ErrorDetail]


class ErrorOut(Out):
    error: ErrorInner


class ServerStatusOut(Out):
    name: str
    revision: int
    container_id: str
    state: str
    health: Literal["unknown", "healthy", "unhealthy"]
    restarts: int
    endpoint: str | None
    tools: list[str]
    last_error: str | None


class OperationOut(Out):
    id: str
    kind: str
    toolbox: str
    state: Literal["running", "succeeded", "rolled_back", "failed"]
    revision: int | None
    error: str | None


class ToolboxStatusOut(Out):
    id: str
    revision: int | None
    stable_revision: int | None
    phase: Literal["deploying", "healthy", "degraded", "failed", "stopped", "deleting"]
    servers: list[ServerStatusOut]
    updated_at: float
    unchanged: bool | None = Field(None, description="set on a PUT whose spec was unchanged")
    operation: OperationOut | None = Field(None, description="set on a PUT with ?wait")


class ToolboxListOut(Out):
    items: list[ToolboxStatusOut]


class ApplyAcceptedOut(Out):
    toolbox: str
    revision: int
    operation: str


class OperationRefOut(Out):
    toolbox: str
    operation: str


class DeleteDoneOut(Out):
    """DELETE ?wait=S once the delete has ended."""

    toolbox: str
    operation: OperationOut


class EventOut(Out):
    cursor: int
    ts: float
    kind: str
    toolbox: str | None
    server: str | None
    revision: int | None
    operation: str | None
    reason: str
    message: str


class EventsPageOut(Out):
    items: list[EventOut]
    next: int


class RevisionOut(Out):
    revision: int
    stable: bool
    created_at: float
    spec_hash: str
    spec: dict[str, Any]


class RevisionsOut(Out):
    items: list[RevisionOut]


class ServerToolsOut(Out):
    name: str
    tools: list[str]


class ToolsOut(Out):
    servers: list[ServerToolsOut]


class DockerInfoOut(Out):
    version: str
    api_version: str


class PolicyOut(Out):
    """The escape hatches this agent allows (DTMA_POLICY_*); everything else is refused."""

    allow_public_publish: bool
    allow_volumes: list[str]
    allow_privileged: bool
    allow_host_namespaces: bool
    allow_bind_mounts: list[str]
    allow_cap_add: list[str]


class OrphansOut(Out):
    """Containers and networks of this agent's id held from the reaper (empty state dir)."""

    held: bool
    containers: int
    networks: int
    hint: str | None


class AdoptOut(Out):
    """What `POST /v1/agent/adopt` handed to the reaper."""

    containers: int
    networks: int


class ControllerOut(Out):
    """The heartbeat loop (docs/controller.md); times are seconds since the epoch."""

    url: str = Field(
        description="DTMA_CONTROLLER_URL; heartbeats go to {url}/v1/agents/{id}/heartbeat"
    )
    interval: float
    last_success: float | None = Field(description="when the controller last acknowledged one")
    last_error: str | None = Field(description="how the last failed attempt ended")
    consecutive_failures: int = Field(ge=0)


class AgentOut(Out):
    version: str
    agent_id: str
    orphans: OrphansOut
    host: str
    docker: DockerInfoOut | None
    toolboxes: int
    servers: int
    phases: dict[str, int]
    policy: PolicyOut
    controller: ControllerOut | None = Field(None, description="null: no DTMA_CONTROLLER_URL")


class RollbackIn(Out):
    revision: int | None = Field(None, ge=1, le=2**31)

    @field_validator("revision", mode="before")
    @classmethod
    def _integral_number(cls, v: Any) -> Any:
        """JSON Schema counts 3.0 as an integer; bodies are validated strictly otherwise."""
        return int(v) if isinstance(v, float) and v.is_integer() else v


class ServersIn(Out):
    servers: Annotated[list[Name], Field(max_length=64)] | None = Field(
        None, description="only these servers (default: all)"
    )


class ErrorEntryOut(Out):
    fingerprint: str
    category: Literal["network", "resource", "config", "dependency", "auth", "image", "runtime"]
    kind: str
    reason: str
    toolbox: str | None
    server: str | None
    revision: int | None
    count: int
    first_seen: float
    last_seen: float
    sample: str
    hint: str
    resolved_at: float | None
    resolution: str | None


class ErrorsOut(Out):
    items: list[ErrorEntryOut]


TOKEN_NAME_PATTERN = r"^[ -~]*$"  # noqa: S105 (a pattern, not a secret)


class TokenIn(Out):
    name: str | None = Field(
        None, max_length=64, pattern=TOKEN_NAME_PATTERN, description="a label (printable ASCII)"
    )


class TokenCreatedOut(Out):
    """The one answer that carries a client token's value: it is not stored, so keep it."""

    id: str
    token: str
    toolbox: str
    name: str
    created_at: float


class TokenOut(Out):
    id: str
    toolbox: str
    name: str
    created_at: float
    last_used: float | None


class TokensOut(Out):
    items: list[TokenOut]


class ToolCallOut(Out):
    cursor: int
    ts: float
    toolbox: str
    server: str
    tool: str
    token: str = Field(
        description="the client token's id, 'agent' for the API token, or 'oauth' for a JWT"
    )
    duration: float
    outcome: Literal["ok", "error", "unavailable", "denied", "not_found", "cancelled"]
    request_bytes: int
    response_bytes: int
    subject: str = Field("", description="a JWT caller's `sub` claim; empty otherwise")
    issuer: str = Field("", description="a JWT caller's issuer; empty otherwise")


class CallsPageOut(Out):
    items: list[ToolCallOut]
    next: int


class ProtectedResourceOut(Out):
    """RFC 9728 protected-resource metadata of a toolbox's MCP endpoint."""

    resource: str = Field(description="the endpoint's canonical URL (the default audience)")
    authorization_servers: list[str]
    scopes_supported: list[str]
    bearer_methods_supported: list[str]
    resource_name: str
