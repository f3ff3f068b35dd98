"""The agent's policy for a spec's escape hatches: what this host allows beyond the hardened
default. Pure. Each refusal names the setting that would allow it, so an operator can decide.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from dtma.spec.models import ServerSpec, ToolboxSpec, is_dns_label, is_loopback_publish

DOCKER_SOCKET_PATHS = ("/var/run/docker.sock", "/run/docker.sock")
RESERVED_LABEL_PREFIX = "dtma."
ANY_VOLUME = "*"

# The settings, by policy field (config.py reads them; messages name them).
SETTING = {
    "allow_public_publish": "DTMA_POLICY_ALLOW_PUBLIC_PUBLISH",
    "allow_volumes": "DTMA_POLICY_ALLOW_VOLUMES",
    "allow_privileged": "DTMA_POLICY_ALLOW_PRIVILEGED",
    "allow_host_namespaces": "DTMA_POLICY_ALLOW_HOST_NAMESPACES",
    "allow_bind_mounts": "DTMA_POLICY_ALLOW_BIND_MOUNTS",
    "allow_cap_add": "DTMA_POLICY_ALLOW_CAP_ADD",
}


@dataclass(frozen=True)
class SpecPolicy:
    """What this agent allows. Everything is refused by default.

    allow_volumes holds volume names, or "*" for any; allow_bind_mounts holds absolute host path
    prefixes (the Docker socket must be listed by its own path, a parent never opens it);
    allow_cap_add holds capability names without the CAP_ prefix.
    """

    vault_configured: bool = False
    allow_public_publish: bool = False
    allow_volumes: tuple[str, ...] = ()
    allow_privileged: bool = False
    allow_host_namespaces: bool = False
    allow_bind_mounts: tuple[str, ...] = ()
    allow_cap_add: tuple[str, ...] = ()

    def describe(self) -> dict[str, Any]:
        """The policy in force, for GET /v1/agent."""
        out = asdict(self)
        del out["vault_configured"]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


def capability(name: str) -> str:
    return name.upper().removeprefix("CAP_")


def policy_problems(spec: ToolboxSpec, policy: SpecPolicy) -> Iterator[dict[str, Any]]:
    for i, server in enumerate(spec.servers):
        yield from _server_problems(server, ["servers", i], policy)


def _refused(loc: list[Any], what: str, field: str, how: str) -> dict[str, Any]:
    return {
        "loc": loc,
        "msg": f"{what} is not allowed by this agent's policy (set {SETTING[field]}{how})",
    }


def _server_problems(s: ServerSpec, at: list[Any], policy: SpecPolicy) -> Iterator[dict[str, Any]]:
    if s.secrets and not policy.vault_configured:
        yield {
            "loc": [*at, "secrets"],
            "msg": "this agent has no Vault configured (set VAULT_ADDR), so secrets cannot "
            "be injected",
        }
    if s.publish and not is_loopback_publish(s.publish) and not policy.allow_public_publish:
        yield _refused(
            [*at, "publish"],
            f"publishing on {s.publish.rpartition(':')[0]} (not a loopback address)",
            "allow_public_publish",
            "=true to allow",
        )
    if s.privileged and not policy.allow_privileged:
        yield _refused([*at, "privileged"], "a privileged container", "allow_privileged", "=true")
    allowed_caps = {capability(c) for c in policy.allow_cap_add}
    for j, cap in enumerate(s.cap_add):
        if capability(cap) not in allowed_caps:
            yield _refused(
                [*at, "cap_add", j],
                f"adding capability {capability(cap)}",
                "allow_cap_add",
                f" to a list that holds {capability(cap)}",
            )
    for field in ("network_mode", "pid_mode", "ipc_mode"):
        if getattr(s, field) == "host" and not policy.allow_host_namespaces:
            yield _refused([*at, field], "a host namespace", "allow_host_namespaces", "=true")
    for j, m in enumerate(s.mounts):
        yield from _mount_problems(m.type, m.source, [*at, "mounts", j], policy)
    for key in s.labels:
        if key.startswith(RESERVED_LABEL_PREFIX):
            yield {
                "loc": [*at, "labels", key],
                "msg": "the dtma. label namespace is reserved for the agent",
            }


def _mount_problems(
    kind: str, source: str | None, loc: list[Any], policy: SpecPolicy
) -> Iterator[dict[str, Any]]:
    if kind == "tmpfs":
        if source:
            yield {"loc": [*loc, "source"], "msg": "a tmpfs mount has no source"}
        return
    if not source:
        yield {"loc": [*loc, "source"], "msg": f"a {kind} mount needs a source"}
        return
    if "\x00" in source or ".." in source.split("/"):
        yield {"loc": [*loc, "source"], "msg": "must not contain NUL or '..'"}
        return
    at = [*loc, "source"]
    if kind == "volume":
        if not is_dns_label(source.replace("_", "-").replace(".", "-").lower()):
            yield {"loc": at, "msg": "a volume mount's source is a volume name"}
        elif ANY_VOLUME not in policy.allow_volumes and source not in policy.allow_volumes:
            yield _refused(at, f"mounting volume {source!r}", "allow_volumes", " to include it")
        return
    if not source.startswith("/"):
        yield {"loc": at, "msg": "a bind mount's source is an absolute host path"}
        return
    path = _clean(source)
    if _exposes_docker_socket(path):
        if not any(_clean(p) == path for p in policy.allow_bind_mounts):
            yield _refused(
                at,
                "mounting the Docker socket",
                "allow_bind_mounts",
                f" to a list that holds {path} itself",
            )
    elif not any(_under(path, prefix) for prefix in policy.allow_bind_mounts):
        yield _refused(
            at, f"mounting host path {path}", "allow_bind_mounts", " to a prefix that holds it"
        )


def _clean(path: str) -> str:
    """/a//b/./c/ -> /a/b/c (POSIX keeps a leading '//'; Docker does not care)."""
    return "/" + "/".join(p for p in posixpath.normpath(path).split("/") if p)


def _under(path: str, prefix: str) -> bool:
    prefix = _clean(prefix)
    return prefix == "/" or path == prefix or path.startswith(prefix + "/")


def _exposes_docker_socket(path: str) -> bool:
    parent = path.rstrip("/") + "/"
    return any(sock == path or sock.startswith(parent) for sock in DOCKER_SOCKET_PATHS)
