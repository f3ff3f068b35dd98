"""A lighter agent (issue 21): `dtma serve` with no toolbox, no Vault and no OAuth issuer, against
the real engine, has not loaded the MCP SDK, hvac, PyJWT or cryptography once it is ready. They
are half an idle agent's memory; they load when first used (dtma/lazy_import.py). Memory itself
is measured by bench/fleet.py, not asserted here.
The positive case too: with an issuer configured, the first JWT loads PyJWT, so the check reads
what it claims to. (That a toolbox's endpoint and probes load the SDK when used is shown by every
test that deploys one.)"""

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

pytestmark = pytest.mark.integration

# Top-level packages an idle agent must not hold: the SDK and what only it pulls in, the Vault
# client, and the JWT stack.
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
        with open(os.environ["MODULES_OUT"], "w") as out:
            json.dump(sorted(sys.modules), out)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True).start()
    sys.exit(main(["serve"]))
    """
)


def _idle_modules(tmp_path: Path, **extra_env: str) -> set[str]:
    """The modules a ready `dtma serve` (no toolbox) has imported."""
    out = tmp_path / "modules.json"
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
    assert {"aiohttp", "docker", "dtma"} <= loaded  # the file holds the agent's modules
    assert sorted(loaded.intersection(DEFERRED)) == []
    # Nor the fleet client, which only `dtma fleet` runs (cli_fleet_run.py).
    assert "dtma.cli_fleet" in modules
    assert sorted(m for m in modules if m.startswith(("dtma.fleet", "dtma.cli_fleet_run"))) == []


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
