"""A real agent process with Vault: the secret's bytes appear nowhere they must not."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agent_process import DTMA, AgentProcess, running_agent
from tests.conftest import BaoServer, wait_until
from tests.engine_fixture import new_toolbox_id, notes_server, spec

pytestmark = pytest.mark.e2e


@pytest.fixture
def agent(
    tmp_path: Path, images: dict[str, str], docker_client: Any, bao: BaoServer
) -> Iterator[AgentProcess]:
    token_file = tmp_path / "vault-token"
    token_file.write_text(bao.root_token)
    token_file.chmod(0o600)
    with running_agent(
        tmp_path / "state",
        docker_client,
        VAULT_ADDR=bao.addr,
        DTMA_VAULT_TOKEN_FILE=str(token_file),
        DTMA_SECRETS_DIR=str(tmp_path / "secrets"),
        DTMA_LOG_LEVEL="debug",
    ) as a:
        yield a
    subprocess.run(["umount", "-l", str(tmp_path / "secrets")], check=False, capture_output=True)


def test_the_secret_appears_nowhere(
    agent: AgentProcess, bao: BaoServer, docker_client: Any, tmp_path: Path
) -> None:
    file_value = "FILE-" + secrets.token_hex(16)
    env_value = "ENV-" + secrets.token_hex(16)
    path = f"app/{secrets.token_hex(3)}"
    bao.client().secrets.kv.v2.create_or_update_secret(
        path=path, secret={"f": file_value, "e": env_value}, mount_point="secret"
    )
    ref = {"mount": "secret", "path": path}
    tb, tb_env = new_toolbox_id(), new_toolbox_id()
    agent.made += [tb, tb_env]
    body_file = spec(
        notes_server(
            "notes", secrets=[{"name": "API_KEY", "vault": {**ref, "key": "f"}, "as": "file"}]
        )
    )
    body_env = spec(
        notes_server(
            "notes", secrets=[{"name": "TOKEN", "vault": {**ref, "key": "e"}, "as": "env"}]
        )
    )
    responses = []
    for toolbox, body in ((tb, body_file), (tb_env, body_env)):
        status, _, resp = agent.request(
            "PUT",
            f"/v1/toolboxes/{toolbox}?wait=60",
            token=agent.token,
            body=json.loads(body),
            timeout=90,
        )
        assert status == 200, resp
        assert resp["operation"]["state"] == "succeeded", resp
        responses.append(resp)
    # Rotation reads the values again; an unchanged value restarts nothing.
    _, _, refresh = agent.request("POST", f"/v1/toolboxes/{tb}/secrets/refresh", token=agent.token)
    wait_until(
        lambda: (
            agent.get(f"/v1/operations/{refresh['operation']}", agent.token)[1]["state"]
            != "running"
        ),
        60,
        "refresh",
    )
    for path_ in (
        f"/v1/toolboxes/{tb}",
        f"/v1/toolboxes/{tb_env}",
        "/v1/toolboxes",
        "/v1/events?limit=1000",
        f"/v1/toolboxes/{tb}/revisions",
        f"/v1/toolboxes/{tb}/tools",
        f"/v1/operations/{refresh['operation']}",
    ):
        status, body = agent.get(path_, token=agent.token)
        assert status == 200
        responses.append(body)
    env = {**os.environ, "DTMA_URL": agent.base_url, "DTMA_API_TOKEN": agent.token}
    cli = subprocess.run(
        [DTMA, "refresh-secrets", tb, "--wait", "60"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert f"{tb}: refresh_secrets succeeded" in cli.stdout
    responses.append(cli.stdout + cli.stderr)
    api_text = json.dumps(responses)

    (container,) = docker_client.containers.list(filters={"label": f"dtma.toolbox={tb}"})
    inspect = json.dumps(docker_client.api.inspect_container(container.id))
    inside = container.exec_run(["python3", "-c", "print(open('/run/secrets/API_KEY').read())"])
    assert inside.output.decode().strip() == file_value  # it did arrive

    state_bytes = b"".join(p.read_bytes() for p in (tmp_path / "state").glob("state.db*"))
    log_text = agent.logs()
    assert '"event": "secrets_checked"' in log_text  # the logs did cover the secret's path

    for value in (file_value, env_value):
        assert value.encode() not in state_bytes
        assert value not in log_text
        assert value not in api_text
    assert file_value not in inspect  # file mode: not visible to `docker inspect`


def test_log_lines_carry_their_context(agent: AgentProcess, bao: BaoServer) -> None:
    tb = new_toolbox_id()
    agent.made.append(tb)
    status, _, resp = agent.request(
        "PUT",
        f"/v1/toolboxes/{tb}?wait=60",
        token=agent.token,
        body=json.loads(spec(notes_server("notes"))),
        timeout=90,
        headers={"X-Request-Id": "req-ctx-1"},
    )
    assert status == 200, resp
    op = resp["operation"]["id"]
    lines = [json.loads(line) for line in agent.logs().splitlines() if line.startswith("{")]
    started = [x for x in lines if x.get("event") == "rollout_started" and x.get("toolbox") == tb]
    assert started
    assert started[0]["operation"] == op
    assert started[0]["request_id"] == "req-ctx-1"
    assert started[0]["revision"] == 1
    # request_id is never passed by the journal: it comes from the bound context of the PUT.


def test_servers_that_print_and_return_their_secrets_leak_them_nowhere(
    agent: AgentProcess, bao: BaoServer, tmp_path: Path
) -> None:
    """One server prints its env and (multi-line) file secret and exits; another prints them and
    answers tools/list with an MCP error carrying both. No line of either value may appear in any
    API answer, event, error entry, /metrics, the agent's log or the state DB."""
    env_value = "ENVLEAK-" + secrets.token_hex(16)
    file_value = "\n".join(
        [f"-----BEGIN LEAK {secrets.token_hex(4)}-----"]
        + [secrets.token_urlsafe(48) for _ in range(5)]
        + [f"-----END LEAK {secrets.token_hex(4)}-----", ""]
    )
    path = f"leak/{secrets.token_hex(3)}"
    bao.client().secrets.kv.v2.create_or_update_secret(
        path=path, secret={"env": env_value, "pem": file_value}, mount_point="secret"
    )
    ref = {"mount": "secret", "path": path}
    leaky = [
        {"name": "TOKEN", "vault": {**ref, "key": "env"}, "as": "env"},
        {"name": "KEY", "vault": {**ref, "key": "pem"}, "as": "file"},
    ]
    items = "TOKEN,/run/secrets/KEY"
    printer = notes_server("printer", "exit_at_start", secrets=leaky)
    printer["env"]["PRINT_AT_START"] = items
    errorer = notes_server("errorer", f"error_env:{items}", secrets=leaky)
    errorer["env"]["PRINT_AT_START"] = items
    tb_print, tb_error = new_toolbox_id(), new_toolbox_id()
    agent.made += [tb_print, tb_error]
    answers: list[Any] = []

    status, _, resp = agent.request(
        "PUT",
        f"/v1/toolboxes/{tb_print}?wait=60",
        token=agent.token,
        body=json.loads(spec(printer, deadline="15s")),
        timeout=90,
    )
    answers.append(resp)
    assert status == 200, resp
    assert resp["operation"]["state"] == "failed", resp
    assert "last output" in resp["operation"]["error"]
    assert "***" in resp["operation"]["error"]  # it did print, and it was masked

    status, _, accepted = agent.request(
        "PUT",
        f"/v1/toolboxes/{tb_error}",
        token=agent.token,
        body=json.loads(spec(errorer, deadline="8s")),
    )
    assert status == 202, accepted
    op = accepted["operation"]
    answers.append(accepted)
    seen_error = seen_logs = False
    while agent.get(f"/v1/operations/{op}", agent.token)[1]["state"] == "running":
        _, tb_status = agent.get(f"/v1/toolboxes/{tb_error}", agent.token)
        answers.append(tb_status)
        seen_error |= any(
            "tools_list_failed" in (s["last_error"] or "") for s in tb_status["servers"]
        )
        logs_path = f"/v1/toolboxes/{tb_error}/servers/errorer/logs?tail=200"
        code, logs = agent.get(logs_path, agent.token)
        answers.append(logs)
        seen_logs |= code == 200 and "***" in json.dumps(logs)
    assert seen_error, "the MCP error path was not exercised"
    assert seen_logs, "the logs endpoint never showed the (masked) printed values"

    for p in (
        f"/v1/operations/{op}",
        f"/v1/toolboxes/{tb_print}",
        f"/v1/toolboxes/{tb_error}",
        "/v1/toolboxes",
        "/v1/events?limit=1000",
        "/v1/errors",
        "/metrics",
    ):
        code, body = agent.get(p, agent.token)
        assert code == 200, (p, body)
        answers.append(body)
    api_text = json.dumps(answers)
    state_bytes = b"".join(p.read_bytes() for p in (tmp_path / "state").glob("state.db*"))
    log_text = agent.logs()
    assert "tools unavailable" in log_text  # the agent did log the MCP error

    lines = [x.strip() for x in (env_value + "\n" + file_value).splitlines() if x.strip()]
    assert len(lines) == 8
    for line in lines:
        assert line not in api_text, line
        assert line not in log_text, line
        assert line.encode() not in state_bytes, line
