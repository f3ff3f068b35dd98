"""The C-heap helpers (dtma/heap.py): on glibc they act, elsewhere they are no-ops."""

from __future__ import annotations

import ctypes
import platform
from pathlib import Path

import pytest

from dtma import heap

on_glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_off_glibc_both_calls_are_no_ops() -> None:
    assert heap.libc_for("musl") is None
    assert heap.libc_for("") is None  # macOS, Windows: platform.libc_ver() names none


@on_glibc
def test_on_glibc_the_arena_cap_is_taken() -> None:
    assert heap.libc_for("glibc") is not None
    assert heap.limit_arenas() is True


@on_glibc
def test_trim_hands_freed_heap_pages_back() -> None:
    """64 MB of small blocks freed under a live one stay in RSS until the trim releases them."""
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    blocks = [libc.malloc(4096) for _ in range(16384)]  # under the mmap threshold: on the heap
    for block in blocks:
        ctypes.memset(block, 1, 4096)  # touched, so in RSS
    pin = libc.malloc(4096)  # above them: the heap's top cannot shrink past it
    try:
        for block in blocks:
            libc.free(block)
        before = _rss_kb()
        assert heap.trim() is True
        assert before - _rss_kb() > 32 * 1024
    finally:
        libc.free(pin)
