"""Agent settings, read once at start from the environment (and optionally a config file).

Keys are the environment variable names of DESIGN.md. A config file (YAML or JSON, given by
`--config` or DTMA_CONFIG) may set the same keys; the environment wins over the file.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from dtma.domain.heartbeat import http_url, interval_bounds, parse_labels
from dtma.domain.oauth import OAuthIssuer
from dtma.domain.oauth import http_url as secure_url
from dtma.domain.subnets import DEFAULT_POOL, parse_pool
from dtma.errors import ConfigError
from dtma.spec.models import CAPABILITY
from dtma.spec.units import Duration, Size

ROOT_SECRETS_DIR = Path("/run/dtma/secrets")

# The escape hatches a host may open (spec/policy.py); each is DTMA_POLICY_<KEY>.
POLICY_KEYS = (
    "allow_public_publish",
    "allow_volumes",
    "allow_privileged",
    "allow_host_namespaces",
    "allow_bind_mounts",
    "allow_cap_add",
)


def _split_list(value: object) -> object:
    """A comma-separated environment value, or a list from a config file."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


def _absolute_paths(paths: tuple[str, ...]) -> tuple[str, ...]:
    for p in paths:
        if not p.startswith("/") or "\x00" in p or ".." in p.split("/"):
            raise ValueError(f"{p!r} is not an absolute path without '..'")
    return paths


def _capabilities(caps: tuple[str, ...]) -> tuple[str, ...]:
    for c in caps:
        if not re.fullmatch(CAPABILITY, c.upper()):
            raise ValueError(f"{c!r} is not a capability name such as NET_ADMIN")
    return tuple(c.upper().removeprefix("CAP_") for c in caps)


def valid_agent_id(value: str) -> str:
    """`value` if it is a usable agent id (a DNS label of at most 32 characters: it goes into
    label values and network names); ValueError naming the rule otherwise."""
    if not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?", value):
        raise ValueError(
            f"{value!r} is not an agent id: 1-32 lowercase letters, digits or '-', "
            "starting and ending with a letter or digit"
        )
    return value


def _subnet_pool(value: str) -> str:
    return str(parse_pool(value))


NameList = Annotated[tuple[str, ...], BeforeValidator(_split_list)]
PathPrefixes = Annotated[NameList, AfterValidator(_absolute_paths)]
Capabilities = Annotated[NameList, AfterValidator(_capabilities)]

