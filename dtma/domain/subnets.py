"""Per-toolbox subnets carved from the agent's own pool (DTMA_SUBNET_POOL). Pure.

Docker's default address pools (172.17-31.0.0/16 and 192.168.0-240.0/20) hold about 30 bridge
networks, so every toolbox network gets an explicit subnet from a pool of the agent's own. The
engine's networks are the record: the adapter lists every network's subnets (any owner) and
asks `first_free` for the lowest aligned block of the needed size that overlaps none of them.
Nothing is stored in the state DB, so a kill -9 loses nothing and a deleted network frees its
block at once.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from ipaddress import IPv4Network

DEFAULT_POOL = "10.213.0.0/16"
# Docker's built-in default-address-pools: a pool of ours must not collide with them.
DOCKER_DEFAULT_POOLS = (
    IPv4Network("172.17.0.0/16"),
    IPv4Network("172.18.0.0/15"),
    IPv4Network("172.20.0.0/14"),
    IPv4Network("172.24.0.0/13"),
    IPv4Network("192.168.0.0/16"),
)
MIN_PREFIX = 27  # the smallest toolbox network: 32 addresses, room for 14 servers start_first
MAX_PREFIX_FOR_POOL = 24  # a pool must hold the biggest toolbox network
RESERVED_ADDRESSES = 4  # network, broadcast, gateway, and one spare (an agent joining the net)
MAX_SERVERS_PER_TOOLBOX = 64


def parse_pool(value: str) -> IPv4Network:
    """A pool setting: a private IPv4 network of at least /24, off Docker's default pools.

    Raises ValueError with the reason (pydantic shows it under DTMA_SUBNET_POOL)."""
    try:
        pool = IPv4Network(value.strip(), strict=True)
    except ValueError as exc:
        raise ValueError(
            f"{value!r} is not an IPv4 network such as {DEFAULT_POOL}: {exc}"
        ) from None
    if not pool.is_private:
        raise ValueError(f"{pool} is not a private range (10/8, 172.16/12 or 192.168/16)")
    if pool.prefixlen > MAX_PREFIX_FOR_POOL:
        raise ValueError(f"{pool} is too small; give at least a /{MAX_PREFIX_FOR_POOL}")
    clash = next((d for d in DOCKER_DEFAULT_POOLS if d.overlaps(pool)), None)
    if clash is not None:
        raise ValueError(f"{pool} overlaps Docker's default address pool {clash}")
    return pool


def prefix_for(servers: int, start_first: bool) -> int:
    """The prefix of a toolbox's subnet: room for every server twice during a start_first
    rollout (old and new side by side), plus the reserved addresses. At least a /27."""
    hosts = max(servers, 1) * (2 if start_first else 1) + RESERVED_ADDRESSES
    prefix = 32 - (hosts - 1).bit_length()
    return min(prefix, MIN_PREFIX)


def capacity(subnet: IPv4Network) -> int:
    """How many containers a subnet holds (without the reserved addresses)."""
    return max(subnet.num_addresses - RESERVED_ADDRESSES, 0)


def first_free(
    pool: IPv4Network, prefix: int, taken: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]
) -> IPv4Network | None:
    """The lowest block of size /prefix inside `pool`, aligned, that overlaps nothing in
    `taken` (IPv6 entries and networks outside the pool are ignored). None when the pool is
    full. Linear in len(taken)."""
    if prefix < pool.prefixlen or prefix > 30:
        raise ValueError(f"a /{prefix} does not fit in the pool {pool}")
    size = 1 << (32 - prefix)
    start, end = int(pool.network_address), int(pool.broadcast_address)
    spans = sorted(
        (int(n.network_address), int(n.broadcast_address))
        for n in taken
        if isinstance(n, IPv4Network) and n.overlaps(pool)
    )
    cursor = start
    for low, high in spans:
        if cursor + size - 1 < low:
            break
        if high >= cursor:
            cursor = _align_up(high + 1, size)
        if cursor + size - 1 > end:
            return None
    if cursor + size - 1 > end:
        return None
    return IPv4Network((cursor, prefix))


def gateway(subnet: IPv4Network) -> str:
    """The bridge's address: the first host of the subnet."""
    return str(subnet.network_address + 1)


def _align_up(value: int, size: int) -> int:
    return (value + size - 1) // size * size
