"""A lighter agent (issue 21): `dtma serve` with no toolbox, no Vault and no OAuth issuer, against
the real engine, has not loaded the MCP SDK, hvac, PyJWT or cryptography once it is ready. They
are half an idle agent's memory; they load when first used (dtma/lazy_import.py). Memory itself
is measured by bench/fleet.py, not asserted here.
The positive case too: with an issuer configured, the first JWT loads PyJWT, so the check reads
what it claims to. And an agent whose toolbox is deployed and probed, with no request to its MCP
endpoint, holds the SDK's client side only (dtma/sdk_compat/packages.py); one endpoint request then
loads the server side, and the endpoint serves."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import die_with_parent, free_port
from tests.engine_fixture import new_toolbox_id, notes_server, remove_toolboxes, spec, time_server

pytestmark = pytest.mark.integration

# Top-level packages an idle agent must not hold: the SDK and what only it pulls in, the Vault
# client, the JWT stack, PyYAML (a config file or a YAML spec body loads it), and the character
# detection requests would import and never needs here (lazy_import.without_charset_detection).
DEFERRED = (
    "mcp",
    "mcp_types",
    "starlette",
    "sse_starlette",
    "uvicorn",
    "opentelemetry",
    "anyio",
    "hvac",
    "jwt",
    "cryptography",
    "yaml",
    "charset_normalizer",
    "chardet",
)

# Runs `dtma serve` as the console script does, in this process; a thread waits for /v1/ready,
# lets the first passes of the background loops run, writes sys.modules to a file, and stops the
# agent with SIGTERM (its normal stop). Optionally it first sends a JWT-shaped bearer to an MCP
# endpoint.
AGENT = textwrap.dedent(
    """
    import json, os, signal, sys, threading, time, urllib.error, urllib.request
    from dtma.cli import main

    base = "http://" + os.environ["DTMA_LISTEN"]

    def watch():
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(base + "/v1/ready", timeout=2):
                    break
            except OSError:
                time.sleep(0.1)
        else:
            os.kill(os.getpid(), signal.SIGTERM)
            return
        time.sleep(2)
        if os.environ.get("SEND_JWT"):
            request = urllib.request.Request(
                base + "/v1/toolboxes/some/mcp",
                data=b"{}",
                method="POST",
                headers={"Authorization": "Bearer " + os.environ["SEND_JWT"]},
            )
            try:
                urllib.request.urlopen(request, timeout=10)
            except urllib.error.HTTPError:
                pass  # 401: not a token of the issuer; it was parsed
        with open(os.environ["MODULES_OUT"], "w") as out:  # None: an import refused
            json.dump(sorted(k for k, v in sys.modules.items() if v is not None), out)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True).start()
    sys.exit(main(["serve"]))
    """
)


# Only the SDK's server side brings these (and the agent's own endpoint modules).
SERVER_SIDE = (
    "mcp.server",
    "starlette",
    "sse_starlette",
    "uvicorn",
    "click",
    "dtma.gateway.endpoint",
)

# The agent as above; the thread deploys the toolbox TOOLBOX (spec TOOLBOX_SPEC) and waits for
# its rollout, lets the steady probes run, writes sys.modules ("probed"), then makes one request
# to the toolbox's MCP endpoint (initialize, then tools/list on the session it opened: the
# handshake era, served by the SDK's server) and writes sys.modules again ("served") with the
# answers.
PROBED_AGENT = textwrap.dedent(
    """
    import json, os, signal, sys, threading, time, urllib.error, urllib.request
    from dtma.sdk_compat import packages as sdk_packages
    from dtma.cli import main

    base = "http://" + os.environ["DTMA_LISTEN"]
    out = {}

    def call(method, path, body, headers):
        request = urllib.request.Request(base + path, data=json.dumps(body).encode(),
                                         method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=120) as answer:
                return answer.status, dict(answer.headers), answer.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), err.read().decode()

    def rpc(token, session, method, params, id_):
        headers = {"Authorization": "Bearer " + token, "Content-Type": "application/json",
                   "Accept": "application/json, text/event-stream"}
        if session:
            headers["Mcp-Session-Id"] = session
            headers["Mcp-Protocol-Version"] = "2025-06-18"
        body = {"jsonrpc": "2.0", "method": method, "params": params}
        if id_ is not None:
            body["id"] = id_
        status, headers, text = call("POST", "/v1/toolboxes/" + os.environ["TOOLBOX"] + "/mcp",
                                     body, headers)
        data = [line[5:] for line in text.splitlines() if line.startswith("data:")]
        return status, headers.get("mcp-session-id") or headers.get("Mcp-Session-Id"), (
            json.loads(data[-1] if data else text) if (data or text.strip()) else None)

    def watch():
        try:
            scenario()
        finally:
            with open(os.environ["MODULES_OUT"], "w") as file:
                json.dump(out, file)
            os.kill(os.getpid(), signal.SIGTERM)

    def scenario():
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(base + "/v1/ready", timeout=2):
                    break
            except OSError:
                time.sleep(0.1)
        else:
            return
        token = open(os.path.join(os.environ["DTMA_STATE_DIR"], "api-token")).read().strip()
        status, _, answer = call(
            "PUT", "/v1/toolboxes/" + os.environ["TOOLBOX"] + "?wait=150",
            json.loads(os.environ["TOOLBOX_SPEC"]), {"Authorization": "Bearer " + token})
        out["applied"] = [status, json.loads(answer).get("phase")]
        time.sleep(3)  # steady probes, on the sessions the rollout opened
        out["probed"] = sorted(sys.modules)
        out["shells"] = list(sdk_packages.shells())
        init = {"protocolVersion": "2025-06-18", "capabilities": {},
                "clientInfo": {"name": "test-idle-imports", "version": "1"}}
        status, session, answer = rpc(token, None, "initialize", init, 1)
        out["initialize"] = [status, answer]
        rpc(token, session, "notifications/initialized", {}, None)
        status, _, answer = rpc(token, session, "tools/list", {}, 2)
        out["tools"] = [status, answer]
        out["served"] = sorted(sys.modules)
        out["shells_served"] = list(sdk_packages.shells())

    threading.Thread(target=watch, daemon=True).start()
    sys.exit(main(["serve"]))
    """
)


def _agent_env(tmp_path: Path, out: Path, **extra_env: str) -> dict[str, str]:
    env = {
        **os.environ,
        "DTMA_LISTEN": f"127.0.0.1:{free_port()}",
        "DTMA_STATE_DIR": str(tmp_path / "state"),
        "DTMA_AGENT_ID": f"test-idle-{secrets.token_hex(3)}",
        "DTMA_REAP_GRACE": "24h",
        "DTMA_LOG_LEVEL": "warning",
        "MODULES_OUT": str(out),
        **extra_env,
    }
    for name in ("VAULT_ADDR", "DTMA_VAULT_ADDR", "DTMA_OAUTH_ISSUERS"):
        if name not in extra_env:
            env.pop(name, None)
    return env


def _idle_modules(tmp_path: Path, **extra_env: str) -> set[str]:
    """The modules a ready `dtma serve` (no toolbox) has imported."""
    out = tmp_path / "modules.json"
    env = _agent_env(tmp_path, out, **extra_env)
    run = subprocess.run(
        [sys.executable, "-c", AGENT],
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
        preexec_fn=die_with_parent,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert out.exists(), f"the agent never became ready:\n{run.stdout}{run.stderr}"
    return set(json.loads(out.read_text()))


def _top(modules: set[str]) -> set[str]:
    return {name.split(".")[0] for name in modules}


def test_an_idle_agent_has_not_loaded_the_sdk_vault_or_jwt(
    tmp_path: Path, docker_client: Any
) -> None:
    modules = _idle_modules(tmp_path)
    loaded = _top(modules)
    assert {"aiohttp", "docker", "requests", "dtma"} <= loaded  # the file holds the agent's modules
    assert sorted(loaded.intersection(DEFERRED)) == []
    # Nor the fleet client, which only `dtma fleet` runs (cli_fleet_run.py).
    assert "dtma.cli_fleet" in modules
    assert sorted(m for m in modules if m.startswith(("dtma.fleet", "dtma.cli_fleet_run"))) == []
    # Nor the control API's client, which only the client commands use (cli_client.py).
    assert "dtma.cli_client" in modules
    assert "dtma.client" not in modules


def test_the_first_jwt_loads_pyjwt_and_nothing_else(tmp_path: Path, docker_client: Any) -> None:
    """The positive case: a module loaded on first use shows in the list."""
    port = free_port()
    loaded = _top(
        _idle_modules(
            tmp_path,
            DTMA_LISTEN=f"127.0.0.1:{port}",
            DTMA_PUBLIC_URL=f"http://127.0.0.1:{port}",
            DTMA_OAUTH_ISSUERS='[{"issuer": "https://idp.example"}]',
            SEND_JWT="e30.e30.c2ln",
        )
    )
    assert {"jwt", "cryptography"} <= loaded
    assert not loaded.intersection({"mcp", "hvac"})


@pytest.mark.timeout(300)
def test_a_probed_toolbox_loads_the_sdks_client_side_and_a_request_its_server_side(
    tmp_path: Path, docker_client: Any, images: dict[str, str]
) -> None:
    toolbox = new_toolbox_id()
    out = tmp_path / "modules.json"
    env = _agent_env(
        tmp_path,
        out,
        TOOLBOX=toolbox,
        TOOLBOX_SPEC=spec(time_server("time"), notes_server("notes"), deadline="90s"),
    )
    try:
        run = subprocess.run(
            [sys.executable, "-c", PROBED_AGENT],
            env=env,
            capture_output=True,
            text=True,
            timeout=280,
            preexec_fn=die_with_parent,
        )
    finally:
        remove_toolboxes(docker_client, [toolbox])
    assert run.returncode == 0, run.stdout + run.stderr
    seen = json.loads(out.read_text())
    assert seen.get("applied") == [200, "healthy"], seen.get("applied")

    # Probed over stdio and HTTP (the SDK's client session), and nothing of the server side.
    probed = set(seen["probed"])
    assert {"mcp.client.session", "mcp.client.streamable_http", "dtma.adapters.mcp_probe"} <= probed
    assert sorted(m for m in probed if m.startswith(SERVER_SIDE)) == []
    assert seen["shells"] == ["mcp", "mcp.client"]

    # One request: the server side is loaded, the packages are whole, and the endpoint serves.
    status, answer = seen["initialize"]
    assert status == 200, answer
    assert answer["result"]["capabilities"]["tools"] is not None
    status, answer = seen["tools"]
    assert status == 200, answer
    tools = {tool["name"] for tool in answer["result"]["tools"]}
    assert {"time__get_current_time", "notes__add_note"} <= tools
    served = set(seen["served"])
    assert {"mcp.server.lowlevel.server", "starlette", "dtma.gateway.endpoint"} <= served
    assert seen["shells_served"] == []
