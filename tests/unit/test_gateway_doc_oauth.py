"""docs/gateway.md's OAuth examples stay true: the desktop client's configuration carries only
the endpoint's URL (the client finds the rest from the 401), the metadata example has the
fields the agent serves, and the config-file example loads."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from dtma.api.schemas import ProtectedResourceOut
from dtma.config import load_settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "gateway.md"


def section() -> str:
    return DOC.read_text().split("## Connecting with OAuth", 1)[1].split("\n## ", 1)[0]


def test_the_oauth_examples_match_what_the_agent_serves_and_reads(tmp_path: Path) -> None:
    blocks = [json.loads(b) for b in re.findall(r"```json\n(.*?)```", section(), re.S)]
    metadata, desktop = blocks
    ProtectedResourceOut.model_validate(metadata)
    (server,) = desktop["servers"].values()
    assert server["type"] == "http"
    assert "headers" not in server
    assert re.fullmatch(r"https://[^/]+/v1/toolboxes/[a-z0-9-]+/mcp", server["url"])
    (config,) = re.findall(r"```yaml\n(.*?)```", section(), re.S)
    path = tmp_path / "dtma.yaml"
    path.write_text(config)
    settings = load_settings({}, path)
    assert len(settings.oauth_issuers) == 2
    env_form = re.search(r"DTMA_OAUTH_ISSUERS='(.*?)'", config)
    assert env_form is not None
    assert load_settings({"DTMA_OAUTH_ISSUERS": env_form.group(1)}).oauth_issuers
    assert yaml.safe_load(config)["oauth_issuers"][1]["toolbox_claim"] == "dtma_toolboxes"
