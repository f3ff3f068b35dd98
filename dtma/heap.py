"""The C heap of the agent's process: fewer glibc arenas, and freed pages handed back.

glibc's malloc gives each thread that allocates its own arena (up to eight per core) and keeps
freed memory in them rather than returning it to the kernel. The agent's start-up (imports,
the first loop passes) and each rollout (image pulls, container creates, the MCP SDK's first
import) free a good part of what they allocate, and those pages stay in RSS until a later
allocation happens to reuse them. Two calls fix that without an environment variable, so the
agent's two-command start stays as it is:

- `limit_arenas()`, once, before the worker threads start: `mallopt(M_ARENA_MAX, 2)`, what
  `MALLOC_ARENA_MAX=2` does (threads share two arenas; the agent's threads mostly wait on I/O);
- `trim()`: `malloc_trim(0)`, which returns free pages at the top of the heap and, since
  glibc 2.8, whole free pages inside every arena.

The figures behind them are in docs/benchmarks.md ("Idle agent"). Both are no-ops (they return
False) off glibc (musl, macOS), where neither call exists with these meanings. Thread-safe:
glibc takes each arena's lock; a trim of the agent's heap took 0.2 to 0.4 ms, idle and at 100
toolboxes.
"""

from __future__ import annotations

import asyncio
import ctypes
import platform
from functools import cache

ARENA_MAX = 2
TRIM_FIRST_S = 10.0  # start-up (imports, recovery, the first loop passes) is over by then
TRIM_INTERVAL_S = 60.0
_M_ARENA_MAX = -8  # mallopt's parameter number, from glibc's malloc.h


def libc_for(libc_name: str) -> ctypes.CDLL | None:
    """The process's C library when `libc_name` (platform.libc_ver()'s) is glibc; else None."""
    if libc_name != "glibc":
        return None
    try:
        libc = ctypes.CDLL(None)  # the symbols already loaded into this process
    except OSError:
        return None
    if not (hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt")):
        return None
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    libc.malloc_trim.restype = ctypes.c_int
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    return libc


@cache
def _glibc() -> ctypes.CDLL | None:
    return libc_for(platform.libc_ver()[0])


def limit_arenas(arenas: int = ARENA_MAX) -> bool:
    """Cap malloc's arenas; True if glibc took it. Call early: arenas already made stay."""
    libc = _glibc()
    return libc is not None and libc.mallopt(_M_ARENA_MAX, arenas) == 1


def trim() -> bool:
    """Hand free heap pages back to the kernel; True if glibc released any."""
    libc = _glibc()
    return libc is not None and libc.malloc_trim(0) == 1


async def trim_loop(interval: float = TRIM_INTERVAL_S, first: float = TRIM_FIRST_S) -> None:
    """Trim `first` seconds after start, then every `interval` (what rollouts, the SDK's first
    import and toolbox deletions freed). Returns at once off glibc. Cancellable at its sleeps.
    Inline on the loop: a trim takes well under a millisecond, less than a thread hop costs."""
    if _glibc() is None:
        return
    await asyncio.sleep(first)
    while True:
        trim()
        await asyncio.sleep(interval)