ENV_KEYS = {
    "DTMA_LISTEN": "listen",
    "DTMA_STATE_DIR": "state_dir",
    "DTMA_API_TOKEN": "api_token",
    "DTMA_API_TOKEN_FILE": "api_token_file",
    "DTMA_SECRETS_DIR": "secrets_dir",
    "DTMA_ALLOW_DISK_SECRETS": "allow_disk_secrets",
    "DTMA_LOG_FORMAT": "log_format",
    "DTMA_LOG_LEVEL": "log_level",
    "DTMA_REAP_GRACE": "reap_grace",
    "DTMA_RELIST_INTERVAL": "relist_interval",
    "DTMA_AGENT_ID": "agent_id",
    "DTMA_ADOPT_ORPHANS": "adopt_orphans",
    "DTMA_SUBNET_POOL": "subnet_pool",
    "DTMA_MAX_BODY": "max_body",
    "DTMA_MAX_STARTS": "max_starts",
    "DTMA_DOCKER_THREADS": "docker_threads",
    "DTMA_METRICS_AUTH": "metrics_auth",
    "DTMA_SSE_MAX_SUBSCRIBERS": "sse_max_subscribers",
    "DTMA_SSE_QUEUE": "sse_queue",
    "DTMA_RETAIN_AGE": "retain_age",
    "DTMA_RETAIN_EVENTS": "retain_events",
    "DTMA_RETAIN_OPERATIONS": "retain_operations",
    "DTMA_RETAIN_REVISIONS": "retain_revisions",
    "DTMA_RETAIN_CALLS": "retain_calls",
    "DTMA_MCP_ALLOWED_ORIGINS": "mcp_allowed_origins",
    "DTMA_PRUNE_INTERVAL": "prune_interval",
    "DTMA_PUBLIC_URL": "public_url",
    "DTMA_OAUTH_ISSUERS": "oauth_issuers",
    "DTMA_TLS_CERT": "tls_cert",
    "DTMA_TLS_KEY": "tls_key",
    "DTMA_TLS_CLIENT_CA": "tls_client_ca",
    "DOCKER_HOST": "docker_host",
    "DTMA_AGENT_CONTAINER": "agent_container",
    "VAULT_ADDR": "vault_addr",
    "VAULT_TOKEN": "vault_token",
    "VAULT_CACERT": "vault_cacert",
    "VAULT_NAMESPACE": "vault_namespace",
    "DTMA_VAULT_TOKEN_FILE": "vault_token_file",
    "DTMA_VAULT_ROLE_ID_FILE": "vault_role_id_file",
    "DTMA_VAULT_SECRET_ID_FILE": "vault_secret_id_file",
    "DTMA_VAULT_SKIP_VERIFY": "vault_skip_verify",
    "DTMA_POLICY_FILE": "policy_file",
    "DTMA_CONTROLLER_URL": "controller_url",
    "DTMA_CONTROLLER_TOKEN": "controller_token",
    "DTMA_CONTROLLER_TOKEN_FILE": "controller_token_file",
    "DTMA_CONTROLLER_CA": "controller_ca",
    "DTMA_HEARTBEAT_INTERVAL": "heartbeat_interval",
    "DTMA_ADVERTISE_URL": "advertise_url",
    "DTMA_AGENT_LABELS": "agent_labels",
    **{f"DTMA_POLICY_{k.upper()}": f"policy_{k}" for k in POLICY_KEYS},
}


def _retain_age(value: object) -> float:
    """Seconds, from a number or "90s", "30m", "12h", "7d"; at least one hour."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", str(value))
    if isinstance(value, bool) or m is None:
        raise ValueError("must be a duration like 12h or 7d")
    seconds = float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    if seconds < 3600:
        raise ValueError("must be at least 1h")
    return seconds


RetainAge = Annotated[float, BeforeValidator(_retain_age)]


def _json_list(value: object) -> object:
    """DTMA_OAUTH_ISSUERS in the environment: a JSON array of issuer objects."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"must be a JSON array of issuer objects ({exc.msg})") from None
    return value


