"""Toolbox networks on docker-py, each on its own subnet from the agent's pool.

Synchronous: DockerRuntime calls these methods in worker threads (through docker_client.call,
which turns docker-py errors into DtmaErrors). The engine is the record of which subnets are in
use: before each allocation every network's IPAM config is read, so nothing is lost on a
kill -9. Allocations in this process are serialized by a lock; another agent (another pool or
the same one) may still race us, and the engine then refuses the overlapping subnet, which is
remembered as taken and the next free block is tried.
"""

from __future__ import annotations

import contextlib
import ipaddress
import threading
from collections.abc import Callable
from typing import Any

import docker.errors
import docker.types

from dtma.domain.containers import (
    LABEL_AGENT,
    LABEL_NETWORK,
    LABEL_TOOLBOX,
    ObservedNetwork,
    legacy_network_name,
    network_name,
)
from dtma.domain.subnets import capacity, first_free, gateway
from dtma.errors import DockerError

MAX_ATTEMPTS = 32

AnyNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class NetworkAllocator:
    def __init__(
        self, client: Callable[[], Any], agent_id: str, pool: ipaddress.IPv4Network
    ) -> None:
        self._client = client
        self._agent = agent_id
        self.pool = pool
        self._lock = threading.Lock()

    def ensure(self, toolbox: str, internal: bool, prefix: int) -> str:
        """Create the toolbox network on a free /prefix of the pool unless it exists; return
        its name. An existing one must match `internal` and be at least a /prefix."""
        name = network_name(toolbox, self._agent)
        with self._lock:
            existing = self._find(name)
            if existing is not None:
                self._check(existing, internal, prefix)
                return name
            refused: list[AnyNetwork] = []
            for _ in range(MAX_ATTEMPTS):
                subnet = first_free(self.pool, prefix, [*self._subnets_in_use(), *refused])
                if subnet is None:
                    raise DockerError(
                        f"the subnet pool {self.pool} (DTMA_SUBNET_POOL) has no free /{prefix} "
                        f"left for network {name}; delete toolboxes or give a larger pool"
                    )
                try:
                    self._create(name, toolbox, internal, subnet)
                    return name
                except docker.errors.APIError as exc:
                    if "overlap" not in str(exc).lower():
                        raise
                    refused.append(subnet)  # taken by a network we could not see yet
            raise DockerError(
                f"network {name}: the engine refused {MAX_ATTEMPTS} subnets of {self.pool} "
                "as overlapping; another agent may use the same DTMA_SUBNET_POOL"
            )

    def remove(self, toolbox: str, legacy: bool) -> None:
        """Remove this agent's network of `toolbox`; with `legacy`, also the unlabelled one of
        older versions when nothing is attached to it. Absent networks are fine."""
        own = self._find(network_name(toolbox, self._agent))
        if own is not None:
            with contextlib.suppress(docker.errors.NotFound):
                self._client().api.remove_network(own["Id"])
        old = self._find(legacy_network_name(toolbox)) if legacy else None
        labels = (old or {}).get("Labels") or {}
        if old is not None and LABEL_NETWORK in labels and LABEL_AGENT not in labels:
            with contextlib.suppress(docker.errors.APIError):  # in use, or already gone
                self._client().api.remove_network(old["Id"])

    def list_own(self) -> list[ObservedNetwork]:
        """This agent's toolbox networks, filtered by its id at the Docker query."""
        nets = self._client().api.networks(
            filters={"label": [LABEL_NETWORK, f"{LABEL_AGENT}={self._agent}"]}
        )
        return [
            ObservedNetwork(
                id=n["Id"],
                name=n["Name"],
                toolbox=(n.get("Labels") or {}).get(LABEL_TOOLBOX, ""),
                subnet=next((str(s) for s in _subnets(n)), None),
            )
            for n in nets
        ]

    def _find(self, name: str) -> dict[str, Any] | None:
        # The engine's name filter matches substrings: keep the exact match only.
        found = self._client().api.networks(names=[name])
        return next((n for n in found if n.get("Name") == name), None)

    def _check(self, net: dict[str, Any], internal: bool, prefix: int) -> None:
        name = net["Name"]
        if (net.get("Labels") or {}).get(LABEL_AGENT) != self._agent:
            raise DockerError(f"network {name} exists but is not this agent's (dtma.agent)")
        if bool(net.get("Internal")) != internal:
            raise DockerError(
                f"network {name} exists with internal={bool(net.get('Internal'))}; "
                "delete the toolbox first"
            )
        subnet = next(iter(_subnets(net)), None)
        if isinstance(subnet, ipaddress.IPv4Network) and subnet.prefixlen > prefix:
            raise DockerError(
                f"network {name} is a {subnet} (room for {capacity(subnet)} containers) and "
                f"this spec needs a /{prefix}; delete the toolbox and apply it again"
            )

    def _subnets_in_use(self) -> list[AnyNetwork]:
        return [s for n in self._client().api.networks() for s in _subnets(n)]

    def _create(
        self, name: str, toolbox: str, internal: bool, subnet: ipaddress.IPv4Network
    ) -> None:
        ipam = docker.types.IPAMConfig(
            pool_configs=[docker.types.IPAMPool(subnet=str(subnet), gateway=gateway(subnet))]
        )
        self._client().api.create_network(
            name,
            driver="bridge",
            internal=internal,
            ipam=ipam,
            labels={LABEL_TOOLBOX: toolbox, LABEL_NETWORK: "true", LABEL_AGENT: self._agent},
        )


def _subnets(net: dict[str, Any]) -> list[AnyNetwork]:
    out: list[AnyNetwork] = []
    for cfg in (net.get("IPAM") or {}).get("Config") or []:
        with contextlib.suppress(ValueError, TypeError):
            out.append(ipaddress.ip_network(cfg.get("Subnet"), strict=False))
    return out
