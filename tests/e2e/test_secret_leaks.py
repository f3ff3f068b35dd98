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
