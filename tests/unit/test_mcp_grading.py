"""How a failed opening or probe step is graded (adapters/mcp_grading.py): the step that failed,
found inside anyio's exception groups; a step that ran out of time is a timeout; anything not
tagged with a step is a connection failure."""

from __future__ import annotations

import pytest

from dtma.adapters.mcp_grading import StepFailed, grade, stage
from dtma.domain import probe as reasons


async def _raise(exc: BaseException) -> None:
    raise exc


async def test_a_step_tags_what_it_raises_with_its_reason() -> None:
    with pytest.raises(StepFailed) as caught:
        await stage(reasons.INITIALIZE_FAILED, lambda: _raise(ValueError("bad answer")))
    assert caught.value.reason == reasons.INITIALIZE_FAILED
    assert isinstance(caught.value.cause, ValueError)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (StepFailed(reasons.INITIALIZE_FAILED, ValueError("bad")), reasons.INITIALIZE_FAILED),
        (StepFailed(reasons.INITIALIZE_FAILED, TimeoutError()), reasons.TIMEOUT),
        (
            ExceptionGroup("tg", [OSError("x"), StepFailed(reasons.TOOLS_LIST_FAILED, OSError())]),
            reasons.TOOLS_LIST_FAILED,
        ),
        (
            ExceptionGroup("outer", [ExceptionGroup("inner", [StepFailed("s", TimeoutError())])]),
            reasons.TIMEOUT,
        ),
        (OSError("All connection attempts failed"), reasons.CONNECT_FAILED),
        (ExceptionGroup("tg", [OSError("refused")]), reasons.CONNECT_FAILED),
        (TimeoutError(), reasons.TIMEOUT),
    ],
)
def test_grading(exc: BaseException, expected: str) -> None:
    reason, detail = grade(exc, timeout=3)
    assert reason == expected
    assert detail


def test_a_timeout_names_the_time_allowed_and_a_failure_its_cause() -> None:
    assert grade(StepFailed("s", TimeoutError()), timeout=2.5)[1] == "no answer within 2.5s"
    assert grade(OSError("refused"), timeout=1)[1] == "refused"
