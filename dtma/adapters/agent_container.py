"""The agent's own container, when it runs in one, and its place on toolbox networks.

An agent on the host reaches a container's IP on an internal bridge network directly; an agent
in a container (compose) reaches it only after joining that network. So when the agent runs in
a container on the engine it drives, it joins each toolbox network it creates or adopts, and
leaves it before the network is removed (a network with endpoints cannot be removed).

DTMA_AGENT_CONTAINER selects the container: unset or `auto` detects it (the container id Docker
writes into the bind-mount sources of /etc/hostname and friends, seen in /proc/self/mountinfo,
then /proc/self/cgroup, then a hostname that is a short id), `none` never joins, anything else
is a container name or id on the engine. A detected id counts only if the engine knows it: an
agent in a container that drives another engine (DOCKER_HOST) joins nothing.

Blocking: every method takes a docker-py client and must run in a worker thread.
Thread-safe: the resolution is cached once under a lock; join and leave are idempotent.
"""

from __future__ import annotations

import re
import socket
import threading
from pathlib import Path
from typing import Any

import docker.errors
import structlog

from dtma.errors import DockerError

log = structlog.get_logger(__name__)

AUTO = "auto"
NONE = "none"
_MOUNTINFO_ID = re.compile(r"/containers/([0-9a-f]{64})/")
_CGROUP_ID = re.compile(r"(?:^|[/-])([0-9a-f]{64})(?:\.scope)?$")
_SHORT_ID = re.compile(r"^[0-9a-f]{12,64}$")


def id_candidates(mountinfo: str, cgroup: str, hostname: str) -> list[str]:
    """Possible ids of the container we run in, most reliable first. Pure."""
    out: list[str] = []
    for text, pattern in ((mountinfo, _MOUNTINFO_ID), (cgroup, _CGROUP_ID)):
        for line in text.splitlines():
            found = pattern.search(line.strip())
            if found and found.group(1) not in out:
                out.append(found.group(1))
    if _SHORT_ID.match(hostname) and not any(c.startswith(hostname) for c in out):
        out.append(hostname)
    return out


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


class AgentContainer:
    """Which container the agent runs in (if any), and its joins to toolbox networks."""

    def __init__(self, setting: str | None) -> None:
        self._setting = (setting or AUTO).strip()
        self._lock = threading.Lock()
        self._resolved = False
        self._id: str | None = None

    def container_id(self, client: Any) -> str | None:
        """The agent's container id on this engine, or None when it runs outside one.

        Raises DockerError when DTMA_AGENT_CONTAINER names a container the engine lacks."""
        with self._lock:
            if not self._resolved:
                self._id = self._resolve(client)
                self._resolved = True
                if self._id:
                    log.info("agent_in_container", container=self._id[:12])
            return self._id

    def _resolve(self, client: Any) -> str | None:
        if self._setting.lower() == NONE:
            return None
        if self._setting.lower() != AUTO:
            try:
                return str(client.api.inspect_container(self._setting)["Id"])
            except docker.errors.NotFound:
                raise DockerError(
                    f"DTMA_AGENT_CONTAINER={self._setting}: no such container on this "
                    "Docker engine (set it to the agent's container name or id, or `none`)"
                ) from None
        candidates = id_candidates(
            _read("/proc/self/mountinfo"), _read("/proc/self/cgroup"), socket.gethostname()
        )
        for candidate in candidates:
            try:
                found = str(client.api.inspect_container(candidate)["Id"])
            except docker.errors.NotFound:
                continue
            if found.startswith(candidate):  # a name that merely looks like an id is not us
                return found
        if Path("/.dockerenv").exists():  # Docker's marker: in a container, but not found
            log.warning(
                "agent_container_not_found",
                hint="set DTMA_AGENT_CONTAINER to this container's name or id, or `none`",
            )
        return None

    def join(self, client: Any, network_id: str) -> None:
        """Connect the agent's container to the network; a no-op outside a container or when
        already connected."""
        me = self.container_id(client)
        if me is None:
            return
        attached = client.api.inspect_network(network_id).get("Containers") or {}
        if me in attached:
            return
        try:
            client.api.connect_container_to_network(me, network_id)
        except docker.errors.APIError as exc:
            if "already exists" not in str(exc):  # a concurrent join won the race
                raise
        log.info("agent_joined_network", network=network_id[:12])

    def leave(self, client: Any, network_id: str) -> None:
        """Disconnect the agent's container; a no-op when it is not connected."""
        me = self.container_id(client)
        if me is None:
            return
        try:
            client.api.disconnect_container_from_network(me, network_id, force=True)
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            if "is not connected" not in str(exc):
                raise
