"""What the agent asks Docker for, as pure data: labels, names, and the hardened container request.

Labels (the reserved `dtma.` namespace) are how the agent owns and re-adopts containers;
`dtma.agent` names the agent that made a container or network, so agents sharing an engine
leave each other's alone.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from dtma.domain.subnets import prefix_for
from dtma.spec.models import ServerSpec, ToolboxSpec, publish_address

LABEL_TOOLBOX = "dtma.toolbox"
LABEL_SERVER = "dtma.server"
LABEL_REVISION = "dtma.revision"
LABEL_SPEC_HASH = "dtma.spec-hash"
LABEL_TRANSPORT = "dtma.transport"
LABEL_NETWORK = "dtma.network"
LABEL_SECRETS_HASH = "dtma.secrets-hash"
LABEL_AGENT = "dtma.agent"

TMP_SIZE = "64m"
LOG_MAX_SIZE = "10m"
LOG_MAX_FILES = "3"


def network_name(toolbox: str, agent: str) -> str:
    """The toolbox network's name; the agent id keeps two agents' same-named toolboxes apart."""
    return f"dtma-{agent}-{toolbox}"


def legacy_network_name(toolbox: str) -> str:
    """The name used before agent ids (its containers may still be attached to it)."""
    return f"dtma-{toolbox}"


def subnet_prefix(spec: ToolboxSpec) -> int:
    """The prefix of the toolbox network's subnet (start_first holds two revisions at once)."""
    return prefix_for(len(spec.servers), spec.rollout.order == "start_first")


# What a given-up server whose last container is gone holds (engine/reconcile.py): an id no
# Docker container has (ids are random SHA-256). Nothing asks the engine about it.
NO_CONTAINER_ID = "0" * 64


@dataclass(frozen=True)
class ContainerRequest:
    name: str
    image: str
    command: list[str] | None
    env: dict[str, str]
    labels: dict[str, str]
    network: str | None
    network_alias: str
    internal_network: bool
    stdin_open: bool
    memory: int
    nano_cpus: int
    pids: int
    port: int | None
    publish: tuple[str, int] | None  # (host ip, host port; 0 = dynamic)
    privileged: bool = False
    cap_add: tuple[str, ...] = ()
    host_network: bool = False
    pid_host: bool = False
    ipc_host: bool = False
    mounts: tuple[tuple[str, str, str | None, bool], ...] = ()  # (type, target, source, ro)
    # The secret files' directory as the agent sees it; the runtime adapter maps it to the path
    # the Docker daemon mounts from (the same path unless the agent runs in a container).
    bind_secrets_dir: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ObservedContainer:
    """A dtma-labelled container as Docker reports it."""

    id: str
    name: str
    toolbox: str
    server: str
    revision: int
    spec_hash: str
    state: str  # created | running | restarting | paused | exited | dead | removing
    exit_code: int | None
    ip: str | None
    host_port: int | None
    started_at: str
    secrets_hash: str = ""
    agent: str = ""  # the dtma.agent label; "" on containers made before agent ids

    @property
    def running(self) -> bool:
        return self.state == "running"


@dataclass(frozen=True)
class ObservedNetwork:
    """A toolbox network of this agent as Docker reports it."""

    id: str
    name: str
    toolbox: str
    subnet: str | None


def container_request(
    toolbox: str,
    revision: int,
    spec: ToolboxSpec,
    server: ServerSpec,
    server_hash: str,
    extra_labels: dict[str, str] | None = None,
    network: str = "",
) -> ContainerRequest:
    """The hardened request for one server; `network` is the toolbox network's name (the
    runtime's ensure_network gives it)."""
    labels = {
        **server.labels,
        LABEL_TOOLBOX: toolbox,
        LABEL_SERVER: server.name,
        LABEL_REVISION: str(revision),
        LABEL_SPEC_HASH: server_hash,
        LABEL_TRANSPORT: server.transport,
        **(extra_labels or {}),
    }
    publish = publish_address(server.publish) if server.publish else None
    return ContainerRequest(
        name=f"dtma-{toolbox}-{server.name}-r{revision}-{secrets.token_hex(2)}",
        image=server.image,
        command=server.command,
        env=dict(server.env),
        labels=labels,
        network=None if server.network_mode == "host" else network,
        network_alias=server.name,
        internal_network=not spec.network.egress,
        stdin_open=server.transport == "stdio",
        memory=server.resources.memory,
        nano_cpus=int(server.resources.cpus * 1e9),
        pids=server.resources.pids,
        port=server.port,
        publish=publish,
        privileged=server.privileged,
        cap_add=tuple(server.cap_add),
        host_network=server.network_mode == "host",
        pid_host=server.pid_mode == "host",
        ipc_host=server.ipc_mode == "host",
        mounts=tuple((m.type, m.target, m.source, m.read_only) for m in server.mounts),
    )
