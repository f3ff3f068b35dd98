"""A real OAuth issuer for tests: OpenBao's OIDC identity provider on the session's `bao` dev
server, and tokens forged with PyJWT/cryptography for the refusal cases.

OpenBao mints ID tokens (`identity/oidc/token/<role>`) for the entity behind the Vault token
that asks: a userpass login gives one. Each role sets the token's `aud` (its `client_id`, which
the test sets to the toolbox endpoint's canonical URL, the agent's default audience) and extra
claims from a static template (`scope`, `groups`). The issuer is `<addr>/v1/identity/oidc`;
its JWKS is at `<issuer>/.well-known/keys`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.conftest import BaoServer


@dataclass
class BaoIssuer:
    """One signing key, one user (an entity) and the roles made so far, on a shared bao."""

    bao: BaoServer
    key: str = field(default_factory=lambda: "k-" + secrets.token_hex(4))
    mount: str = field(default_factory=lambda: "up-" + secrets.token_hex(4))
    user_token: str = ""

    @property
    def issuer(self) -> str:
        return f"{self.bao.addr}/v1/identity/oidc"

    def setup(self) -> BaoIssuer:
        root = self.bao.client()
        root.write_data(
            f"identity/oidc/key/{self.key}",
            data={
                "allowed_client_ids": "*",
                "algorithm": "RS256",
                "rotation_period": "24h",
                "verification_ttl": "24h",
            },
        )
        root.sys.enable_auth_method("userpass", path=self.mount)
        policy = "p-" + self.key
        root.sys.create_or_update_policy(
            policy, 'path "identity/oidc/token/*" { capabilities = ["read"] }'
        )
        password = secrets.token_hex(8)
        root.write_data(
            f"auth/{self.mount}/users/alice", data={"password": password, "token_policies": policy}
        )
        login = root.write_data(f"auth/{self.mount}/login/alice", data={"password": password})
        self.user_token = login["auth"]["client_token"]
        return self

    def role(self, audience: str, claims: dict[str, Any], ttl: str = "1h") -> str:
        name = "r-" + secrets.token_hex(4)
        self.bao.client().write_data(
            f"identity/oidc/role/{name}",
            data={
                "key": self.key,
                "client_id": audience,
                "ttl": ttl,
                "template": json.dumps(claims),
            },
        )
        return name

    def mint(self, role: str) -> str:
        answer = self.bao.client(self.user_token).read(f"identity/oidc/token/{role}")
        return str(answer["data"]["token"])

    def rotate(self) -> None:
        self.bao.client().write_data(f"identity/oidc/key/{self.key}/rotate")

    def jwks(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.issuer}/.well-known/keys", timeout=10) as resp:
            return dict(json.load(resp))

    def public_pem(self, kid: str) -> bytes:
        key = jwt.PyJWKSet.from_dict(self.jwks())[kid].key
        return bytes(
            key.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )


def claims_for(issuer: str, audience: str, scope: str, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": issuer,
        "aud": audience,
        "sub": "mallory",
        "iat": now,
        "exp": now + 600,
        "scope": scope,
        **extra,
    }


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(claims: dict[str, Any]) -> str:
    """`alg: none` (PyJWT writes it, with an empty signature)."""
    return jwt.encode(claims, None, algorithm="none")


def hs256_with(secret: bytes, claims: dict[str, Any], kid: str) -> str:
    """HS256 "signed" with `secret` (here: the issuer's public key in PEM). PyJWT refuses to
    make such a token, rightly, so the HMAC is done here."""
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = b64(json.dumps(claims).encode())
    mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(mac)}"


def own_rsa(claims: dict[str, Any], kid: str) -> str:
    """RS256 with a key of our own, under `kid` (a made-up one, or the issuer's)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})
