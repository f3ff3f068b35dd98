"""A real agent process whose plain Vault token reaches its maximum TTL: the agent says so loudly
(an error log line, an agent-level event, an error-journal entry) once per episode, picks up a
new token written to DTMA_VAULT_TOKEN_FILE, and never shows either token anywhere."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.agent_process import AgentProcess, running_agent
from tests.conftest import BaoServer, run_bao, wait_until

pytestmark = pytest.mark.e2e


def events(agent: AgentProcess, kind: str) -> list[dict[str, Any]]:
    status, page = agent.get("/v1/events?limit=1000", agent.token)
    assert status == 200
    return [e for e in page["items"] if e["kind"] == kind]


def make_token(bao: BaoServer, **kw: str) -> str:
    return str(bao.client().auth.token.create(policies=["default"], **kw)["auth"]["client_token"])


def test_a_plain_token_at_its_max_ttl_is_reported_and_a_new_one_is_picked_up(
    tmp_path: Path, docker_client: Any
) -> None:
    with run_bao(tmp_path) as bao:
        # Long enough to outlive the agent's start (seconds on a busy machine), short enough
        # to reach its cap soon.
        old = make_token(bao, ttl="15s", explicit_max_ttl="20s")
        token_file = tmp_path / "vault-token"
        token_file.write_text(old)
        token_file.chmod(0o600)
        try:
            with running_agent(
                tmp_path / "state",
                docker_client,
                VAULT_ADDR=bao.addr,
                DTMA_VAULT_TOKEN_FILE=str(token_file),
                DTMA_SECRETS_DIR=str(tmp_path / "secrets"),
                DTMA_ALLOW_DISK_SECRETS="true",
                DTMA_REAP_GRACE="24h",
                DTMA_LOG_LEVEL="debug",
            ) as agent:
                wait_until(
                    lambda: len(events(agent, "vault_auth_failed")) >= 2,
                    45,
                    "the capped token and then its expiry reported",
                )
                failed = events(agent, "vault_auth_failed")
                assert [e["reason"] for e in failed[:2]] == ["ttl_capped", "login_retry"]
                status, errors = agent.get("/v1/errors", agent.token)
                assert status == 200
                entries = [e for e in errors["items"] if e["kind"] == "vault_auth_failed"]
                assert {e["category"] for e in entries} == {"auth"}
                assert all(e["toolbox"] is None for e in entries)

                new = make_token(bao, ttl="1h")
                token_file.write_text(new)
                wait_until(
                    lambda: events(agent, "vault_auth_recovered"), 20, "the new token picked up"
                )
                assert len(events(agent, "vault_auth_failed")) == 2, "one report per change"
                _, page = agent.get("/v1/events?limit=1000", agent.token)
                answers = json.dumps([page, errors])
                logs = agent.logs()
        finally:
            subprocess.run(["umount", "-l", str(tmp_path / "secrets")], check=False)
    loud = [json.loads(line) for line in logs.splitlines() if "vault_token_unusable" in line]
    assert [line["level"] for line in loud] == ["error", "error"]
    state = b"".join(p.read_bytes() for p in (tmp_path / "state").glob("state.db*"))
    assert state, "the state DB was found"
    for token in (old, new):
        assert token not in logs
        assert token not in answers
        assert token.encode() not in state
