"""RFC 9728 protected-resource metadata of the toolbox MCP endpoints, served without auth.

`GET /.well-known/oauth-protected-resource/v1/toolboxes/{id}/mcp` tells an MCP client where
to get a token for that endpoint: its canonical URL (`resource`), the configured issuers
(`authorization_servers`), the scopes that name the toolbox and how to present the token.
The answer is the same for every well-formed id, whether or not such a toolbox exists (it
is built from the agent's settings alone), so it reveals nothing that an unauthenticated
caller could not learn already: the MCP endpoint itself answers 401 before it looks a toolbox
up. An id that is not a DNS label (no toolbox can have it) gets 404, as does every id when no
issuer is configured (OAuth is off: there is nothing to discover).
"""

from __future__ import annotations

from aiohttp import web

from dtma.api.errors import error_response
from dtma.api.middleware import OAUTH_METADATA_PREFIX
from dtma.gateway.oauth import JwtVerifier
from dtma.spec.models import is_dns_label


def add_oauth_routes(app: web.Application, verifier: JwtVerifier | None) -> None:
    async def metadata(request: web.Request) -> web.Response:
        toolbox = request.match_info["id"]
        if verifier is None or not verifier.enabled:
            return error_response(404, "not_found", "OAuth is not configured on this agent")
        if not is_dns_label(toolbox):
            return error_response(404, "not_found", "no such MCP endpoint")
        return web.json_response(
            {
                "resource": verifier.resource(toolbox),
                "authorization_servers": [i.issuer for i in verifier.issuers],
                "scopes_supported": verifier.scopes(toolbox),
                "bearer_methods_supported": ["header"],
                "resource_name": f"dtma toolbox {toolbox}",
            },
            headers={"Cache-Control": "max-age=300"},
        )

    app.router.add_get(f"{OAUTH_METADATA_PREFIX}v1/toolboxes/{{id}}/mcp", metadata)
