"""How a probe grades a failure: each protocol step tags what it raises with its reason
(dtma/domain/probe.py), and the first tagged failure in an exception (or a group of them, as
anyio's task groups raise) names the step that failed. Shared by the stdio probe session and
the held HTTP session (mcp_upstream.HttpUpstream), whose opening the HTTP probe grades."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from dtma.domain import probe as reasons
from dtma.observability.redaction import REDACTOR


def ms_since(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 2)


async def stage(reason: str, step: Callable[[], Awaitable[Any]]) -> Any:
    """Run one protocol step, tagging any failure with the step's reason."""
    try:
        return await step()
    except Exception as exc:
        raise StepFailed(reason, exc) from exc


class StepFailed(Exception):
    def __init__(self, reason: str, cause: BaseException) -> None:
        super().__init__(reason)
        self.reason = reason
        self.cause = cause


def describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe(e) for e in exc.exceptions)
    return REDACTOR.excerpt(str(exc) or type(exc).__name__, 300)


def first_step_failure(exc: BaseException) -> StepFailed | None:
    if isinstance(exc, StepFailed):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = first_step_failure(inner)
            if found:
                return found
    return None


def grade(exc: BaseException, timeout: float) -> tuple[str, str]:
    """(reason, detail) for a failure raised while opening or using a session: the step that
    failed, a timeout when that step ran out of time, else a connection failure."""
    step = first_step_failure(exc)
    if step is None:
        if isinstance(exc, TimeoutError):
            return reasons.TIMEOUT, f"no answer within {timeout}s"
        return reasons.CONNECT_FAILED, describe(exc)
    if isinstance(step.cause, TimeoutError):
        return reasons.TIMEOUT, f"no answer within {timeout}s"
    return step.reason, describe(step.cause)


def refusal_detail(status: int) -> str:
    return (
        f"the server answered HTTP {status}: it wants credentials the probe does not have "
        "(health.mcp: false gates on the container running instead)"
    )
