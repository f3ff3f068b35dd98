"""dtma/sdk_compat/, every use dtma makes of the MCP SDK's internals:
- server.py: each private name it reads exists on the installed SDK (an upgrade that moves one
  fails here, not in production), and its idle accounting holds a handshake-era session as the
  SDK's own transport does;
- client.py: the SDK's era negotiation is still where it reads it;
- packages.py: the SDK's client side loads without its server side, and completing the packages
  later gives what a plain `import mcp` gives (each case in a fresh interpreter: this one has
  imported the whole SDK already);
- the pin: pyproject.toml holds `mcp` and `mcp-types` to the installed minor version;
- the scans: no module of dtma outside dtma/sdk_compat/ imports a private SDK module or reads a
  private attribute of the SDK's objects."""

from __future__ import annotations

import ast
import inspect
import json
import re
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import anyio
from mcp.server.connection import Connection
from mcp.server.lowlevel.server import Server
from mcp.server.streamable_http import StreamableHTTPServerTransport
from packaging.requirements import Requirement
from packaging.version import Version

from dtma.sdk_compat import server as sdk_server
from dtma.sdk_compat.client import negotiate_auto

ROOT = Path(__file__).resolve().parents[2]


# --- server.py and client.py ----------------------------------------------------------------


async def test_a_request_on_the_hot_path_holds_the_sessions_idle_countdown() -> None:
    transport = StreamableHTTPServerTransport(mcp_session_id="s1", idle_timeout=30.0)
    async with transport.connect():
        idle = transport.idle_scope
        assert idle is not None
        idle.deadline = anyio.current_time() + 1.0  # as after the session's last request
        with sdk_server.in_flight(transport):
            assert idle.deadline == float("inf")
            with sdk_server.in_flight(transport):
                pass
            assert idle.deadline == float("inf")  # one still in flight
        assert 29.0 < idle.deadline - anyio.current_time() <= 30.0
        assert transport._requests_in_flight == 0


def test_the_sdk_still_has_what_sdk_compat_reads() -> None:
    """The names sdk_compat/server.py and client.py read off the SDK: an upgrade that moves one
    fails here."""
    from mcp.server.session import ServerSession
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

    from dtma.gateway.endpoint import _ToolboxServer

    manager = StreamableHTTPSessionManager(_ToolboxServer("x"))
    assert isinstance(manager._server_instances, dict)
    assert isinstance(manager._session_owners, dict)
    transport = StreamableHTTPServerTransport(mcp_session_id="s", idle_timeout=1.0)
    assert transport._idle_timeout == 1.0
    assert transport._requests_in_flight == 0
    connection = Connection.from_envelope("2026-07-28", None, None)
    session = ServerSession(cast(Any, None), connection)
    assert sdk_server.connection_of(SimpleNamespace(session=session)) is connection
    # The endpoint drops the middleware by its class: the SDK must still install it by default.
    assert any(isinstance(m, sdk_server.OpenTelemetryMiddleware) for m in Server("x").middleware)
    assert inspect.signature(negotiate_auto).parameters.keys() == {"session"}
    assert inspect.iscoroutinefunction(negotiate_auto)
    # The words the hot path answers with are the ones the SDK's transport writes.
    source = inspect.getsource(StreamableHTTPServerTransport)
    assert f'"{sdk_server.SESSION_ENDED}"' in source
    assert f'message="{sdk_server.CANCELLED}"' in source


# --- the pin --------------------------------------------------------------------------------


def test_the_sdk_is_pinned_to_the_installed_minor_version() -> None:
    """A new minor may move what sdk_compat reads, so pyproject.toml admits one: the installed
    version's, and neither the minor before it nor the one after."""
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    requirements = {r.name: r for r in map(Requirement, declared)}
    for name in ("mcp", "mcp-types"):
        specifier = requirements[name].specifier
        major, minor = Version(version(name)).release[:2]
        assert specifier.contains(version(name)), name
        assert specifier.contains(f"{major}.{minor}.99"), name
        assert not specifier.contains(f"{major}.{minor + 1}.0"), name
        assert not specifier.contains(f"{major}.{minor + 1}.0a1", prereleases=True), name
        if minor:
            assert not specifier.contains(f"{major}.{minor - 1}.99"), name
        assert not specifier.contains(f"{major + 1}.0.0"), name


# --- packages.py ----------------------------------------------------------------------------

