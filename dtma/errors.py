"""One error tree for the agent, rooted at DtmaError.

Adapters translate library exceptions (docker-py, hvac, mcp) into these. `transient` errors may
succeed on retry (tenacity retries only those); permanent ones never will. The API maps classes to
HTTP statuses in one place. Messages must never contain secret values, and constructors never log.
"""

from __future__ import annotations


class DtmaError(Exception):
    """Base of every error the agent raises on purpose."""

    transient: bool = False
    code: str = "error"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class ConfigError(DtmaError):
    """The agent's own configuration is invalid; the agent cannot start."""

    code = "config"


class DockerUnavailable(DtmaError):
    """The Docker engine cannot be reached right now."""

    transient = True
    code = "docker_unavailable"


class EngineOutage(DockerUnavailable):
    """The engine went away or restarted while an operation ran: the operation is run again
    once the engine is back, never charged as the toolbox's failure."""

    code = "docker_unavailable"


class OperationQueued(DockerUnavailable):
    """The engine is unreachable, but the operation is recorded and queued: it runs once the
    engine is back. Answered 503 with the code `operation_queued` and the operation's id in the
    details; a client must not send it again (that would queue it twice)."""

    code = "operation_queued"

    def __init__(self, message: str, operation: str) -> None:
        super().__init__(message)
        self.operation = operation
        self.details = [{"loc": ["operation"], "msg": operation}]


class DockerError(DtmaError):
    """The Docker engine refused a request (bad parameters, conflict, missing image, ...)."""

    code = "docker"


class ImageNotFound(DockerError):
    """The image is not present locally and cannot be pulled."""

    code = "image_not_found"


class ContainerNotFound(DockerError):
    code = "container_not_found"


class ProbeTransportError(DtmaError):
    """The probe could not open its transport (attach failed, connection refused)."""

    transient = True
    code = "probe_transport"


class ServerUnavailable(DtmaError):
    """A toolbox's server cannot take a tool call now (restarting, starting, its session ended,
    no answer in time): the call may succeed when retried."""

    transient = True
    code = "server_unavailable"


class UpstreamAnswerRefused(DtmaError):
    """A server's answer to one call that the agent will not pass on (larger than it accepts,
    or unreadable): this call's own fault, not the server's state, so not retryable and the
    server's session is kept."""

    code = "upstream_answer_refused"


class SpecInvalid(DtmaError):
    """A toolbox spec (or its id) failed validation. `details` lists {loc, msg} for each problem."""

    code = "invalid_spec"

    def __init__(self, message: str, details: list[dict[str, object]]) -> None:
        super().__init__(message)
        self.details = details


class NotFound(DtmaError):
    code = "not_found"


class Conflict(DtmaError):
    code = "conflict"


class PreconditionFailed(DtmaError):
    code = "precondition_failed"


class TooManyRequests(DtmaError):
    """A bounded resource (such as live event streams) is at its limit; retry later."""

    transient = True
    code = "too_many_requests"


class SecretsError(DtmaError):
    """A secret could not be read. Messages name mount, path and key, never a value."""

    code = "secrets"


class VaultUnavailable(SecretsError):
    transient = True
    code = "vault_unavailable"


class VaultDenied(SecretsError):
    code = "vault_denied"


class SecretNotFound(SecretsError):
    code = "secret_not_found"


class TokenRefused(DtmaError):
    """A bearer token the MCP endpoint does not accept (401): bad signature, wrong audience,
    expired, unknown key or issuer. The message is a fixed reason; it quotes nothing of the
    token."""

    code = "invalid_token"


class ScopeRefused(DtmaError):
    """A valid token that does not reach this toolbox (403)."""

    code = "insufficient_scope"


class IssuerUnavailable(DtmaError):
    """An OAuth issuer's metadata or keys cannot be fetched now (503; the token may be fine)."""

    transient = True
    code = "issuer_unavailable"
