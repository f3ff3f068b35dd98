"""docs/gateway.md's desktop-client configuration stays valid: it parses, and its URL and header
have the shapes the agent serves (the route of the MCP endpoint, a client token's prefix)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from dtma.api.openapi import ROUTES
from dtma.domain.access import TOKEN_PREFIX

DOC = Path(__file__).resolve().parents[2] / "docs" / "gateway.md"


def test_the_desktop_client_config_matches_the_endpoint_and_token_shapes() -> None:
    blocks = re.findall(r"```json\n(.*?)```", DOC.read_text(), re.S)
    assert blocks, "docs/gateway.md has no json configuration block"
    server = json.loads(blocks[0])["servers"]["dtma-notes"]
    assert server["type"] == "http"
    path = re.sub(r"^http://[^/]+", "", server["url"])
    mcp_routes = [r.path for r in ROUTES if r.path.endswith("/mcp")]
    assert mcp_routes, "no MCP endpoint route"
    pattern = "^" + re.sub(r"\{[^}]+\}", "[a-z0-9-]+", mcp_routes[0]) + "$"
    assert re.match(pattern, path), (path, mcp_routes[0])
    assert server["headers"]["Authorization"].startswith(f"Bearer {TOKEN_PREFIX}")
