"""JWT access tokens on the toolbox MCP endpoints: the agent as an OAuth 2.1 resource server.

`JwtVerifier.verify(token, toolbox)` answers who the caller is (JwtCaller) or raises
TokenRefused (401), ScopeRefused (403) or IssuerUnavailable (503). PyJWT does every piece of
JOSE: parsing, the key set (PyJWKSet) and the checks of signature, `iss`, `aud`, `exp`, `nbf`
and `iat` (with the issuer's leeway). Only asymmetric algorithms are accepted, and a key is
used only with the algorithm it is bound to (PyJWK), so neither `alg: none` nor an HS256 token
"signed" with a public key can pass.

Keys come from each issuer's JWKS, fetched through the JsonFetcher port (aiohttp: never a
blocking client on the loop), cached, and fetched again when a token names a `kid` the cache
lacks (a key rotation at the issuer), at most once per REFRESH_MIN_S per issuer, so tokens
with made-up `kid`s cannot make the agent hammer the issuer; and after KEYS_MAX_AGE_S in any
case. The JWKS URL is the configured one or the issuer's metadata's `jwks_uri` (OpenID
discovery, then RFC 8414). Refusal reasons are fixed strings: no claim, key or token text is
ever quoted back or logged. Loop-only; concurrent verifications share one fetch per issuer.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import structlog

from dtma import lazy_import
from dtma.domain.oauth import JWT_ALGORITHMS, JwtCaller, OAuthIssuer, http_url, reaches
from dtma.errors import IssuerUnavailable, ScopeRefused, TokenRefused
from dtma.ports import JsonFetcher

if TYPE_CHECKING:
    import jwt

log = structlog.get_logger(__name__)

# PyJWT (and the `cryptography` it loads) is about 10 MB and 0.3 s of import: an agent with no
# issuer configured never verifies a JWT, so it is imported, in a thread, by the first
# verification or key fetch (dtma/lazy_import.py), not with this module.
PYJWT = "jwt"

REFRESH_MIN_S = 10.0
VERIFIED_TTL_S = 60.0
VERIFIED_KEPT = 4096
KEYS_MAX_AGE_S = 3600.0
MAX_TOKEN_BYTES = 16 * 1024
MAX_ID_CHARS = 256  # subject and issuer as journalled


def looks_like_jwt(value: str) -> bool:
    """A compact JWS: three base64url parts (cheap; the real parsing is PyJWT's)."""
    return value.count(".") == 2 and len(value) <= MAX_TOKEN_BYTES


class IssuerKeys:
    """One issuer's signing keys, cached. Loop-only."""

    def __init__(
        self, issuer: OAuthIssuer, fetch: JsonFetcher, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.issuer = issuer
        self._fetch = fetch
        self._clock = clock
        self._keys: jwt.PyJWKSet | None = None
        self._fetched_at = -REFRESH_MIN_S - KEYS_MAX_AGE_S
        self._jwks_url = issuer.jwks_url
        self._lock = asyncio.Lock()

    async def key(self, kid: str | None) -> jwt.PyJWK | None:
        """The key `kid` names (with no `kid`: the only key, if there is one), or None."""
        keys = self._keys
        stale = self._clock() - self._fetched_at >= KEYS_MAX_AGE_S
        if keys is None or stale or _find(keys, kid) is None:
            keys = await self._refresh(seen=keys)
        return _find(keys, kid) if keys is not None else None

    async def _refresh(self, seen: jwt.PyJWKSet | None) -> jwt.PyJWKSet | None:
        async with self._lock:
            if self._keys is not seen:  # another caller fetched meanwhile
                return self._keys
            if self._clock() - self._fetched_at < REFRESH_MIN_S:
                # Rate limit: a made-up kid (or a down issuer) must not cost a fetch each time.
                if self._keys is None:
                    raise IssuerUnavailable(
                        f"the keys of issuer {self.issuer.issuer} could not be fetched; retry"
                    )
                return self._keys
            await lazy_import.load(PYJWT)
            import jwt

            try:
                url = self._jwks_url or await self._discover()
                document = await self._fetch.get_json(url)
                keys = jwt.PyJWKSet.from_dict(document)
            except jwt.PyJWKSetError:
                log.warning("oauth_jwks_unusable", issuer=self.issuer.issuer)
                raise IssuerUnavailable(
                    f"the keys of issuer {self.issuer.issuer} hold no usable key"
                ) from None
            except IssuerUnavailable as exc:
                log.warning("oauth_jwks_fetch_failed", issuer=self.issuer.issuer, error=exc.message)
                if self._keys is None:
                    raise
                return self._keys  # keep verifying with what we have
            finally:
                self._fetched_at = self._clock()
            self._jwks_url = url
            self._keys = keys
            log.info("oauth_jwks_loaded", issuer=self.issuer.issuer, keys=len(keys.keys))
            return keys

    async def _discover(self) -> str:
        """`jwks_uri` from the issuer's metadata: OpenID discovery, then RFC 8414. The metadata
        must name this very issuer (RFC 8414 section 3.3)."""
        base = self.issuer.issuer.rstrip("/")
        parts = urlsplit(base)
        candidates = (
            f"{base}/.well-known/openid-configuration",
            f"{parts.scheme}://{parts.netloc}/.well-known/oauth-authorization-server{parts.path}",
        )
        failure: IssuerUnavailable | None = None
        for url in candidates:
            try:
                meta = await self._fetch.get_json(url)
            except IssuerUnavailable as exc:
                failure = exc
                continue
            jwks_uri = meta.get("jwks_uri")
            if meta.get("issuer") != self.issuer.issuer or not isinstance(jwks_uri, str):
                failure = IssuerUnavailable(f"{url} does not describe issuer {self.issuer.issuer}")
                continue
            try:
                return http_url(jwks_uri)  # https (http only to loopback), as a configured one
            except ValueError:
                failure = IssuerUnavailable(f"{url} names a jwks_uri that is not https")
        assert failure is not None
        raise failure


def _find(keys: jwt.PyJWKSet, kid: str | None) -> jwt.PyJWK | None:
    """Signing keys of an accepted (asymmetric) algorithm only: never a symmetric `oct` key."""
    usable = [
        k
        for k in keys.keys
        if k.public_key_use in (None, "sig") and k.algorithm_name in JWT_ALGORITHMS
    ]
    if kid is None:
        return usable[0] if len(usable) == 1 else None
    return next((k for k in usable if k.key_id == kid), None)


class JwtVerifier:
    """The configured issuers; `verify` per MCP request. Loop-only."""

    def __init__(
        self,
        issuers: Sequence[OAuthIssuer],
        base_url: str,
        fetch: JsonFetcher,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.issuers = tuple(issuers)
        self.base_url = base_url.rstrip("/")
        self._keys = {i.issuer: IssuerKeys(i, fetch, clock) for i in issuers}
        self._wall = wall
        # (sha256 of the token, toolbox) -> (caller, good until): a client sends the same
        # token with every request, and PyJWT's parse and check cost more than the rest of
        # the request path. Successes only; kept VERIFIED_TTL_S at most (a key withdrawn at
        # the issuer stops counting within that), never past the token's expiry.
        self._verified: dict[tuple[str, str], tuple[JwtCaller, float]] = {}

    @property
    def enabled(self) -> bool:
        return bool(self.issuers)

    def resource(self, toolbox: str) -> str:
        """The endpoint's canonical URL: the RFC 9728 `resource` and the default audience."""
        return f"{self.base_url}/v1/toolboxes/{toolbox}/mcp"

    def metadata_url(self, toolbox: str) -> str:
        return f"{self.base_url}/.well-known/oauth-protected-resource/v1/toolboxes/{toolbox}/mcp"

    def scopes(self, toolbox: str) -> list[str]:
        """The scopes that name this toolbox, for issuers that grant by scope."""
        found = {i.scope_prefix + toolbox for i in self.issuers if i.toolbox_claim is None}
        return sorted(found)

    async def verify(self, token: str, toolbox: str) -> JwtCaller:
        """Who the token's bearer is, for `toolbox`'s endpoint; TokenRefused, ScopeRefused or
        IssuerUnavailable otherwise."""
        now = self._wall()
        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()
        cached = self._verified.get((digest, toolbox))
        if cached is not None and now < cached[1]:
            return cached[0]
        caller = await self._verify(token, toolbox)
        if len(self._verified) >= VERIFIED_KEPT:
            self._verified = {k: v for k, v in self._verified.items() if now < v[1]}
            while len(self._verified) >= VERIFIED_KEPT:  # all still good: drop the oldest
                del self._verified[next(iter(self._verified))]
        self._verified[(digest, toolbox)] = (caller, min(caller.expires_at, now + VERIFIED_TTL_S))
        return caller

    async def _verify(self, token: str, toolbox: str) -> JwtCaller:
        await lazy_import.load(PYJWT)
        import jwt

        try:
            parsed = jwt.decode_complete(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise TokenRefused("malformed token") from None
        header, unverified = parsed["header"], parsed["payload"]
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in JWT_ALGORITHMS:
            raise TokenRefused("token algorithm not accepted")
        keys = self._keys.get(str(unverified.get("iss", "")))
        if keys is None:
            raise TokenRefused("token issuer not accepted")
        issuer = keys.issuer
        if alg not in issuer.algorithms:
            raise TokenRefused("token algorithm not accepted")
        if kid is not None and not isinstance(kid, str):
            raise TokenRefused("malformed token")
        key = await keys.key(kid)
        if key is None:
            raise TokenRefused("unknown signing key")
        claims = self._decode(token, key, issuer, toolbox)
        if not reaches(claims, toolbox, issuer.toolbox_claim, issuer.scope_prefix):
            raise ScopeRefused("the token does not grant this toolbox")
        return JwtCaller(
            issuer=issuer.issuer[:MAX_ID_CHARS],
            subject=str(claims.get("sub", ""))[:MAX_ID_CHARS],
            claims=claims,
            expires_at=float(claims["exp"]) + issuer.leeway,
        )

    def _decode(self, token: str, key: jwt.PyJWK, issuer: OAuthIssuer, toolbox: str) -> Any:
        import jwt  # loaded by _verify, the only caller

        try:
            return jwt.decode(
                token,
                key,
                algorithms=list(issuer.algorithms),
                audience=issuer.audience or self.resource(toolbox),
                issuer=issuer.issuer,
                leeway=issuer.leeway,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenRefused("token expired") from None
        except jwt.ImmatureSignatureError:
            raise TokenRefused("token not valid yet") from None
        except jwt.InvalidAudienceError:
            raise TokenRefused("token not issued for this resource") from None
        except jwt.InvalidAlgorithmError:
            raise TokenRefused("token algorithm not accepted") from None
        except jwt.InvalidSignatureError:
            raise TokenRefused("token signature does not verify") from None
        except jwt.MissingRequiredClaimError:
            raise TokenRefused("token lacks a required claim") from None
        except jwt.PyJWTError:
            raise TokenRefused("invalid token") from None
