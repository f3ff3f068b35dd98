"""Parse and validate a toolbox spec: JSON or YAML in, ToolboxSpec out, or SpecInvalid with every
problem as {loc, msg}. Pure: the agent's policy is passed in."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import ValidationError

from dtma.errors import SpecInvalid
from dtma.spec.models import ToolboxSpec, is_dns_label

DOCKER_SOCKET_PATHS = ("/var/run/docker.sock", "/run/docker.sock")
RESERVED_LABEL_PREFIX = "dtma."


@dataclass(frozen=True)
class SpecPolicy:
    """What the agent's own configuration allows. Everything off by default."""

    vault_configured: bool = False
    allow_privileged: bool = False
    allow_host_namespaces: bool = False
    allow_host_mounts: bool = False
    allow_docker_socket: bool = False
    allow_cap_add: bool = False


def validate_toolbox_id(toolbox_id: str) -> None:
    if not is_dns_label(toolbox_id):
        raise SpecInvalid(
            "invalid toolbox id",
            [
                {
                    "loc": ["path", "id"],
                    "msg": "must be a DNS label: lowercase letters, digits and "
                    "'-', at most 63 characters",
                }
            ],
        )


def parse_spec(body: bytes | str, policy: SpecPolicy) -> ToolboxSpec:
    """Parse JSON or YAML and validate. Raises SpecInvalid listing every problem found."""
    raw = _load(body)
    if not isinstance(raw, dict):
        raise SpecInvalid("invalid spec", [{"loc": [], "msg": "the spec must be a mapping"}])
    try:
        spec = ToolboxSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecInvalid("invalid spec", [_detail(e) for e in exc.errors()]) from None
    problems = list(_group_problems(spec)) + list(_policy_problems(spec, policy))
    if problems:
        raise SpecInvalid("invalid spec", problems)
    return spec


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader without anchors/aliases: they allow 'billion laughs' blow-ups."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None, None, "YAML aliases are not allowed in a spec", event.start_mark
            )
        return super().compose_node(parent, index)


def _load(body: bytes | str) -> Any:
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
    except UnicodeDecodeError as exc:
        raise SpecInvalid("body is not UTF-8", [{"loc": ["body"], "msg": str(exc)}]) from None
    stripped = text.lstrip()
    if stripped.startswith("{") or stripped.startswith("["):
        try:
            return json.loads(text, parse_constant=_reject_constant)
        except ValueError as exc:
            raise SpecInvalid(
                "body is not valid JSON", [{"loc": ["body"], "msg": str(exc)}]
            ) from None
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise SpecInvalid("body is not valid YAML", [{"loc": ["body"], "msg": str(exc)}]) from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _detail(err: Any) -> dict[str, Any]:
    msg = str(err["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    return {"loc": [p for p in err["loc"] if p != "function-after"], "msg": msg}


def _group_problems(spec: ToolboxSpec) -> Iterator[dict[str, Any]]:
    seen: set[str] = set()
    for i, server in enumerate(spec.servers):
        if server.name in seen:
            yield {"loc": ["servers", i, "name"], "msg": f"duplicate server name {server.name!r}"}
        seen.add(server.name)
    fixed = [s.name for s in spec.servers if s.fixed_host_port]
    if fixed and spec.rollout.order == "start_first":
        yield {
            "loc": ["rollout", "order"],
            "msg": f"must be stop_first when a fixed host port is published ({', '.join(fixed)}):"
            " the old and new containers cannot both bind it",
        }


def _policy_problems(spec: ToolboxSpec, policy: SpecPolicy) -> Iterator[dict[str, Any]]:
    for i, s in enumerate(spec.servers):
        at = ["servers", i]
        if s.secrets and not policy.vault_configured:
            yield {
                "loc": [*at, "secrets"],
                "msg": "this agent has no Vault configured (set VAULT_ADDR), so secrets cannot "
                "be injected",
            }
        if s.privileged and not policy.allow_privileged:
            yield {"loc": [*at, "privileged"], "msg": "privileged containers are not allowed"}
        if s.cap_add and not policy.allow_cap_add:
            yield {"loc": [*at, "cap_add"], "msg": "adding capabilities is not allowed"}
        for field in ("network_mode", "pid_mode", "ipc_mode"):
            if getattr(s, field) == "host" and not policy.allow_host_namespaces:
                yield {"loc": [*at, field], "msg": "host namespaces are not allowed"}
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
    if kind == "volume":
        if "/" in source or not is_dns_label(source.replace("_", "-").replace(".", "-").lower()):
            yield {"loc": [*loc, "source"], "msg": "a volume mount's source is a volume name"}
        return
    if _exposes_docker_socket(source):
        if not policy.allow_docker_socket:
            yield {"loc": [*loc, "source"], "msg": "mounting the Docker socket is not allowed"}
    elif not policy.allow_host_mounts:
        yield {"loc": [*loc, "source"], "msg": "host path mounts are not allowed"}


def _exposes_docker_socket(source: str) -> bool:
    path = "/" + "/".join(p for p in source.split("/") if p)
    return any(
        sock == path or sock.startswith(path.rstrip("/") + "/") for sock in DOCKER_SOCKET_PATHS
    )
