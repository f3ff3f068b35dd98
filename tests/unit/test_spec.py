"""Spec parsing, validation with field paths, the agent's policy, and canonical hashing."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dtma.errors import SpecInvalid
from dtma.spec.hashing import server_hash, spec_hash
from dtma.spec.units import parse_duration, parse_size
from dtma.spec.validate import SpecPolicy, parse_spec, validate_toolbox_id

BASE = {"servers": [{"name": "time", "image": "dtma-examples/mcp-time:1"}]}


def locs(body: object, policy: SpecPolicy | None = None) -> list[list[object]]:
    raw = body if isinstance(body, str) else json.dumps(body)
    with pytest.raises(SpecInvalid) as caught:
        parse_spec(raw, policy or SpecPolicy())
    return [d["loc"] for d in caught.value.details]


def with_server(**fields: object) -> dict[str, object]:
    return {"servers": [{"name": "a", "image": "img:1", **fields}]}


def test_defaults_follow_the_design() -> None:
    spec = parse_spec(json.dumps(BASE), SpecPolicy())
    s = spec.servers[0]
    assert (s.transport, s.health.interval, s.health.timeout, s.health.failure_threshold) == (
        "stdio",
        10.0,
        5.0,
        3,
    )
    assert (s.resources.memory, s.resources.cpus, s.resources.pids) == (256 * 1024**2, 0.5, 256)
    assert (
        spec.rollout.order,
        spec.rollout.min_healthy_time,
        spec.rollout.healthy_deadline,
        spec.rollout.auto_revert,
    ) == ("start_first", 5.0, 60.0, True)
    r = spec.restart
    assert (r.attempts, r.interval, r.delay, r.max_delay, r.mode) == (3, 300.0, 1.0, 60.0, "fail")
    assert spec.network.egress is False


def test_yaml_and_json_with_equivalent_units_hash_the_same() -> None:
    yaml_text = """
servers:
  - name: time
    image: dtma-examples/mcp-time:1
    health: {interval: 10s, timeout: 5000ms}
    resources: {memory: 256m}
rollout: {min_healthy_time: 5s}
"""
    a = parse_spec(yaml_text, SpecPolicy())
    b = parse_spec(json.dumps(BASE), SpecPolicy())
    assert spec_hash(a) == spec_hash(b)
    c = parse_spec(json.dumps(with_server()), SpecPolicy())
    assert spec_hash(c) != spec_hash(b)
    assert server_hash(a, "time") == server_hash(b, "time")


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({}, ["servers"]),
        ({"servers": []}, ["servers"]),
        (with_server(name="a/b"), ["servers", 0, "name"]),
        (with_server(name="a..b"), ["servers", 0, "name"]),
        (with_server(name="a\u0000"), ["servers", 0, "name"]),
        (with_server(transport="grpc"), ["servers", 0, "transport"]),
        (with_server(transport="streamable-http"), ["servers", 0]),
        (with_server(port=8000), ["servers", 0]),
        (with_server(health={"timeout": "0s"}), ["servers", 0, "health", "timeout"]),
        (with_server(resources={"memory": "lots"}), ["servers", 0, "resources", "memory"]),
        (with_server(env={"1BAD": "x"}), ["servers", 0, "env", "1BAD", "[key]"]),
        (with_server(command=[]), ["servers", 0, "command"]),
        (
            {**with_server(), "rollout": {"min_healthy_time": "60s", "healthy_deadline": "30s"}},
            ["rollout"],
        ),
        ({**with_server(), "restart": {"delay": "10s", "max_delay": "1s"}}, ["restart"]),
        ({**with_server(), "extra": 1}, ["extra"]),
    ],
)
def test_errors_name_the_field(body: dict[str, object], loc: list[object]) -> None:
    assert loc in locs(body)


def test_duplicate_server_names() -> None:
    body = {"servers": [{"name": "a", "image": "x"}, {"name": "a", "image": "y"}]}
    assert locs(body) == [["servers", 1, "name"]]


def test_fixed_host_port_needs_stop_first() -> None:
    server = {"transport": "streamable-http", "port": 8000, "publish": "127.0.0.1:8080"}
    egress = {"network": {"egress": True}}
    assert locs({**with_server(**server), **egress}) == [["rollout", "order"]]
    ok = {**with_server(**server), "rollout": {"order": "stop_first"}, **egress}
    assert parse_spec(json.dumps(ok), SpecPolicy()).servers[0].fixed_host_port
    dynamic = {**with_server(**{**server, "publish": "127.0.0.1:0"}), **egress}
    assert not parse_spec(json.dumps(dynamic), SpecPolicy()).servers[0].fixed_host_port


def test_a_body_that_is_not_utf8_is_refused() -> None:
    with pytest.raises(SpecInvalid, match="not UTF-8"):
        parse_spec(b"\x80servers: []", SpecPolicy())


def test_yaml_aliases_and_non_mappings_are_refused() -> None:
    assert locs("a: &x [1]\nb: *x") == [["body"]]
    assert locs("- 1\n- 2") == [[]]
    assert locs('{"servers": NaN}') == [["body"]]


def test_vault_refs_cannot_escape() -> None:
    body = with_server(
        secrets=[{"name": "T", "vault": {"mount": "secret", "path": "../x", "key": "k"}}]
    )
    assert ["servers", 0, "secrets", 0, "vault", "path"] in locs(
        body, SpecPolicy(vault_configured=True)
    )


@pytest.mark.parametrize("bad", ["", "A", "a_b", "-a", "a-", "a" * 64, "a/b", "..", "a\x00"])
def test_toolbox_ids_are_dns_labels(bad: str) -> None:
    with pytest.raises(SpecInvalid):
        validate_toolbox_id(bad)
    validate_toolbox_id("a-1")


def test_units() -> None:
    assert [parse_duration(v) for v in ("250ms", "5s", "5m", "1h", 3, "1.5s")] == [
        0.25,
        5.0,
        300.0,
        3600.0,
        3.0,
        1.5,
    ]
    assert [parse_size(v) for v in ("256m", "1g", "512k", 1024, "64MB")] == [
        256 * 1024**2,
        1024**3,
        512 * 1024,
        1024,
        64 * 1024**2,
    ]
    for bad in ("soon", True, -1, "8d"):
        with pytest.raises(ValueError, match=r"duration|between"):
            parse_duration(bad)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
        ),
        max_leaves=20,
    )
)
def test_arbitrary_json_never_crashes_the_validator(value: object) -> None:
    try:
        parse_spec(json.dumps({"servers": value}), SpecPolicy())
    except SpecInvalid as exc:
        details = exc.details
    else:
        details = [{"loc": [], "msg": "accepted"}]
    assert details  # every rejection says why
