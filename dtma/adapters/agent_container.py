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

Paths: the agent writes secret files at paths of its own container, but the daemon that
bind-mounts them into servers resolves a bind source on the host. `host_path` maps one to the
other through the agent container's own mounts (a named volume's host directory, or a bind
mount's source); outside a container the two are the same path.

Blocking: every method takes a docker-py client and must run in a worker thread.
Thread-safe: the resolution (and the container's mounts) is cached once under a lock; join and
leave are idempotent.
"""

from __future__ import annotations

import posixpath
import re
import socket
import threading
from pathlib import Path
from typing import Any

import docker.errors
import structlog

from dtma.adapters.mounts import mount_of
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


def host_source(mounts: list[dict[str, Any]], path: str, innermost: str) -> str | None:
    """Where the Docker daemon finds `path` of a container with these mounts (inspect's
    `Mounts`): the Source of the bind or volume mount whose Destination holds `path` most
    closely, with the rest of `path` joined on. `innermost` is the mount point that holds `path`
    as the container itself sees it (mounts.mount_of); if it is not that mount's Destination,
    something mounted inside the container hides the mount (a tmpfs the agent mounted itself),
    and the daemon cannot see what is written there. None then, or when no bind or volume mount
    holds `path` (the container's own layer or a `tmpfs` mount). Pure."""
    path = posixpath.normpath(path)
    best: dict[str, Any] | None = None
    for mount in mounts:
        dest = posixpath.normpath(str(mount.get("Destination") or "/"))
        if path != dest and not path.startswith(dest.rstrip("/") + "/"):
            continue
        if best is None or len(dest) > len(posixpath.normpath(best["Destination"])):
            best = mount
    if best is None or best.get("Type") not in ("bind", "volume") or not best.get("Source"):
        return None
    dest = posixpath.normpath(best["Destination"])
    if posixpath.normpath(innermost or "/") != dest:
        return None
    rest = posixpath.relpath(path, dest)
    source = str(best["Source"])
    return source if rest == "." else posixpath.join(source, rest)


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
        self._mounts: list[dict[str, Any]] | None = None

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

    def host_path(self, client: Any, path: Path) -> Path | None:
        """The path the Docker daemon sees for the agent's `path`: `path` itself when the agent
        runs outside a container (or DTMA_AGENT_CONTAINER=none); inside one, the host path
        behind the volume or bind mount that holds it (host_source); None when no such mount
        does, so no bind mount the daemon makes could show what the agent writes there."""
        me = self.container_id(client)
        if me is None:
            return path
        with self._lock:
            if self._mounts is None:  # a container's mounts are fixed for its life
                self._mounts = list(client.api.inspect_container(me).get("Mounts") or [])
            mounts = self._mounts
        innermost, _ = mount_of(path)
        found = host_source(mounts, posixpath.realpath(path), innermost)
        return Path(found) if found else None

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
