"""RSA signing keys and RS256 tokens for unit tests of JWT verification (PyJWT, cryptography).
Making an RSA key takes long enough to block an event loop: make them in sync fixtures."""

from __future__ import annotations

import secrets
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

ISSUER = "https://idp.example/realms/r"
BASE = "https://agent.example:8750"


class Key:
    def __init__(self, kid: str) -> None:
        self.kid = kid
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwk(self) -> dict[str, Any]:
        jwk = RSAAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        return {**jwk, "kid": self.kid, "alg": "RS256", "use": "sig"}

    def sign(self, tb: str = "abc", **claims: Any) -> str:
        now = int(time.time())
        body = {
            "iss": ISSUER,
            "aud": f"{BASE}/v1/toolboxes/{tb}/mcp",
            "sub": "alice",
            "iat": now,
            "exp": now + 300,
            "scope": f"toolbox:{tb}",
            "jti": secrets.token_hex(8),  # every token its own (the verifier caches by token)
            **claims,
        }
        return jwt.encode(body, self.private, algorithm="RS256", headers={"kid": self.kid})
