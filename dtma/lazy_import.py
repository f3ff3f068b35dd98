"""Heavy modules loaded when first needed, and off the event loop.

An idle agent (no toolbox, no Vault, no OAuth issuer) never needs the MCP SDK (its server side
for the toolbox endpoints, its client side for the probes), hvac or PyJWT, which together are
about half of its memory (docs/benchmarks.md, "Idle agent"). The modules that use them import
them inside the function that first needs them. Importing the SDK takes one to two seconds of
CPU, far past what the loop may block, so async code first awaits `load(name)`, which imports
the module in a worker thread; the plain `from ... import` that follows then only reads
sys.modules.

`load` is idempotent and safe to call concurrently: the interpreter's import locks make two
threads importing one module wait for each other, and a module is marked loaded only once its
import has finished (a module being imported is in sys.modules already, half made). Loop-only.

The SDK's two sides load apart: the client side for the first probe or gateway call without the
server side, which the SDK's package `__init__` files would import with it (16 MB;
dtma/sdk_compat/packages.py), and the server side with the first endpoint request. The SDK's imports
run one at a time (one lock), so the server side never completes the packages while a client
import is half way through them.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
import threading
import warnings
from collections.abc import Callable

from dtma.sdk_compat import packages as sdk_packages

MCP_SERVER = "dtma.gateway.endpoint"  # the toolbox endpoints: the SDK's server side
MCP_CLIENT = "dtma.adapters.mcp_probe"  # probes and gateway calls: the SDK's client side

_loaded: set[str] = set()

# What must run, in the importing thread, before a module is imported.
_BEFORE: dict[str, Callable[[], None]] = {
    MCP_CLIENT: sdk_packages.client_side_only,
    MCP_SERVER: sdk_packages.complete,
}
_sdk_lock = threading.Lock()


async def load(name: str) -> None:
    """Import `name` (and what it imports) in a worker thread unless that was done already."""
    if name in _loaded:  # the common case: one set lookup, no thread hop
        return
    await asyncio.to_thread(_import, name)
    _loaded.add(name)


def without_charset_detection() -> None:
    """Keep requests (docker-py's and hvac's HTTP client) from importing a character-detection
    library: charset_normalizer is 2.5 MB of an idle agent (docs/benchmarks.md, "Idle agent").

    requests uses one only to guess the encoding of a body whose Content-Type names no charset
    (`Response.text`), and without one takes UTF-8 (`Response.apparent_encoding`, since requests
    2.28); what the agent reads that way is the engine's and Vault's error text, which is UTF-8.
    Nothing else in the agent imports either library. Call before requests is imported (the
    start of `dtma serve`, before its imports); a no-op once requests or either library is
    loaded. requests' import warning about the missing library is silenced, that message only.
    """
    if {"requests", "charset_normalizer", "chardet"} & sys.modules.keys():
        return
    for name in ("charset_normalizer", "chardet"):
        sys.modules[name] = None  # type: ignore[assignment]  # None makes `import` raise ImportError
    warnings.filterwarnings(
        "ignore", message="Unable to find acceptable character detection", module="requests"
    )


def _import(name: str) -> None:
    before = _BEFORE.get(name)
    if before is None:
        importlib.import_module(name)
        return
    with _sdk_lock:
        before()
        importlib.import_module(name)
