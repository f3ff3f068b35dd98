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


class _FailsWhileClosing:
    """A transport whose close fails too, as a session's cleanup can after a failed step."""

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        raise OSError("connection reset while closing")


async def _time_out_then_fail_while_closing() -> None:
    async with _FailsWhileClosing():
        await stage(reasons.INITIALIZE_FAILED, lambda: _raise(TimeoutError()))


async def _fail_then_raise_a_group_while_closing() -> None:
    try:
        await stage(reasons.TOOLS_LIST_FAILED, lambda: _raise(ValueError("bad list")))
    except StepFailed as exc:
        raise ExceptionGroup("closing", [OSError("reset")]) from exc


async def test_a_step_failure_is_found_behind_an_error_raised_while_closing() -> None:
    """Otherwise a timed-out initialize reads `connect_failed` (seen once in CI)."""
    with pytest.raises(OSError, match="while closing") as caught:
        await _time_out_then_fail_while_closing()
    assert grade(caught.value, timeout=2) == (reasons.TIMEOUT, "no answer within 2s")
    with pytest.raises(ExceptionGroup) as grouped:
        await _fail_then_raise_a_group_while_closing()
    assert grade(grouped.value, timeout=2) == (reasons.TOOLS_LIST_FAILED, "bad list")


def test_a_cycle_of_contexts_ends_the_search() -> None:
    a, b = OSError("a"), OSError("b")
    a.__context__, b.__context__ = b, a
    assert grade(a, timeout=1) == (reasons.CONNECT_FAILED, "a")
