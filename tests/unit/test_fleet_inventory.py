"""fleet.yaml parsing (every problem named by its field path, tokens never shown), selectors,
and the wave plan of a fleet rollout."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from dtma.fleet import FleetAgent, FleetFileError, parse_fleet, parse_selectors, plan_waves, select


def parse(text: str, base: Path = Path("/nonexistent")) -> list[FleetAgent]:
    return parse_fleet(text, base_dir=base)


def problems(text: str, base: Path = Path("/nonexistent")) -> dict[str, str]:
    with pytest.raises(FleetFileError) as err:
        parse(text, base)
    return {".".join(str(p) for p in loc): msg for loc, msg in err.value.details}


def test_agents_with_inline_and_file_tokens(tmp_path: Path) -> None:
    (tmp_path / "tokens").mkdir()
    (tmp_path / "tokens" / "b").write_text("file-token\n")
    agents = parse(
        """
agents:
  - {name: a, url: "http://10.0.0.1:8750/", token: inline-token, labels: {zone: eu}}
  - {name: b, url: https://b.example:8750, token_file: tokens/b}
""",
        tmp_path,
    )
    assert [(a.name, a.url, a.labels) for a in agents] == [
        ("a", "http://10.0.0.1:8750", {"zone": "eu"}),
        ("b", "https://b.example:8750", {}),
    ]
    assert [a.token.get_secret_value() for a in agents] == ["inline-token", "file-token"]
    assert "inline-token" not in repr(agents)


def test_every_bad_field_is_named() -> None:
    found = problems(
        """
agents:
  - {name: ok, url: "10.0.0.1:8750", token: t}
  - {name: "bad name", url: "http://h", token: t}
  - {name: c, url: "http://h"}
  - {name: d, url: "http://h", token: t, token_file: f}
  - {name: e, url: "http://h", token: t, colour: red}
  - {name: f, url: "http://h", token: t, labels: {"bad key!": v}}
"""
    )
    assert "http:// or https://" in found["agents.0.url"]
    assert "pattern" in found["agents.1.name"]
    assert found["agents.2"] == "give exactly one of token and token_file"
    assert found["agents.3"] == "give exactly one of token and token_file"
    assert "Extra inputs are not permitted" in found["agents.4.colour"]
    assert any(k.startswith("agents.5.labels") for k in found)


def test_duplicates_empty_lists_and_non_yaml() -> None:
    found = problems(
        "agents:\n  - {name: a, url: 'http://h', token: t}\n"
        "  - {name: a, url: 'http://i', token: t}\n"
    )
    assert "appears more than once" in found["agents"]
    assert "at least 1" in problems("agents: []")["agents"]
    assert "Field required" in problems("{}")["agents"]
    with pytest.raises(FleetFileError, match="not valid YAML at line 1"):
        parse("agents: [")


def test_token_file_problems_name_the_field_and_never_the_value(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("\n")
    found = problems(
        """
agents:
  - {name: a, url: "http://h", token_file: missing}
  - {name: b, url: "http://h", token_file: empty}
""",
        tmp_path,
    )
    assert "No such file" in found["agents.0.token_file"]
    assert "is empty" in found["agents.1.token_file"]
    with pytest.raises(FleetFileError) as err:
        parse("agents:\n  - {name: c, url: 'x', token: do-not-print-me}\n")
    assert "do-not-print-me" not in "\n".join(err.value.lines())


def test_selectors() -> None:
    def agent(name: str, **labels: str) -> FleetAgent:
        return FleetAgent(name, "http://h", SecretStr("t"), labels)

    fleet = [agent("a", zone="eu", ring="canary"), agent("b", zone="eu"), agent("c", zone="us")]
    assert parse_selectors(["zone=eu", " ring = canary"]) == {"zone": "eu", "ring": "canary"}
    assert [a.name for a in select(fleet, {"zone": "eu"})] == ["a", "b"]
    assert [a.name for a in select(fleet, {"zone": "eu", "ring": "canary"})] == ["a"]
    assert [a.name for a in select(fleet, {})] == ["a", "b", "c"]
    with pytest.raises(FleetFileError) as err:
        parse_selectors(["zone"])
    assert err.value.details == [(("selector", 0), "'zone' is not key=value")]


def test_waves_canaries_alone_then_batches_in_file_order() -> None:
    fleet = [FleetAgent(f"a{i}", "http://h", SecretStr("t")) for i in range(25)]
    waves = plan_waves(fleet, canary=2, batch=10)
    assert [(w.kind, w.label, len(w.agents)) for w in waves] == [
        ("canary", "canary 1/2", 1),
        ("canary", "canary 2/2", 1),
        ("batch", "batch 1/3", 10),
        ("batch", "batch 2/3", 10),
        ("batch", "batch 3/3", 3),
    ]
    assert [a.name for w in waves for a in w.agents] == [a.name for a in fleet]
    assert [w.kind for w in plan_waves(fleet[:3], canary=0, batch=10)] == ["batch"]
    assert [w.kind for w in plan_waves(fleet[:1], canary=3, batch=1)] == ["canary"]
    with pytest.raises(ValueError, match="batch >= 1"):
        plan_waves(fleet, canary=1, batch=0)
