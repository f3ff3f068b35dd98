"""Heartbeats, the pure part: full or delta, what "acknowledged" means, the push debounce,
the body against the documented model, answers, and the settings' bad input."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from dtma.adapters.controller_http import controller_config_from
from dtma.api.openapi import build_document
from dtma.api.schemas_heartbeat import HeartbeatIn
from dtma.config import load_settings
from dtma.domain.heartbeat import (
    DELETED,
    AckLedger,
    AgentFacts,
    HostFacts,
    Plan,
    SendSchedule,
    ToolboxEntry,
    counts_of,
    entry_from_status,
    payload,
    read_answer,
)
from dtma.errors import ConfigError


def tb(tid: str, phase: str = "healthy", revision: int = 1) -> ToolboxEntry:
    return ToolboxEntry(tid, revision, revision, phase, 1, 1, 1000.0 + revision)


def ids(plan: Plan) -> list[str]:
    return [e.id for e in plan.toolboxes]


# -- full or delta -------------------------------------------------------------------------------


def test_the_first_is_full_then_only_changed_toolboxes_and_possibly_none() -> None:
    ledger = AckLedger()
    state = [tb("a"), tb("b"), tb("c")]
    first = ledger.plan(state)
    assert (first.seq, first.full, ids(first)) == (1, True, ["a", "b", "c"])
    ledger.acknowledged(first, resync=False)
    quiet = ledger.plan(state)
    assert (quiet.full, quiet.toolboxes) == (False, ())
    ledger.acknowledged(quiet, resync=False)
    state[1] = tb("b", "degraded")
    delta = ledger.plan(state)
    assert (delta.seq, delta.full, delta.toolboxes) == (3, False, (tb("b", "degraded"),))


def test_a_failed_heartbeat_changes_nothing_so_the_next_delta_still_carries_the_change() -> None:
    ledger = AckLedger()
    ledger.acknowledged(ledger.plan([tb("a"), tb("b")]), resync=False)
    lost = ledger.plan([tb("a", "degraded"), tb("b")])  # never acknowledged
    assert ids(lost) == ["a"]
    # Meanwhile b changed too; only the latest state of a is sent, never the lost body.
    retry = ledger.plan([tb("a", "failed"), tb("b", "stopped")])
    assert retry.toolboxes == (tb("a", "failed"), tb("b", "stopped"))


def test_a_first_heartbeat_that_fails_leaves_the_next_one_full() -> None:
    ledger = AckLedger()
    ledger.plan([tb("a")])
    assert ledger.plan([tb("a")]).full


def test_a_deleted_toolbox_is_sent_once_as_deleted() -> None:
    ledger = AckLedger()
    ledger.acknowledged(ledger.plan([tb("a"), tb("b")]), resync=False)
    gone = ledger.plan([tb("a")])
    assert [(e.id, e.phase) for e in gone.toolboxes] == [("b", DELETED)]
    ledger.acknowledged(gone, resync=False)
    assert ledger.plan([tb("a")]).toolboxes == ()


def test_every_tenth_is_full() -> None:
    ledger = AckLedger()
    fulls = []
    for _ in range(25):
        plan = ledger.plan([tb("a")])
        fulls.append(plan.full)
        ledger.acknowledged(plan, resync=False)
    assert [i + 1 for i, f in enumerate(fulls) if f] == [1, 11, 21]


def test_resync_makes_the_next_one_full_until_a_full_one_is_acknowledged() -> None:
    ledger = AckLedger()
    ledger.acknowledged(ledger.plan([tb("a")]), resync=False)
    delta = ledger.plan([tb("a")])
    ledger.acknowledged(delta, resync=True)
    full = ledger.plan([tb("a"), tb("b")])
    assert full.full
    assert ids(full) == ["a", "b"]
    assert ledger.plan([tb("a"), tb("b")]).full  # that one was not acknowledged
    ledger.acknowledged(ledger.plan([tb("a"), tb("b")]), resync=False)
    assert not ledger.plan([tb("a"), tb("b")]).full


def test_a_server_counts_once_by_name_and_healthy_when_any_of_its_containers_is() -> None:
    status = {
        "id": "t",
        "revision": 2,
        "stable_revision": 1,
        "phase": "deploying",
        "updated_at": 5.0,
        "servers": [
            {"name": "time", "health": "healthy"},  # revision 1, serving
            {"name": "time", "health": "unknown"},  # revision 2, in its gate
            {"name": "notes", "health": "unhealthy"},
        ],
    }
    assert entry_from_status(status) == ToolboxEntry("t", 2, 1, "deploying", 1, 2, 5.0)


# -- when to send ------------------------------------------------------------------------------


def test_a_burst_of_changes_makes_one_push_within_a_second() -> None:
    schedule = SendSchedule(15.0, start=0.0)
    schedule.attempted(0.0, 0.01, succeeded=True)
    assert schedule.due() == 15.0
    schedule.changed(3.0)
    assert schedule.due() == pytest.approx(3.2)  # quiet after the last change
    schedule.changed(3.1)
    schedule.changed(3.25)
    assert schedule.due() == pytest.approx(3.45)
    for t in (3.4, 3.5, 3.55):  # a change keeps coming: never later than 0.6 s after the first
        schedule.changed(t)
    assert schedule.due() == pytest.approx(3.6)
    schedule.attempted(3.6, 3.61, succeeded=True)
    assert not schedule.pending
    assert schedule.due() == pytest.approx(18.6)


def test_a_change_during_a_heartbeat_makes_another_one() -> None:
    schedule = SendSchedule(15.0, start=0.0)
    schedule.changed(1.0)
    schedule.attempted(0.5, 1.5, succeeded=True)  # began before the change: may not carry it
    assert schedule.pending
    assert schedule.due() == pytest.approx(1.7)  # a new burst, from the end of that one


def test_changes_during_every_heartbeat_never_make_a_hot_loop() -> None:
    schedule = SendSchedule(15.0, start=0.0)
    now, sends = 0.0, []
    while now < 10.0:
        now = max(now, schedule.due())
        sends.append(now)
        schedule.changed(now + 0.001)  # a change arrives while each heartbeat is sent
        schedule.attempted(now, now + 0.002, succeeded=True)
        now += 0.002
    gaps = [b - a for a, b in itertools.pairwise(sends)]
    assert min(gaps) >= 0.2
    assert len(sends) <= 10.0 / 0.2 + 1


def test_while_the_controller_fails_changes_wait_for_the_interval() -> None:
    schedule = SendSchedule(15.0, start=0.0)
    schedule.attempted(0.0, 0.01, succeeded=False)
    schedule.changed(2.0)
    assert schedule.due() == 15.0
    schedule.attempted(15.0, 15.01, succeeded=True)
    schedule.changed(16.0)
    assert schedule.due() == pytest.approx(16.2)


# -- the body --------------------------------------------------------------------------------


def test_the_body_is_what_the_openapi_document_states() -> None:
    agent = AgentFacts("agent-1", "0.1.0", 1.5, "http://10.0.0.1:8750", {"zone": "a"})
    host = HostFacts(2, 8 << 30, 4 << 30, 10 << 30, 0.5)
    entries = [tb("a"), tb("b", "degraded"), ToolboxEntry("c", 1, 1, DELETED, 0, 0, 9.0)]
    body = payload(agent, Plan(7, False, tuple(entries)), 99.0, host, counts_of(entries[:2], 3))
    model = HeartbeatIn.model_validate(body)
    assert model.model_dump(mode="json") == body
    assert body["counts"] == {"toolboxes": 2, "containers": 3, "healthy_toolboxes": 1}
    assert body["agent"]["labels"] == {"zone": "a"}


@pytest.mark.parametrize(
    ("status", "body", "outcome", "resync"),
    [
        (200, b"", "ok", False),
        (204, b"", "ok", False),
        (200, b'{"resync": true}', "ok", True),
        (200, b'{"resync": "yes"}', "ok", False),
        (200, b"<html>hello</html>", "bad_answer", False),
        (200, b"[1, 2]", "bad_answer", False),
        (302, b"", "redirect", False),
        (401, b"", "unauthorized", False),
        (403, b"", "unauthorized", False),
        (404, b"", "rejected", False),
        (503, b"", "server_error", False),
    ],
)
def test_answers_are_classified(status: int, body: bytes, outcome: str, resync: bool) -> None:
    answer = read_answer(status, body, "http://elsewhere/")
    assert (answer.outcome, answer.resync) == (outcome, resync)
    assert answer.acknowledged == (outcome == "ok")
    assert answer.transient == (outcome == "server_error")


# -- settings --------------------------------------------------------------------------------

TOKEN = "controller-token-" + "x" * 16


def test_heartbeat_settings_are_read_and_normalized(tmp_path: Path) -> None:
    s = load_settings(
        {
            "DTMA_CONTROLLER_URL": "https://ctl.example:8443/base/",
            "DTMA_CONTROLLER_TOKEN": TOKEN,
            "DTMA_HEARTBEAT_INTERVAL": "2m",
            "DTMA_AGENT_LABELS": "zone=eu-1, rack=r7,empty=",
            "DTMA_LISTEN": "0.0.0.0:9000",
        }
    )
    assert s.controller_url == "https://ctl.example:8443/base"
    assert s.heartbeat_interval == 120.0
    assert s.agent_labels == {"zone": "eu-1", "rack": "r7", "empty": ""}
    assert TOKEN not in repr(s)
    cfg = controller_config_from(s)
    assert cfg is not None
    assert cfg.advertise_url.endswith(":9000")
    assert TOKEN not in repr(cfg)
    assert load_settings({}).heartbeat_interval == 15.0
    assert controller_config_from(load_settings({})) is None


def test_the_token_may_come_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "ctl-token"
    path.write_text(TOKEN + "\n")
    env = {"DTMA_CONTROLLER_URL": "http://ctl:1", "DTMA_CONTROLLER_TOKEN_FILE": str(path)}
    cfg = controller_config_from(load_settings(env))
    assert cfg is not None
    assert cfg.token == TOKEN
    path.unlink()
    with pytest.raises(ConfigError, match="cannot read DTMA_CONTROLLER_TOKEN_FILE"):
        controller_config_from(load_settings(env))


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DTMA_CONTROLLER_URL": "ctl.example:8080"}, "DTMA_CONTROLLER_URL: .*http:// or https://"),
        ({"DTMA_CONTROLLER_URL": "ftp://ctl"}, "DTMA_CONTROLLER_URL: .*http:// or https://"),
        ({"DTMA_CONTROLLER_URL": "http://"}, "DTMA_CONTROLLER_URL: .*no host"),
        ({"DTMA_CONTROLLER_URL": "http://u:p@ctl"}, "DTMA_CONTROLLER_URL: .*credentials"),
        ({"DTMA_HEARTBEAT_INTERVAL": "-5s"}, "DTMA_HEARTBEAT_INTERVAL: must be a duration"),
        ({"DTMA_HEARTBEAT_INTERVAL": "500ms"}, "DTMA_HEARTBEAT_INTERVAL: must be between 1s"),
        ({"DTMA_HEARTBEAT_INTERVAL": "11m"}, "DTMA_HEARTBEAT_INTERVAL: must be between 1s"),
        ({"DTMA_AGENT_LABELS": "zone"}, "DTMA_AGENT_LABELS: 'zone' is not key=value"),
        ({"DTMA_AGENT_LABELS": "=x"}, "DTMA_AGENT_LABELS: label key ''"),
        ({"DTMA_AGENT_LABELS": "a=1,a=2"}, "DTMA_AGENT_LABELS: label key 'a' is given twice"),
        ({"DTMA_AGENT_LABELS": "a=b c"}, "DTMA_AGENT_LABELS: label 'a': the value"),
        ({"DTMA_ADVERTISE_URL": "10.0.0.1:8750"}, "DTMA_ADVERTISE_URL: .*http://"),
        ({"DTMA_CONTROLLER_URL": "http://ctl"}, "needs DTMA_CONTROLLER_TOKEN"),
    ],
)
def test_bad_heartbeat_settings_are_refused_naming_the_setting(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(env)


def test_a_short_token_or_a_bad_ca_is_refused_at_start(tmp_path: Path) -> None:
    short = load_settings({"DTMA_CONTROLLER_URL": "http://ctl", "DTMA_CONTROLLER_TOKEN": "abc"})
    with pytest.raises(ConfigError, match="at least 16 characters") as err:
        controller_config_from(short)
    assert "abc" not in str(err.value)
    bad_ca = tmp_path / "ca.pem"
    bad_ca.write_text("not a certificate")
    env = {
        "DTMA_CONTROLLER_URL": "https://ctl",
        "DTMA_CONTROLLER_TOKEN": TOKEN,
        "DTMA_CONTROLLER_CA": str(bad_ca),
    }
    with pytest.raises(ConfigError, match="DTMA_CONTROLLER_CA"):
        controller_config_from(load_settings(env))


def test_the_openapi_document_has_the_heartbeat_as_a_callback_of_get_agent() -> None:
    doc = build_document()
    callbacks = doc["paths"]["/v1/agent"]["get"]["callbacks"]["heartbeat"]
    (expression, item) = next(iter(callbacks.items()))
    # Runtime expressions over GET /v1/agent's own answer: controller.url and agent_id.
    assert expression == (
        "{$response.body#/controller/url}/v1/agents/{$response.body#/agent_id}/heartbeat"
    )
    schema = item["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/HeartbeatIn"}
    assert "HeartbeatAnswer" in doc["components"]["schemas"]
    assert "controller" in doc["components"]["schemas"]["AgentOut"]["properties"]
