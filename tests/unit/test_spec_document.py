"""Hostile bodies: every one is a SpecInvalid naming the body (a 422), never another exception."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pytest

from dtma.errors import SpecInvalid
from dtma.spec.document import DocumentLimits, load_document, load_json
from dtma.spec.validate import MAX_PROBLEMS, SpecPolicy, parse_spec

HOSTILE = [
    pytest.param("[" * 100_000 + "]" * 100_000, id="json-nested-100k"),
    pytest.param('{"a":' * 50 + "1" + "}" * 50, id="json-nested-50"),
    pytest.param("a:\n" + "".join(f"{' ' * i}b:\n" for i in range(1, 60)), id="yaml-nested-60"),
    pytest.param("x: " + "[" * 5000 + "]" * 5000, id="yaml-flow-nested-5000"),
    pytest.param("servers: 2001-13-45", id="yaml-impossible-date"),
    pytest.param("servers: !!timestamp 2001-13-45", id="yaml-explicit-bad-timestamp"),
    pytest.param("servers: " + "9" * 5000, id="yaml-5000-digit-int"),
    pytest.param('{"servers": ' + "9" * 5000 + "}", id="json-5000-digit-int"),
    pytest.param("a: &x [1, 2]\nb: *x\n", id="yaml-alias"),
    pytest.param("? [a, b]\n: c\n", id="yaml-unhashable-key"),
    pytest.param("a: 1\n---\nb: 2\n", id="yaml-two-documents"),
    pytest.param('{"a": NaN}', id="json-nan"),
    pytest.param(b"\xff\xfe", id="not-utf8"),
    pytest.param("servers: !!python/object:os.system echo", id="yaml-python-tag"),
    pytest.param("a: !!binary 'not base64!'", id="yaml-bad-binary"),
]


@pytest.mark.parametrize("body", HOSTILE)
def test_hostile_bodies_are_spec_invalid_on_the_body(body: str | bytes) -> None:
    with pytest.raises(SpecInvalid) as caught:
        parse_spec(body, SpecPolicy())
    assert caught.value.details
    assert all(isinstance(d["msg"], str) and len(d["msg"]) <= 500 for d in caught.value.details)


def test_a_date_like_value_stays_a_string() -> None:
    body = "servers:\n- name: a\n  image: img:1\n  env: {SINCE: 2024-01-01}\n"
    assert parse_spec(body, SpecPolicy()).servers[0].env == {"SINCE": "2024-01-01"}


def test_limits_bound_depth_and_nodes() -> None:
    limits = DocumentLimits(max_depth=4, max_nodes=10)
    assert load_document("a: {b: {c: 1}}", limits) == {"a": {"b": {"c": 1}}}
    with pytest.raises(SpecInvalid, match="nested too deeply"):
        load_document("a: {b: {c: {d: {e: 1}}}}", limits)
    with pytest.raises(SpecInvalid, match="too large"):
        load_document("[" + ",".join(["1"] * 11) + "]", limits)
    with pytest.raises(SpecInvalid, match="too large"):
        load_json("[" + ",".join(["1"] * 11) + "]", limits)


def test_problems_are_capped_and_the_cut_is_said() -> None:
    servers = [{"name": f"s{i}", "image": "img:1", "bogus": i} for i in range(60)]
    body = json.dumps({"servers": servers, "rollout": {"what": 1}, "network": {"x": 1}})
    with pytest.raises(SpecInvalid) as caught:
        parse_spec(body, SpecPolicy())
    details = caught.value.details
    assert len(details) <= MAX_PROBLEMS + 1
    env = {f"E{i}": "v" for i in range(300)}
    with pytest.raises(SpecInvalid) as many:
        parse_spec(json.dumps({"servers": [{"name": "a", "image": "i", "env": env}]}), SpecPolicy())
    assert many.value.details[0]["loc"] == ["servers", 0, "env"]
    bogus = {f"x{i}": 1 for i in range(200)}
    big = json.dumps({"servers": [{"name": "a", "image": "i", **bogus}]})
    with pytest.raises(SpecInvalid) as cut:
        parse_spec(big, SpecPolicy())
    assert len(cut.value.details) == MAX_PROBLEMS + 1
    assert cut.value.details[-1]["msg"].endswith("more problems not shown")


def test_a_big_yaml_body_parses_in_well_under_a_second_per_hundred_kib() -> None:
    lines = ["servers:", "- name: a", "  image: x", "  env:"]
    lines += [f"    K{i}: value{i}" for i in range(40_000)]
    text = "\n".join(lines)
    started = time.process_time()
    with pytest.raises(SpecInvalid) as caught:  # 40,000 env entries is over the bound
        parse_spec(text, SpecPolicy())
    assert caught.value.details[0]["loc"] == ["servers", 0, "env"]
    # libyaml: about 0.6 s of CPU for 900 KiB here; pure-Python PyYAML took 2.8 s.
    assert time.process_time() - started < 10


@pytest.mark.parametrize(
    ("publish", "ok"),
    [
        ("999.999.999.999:0", False),
        ("127.0.0.1:65536", False),
        ("127.0.0.1:-1", False),
        ("127.0.0.1:0\n", False),
        ("localhost:80", False),
        ("[::1]:0", True),
        ("[fe80::1%eth0]:0", False),
        ("224.0.0.1:0", False),
        ("127.0.0.1:0", True),
    ],
)
def test_publish_addresses_are_parsed_as_ip_addresses(publish: str, ok: bool) -> None:
    body = json.dumps(
        {
            "servers": [
                {
                    "name": "a",
                    "image": "i",
                    "transport": "streamable-http",
                    "port": 8000,
                    "publish": publish,
                }
            ],
            "network": {"egress": True},
        }
    )
    if ok:
        parse_spec(body, SpecPolicy())
    else:
        with pytest.raises(SpecInvalid) as caught:
            parse_spec(body, SpecPolicy())
        assert caught.value.details[0]["loc"] == ["servers", 0, "publish"]


@pytest.mark.parametrize(
    ("section", "fields", "field"),
    [
        ("restart", {"delay": "0s", "max_delay": "0s", "mode": "delay"}, "delay"),
        ("restart", {"delay": "50ms"}, "delay"),
        ("restart", {"interval": "10ms"}, "interval"),
        ("health", {"interval": "100ms"}, "interval"),
        ("health", {"timeout": "1ms"}, "timeout"),
        ("rollout", {"healthy_deadline": "0.5s", "min_healthy_time": 0}, "healthy_deadline"),
    ],
)
def test_durations_have_floors(section: str, fields: dict[str, object], field: str) -> None:
    server: dict[str, object] = {"name": "a", "image": "i"}
    body: dict[str, object] = {"servers": [server]}
    if section == "health":
        server["health"] = fields
        loc = ["servers", 0, "health", field]
    else:
        body[section] = fields
        loc = [section, field]
    with pytest.raises(SpecInvalid) as caught:
        parse_spec(json.dumps(body), SpecPolicy())
    assert loc in [d["loc"] for d in caught.value.details]


def test_pyyaml_loads_with_the_first_yaml_body_not_before() -> None:
    """PyYAML (0.9 MB) stays out of an agent sent only JSON (docs/benchmarks.md, "Idle agent"):
    read in a fresh interpreter, since this one has imported it for the tests above."""
    probe = textwrap.dedent(
        """
        import json, sys
        import dtma.bootstrap, dtma.cli
        from dtma.spec.document import load_document
        seen = ["yaml" in sys.modules]
        load_document('{"servers": []}')
        seen.append("yaml" in sys.modules)
        assert load_document("servers: []") == {"servers": []}
        seen.append("yaml" in sys.modules)
        print(json.dumps(seen))
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    assert json.loads(run.stdout) == [False, False, True]
