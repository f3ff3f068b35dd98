"""Cases for tests/unit/test_loop_guard.py, run in a pytest of their own (the file name keeps
the main run from collecting them)."""

from __future__ import annotations

import gc
import os
import time

from tests import conftest

# Objects that predate the tests: enough that one full collection over them is a long pause.
# The guard's bound is set from how long that collection takes on this machine, so that the
# cases hold on a fast machine and a loaded one alike.
_OLD_HEAP = [[[i]] for i in range(int(os.environ["LOOP_GUARD_HEAP"]))]
_started = time.perf_counter()
gc.collect()
FULL_COLLECTION_S = time.perf_counter() - _started
conftest.BLOCKING_THRESHOLD_S = max(0.1, FULL_COLLECTION_S / 3)


async def test_a_blocking_call_on_the_loop() -> None:
    time.sleep(conftest.BLOCKING_THRESHOLD_S * 1.5)  # noqa: ASYNC251 (the block the guard must see)


async def test_a_full_collection_in_the_test_walks_only_the_tests_own_objects() -> None:
    gc.collect()


def test_the_old_heap_alone_takes_longer_to_collect_than_the_guard_allows() -> None:
    started = time.perf_counter()
    gc.collect()
    assert time.perf_counter() - started > conftest.BLOCKING_THRESHOLD_S
