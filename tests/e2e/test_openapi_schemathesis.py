"""schemathesis, every check, against a real agent process: the OpenAPI document is exact.

Thousands of requests are generated from /v1/openapi.json (positive and negative data, the
coverage, fuzzing and stateful phases) and every response is checked against the document:
status codes, content types, schemas, 405 with Allow, auth ignored, schema-valid input accepted
and schema-invalid input refused. The run must find zero failures, total at least 5,000
generated requests, and the agent must never answer a 5xx (its own request counter says so).

Nothing is deployed: the agent has no Vault, and schemathesis_hooks.py adds a secret to every
generated spec, so each PUT that passes the schema is refused by the agent's policy (422).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agent_process import AgentProcess, running_agent

pytestmark = pytest.mark.e2e

SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")
HOOKS = Path(__file__).with_name("schemathesis_hooks.py")
MIN_REQUESTS = 5000
# Per operation, for the fuzzing phase; coverage and stateful add their own cases.
MAX_EXAMPLES = int(os.environ.get("DTMA_SCHEMATHESIS_MAX_EXAMPLES", "200"))
SEED = int(os.environ.get("DTMA_SCHEMATHESIS_SEED", "20261122"))
# One worker: with several, CPython 3.11 can fail inside hypothesis (ast.parse from two
# threads: "AST constructor recursion depth mismatch"), an error in the tool, not the agent.
WORKERS = os.environ.get("DTMA_SCHEMATHESIS_WORKERS", "1")

# The one judgement the document cannot carry: a spec has rules no JSON Schema states
# (cross-field rules, unique names, the agent's policy, here "secrets need Vault"), so a
# schema-valid spec may still be refused with the documented 422. 413 (the documented answer to
# an oversized body) counts as a refusal of invalid data.
CONFIG = """\
color = false
hooks = "{hooks}"
headers = {{ Authorization = "Bearer {token}" }}
request-timeout = 20

[generation]
database = "none"

[checks.negative_data_rejection]
expected-statuses = ["400", "401", "404", "405", "406", "409", "413", "415", "422"]

# The MCP endpoint speaks JSON-RPC over streamable HTTP: its answers (406 without the MCP Accept
# header, SDK error bodies, SSE streams) follow the MCP specification, which OpenAPI cannot
# describe; tests/e2e/test_gateway.py covers it with the official SDK's client.
[[operations]]
include-path = "/v1/toolboxes/{{id}}/mcp"
enabled = false

[[operations]]
include-method = "PUT"
include-path = "/v1/toolboxes/{{id}}"
checks.positive_data_acceptance.expected-statuses = ["2xx", "404", "409", "412", "422"]
"""


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory, docker_client: Any) -> Iterator[AgentProcess]:
    state = tmp_path_factory.mktemp("schemathesis") / "state"
    with running_agent(state, docker_client, DTMA_REAP_GRACE="24h") as a:
        yield a


def _requests_by_status(agent: AgentProcess) -> dict[str, float]:
    """The agent's own count of API requests, by status (from /metrics)."""
    status, _, text = agent.request("GET", "/metrics")
    assert status == 200
    out: dict[str, float] = {}
    for line in str(text).splitlines():
        m = re.match(r"dtma_api_requests_total\{(.*)\} (\S+)$", line)
        if m:
            code = re.search(r'status="(\d+)"', m.group(1))
            assert code is not None, line
            out[code.group(1)] = out.get(code.group(1), 0.0) + float(m.group(2))
    return out


def _report(output: str) -> str:
    """The failures and errors, without the run's progress lines."""
    start = min(
        (i for i in (output.find("= FAILURES ="), output.find("= ERRORS =")) if i >= 0), default=0
    )
    return output[start:][:30000]


@pytest.mark.timeout(900)
def test_schemathesis_all_checks_find_no_failure(agent: AgentProcess, tmp_path: Path) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG.format(hooks=HOOKS, token=agent.token))
    before = _requests_by_status(agent)
    cmd = [
        SCHEMATHESIS,
        "--config-file",
        str(config),
        "run",
        f"{agent.base_url}/v1/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--workers",
        WORKERS,
    ]
    proc = subprocess.run(
        cmd,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=840,
        env={**os.environ, "NO_COLOR": "1"},
        check=False,
    )
    output = proc.stdout + proc.stderr
    (tmp_path / "schemathesis.out").write_text(output)
    assert proc.returncode == 0, f"schemathesis found failures or errors:\n{_report(output)}"
    m = re.search(r"Test cases:\s+(\d+) generated", output)
    assert m is not None, output[-4000:]
    generated = int(m.group(1))
    assert generated >= MIN_REQUESTS, output[-4000:]

    after = _requests_by_status(agent)
    served = {code: after[code] - before.get(code, 0.0) for code in after}
    assert sum(served.values()) >= MIN_REQUESTS, served
    assert not [c for c, n in served.items() if c.startswith("5") and n], served
    assert "unhandled_error" not in agent.logs()

    # The guard held: no generated spec was deployed.
    status, body = agent.get("/v1/toolboxes", token=agent.token)
    assert (status, body) == (200, {"items": []}), json.dumps(body)[:2000]
    assert agent.get("/v1/ready")[0] == 200


def test_a_toolbox_id_with_a_trailing_newline_is_refused(agent: AgentProcess) -> None:
    """Python's `$` matches before a final newline; the id check must not (it once gave 202)."""
    spec = {"servers": [{"name": "time", "image": "dtma-examples/mcp-time:latest"}]}
    for path in ("/v1/toolboxes/x%0A", "/v1/toolboxes/x%0D%0A", "/v1/toolboxes/%0Ax"):
        status, _, body = agent.request("PUT", path, token=agent.token, body=spec)
        assert status == 422, (path, body)
        assert body["error"]["details"][0]["loc"] == ["path", "id"]
    status, _, _ = agent.request("GET", "/v1/toolboxes/x%0A/tools", token=agent.token)
    assert status == 422
    assert agent.get("/v1/toolboxes", token=agent.token) == (200, {"items": []})


def test_a_refused_request_does_not_hold_its_idempotency_key(agent: AgentProcess) -> None:
    """Only successes are replayed: a key first used on a 404 may be used again (schemathesis
    reuses short keys such as "0" across operations)."""
    key = {"Idempotency-Key": "k-" + agent.token[:8]}
    first = agent.request("POST", "/v1/toolboxes/absent/restart", token=agent.token, headers=key)
    again = agent.request("POST", "/v1/toolboxes/other/stop", token=agent.token, headers=key)
    assert (first[0], again[0]) == (404, 404), (first, again)
    assert "Idempotent-Replayed" not in again[1]