# Top-level packages and SDK modules that only the server side brings.
SERVER_SIDE = ("mcp.server", "starlette", "sse_starlette", "uvicorn", "click", "cryptography")

# What the agent's probes and upstream calls import (lazy_import.MCP_CLIENT and the adapters it
# leads to), then what the first endpoint request imports (lazy_import.MCP_SERVER).
CLIENT_MODULES = (
    "dtma.adapters.mcp_probe",
    "dtma.adapters.mcp_upstream",
    "dtma.adapters.mcp_relay",
    "dtma.adapters.docker_attach",
    "dtma.sdk_compat.client",
)

PRELUDE = textwrap.dedent(
    """
    import importlib, json, sys
    from dtma.sdk_compat import packages as sdk_packages

    SERVER_SIDE = tuple(json.loads(sys.argv[1]))
    CLIENT_MODULES = json.loads(sys.argv[2])
    out = {}

    def server_side():
        return sorted(m for m in sys.modules if m.startswith(SERVER_SIDE) and (
            m in SERVER_SIDE or m.startswith(tuple(p + "." for p in SERVER_SIDE))))

    def names(package):
        return sorted(vars(sys.modules[package]))
    """
)


def _run(body: str) -> dict[str, Any]:
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            PRELUDE + textwrap.dedent(body) + "\nprint(json.dumps(out))",
            json.dumps(SERVER_SIDE),
            json.dumps(CLIENT_MODULES),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    return dict(json.loads(run.stdout.splitlines()[-1]))


def test_the_client_side_loads_alone_and_the_server_side_completes_the_packages() -> None:
    shelled = _run(
        """
        sdk_packages.client_side_only()
        for name in CLIENT_MODULES:
            importlib.import_module(name)
        from mcp import types  # a submodule: read without completing the package
        out["client"] = {"server_side": server_side(), "shells": sdk_packages.shells(),
                         "session": "mcp.client.session" in sys.modules}
        sdk_packages.complete()
        importlib.import_module("dtma.gateway.endpoint")
        import mcp, mcp.client
        out["shells_after"] = sdk_packages.shells()
        out["mcp"], out["mcp.client"] = names("mcp"), names("mcp.client")
        out["same_class"] = mcp.ClientSession is mcp.client.session.ClientSession
        """
    )
    plain = _run(
        """
        import mcp
        for name in CLIENT_MODULES:
            importlib.import_module(name)
        importlib.import_module("dtma.gateway.endpoint")
        out["mcp"], out["mcp.client"] = names("mcp"), names("mcp.client")
        """
    )
    client = shelled["client"]
    assert client == {"server_side": [], "shells": ["mcp", "mcp.client"], "session": True}
    assert shelled["shells_after"] == []
    assert shelled["mcp"] == plain["mcp"]
    assert shelled["mcp.client"] == plain["mcp.client"]
    assert shelled["same_class"]
    assert "Client" in plain["mcp"]  # the comparison reads the packages' names


def test_a_name_of_the_package_read_early_completes_it() -> None:
    """`from mcp import Client` while the package is a shell: the package completes first, so
    the reader gets the name, not an ImportError."""
    out = _run(
        """
        sdk_packages.client_side_only()
        importlib.import_module(CLIENT_MODULES[0])
        before = server_side()
        from mcp.client import Client
        from mcp import ClientSession
        out.update(before=before, after=len(server_side()), shells=sdk_packages.shells(),
                   client=Client.__module__, session=ClientSession.__module__)
        """
    )
    assert out["before"] == []
    assert out["after"] > 0
    assert out == {
        **out,
        "shells": [],
        "client": "mcp.client.client",
        "session": "mcp.client.session",
    }


def test_an_sdk_imported_already_is_left_as_it_is() -> None:
    out = _run(
        """
        import mcp
        sdk_packages.client_side_only()
        out.update(shells=sdk_packages.shells(), whole="ClientSession" in vars(mcp))
        sdk_packages.complete()  # no shells: nothing to run
        """
    )
    assert out == {"shells": [], "whole": True}


def test_the_compat_package_and_packages_py_import_nothing_of_the_sdk() -> None:
    """lazy_import runs packages.py before the SDK is loaded: importing them loads no `mcp`."""
    out = _run(
        """
        import dtma.lazy_import, dtma.sdk_compat, dtma.sdk_compat.packages
        out["sdk"] = sorted(m for m in sys.modules if m.split(".")[0] in ("mcp", "mcp_types"))
        """
    )
    assert out == {"sdk": []}


