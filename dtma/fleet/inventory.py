"""fleet.yaml: the agents a fleet command talks to, their tokens and labels, and `k=v` selectors.

Parsing is strict (pydantic): an unknown key, a URL without an http(s) scheme, a duplicate name,
both or neither of `token` and `token_file`, or an unreadable token file raise FleetFileError
with the field path of every problem. Token values are kept as SecretStr and never appear in
an error, a repr or any output.

Where the agents come from is a seam (`AgentSource`): today a file; a controller's list of the
agents that heartbeat to it can implement the same protocol once a controller API exists.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Protocol

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

NAME_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,62})$"
LABEL_KEY_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9._/-]{0,62})$"
_URL = re.compile(r"^https?://[^/\s?#]+(/[^\s?#]*)?$")

Loc = tuple[str | int, ...]


class FleetFileError(Exception):
    """fleet.yaml (or a selector) is invalid; `details` holds (field path, reason) pairs."""

    def __init__(self, message: str, details: list[tuple[Loc, str]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []

    def lines(self) -> list[str]:
        """The message, then one `path: reason` line per problem (for the CLI)."""
        out = [self.message]
        out += [f"  {'.'.join(str(p) for p in loc) or '(top)'}: {msg}" for loc, msg in self.details]
        return out


class AgentEntry(BaseModel):
    """One agent as written in fleet.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    url: str
    token: SecretStr | None = None
    token_file: Path | None = None
    labels: dict[
        Annotated[str, Field(pattern=LABEL_KEY_PATTERN)], Annotated[str, Field(max_length=63)]
    ] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not _URL.match(v):
            raise ValueError("must be an http:// or https:// URL with a host (no query)")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _one_token(self) -> AgentEntry:
        if (self.token is None) == (self.token_file is None):
            raise ValueError("give exactly one of token and token_file")
        return self


class FleetDocument(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    agents: Annotated[list[AgentEntry], Field(min_length=1, max_length=10_000)]

    @field_validator("agents")
    @classmethod
    def _unique(cls, agents: list[AgentEntry]) -> list[AgentEntry]:
        seen: set[str] = set()
        for a in agents:
            if a.name in seen:
                raise ValueError(f"agent name {a.name!r} appears more than once")
            seen.add(a.name)
        return agents


@dataclass(frozen=True)
class FleetAgent:
    """An agent to call: its token resolved (never printed), its labels for selectors."""

    name: str
    url: str
    token: SecretStr = field(repr=False)
    labels: dict[str, str] = field(default_factory=dict, hash=False)


class AgentSource(Protocol):
    """Where a fleet command gets its agents. `FleetFile` reads fleet.yaml; a controller-backed
    source (the agents that heartbeat to it) is the planned second implementation."""

    async def agents(self) -> list[FleetAgent]: ...


class FleetFile:
    """An AgentSource over a fleet.yaml file; token files are read relative to its directory."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def agents(self) -> list[FleetAgent]:
        return await asyncio.to_thread(load_fleet, self.path)  # file reads, off the loop


def load_fleet(path: Path) -> list[FleetAgent]:
    """Read and validate fleet.yaml. Raises FleetFileError naming every bad field. Blocking
    (it reads files): on an event loop, use `FleetFile.agents`."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise FleetFileError(f"cannot read fleet file {path}: {exc.strerror}") from None
    return parse_fleet(text, base_dir=path.parent, source=str(path))


def parse_fleet(text: str, *, base_dir: Path, source: str = "fleet.yaml") -> list[FleetAgent]:
    try:
        raw: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        raise FleetFileError(f"{source} is not valid YAML{at}") from None
    try:
        doc = FleetDocument.model_validate(raw)
    except ValidationError as exc:
        details = [(tuple(e["loc"]), _reason(e)) for e in exc.errors()]
        raise FleetFileError(f"invalid fleet file {source}", details) from None
    agents: list[FleetAgent] = []
    problems: list[tuple[Loc, str]] = []
    for i, entry in enumerate(doc.agents):
        token = entry.token
        if entry.token_file is not None:
            token_path = (
                entry.token_file if entry.token_file.is_absolute() else base_dir / entry.token_file
            )
            try:
                value = token_path.read_text().strip()
            except OSError as exc:
                problems.append(
                    (("agents", i, "token_file"), f"cannot read {token_path}: {exc.strerror}")
                )
                continue
            if not value:
                problems.append((("agents", i, "token_file"), f"{token_path} is empty"))
                continue
            token = SecretStr(value)
        assert token is not None
        agents.append(FleetAgent(entry.name, entry.url, token, dict(entry.labels)))
    if problems:
        raise FleetFileError(f"invalid fleet file {source}", problems)
    return agents


def _reason(error: Any) -> str:
    # pydantic prefixes model-validator messages with "Value error, "; the path already says where.
    msg = str(error["msg"])
    return msg.removeprefix("Value error, ")


def parse_selectors(items: list[str] | None) -> dict[str, str]:
    """`k=v` strings into a dict (all must match). Raises FleetFileError on a malformed one."""
    wanted: dict[str, str] = {}
    for i, item in enumerate(items or []):
        key, sep, value = item.partition("=")
        if not sep or not re.match(LABEL_KEY_PATTERN, key.strip()):
            raise FleetFileError(
                "invalid selector", [(("selector", i), f"{item!r} is not key=value")]
            )
        wanted[key.strip()] = value.strip()
    return wanted


def select(agents: list[FleetAgent], selector: dict[str, str]) -> list[FleetAgent]:
    """The agents whose labels carry every `k=v` of the selector, in fleet-file order."""
    return [a for a in agents if all(a.labels.get(k) == v for k, v in selector.items())]