class Settings(BaseModel):
    """The agent's configuration. Immutable once loaded."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    listen: str = "127.0.0.1:8750"
    state_dir: Path = Path(".dtma")
    api_token: str | None = Field(default=None, repr=False)
    api_token_file: Path | None = None
    secrets_dir: Path = ROOT_SECRETS_DIR  # load_settings picks the default: default_secrets_dir
    allow_disk_secrets: bool = False
    log_format: Literal["console", "json"] | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    reap_grace: Duration = 60.0
    # The re-list and reaper period (engine/agent.py RELIST_INTERVAL_S). Shorter only for
    # tests, which would otherwise wait out whole periods; at least 1 s.
    relist_interval: Duration = Field(default=10.0, ge=1)
    agent_id: Annotated[str, AfterValidator(valid_agent_id)] | None = None
    adopt_orphans: bool = False
    subnet_pool: Annotated[str, AfterValidator(_subnet_pool)] = DEFAULT_POOL
    max_body: Size = 1024 * 1024
    # Host scale (docs/architecture.md "Host scale"); None: sized from the CPU count.
    max_starts: int | None = Field(default=None, ge=1, le=10_000)
    docker_threads: int | None = Field(default=None, ge=1, le=1_000)
    metrics_auth: bool = False
    # Bounds (docs/security.md "Bounds"): live event streams and what the state DB keeps.
    sse_max_subscribers: int = Field(default=64, ge=1, le=10_000)
    sse_queue: int = Field(default=1000, ge=10, le=1_000_000)
    retain_age: RetainAge = 7 * 86400.0
    retain_events: int = Field(default=100_000, ge=100)
    retain_operations: int = Field(default=10_000, ge=100)
    retain_revisions: int = Field(default=50, ge=2)
    retain_calls: int = Field(default=100_000, ge=100)
    # Browser origins the MCP endpoints accept besides loopback ones (api/origin.py).
    mcp_allowed_origins: NameList = ()
    prune_interval: Duration = Field(default=3600.0, ge=1)
    # The agent's URL as its clients see it: the MCP endpoints' canonical URLs (OAuth audience
    # and resource metadata). None: from DTMA_LISTEN (https when TLS is on).
    public_url: Annotated[str, AfterValidator(secure_url)] | None = None
    oauth_issuers: Annotated[
        tuple[OAuthIssuer, ...], BeforeValidator(_json_list), Field(max_length=16)
    ] = ()
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    docker_host: str | None = None
    agent_container: str = "auto"  # auto | none | the agent's container name or id
    vault_addr: str | None = None
    vault_token: str | None = Field(default=None, repr=False)
    vault_cacert: Path | None = None
    vault_namespace: str | None = None
    vault_token_file: Path | None = None
    vault_role_id_file: Path | None = None
    vault_secret_id_file: Path | None = None
    vault_skip_verify: bool = False
    policy_file: Path | None = None
    policy_allow_public_publish: bool = False
    policy_allow_volumes: NameList = ()
    policy_allow_privileged: bool = False
    policy_allow_host_namespaces: bool = False
    policy_allow_bind_mounts: PathPrefixes = ()
    policy_allow_cap_add: Capabilities = ()
    # Heartbeats to a controller (docs/controller.md); no controller_url: none are sent.
    controller_url: Annotated[str, AfterValidator(http_url)] | None = None
    controller_token: str | None = Field(default=None, repr=False)
    controller_token_file: Path | None = None
    controller_ca: Path | None = None
    heartbeat_interval: Annotated[Duration, AfterValidator(interval_bounds)] = 15.0
    advertise_url: Annotated[str, AfterValidator(http_url)] | None = None
    agent_labels: Annotated[dict[str, str], BeforeValidator(parse_labels)] = Field(
        default_factory=dict
    )

    @field_validator("listen")
    @classmethod
    def _listen_is_host_port(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("must be HOST:PORT, e.g. 127.0.0.1:8750")
        return v

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, v: object) -> object:
        return v.lower() if isinstance(v, str) else v

    @model_validator(mode="after")
    def _tls_pairs(self) -> Settings:
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("DTMA_TLS_CERT and DTMA_TLS_KEY go together")
        if self.tls_client_ca and not self.tls_cert:
            raise ValueError("DTMA_TLS_CLIENT_CA (mTLS) needs DTMA_TLS_CERT and DTMA_TLS_KEY")
        return self

    @model_validator(mode="after")
    def _oauth_needs_a_url(self) -> Settings:
        if self.oauth_issuers and self.public_url is None and self.advertise_url is None:
            host = self.listen_host
            if host in ("0.0.0.0", "::", ""):  # noqa: S104 (compared, not bound)
                raise ValueError(
                    "DTMA_PUBLIC_URL must be set with DTMA_OAUTH_ISSUERS when DTMA_LISTEN is a "
                    "wildcard address: it is the audience tokens are checked against"
                )
        issuers = [i.issuer for i in self.oauth_issuers]
        if len(issuers) != len(set(issuers)):
            raise ValueError("DTMA_OAUTH_ISSUERS names an issuer twice")
        return self

    @property
    def base_url(self) -> str:
        """The agent's canonical base URL, without a trailing slash."""
        if self.public_url or self.advertise_url:
            return str(self.public_url or self.advertise_url).rstrip("/")
        scheme = "https" if self.tls_cert else "http"
        host = self.listen_host
        host = f"[{host}]" if ":" in host else host
        return f"{scheme}://{host}:{self.listen_port}"

    @model_validator(mode="after")
    def _controller(self) -> Settings:
        if self.controller_token and self.controller_token_file:
            raise ValueError("set DTMA_CONTROLLER_TOKEN or DTMA_CONTROLLER_TOKEN_FILE, not both")
        if self.controller_url and not (self.controller_token or self.controller_token_file):
            raise ValueError(
                "DTMA_CONTROLLER_URL needs DTMA_CONTROLLER_TOKEN or DTMA_CONTROLLER_TOKEN_FILE"
            )
        return self

    @property
    def listen_host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def listen_port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @property
    def resolved_log_format(self) -> Literal["console", "json"]:
        if self.log_format:
            return self.log_format
        return "console" if sys.stderr.isatty() else "json"


