"""The MCP SDK's client side without its server side: the one piece of SDK-internal knowledge
that `dtma/lazy_import.py` needs.

The probes and the gateway's upstream calls use only the SDK's client modules
(`mcp.client.session`, `mcp.client.streamable_http`, `mcp.shared.*`, `mcp_types`), and those do
not import the server side. Two package `__init__` files do: `mcp/__init__.py` re-exports
`mcp.server.session` and `mcp.server.stdio`, and `mcp/client/__init__.py` re-exports
`mcp.client.client`, whose in-memory transport imports `mcp.server` (starlette, sse_starlette,
uvicorn, click, the server's auth and cryptography). That is about 16 MB that an agent whose
endpoints are never used carries for nothing (docs/benchmarks.md, "The SDK's client side alone").

`client_side_only()` puts the two packages in sys.modules as *shells*: module objects made from
their real specs (so their submodules import as usual) whose `__init__` has not run yet.
`complete()` runs those `__init__` files, in the order a plain `import mcp` runs them, and the
packages are then what a plain import makes; lazy_import calls it before the server side. A
name of the package's own read before that (`from mcp import Client`, `mcp.ClientSession`)
completes the package first (the shells' module `__getattr__`), so no reader sees a package
with names missing; a submodule's name (`mcp.types`) is left to the import system.

tests/unit/test_sdk_compat.py fails when an SDK upgrade breaks this: its client modules
import the server side again, or a completed package differs from a plain import's.
Thread-safe (one re-entrant lock); both calls are idempotent and are no-ops once `mcp` has been
imported any other way. Worker threads only: completing imports the server side (seconds of
CPU).
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from types import ModuleType
from typing import Any

# Parent first: a child's spec is found on its parent's __path__.
_PACKAGES = ("mcp", "mcp.client")

_lock = threading.RLock()
_shells: dict[str, ModuleType] = {}  # name -> shell whose __init__ has not run yet
_completing = False


def client_side_only() -> None:
    """Make `mcp` and `mcp.client` importable without their `__init__` (and so without the
    server side), unless `mcp` is imported already. If the SDK's layout is not the one this
    knows, it does nothing, and the import that follows loads the whole SDK as before."""
    with _lock:
        if "mcp" in sys.modules:
            return
        made: dict[str, ModuleType] = {}
        try:
            for name in _PACKAGES:
                shell = _shell(name)
                if shell is None:
                    raise LookupError(name)
                made[name] = shell
        except Exception:  # LookupError (an unknown layout), or find_spec's own failure
            for name in made:
                sys.modules.pop(name, None)
            return
        _shells.update(made)


def complete() -> None:
    """Run the `__init__` of each shell, so the packages hold every name a plain import gives
    them. Imports the SDK's server side. A no-op without shells."""
    global _completing
    with _lock:
        if not _shells or _completing:
            return
        _completing = True
        try:
            # A plain `import mcp` finishes mcp.client's __init__ (imported from mcp's) first.
            for name in reversed(_PACKAGES):
                shell = _shells[name]
                shell.__dict__.pop("__getattr__", None)
                spec = shell.__spec__
                assert spec is not None
                assert spec.loader is not None
                spec.loader.exec_module(shell)
                del _shells[name]
        finally:
            _completing = False


def shells() -> tuple[str, ...]:
    """The packages whose `__init__` has not run (for the tests and the idle-imports guard)."""
    with _lock:
        return tuple(_shells)


def _shell(name: str) -> ModuleType | None:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        return None
    module = importlib.util.module_from_spec(spec)
    module.__dict__["__getattr__"] = _completing_getattr(name)
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)
    return module


def _completing_getattr(package: str) -> Any:
    def __getattr__(attr: str) -> Any:  # a module's __getattr__ (PEP 562)
        # A submodule (`from mcp import types`) is the import system's: AttributeError makes it
        # import it. Dunders are probes (copy, inspect, pickle), not the package's names.
        if (attr.startswith("__") and attr != "__all__") or _is_submodule(package, attr):
            raise AttributeError(attr)
        with _lock:
            if _completing:
                raise AttributeError(attr)
            complete()
        return getattr(sys.modules[package], attr)

    return __getattr__


def _is_submodule(package: str, attr: str) -> bool:
    try:
        return importlib.util.find_spec(f"{package}.{attr}") is not None
    except (ImportError, ValueError):
        return False
