"""The toolbox spec (DESIGN.md), as strict pydantic models. Unknown fields are errors.

Normalised on parse (durations to seconds, sizes to bytes) so that equivalent specs hash the same.
Policy checks that depend on the agent's configuration live in spec/policy.py.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from dtma.spec.units import Duration, Size

# Patterns are written for the OpenAPI document (ECMA regex, where `$` is the end of the text) and
# for pydantic's `pattern=` (Rust regex: the same). Python's `re` lets `$` match before a final
# "\n", so Python code matches them with fullmatch() only (is_dns_label), never match().
DNS_LABEL = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
DNS_LABEL_SCHEMA = {"type": "string", "pattern": DNS_LABEL, "minLength": 1, "maxLength": 63}
_DNS_RE = re.compile(DNS_LABEL)


def is_dns_label(v: str) -> bool:
    """True for a DNS label; a trailing newline is refused (fullmatch, not match)."""
    return _DNS_RE.fullmatch(v) is not None


def _dns_label(v: str) -> str:
    if not is_dns_label(v):
        raise ValueError(
            "must be a DNS label: lowercase letters, digits and '-', 1-63 characters, "
            "starting and ending with a letter or digit"
        )
    return v


Name = Annotated[str, AfterValidator(_dns_label), WithJsonSchema(DNS_LABEL_SCHEMA)]
EnvName = Annotated[str, StringConstraints(pattern=ENV_NAME, max_length=255)]
_PUBLISH = re.compile(r"(?:(?P<ip>[0-9.]+|\[[0-9a-fA-F:.]+\]):)?(?P<port>[0-9]{1,5})")
CAPABILITY = r"^(CAP_)?[A-Z][A-Z0-9_]{1,63}$"
MIN_PROBE_INTERVAL_S = 1.0
MIN_TIMEOUT_S = 0.1
MIN_RESTART_DELAY_S = 0.1
MIN_RESTART_INTERVAL_S = 1.0


def at_least(value: float, floor: float) -> float:
    """A duration floor, so that a spec cannot turn a loop into a busy loop."""
    if value < floor:
        raise ValueError(f"must be at least {floor:g}s")
    return value


def publish_address(value: str) -> tuple[str, int]:
    """'IP:PORT', '[IPv6]:PORT' or 'PORT' (on 127.0.0.1) -> (ip, port). Raises ValueError."""
    m = _PUBLISH.fullmatch(value)
    if m is None:
        raise ValueError('must be "IP:PORT" (PORT 0 picks a free host port), e.g. "127.0.0.1:0"')
    ip_text = (m.group("ip") or "127.0.0.1").strip("[]")
    try:
        ip = ipaddress.ip_address(ip_text)
    except ValueError:
        raise ValueError(f"{ip_text!r} is not an IP address") from None
    if ip.is_multicast:
        raise ValueError(f"{ip_text} is a multicast address")
    port = int(m.group("port"))
    if port > 65535:
        raise ValueError("the port must be from 0 to 65535")
    return str(ip), port


def is_loopback_publish(value: str) -> bool:
    return ipaddress.ip_address(publish_address(value)[0]).is_loopback


class Strict(BaseModel):
    # strict: no coercion ("8000" is not a port, 1 is not true), as the OpenAPI document says.
    model_config = ConfigDict(
        extra="forbid", frozen=True, str_strip_whitespace=False, strict=True, defer_build=True
    )


class VaultRef(Strict):
    mount: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")]
    path: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")]
    key: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    version: Annotated[int, Field(ge=1)] | None = None

    @field_validator("mount", "path")
    @classmethod
    def _no_dot_segments(cls, v: str) -> str:
        if any(seg in (".", "..") for seg in v.split("/")):
            raise ValueError("must not contain '.' or '..' segments")
        return v


class SecretSpec(Strict):
    name: EnvName
    vault: VaultRef
    as_: Literal["file", "env"] = Field("file", alias="as")

    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, strict=True, defer_build=True
    )


class Resources(Strict):
    memory: Size = 256 * 1024**2
    cpus: Annotated[float, Field(gt=0, le=256)] = 0.5
    pids: Annotated[int, Field(ge=8, le=65536)] = 256


class Health(Strict):
    mcp: bool = True
    expect_tools: Annotated[
        list[Annotated[str, StringConstraints(min_length=1, max_length=128)]], Field(max_length=256)
    ] = []
    interval: Duration = 10.0
    timeout: Duration = 5.0
    failure_threshold: Annotated[int, Field(ge=1, le=100)] = 3

    @field_validator("interval")
    @classmethod
    def _interval_floor(cls, v: float) -> float:
        return at_least(v, MIN_PROBE_INTERVAL_S)

    @field_validator("timeout")
    @classmethod
    def _timeout_floor(cls, v: float) -> float:
        return at_least(v, MIN_TIMEOUT_S)


class Mount(Strict):
    type: Literal["volume", "bind", "tmpfs"]
    target: Annotated[str, StringConstraints(pattern=r"^/[^\x00-\x1f\x7f]*$", max_length=4096)]
    source: Annotated[str, StringConstraints(max_length=4096)] | None = None
    read_only: bool = True


class ServerSpec(Strict):
    name: Name
    image: Annotated[
        str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$", max_length=512)
    ]
    transport: Literal["stdio", "streamable-http"] = "stdio"
    command: (
        Annotated[list[Annotated[str, StringConstraints(max_length=4096)]], Field(max_length=256)]
        | None
    ) = None
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    path: Annotated[str, StringConstraints(pattern=r"^/[^\s\x00]*$", max_length=1024)] | None = None
    env: Annotated[
        dict[EnvName, Annotated[str, StringConstraints(max_length=65536)]], Field(max_length=256)
    ] = {}
    secrets: Annotated[list[SecretSpec], Field(max_length=64)] = []
    resources: Resources = Resources()
    health: Health = Health()
    publish: str | None = None
    # Escape hatches, rejected unless the agent's policy allows them (spec/policy.py).
    privileged: bool = False
    cap_add: Annotated[
        list[Annotated[str, StringConstraints(pattern=CAPABILITY)]], Field(max_length=64)
    ] = []
    network_mode: Literal["toolbox", "host"] = "toolbox"
    pid_mode: Literal["private", "host"] = "private"
    ipc_mode: Literal["private", "host"] = "private"
    mounts: Annotated[list[Mount], Field(max_length=32)] = []
    labels: Annotated[
        dict[
            Annotated[str, StringConstraints(min_length=1, max_length=255)],
            Annotated[str, StringConstraints(max_length=4096)],
        ],
        Field(max_length=64),
    ] = {}

    @field_validator("command")
    @classmethod
    def _command_not_empty(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and not v:
            raise ValueError("must not be empty; omit it to use the image's command")
        if v and any("\x00" in a for a in v):
            raise ValueError("must not contain NUL bytes")
        return v

    @field_validator("publish")
    @classmethod
    def _publish_format(cls, v: str | None) -> str | None:
        if v is None:
            return v
        ip, port = publish_address(v)
        return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"

    @model_validator(mode="after")
    def _transport_fields(self) -> ServerSpec:
        if self.transport == "streamable-http":
            if self.port is None:
                raise ValueError("port is required for transport streamable-http")
        else:
            if self.port is not None or self.path is not None:
                raise ValueError("port and path apply only to transport streamable-http")
            if self.publish is not None:
                raise ValueError("publish applies only to transport streamable-http")
        names = [s.name for s in self.secrets]
        if len(names) != len(set(names)):
            raise ValueError("secret names must be unique within a server")
        clash = sorted(set(names) & set(self.env))
        if clash:
            raise ValueError(f"{', '.join(clash)} is set both in env and in secrets")
        return self

    @property
    def http_path(self) -> str:
        return self.path or "/mcp"

    @property
    def fixed_host_port(self) -> bool:
        return self.publish is not None and not self.publish.endswith(":0")


class Rollout(Strict):
    order: Literal["start_first", "stop_first"] = "start_first"
    min_healthy_time: Duration = 5.0
    healthy_deadline: Duration = 60.0
    auto_revert: bool = True
    # warn: a new revision that breaks the serving revision's tool contract says so in an event;
    # strict: its gate fails on it (reason tool_contract) and it is rolled back.
    tool_contract: Literal["warn", "strict"] = "warn"

    @field_validator("healthy_deadline")
    @classmethod
    def _deadline_floor(cls, v: float) -> float:
        return at_least(v, MIN_PROBE_INTERVAL_S)

    @model_validator(mode="after")
    def _deadline_after_min(self) -> Rollout:
        if self.healthy_deadline <= self.min_healthy_time:
            raise ValueError("healthy_deadline must be longer than min_healthy_time")
        return self


class Restart(Strict):
    attempts: Annotated[int, Field(ge=0, le=1000)] = 3
    interval: Duration = 300.0
    delay: Duration = 1.0
    max_delay: Duration = 60.0
    mode: Literal["fail", "delay"] = "fail"

    @field_validator("delay", "max_delay")
    @classmethod
    def _delay_floor(cls, v: float) -> float:
        return at_least(v, MIN_RESTART_DELAY_S)

    @field_validator("interval")
    @classmethod
    def _interval_floor(cls, v: float) -> float:
        return at_least(v, MIN_RESTART_INTERVAL_S)

    @model_validator(mode="after")
    def _delays(self) -> Restart:
        if self.max_delay < self.delay:
            raise ValueError("max_delay must be at least delay")
        return self


class NetworkSpec(Strict):
    egress: bool = False


ToolPattern = Annotated[
    str, StringConstraints(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.*?\[\]!-]+$")
]


class ToolFilter(Strict):
    """Which of the toolbox's tools its MCP endpoint offers, by exported name
    (`<server>__<tool>`) or shell-style pattern (`time__*`). Empty `allow` allows all; `deny`
    wins over `allow`."""

    allow: Annotated[list[ToolPattern], Field(max_length=256)] = []
    deny: Annotated[list[ToolPattern], Field(max_length=256)] = []

    def permits(self, name: str) -> bool:
        if any(fnmatch.fnmatchcase(name, p) for p in self.deny):
            return False
        return not self.allow or any(fnmatch.fnmatchcase(name, p) for p in self.allow)


ClaimName = Annotated[str, StringConstraints(min_length=1, max_length=200)]
ClaimValue = Annotated[str, StringConstraints(max_length=1024)]


class AccessRule(Strict):
    """Tools a JWT caller may reach when its token's claims match (domain/oauth.py): every
    claim named here must match (a value, or any of a list); `tools` then narrows as
    `gateway.tools` does."""

    claims: Annotated[
        dict[ClaimName, ClaimValue | Annotated[list[ClaimValue], Field(min_length=1)]],
        Field(min_length=1, max_length=32),
    ]
    tools: ToolFilter = ToolFilter()


class GatewaySpec(Strict):
    tools: ToolFilter = ToolFilter()
    # Applies to OAuth (JWT) callers only; empty: no narrowing beyond `tools`.
    access: Annotated[list[AccessRule], Field(max_length=64)] = []
    # Tool definitions pinned at the gate (docs/gateway.md#pinning): a changed or new tool is
    # withheld (block), reported only (warn), or not compared (off).
    pin: Literal["off", "warn", "block"] = "block"


class ToolboxSpec(Strict):
    servers: Annotated[list[ServerSpec], Field(min_length=1, max_length=64)]
    rollout: Rollout = Rollout()
    restart: Restart = Restart()
    network: NetworkSpec = NetworkSpec()
    # None (not a default GatewaySpec) so that specs written before it hash as they did.
    gateway: GatewaySpec | None = None

    def server(self, name: str) -> ServerSpec:
        return next(s for s in self.servers if s.name == name)
