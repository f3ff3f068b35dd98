"""The error journal's pure parts: fingerprints, categories and hints.

A fingerprint is the failure's message with IDs, numbers, hex and paths normalised away, plus
the kind, reason, toolbox and server, so that the same failure repeated is one entry with a
count.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

CATEGORIES = ("network", "resource", "config", "dependency", "auth", "image", "runtime")

_NORMALISERS = (
    (re.compile(r"(?<![\w-])/[\w./-]+"), "<path>"),
    (re.compile(r"\b[0-9a-f]{8,}\b", re.IGNORECASE), "<hex>"),
    (re.compile(r"\bop-[0-9a-f]+\b"), "<op>"),
    (re.compile(r"\bt-[0-9a-f]+\b"), "<id>"),
    (re.compile(r"\d+(\.\d+)?"), "<n>"),
)


def normalise(message: str) -> str:
    for pattern, replacement in _NORMALISERS:
        message = pattern.sub(replacement, message)
    return message


def fingerprint(
    kind: str, reason: str, toolbox: str | None, server: str | None, message: str
) -> str:
    blob = "\x1f".join([kind, reason, toolbox or "", server or "", normalise(message)])
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class Classified:
    category: str
    hint: str


def classify(kind: str, reason: str, message: str) -> Classified:
    """Category and hint for a failure, from its reason and message. Pure."""
    text = message.lower()
    if reason == "tool_contract":
        return Classified(
            "config",
            "keep the removed tool or schema, or accept the break with rollout.tool_contract: warn",
        )
    if kind == "vault_auth_failed":  # the agent's own Vault token, not a server's secret
        if "unreachable" in text or "failed:" in text:
            return Classified("dependency", "check that Vault is up and reachable (VAULT_ADDR)")
        return Classified("auth", "give the agent a valid Vault token, or use AppRole login")
    if "image" in text and ("not present" in text or "not found" in text or "pull" in text):
        return Classified("image", "build or load the image on this host, or fix the image name")
    if "file secrets are unavailable" in text:
        return Classified(
            "resource",
            "make DTMA_SECRETS_DIR a tmpfs (or let the agent mount one), use `as: env`, or set "
            "DTMA_ALLOW_DISK_SECRETS=true",
        )
    if reason == "secrets_failed" or "vault" in text or "secret" in text:
        if "denied" in text or "permission" in text or "forbidden" in text:
            return Classified("auth", "grant the agent's Vault policy read on that path")
        if "unreachable" in text or "timed out" in text or "login" in text:
            return Classified("dependency", "check that Vault is up and reachable (VAULT_ADDR)")
        return Classified("config", "fix the secret reference (mount, path, key) or add the key")
    if "docker" in text and ("unreachable" in text or "timed out" in text):
        return Classified("dependency", "check the Docker engine (scripts/ensure-docker)")
    if "oom" in text or "out of memory" in text or "exit code 137" in text or "memory" in text:
        return Classified("resource", "raise resources.memory or fix the server's memory use")
    if reason in ("start_failed",) and ("port" in text or "address already in use" in text):
        return Classified("network", "free the published host port or publish on port 0")
    if "connect" in text or "refused" in text or "network" in text:
        return Classified("network", "check the server's port and path, and the toolbox network")
    if reason == "missing_tools" or "missing tools" in text:
        return Classified("config", "fix health.expect_tools or the server's version")
    if reason in ("start_failed",):
        return Classified("config", "check the server's spec: image, command, env, mounts")
    return Classified("runtime", "read the server's logs: `dtma logs TOOLBOX SERVER`")


FAILURE_KINDS = frozenset(
    {
        "rollout_failed",
        "rollback_failed",
        "server_start_failed",
        "server_crashed",
        "server_unhealthy",
        "server_failed",
        "secrets_rotation_failed",
        "vault_auth_failed",
        "recovery_failed",
    }
)
