"""Pure: the OAuth issuer settings (`OAuthIssuer`, read by config.py) and what a verified
JWT's claims grant on a toolbox's MCP endpoint.

Two questions, both answered from claims that gateway/oauth.py has already verified:
- which toolboxes the token reaches: the entries `<prefix><id>` of its `scope` (a
  space-separated string, RFC 8693/9068) or `scp` (a list), or, when the issuer names a claim,
  the ids that claim holds (a string or a list of strings);
- which tools it may see and call: `gateway.access` rules of the toolbox's spec. A rule matches
  when every claim it names matches; a tool is offered when at least one matching rule's
  `tools` filter permits it. No rules: nothing narrowed. Rules but none matching: no tool.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from dtma.spec.models import AccessRule
from dtma.spec.units import Duration

SCOPE_CLAIMS = ("scope", "scp")  # claims whose string form is a space-separated set
DEFAULT_SCOPE_PREFIX = "toolbox:"
OAUTH_PRINCIPAL = "oauth"  # the token column of a call made with a JWT (subject/issuer beside)

# Asymmetric JWS algorithms only: an HS* token could be "signed" with a public key as secret.
JwtAlgorithm = Literal[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"
]
JWT_ALGORITHMS: tuple[JwtAlgorithm, ...] = get_args(JwtAlgorithm)


def http_url(value: str) -> str:
    """An https URL, or http only to a loopback host (a dev issuer such as `bao -dev`): keys
    fetched in the clear from elsewhere could be swapped on the way."""
    # No quotes, backslashes or angle brackets: the URL goes into a WWW-Authenticate header.
    m = re.fullmatch(
        r'(https?)://(\[[0-9A-Fa-f:.]+\]|[^/:?#\s"\\<>]+)(:\d{1,5})?(/[^?#\s"\\<>]*)?', value
    )
    if m is None:
        raise ValueError(f"{value!r} is not an http(s) URL without query or fragment")
    host = m.group(2).strip("[]")
    if m.group(1) == "http" and not _loopback(host):
        raise ValueError(f"{value!r}: http is allowed only to a loopback host; use https")
    return value


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class OAuthIssuer(BaseModel):
    """One authorization server whose JWT access tokens the toolbox MCP endpoints accept
    (docs/gateway.md "Connecting with OAuth")."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    issuer: Annotated[str, AfterValidator(http_url)]  # compared with `iss` exactly
    # None: the endpoint's canonical URL (`<public_url>/v1/toolboxes/<id>/mcp`, RFC 8707).
    audience: str | None = Field(default=None, min_length=1)
    # None: from the issuer's metadata (OpenID discovery, then RFC 8414).
    jwks_url: Annotated[str, AfterValidator(http_url)] | None = None
    # None: the scope `<scope_prefix><id>` names a toolbox; else this claim lists toolbox ids.
    toolbox_claim: str | None = Field(default=None, min_length=1)
    scope_prefix: str = Field(default="toolbox:", min_length=1)
    algorithms: tuple[JwtAlgorithm, ...] = Field(default=JWT_ALGORITHMS, min_length=1)
    leeway: Duration = Field(default=30.0, le=300)


@dataclass(frozen=True)
class JwtCaller:
    """Who a verified JWT is: never the token itself."""

    issuer: str
    subject: str
    claims: Mapping[str, Any] = field(repr=False)
    expires_at: float = float("inf")  # wall clock: `exp` plus the issuer's leeway


def claim_values(claims: Mapping[str, Any], name: str) -> tuple[str, ...] | None:
    """The values of claim `name` as strings, or None when absent. A dotted name that is not a
    top-level claim walks nested objects (`realm_access.roles`). Lists give their scalar items;
    a scope claim's string gives its space-separated words; true/false read as JSON does."""
    value: Any = claims.get(name) if name in claims else _nested(claims, name)
    if value is None:
        return None
    items: Iterable[Any] = value if isinstance(value, list) else [value]
    out: list[str] = []
    for item in items:
        if isinstance(item, bool):
            out.append("true" if item else "false")
        elif isinstance(item, str):
            out.extend(item.split() if name in SCOPE_CLAIMS else [item])
        elif isinstance(item, int | float):
            out.append(str(item))
    return tuple(out)


def _nested(claims: Mapping[str, Any], name: str) -> Any:
    node: Any = claims
    for part in name.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def reaches(
    claims: Mapping[str, Any], toolbox: str, claim: str | None, prefix: str = DEFAULT_SCOPE_PREFIX
) -> bool:
    """Whether the token names `toolbox`: by scope `<prefix><toolbox>` (claim None), or as a
    value of `claim`."""
    if claim is not None:
        return toolbox in (claim_values(claims, claim) or ())
    wanted = prefix + toolbox
    return any(wanted in (claim_values(claims, c) or ()) for c in SCOPE_CLAIMS)


def rule_matches(rule: AccessRule, claims: Mapping[str, Any]) -> bool:
    for name, expected in rule.claims.items():
        have = claim_values(claims, name)
        wanted = expected if isinstance(expected, list) else [expected]
        if have is None or not set(have) & set(wanted):
            return False
    return True


def tool_permitted(name: str, rules: Sequence[AccessRule], claims: Mapping[str, Any]) -> bool:
    """Whether `gateway.access` lets a caller with these claims see and call tool `name`."""
    if not rules:
        return True
    return any(rule.tools.permits(name) for rule in rules if rule_matches(rule, claims))
