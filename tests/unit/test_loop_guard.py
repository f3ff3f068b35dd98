"""The event-loop guard of tests/conftest.py (`fail_on_blocked_loop`) fails a test that blocks
the loop, and does not blame a test for collecting a heap that other tests left behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CASES = Path(__file__).with_name("loop_guard_cases.py")
REPO = CASES.parent.parent.parent


def test_the_guard_fails_a_block_and_ignores_the_heap_from_before_the_test() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA", str(CASES)],
        cwd=REPO,
        env={**os.environ, "LOOP_GUARD_HEAP": "2000000"},
        capture_output=True,
        text=True,
        timeout=170,
    )
    out = run.stdout
    assert "ERROR tests/unit/loop_guard_cases.py::test_a_blocking_call_on_the_loop" in out, out
    assert "the event loop was blocked" in out, out
    # -rA lists a test whose teardown failed under ERROR as well as PASSED.
    assert "ERROR tests/unit/loop_guard_cases.py::test_a_full_collection" not in out, out
    assert "PASSED tests/unit/loop_guard_cases.py::test_a_full_collection_in_the" in out, out
    assert "PASSED tests/unit/loop_guard_cases.py::test_the_old_heap_alone" in out, out
    assert run.returncode == 1, out
