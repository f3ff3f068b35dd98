"""The subnet pool: sizing, first-fit allocation around what the engine already uses."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network

import pytest

from dtma.domain.subnets import (
    DEFAULT_POOL,
    capacity,
    first_free,
    gateway,
    parse_pool,
    prefix_for,
)

POOL = IPv4Network(DEFAULT_POOL)


@pytest.mark.parametrize(
    ("servers", "start_first", "prefix"),
    [
        (1, True, 27),
        (14, True, 27),
        (15, True, 26),
        (28, False, 27),
        (29, False, 26),
        (64, True, 24),
        (64, False, 25),
    ],
)
def test_a_subnet_holds_every_server_twice_under_start_first(
    servers: int, start_first: bool, prefix: int
) -> None:
    assert prefix_for(servers, start_first) == prefix
    room = capacity(IPv4Network(("10.0.0.0", prefix)))
    assert room >= servers * (2 if start_first else 1)


def test_the_default_pool_holds_more_than_500_toolboxes() -> None:
    taken: list[IPv4Network] = []
    for _ in range(600):
        subnet = first_free(POOL, prefix_for(1, True), taken)
        assert subnet is not None
        assert subnet.subnet_of(POOL)
        assert not any(subnet.overlaps(t) for t in taken)
        taken.append(subnet)
    assert len(set(taken)) == 600


def test_first_fit_skips_taken_blocks_and_stays_aligned() -> None:
    taken = [IPv4Network("10.213.0.0/27"), IPv4Network("10.213.0.64/26")]
    assert first_free(POOL, 27, taken) == IPv4Network("10.213.0.32/27")
    # a /26 does not fit in the hole at .32: the next aligned free /26 is .128
    assert first_free(POOL, 26, taken) == IPv4Network("10.213.0.128/26")


def test_a_foreign_network_overlapping_the_pool_is_avoided() -> None:
    # another agent (another pool, or none) holds a /20 that covers the pool's start
    taken = [IPv4Network("10.212.240.0/20"), IPv4Network("10.213.0.0/20")]
    subnet = first_free(POOL, 27, taken)
    assert subnet == IPv4Network("10.213.16.0/27")


def test_unrelated_and_ipv6_networks_are_ignored() -> None:
    taken = [IPv4Network("172.17.0.0/16"), IPv6Network("fd00::/64")]
    assert first_free(POOL, 27, taken) == IPv4Network("10.213.0.0/27")


def test_a_full_pool_gives_none() -> None:
    small = IPv4Network("10.9.0.0/24")
    taken = [IPv4Network(n) for n in ("10.9.0.0/25", "10.9.0.128/26", "10.9.0.192/27")]
    assert first_free(small, 26, taken) is None
    assert first_free(small, 27, taken) == IPv4Network("10.9.0.224/27")
    assert first_free(small, 27, [*taken, IPv4Network("10.9.0.224/27")]) is None


def test_a_block_bigger_than_the_pool_is_refused() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        first_free(IPv4Network("10.9.0.0/24"), 23, [])


def test_gateway_is_the_first_host() -> None:
    assert gateway(IPv4Network("10.213.0.32/27")) == "10.213.0.33"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("10.213.0.1/16", "IPv4 network"),
        ("8.8.0.0/16", "not a private range"),
        ("10.213.0.0/25", "too small"),
        ("172.20.0.0/16", "Docker's default address pool"),
        ("192.168.10.0/24", "Docker's default address pool"),
        ("fd00::/64", "IPv4 network"),
        ("nonsense", "IPv4 network"),
    ],
)
def test_bad_pools_are_refused_with_the_reason(value: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_pool(value)


def test_the_default_pool_is_valid() -> None:
    assert parse_pool(DEFAULT_POOL) == POOL
