"""The agent's identity: the value of the `dtma.agent` label on everything it creates.

Order: DTMA_AGENT_ID, else `<state_dir>/agent-id`, which is generated (mode 0600, 48 random
bits as 12 hex digits) on first start and reused after. Two agents on one engine must have
different ids; each one lists, adopts and reaps only what carries its own id.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from dtma.config import Settings, valid_agent_id
from dtma.errors import ConfigError
from dtma.state_files import create_once

AGENT_ID_FILE_NAME = "agent-id"


@dataclass(frozen=True)
class AgentIdentity:
    value: str
    source: str  # "env" or the file's path


def resolve_agent_id(settings: Settings) -> AgentIdentity:
    """Return the agent's id, generating the state dir's id file if needed. Idempotent."""
    if settings.agent_id:
        return AgentIdentity(settings.agent_id, "env")
    path = settings.state_dir / AGENT_ID_FILE_NAME
    if not path.exists():
        create_once(path, secrets.token_hex(6))
    try:
        value = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the agent id file {path}: {exc.strerror}") from None
    try:
        return AgentIdentity(valid_agent_id(value), str(path))
    except ValueError as exc:
        raise ConfigError(f"agent id file {path}: {exc}") from None
