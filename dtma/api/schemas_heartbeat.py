"""The heartbeat the agent POSTs to its controller, and the controller's answer, as models.

They describe a request the agent makes, not one it serves: api/openapi.py puts them in the
document as the `heartbeat` callback of GET /v1/agent, and a unit test validates the bodies
domain/heartbeat.payload builds against them, so the document cannot drift from what is sent.
docs/controller.md is the prose of the same contract.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

PHASE = Literal["deploying", "healthy", "degraded", "failed", "stopped", "deleting", "deleted"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)


class HeartbeatAgent(_Strict):
    id: str
    version: str
    started_at: float = Field(description="seconds since the epoch")
    url: str = Field(description="DTMA_ADVERTISE_URL: where the controller reaches this API")
    labels: dict[str, str] = Field(description="DTMA_AGENT_LABELS")


class HeartbeatHost(_Strict):
    cpus: int = Field(ge=1)
    memory_bytes: int = Field(ge=0)
    memory_available_bytes: int = Field(ge=0)
    disk_free_bytes: int = Field(ge=0, description="free space of DTMA_STATE_DIR's file system")
    load1: float = Field(ge=0)


class HeartbeatCounts(_Strict):
    toolboxes: int = Field(ge=0)
    containers: int = Field(ge=0)
    healthy_toolboxes: int = Field(ge=0)


class HeartbeatToolbox(_Strict):
    id: str
    revision: int | None
    stable_revision: int | None
    phase: PHASE = Field(description="`deleted`: in a delta, a toolbox that no longer exists")
    servers_healthy: int = Field(ge=0)
    servers_total: int = Field(ge=0)
    updated_at: float


class HeartbeatIn(_Strict):
    """POST {DTMA_CONTROLLER_URL}/v1/agents/{agent_id}/heartbeat, with the bearer
    DTMA_CONTROLLER_TOKEN."""

    agent: HeartbeatAgent
    seq: int = Field(ge=1, description="increases with every attempt within one agent run")
    sent_at: float = Field(description="seconds since the epoch")
    full: bool = Field(
        description="true: `toolboxes` lists every toolbox (the first heartbeat of a run, every "
        "10th, the one after a resync); false: only those changed since the last "
        "acknowledged heartbeat (possibly none)"
    )
    host: HeartbeatHost
    counts: HeartbeatCounts
    toolboxes: list[HeartbeatToolbox]


class HeartbeatAnswer(BaseModel):
    """Any 2xx acknowledges; its body is empty or a JSON object (other keys are ignored)."""

    model_config = ConfigDict(extra="allow")

    resync: bool = Field(False, description="true: send a full heartbeat next")
