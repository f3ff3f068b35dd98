"""Cases for tests/unit/test_loop_guard.py, run in a pytest of their own (the file name keeps
the main run from collecting them)."""

from __future__ import annotations

import gc
import time

from tests.conftest import BLOCKING_THRESHOLD_S

# Objects that predate the tests: enough that one full collection over them is a long pause.
_OLD_HEAP = [[[i]] for i in range(int(__import__("os").environ["LOOP_GUARD_HEAP"]))]


async def test_a_blocking_call_on_the_loop() -> None:
    time.sleep(BLOCKING_THRESHOLD_S * 1.5)  # noqa: ASYNC251 (the block the guard must see)


async def test_a_full_collection_in_the_test_walks_only_the_tests_own_objects() -> None:
    gc.collect()


def test_the_old_heap_alone_takes_longer_to_collect_than_the_guard_allows() -> None:
    started = time.perf_counter()
    gc.collect()
    assert time.perf_counter() - started > BLOCKING_THRESHOLD_S
