"""dtma/sdk_packages.py: the MCP SDK's client side loads without its server side, and completing
the packages later gives what a plain `import mcp` gives. Each case runs in a fresh interpreter
(this one has imported the whole SDK already). An SDK upgrade whose client modules import the
server side again, or whose packages no longer complete the same, fails here."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

# Top-level packages and SDK modules that only the server side brings.
SERVER_SIDE = ("mcp.server", "starlette", "sse_starlette", "uvicorn", "click", "cryptography")

# What the agent's probes and upstream calls import (lazy_import.MCP_CLIENT and the adapters it
# leads to), then what the first endpoint request imports (lazy_import.MCP_SERVER).
CLIENT_MODULES = (
    "dtma.adapters.mcp_probe",
    "dtma.adapters.mcp_upstream",
    "dtma.adapters.mcp_relay",
    "dtma.adapters.docker_attach",
)

PRELUDE = textwrap.dedent(
    """
    import importlib, json, sys
    from dtma import sdk_packages

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