# --- Nothing outside the compat package reaches into the SDK ----------------------------------

DTMA = ROOT / "dtma"
COMPAT = DTMA / "sdk_compat"
SDK_ROOTS = ("mcp", "mcp_types")
_PRIVATE_MODULE = re.compile(r"^(?:mcp|mcp_types)(?:\.\w+)*\._[A-Za-z0-9]")

# Private reads on objects that are not the SDK's, in modules the attribute scan covers:
# (path under dtma/, the expression) -> whose private part it is.
NOT_THE_SDKS = {
    ("adapters/docker_attach.py", "getattr(sock_io, '_sock', sock_io)"): "docker-py's socket IO",
}


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _sdk_module(name: str) -> bool:
    return name.split(".")[0] in SDK_ROOTS


def _private_sdk_imports(tree: ast.AST) -> Iterator[str]:
    """`import mcp.x._y`, `from mcp.x._y import z`, `from mcp.x import _y`, and a module name
    in a string (`importlib.import_module("mcp.x._y")`)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _sdk_module(alias.name) and any(map(_private, alias.name.split("."))):
                    yield ast.unparse(node)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if _sdk_module(node.module) and (
                any(map(_private, node.module.split(".")))
                or any(_private(alias.name) for alias in node.names)
            ):
                yield ast.unparse(node)
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and _PRIVATE_MODULE.match(node.value)
        ):
            yield repr(node.value)


def _imports_the_sdk(tree: ast.AST) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(_sdk_module(a.name) for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and node.level == 0 and _sdk_module(node.module or ""):
            return True
    return False


def _private_reads(tree: ast.AST) -> Iterator[str]:
    """`x._attr` and `getattr(x, "_attr")` (hasattr, setattr too) on anything but self/cls."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                yield ast.unparse(node)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr", "setattr", "delattr")
            and len(node.args) > 1
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and _private(node.args[1].value)
        ):
            yield ast.unparse(node)


def _modules_outside_compat() -> Iterator[tuple[str, ast.AST]]:
    for path in sorted(DTMA.rglob("*.py")):
        if COMPAT not in path.parents:
            yield path.relative_to(DTMA).as_posix(), ast.parse(path.read_text(), str(path))


def test_no_module_outside_sdk_compat_imports_a_private_sdk_module() -> None:
    found = [
        f"dtma/{name}: {hit}"
        for name, tree in _modules_outside_compat()
        for hit in _private_sdk_imports(tree)
    ]
    assert found == [], "move these into dtma/sdk_compat/"


def test_no_module_that_handles_sdk_objects_reads_their_private_attributes() -> None:
    """The modules that import the SDK, and the gateway (which is handed the SDK's objects),
    read no private attribute of anything but their own (self/cls). An SDK object handed to a
    module outside those and read there is not caught: the scan has no types."""
    found, allowed = [], set()
    for name, tree in _modules_outside_compat():
        if not (_imports_the_sdk(tree) or name.startswith("gateway/")):
            continue
        for hit in _private_reads(tree):
            if (name, hit) in NOT_THE_SDKS:
                allowed.add((name, hit))
            else:
                found.append(f"dtma/{name}: {hit}")
    assert found == [], "move these into dtma/sdk_compat/"
    assert allowed == set(NOT_THE_SDKS), "an entry of NOT_THE_SDKS matches nothing any more"


def test_the_scans_see_what_they_look_for() -> None:
    """The scans on known text, so that they cannot pass by seeing nothing."""
    tree = ast.parse(
        "import mcp.server._otel\n"
        "from mcp.client._probe import negotiate_auto\n"
        "from mcp.server import _otel\n"
        "from mcp_types._x import y\n"
        "importlib.import_module('mcp.client._probe')\n"
        "from mcp.server.lowlevel import Server\n"
        "import mcp_types as types\n"
    )
    assert len(list(_private_sdk_imports(tree))) == 5
    reads = ast.parse("a._b\ngetattr(c, '_d', None)\nself._e\ncls._f\ng.__name__\nself._h._i")
    assert sorted(_private_reads(reads)) == ["a._b", "getattr(c, '_d', None)", "self._h._i"]
    assert _imports_the_sdk(ast.parse("def f():\n    from mcp import types"))
    assert not _imports_the_sdk(ast.parse("import mcpx\nfrom . import mcp"))