def load_settings(
    environ: Mapping[str, str] | None = None, config_file: Path | None = None
) -> Settings:
    """Build Settings from an optional config file overlaid by the environment.

    Raises ConfigError naming the offending key, never its value (a key may hold a token).
    """
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    path = config_file or (Path(env["DTMA_CONFIG"]) if env.get("DTMA_CONFIG") else None)
    if path is not None:
        values.update(_read_config_file(path))
    policy_path = env.get("DTMA_POLICY_FILE") or values.get("policy_file")
    if policy_path:
        values.update(_read_policy_file(Path(str(policy_path))))
    for var, key in ENV_KEYS.items():
        if env.get(var):
            values[key] = env[var]
    values.setdefault("secrets_dir", default_secrets_dir(env, os.geteuid()))
    try:
        return Settings.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(_problem(e) for e in exc.errors())
        raise ConfigError(f"invalid agent configuration: {problems}") from None


def default_secrets_dir(env: Mapping[str, str], euid: int) -> Path:
    """Where secret files go when DTMA_SECRETS_DIR is unset: /run/dtma/secrets for root; for
    anyone else (a user in the docker group running `make run`), $XDG_RUNTIME_DIR/dtma/secrets,
    which is theirs and usually a tmpfs already. Without XDG_RUNTIME_DIR, the root default, and
    the agent then stops with exit 2 naming DTMA_SECRETS_DIR if it cannot create it."""
    runtime = env.get("XDG_RUNTIME_DIR")
    if euid != 0 and runtime and Path(runtime).is_absolute():
        return Path(runtime) / "dtma" / "secrets"
    return ROOT_SECRETS_DIR


def _problem(err: Any) -> str:
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{_var_for(str(err['loc'][0]))}: {msg}" if err["loc"] else msg


def _var_for(key: str) -> str:
    return next((var for var, k in ENV_KEYS.items() if k == key), key)


def _read_policy_file(path: Path) -> dict[str, object]:
    """A YAML/JSON mapping of the policy keys, as allow_x or DTMA_POLICY_ALLOW_X."""
    out: dict[str, object] = {}
    for k, v in _read_mapping(path, "policy file").items():
        key = str(k).lower().removeprefix("dtma_policy_")
        if key not in POLICY_KEYS:
            raise ConfigError(
                f"policy file {path}: unknown key {k!r}; the keys are {', '.join(POLICY_KEYS)}"
            )
        out[f"policy_{key}"] = v
    return out


def _read_config_file(path: Path) -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in _read_mapping(path, "config file").items():
        key = ENV_KEYS.get(str(k), str(k).lower())
        if key not in Settings.model_fields:
            raise ConfigError(f"config file {path}: unknown key {k!r}")
        out[key] = v
    return out


def _read_mapping(path: Path, what: str) -> dict[Any, Any]:
    # PyYAML (0.9 MB) only when a file is read: an agent configured by its environment never
    # loads it (docs/benchmarks.md, "Idle agent"). Read at start, before the loop runs.
    import yaml

    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {path} is not valid YAML/JSON: {exc}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{what} {path} must hold a mapping of settings")
    return raw
