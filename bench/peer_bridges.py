"""The peer bridges of bench/gateway_peers.py: what a user would put in front of a stdio MCP
server instead of dtma, installed into a directory of their own (never the project's venv) and
started on loopback ports in front of one stdio command.

- PyPI `mcp-proxy` and `fastmcp` in a venv of their own (`<root>/venv`, `python -m venv`);
- npm `supergateway` under `<root>/npm` (`npm install --prefix`).

`install` is idempotent: what is already there is reused, and only a missing piece is
installed. The bridges are started as child processes; `BridgeProcs.stop` ends exactly those.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench.gateway_latency import free_port

IMAGE = "dtma-examples/mcp-time:latest"
LABEL = "dtma-bench.peers"
PYPI = ("mcp-proxy", "fastmcp")
NPM = ("supergateway",)
PEERS = ("mcp-proxy", "fastmcp", "supergateway")


@dataclass(frozen=True)
class Installed:
    """Where the bridges live under `root`, and the versions found there."""

    root: Path
    versions: dict[str, str]

    @property
    def venv_bin(self) -> Path:
        return self.root / "venv" / "bin"

    @property
    def supergateway_js(self) -> Path:
        return self.root / "npm" / "node_modules" / "supergateway" / "dist" / "index.js"


def _pypi_version(venv_bin: Path, name: str) -> str | None:
    out = subprocess.run(
        [str(venv_bin / "python"), "-m", "pip", "show", name],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return next(
        (line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Version:")),
        None,
    )


def _npm_version(root: Path, name: str) -> str | None:
    manifest = root / "npm" / "node_modules" / name / "package.json"
    return str(json.loads(manifest.read_text())["version"]) if manifest.exists() else None


def install(root: Path) -> Installed:
    """Install the three bridges under `root` unless they are there already (idempotent).
    Raises CalledProcessError, with pip's or npm's output shown, when an install fails."""
    root.mkdir(parents=True, exist_ok=True)
    venv_bin = root / "venv" / "bin"
    if not (venv_bin / "python").exists():
        # The base interpreter, not this venv's: the bridges must not see the project's packages.
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", str(root / "venv")], check=True)
    missing = [name for name in PYPI if _pypi_version(venv_bin, name) is None]
    if missing:
        print(f"installing {', '.join(missing)} into {root / 'venv'}", flush=True)
        subprocess.run(
            [str(venv_bin / "python"), "-m", "pip", "install", "-q", *missing], check=True
        )
    npm_missing = [name for name in NPM if _npm_version(root, name) is None]
    if npm_missing:
        if shutil.which("npm") is None:
            raise RuntimeError("npm is not installed: supergateway needs it (and node)")
        print(f"installing {', '.join(npm_missing)} into {root / 'npm'}", flush=True)
        subprocess.run(
            ["npm", "install", "--silent", "--prefix", str(root / "npm"), *npm_missing], check=True
        )
    versions = {name: _pypi_version(venv_bin, name) or "?" for name in (*PYPI, "mcp")}
    versions |= {name: _npm_version(root, name) or "?" for name in NPM}
    return Installed(root, versions)


def bridge_argv(inst: Installed, name: str, port: int, server: list[str]) -> tuple[list[str], str]:
    """The command line that serves `server` (a stdio command) as streamable HTTP on
    127.0.0.1:`port`, and the path of its MCP endpoint. Each bridge in its default stateful mode:
    supergateway's default (stateless) starts a new server process for every request."""
    host = ["--host", "127.0.0.1", "--port", str(port)]
    if name == "mcp-proxy":
        argv = [str(inst.venv_bin / "mcp-proxy"), *host, "--log-level", "WARNING", "--", *server]
        return argv, "/mcp"
    if name == "fastmcp":
        config = inst.root / "fastmcp-time.json"
        config.write_text(
            json.dumps({"mcpServers": {"time": {"command": server[0], "args": server[1:]}}})
        )
        argv = [str(inst.venv_bin / "fastmcp"), "run", str(config), "--transport", "http"]
        return [*argv, *host, "--path", "/mcp", "--no-banner", "--log-level", "WARNING"], "/mcp"
    if name == "supergateway":
        argv = ["node", str(inst.supergateway_js), "--stdio", shlex.join(server)]
        argv += ["--outputTransport", "streamableHttp", "--stateful", "--port", str(port)]
        return [*argv, "--logLevel", "none"], "/mcp"
    raise ValueError(f"unknown bridge {name!r}; known: {', '.join(PEERS)}")


class BridgeProcs:
    """The bridges this run started, by name: (process, URL). Not thread-safe; `stop` is
    idempotent and ends only the processes started here."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.running: dict[str, tuple[subprocess.Popen[bytes], str]] = {}

    def start(self, inst: Installed, name: str, server: list[str]) -> None:
        port = free_port()
        argv, path = bridge_argv(inst, name, port, server)
        with (self.log_dir / f"{name}.log").open("wb") as log:
            proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        self.running[name] = (proc, f"http://127.0.0.1:{port}{path}")

    def wait_listening(self, timeout: float = 90) -> dict[str, str]:
        """Wait until every bridge accepts connections; those that exit or never listen are
        dropped and named, with their log's tail, in the answer: {name: why}."""
        failed: dict[str, str] = {}
        deadline = time.monotonic() + timeout
        for name, (proc, url) in list(self.running.items()):
            port = int(url.split(":")[2].split("/")[0])
            while True:
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        break
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = (self.log_dir / f"{name}.log").read_text(errors="replace")[-300:]
                    failed[name] = f"did not listen (exit {proc.poll()}): {tail.strip()}"
                    self._end(name)
                    break
                time.sleep(0.2)
        return failed

    def _end(self, name: str) -> None:
        proc, _ = self.running.pop(name)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def stop(self) -> None:
        for name in list(self.running):
            self._end(name)


def server_argv(run: str, who: str) -> list[str]:
    """`docker run -i` of the image, labelled with the run and the bridge that starts it."""
    labels = ["--label", f"{LABEL}={run}", "--label", f"{LABEL}.bridge={who}"]
    return ["docker", "run", "-i", "--rm", *labels, IMAGE]


class StartCounter:
    """Counts the server containers each bridge starts, from `docker events` (by label)."""

    def __init__(self, run: str) -> None:
        self.run = run
        self.starts: Counter[str] = Counter()
        self._proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> StartCounter:
        fmt = '{{index .Actor.Attributes "' + LABEL + '.bridge"}}'
        self._proc = await asyncio.create_subprocess_exec(
            *["docker", "events", "--filter", f"label={LABEL}={self.run}"],
            *["--filter", "event=start", "--format", fmt],
            stdout=asyncio.subprocess.PIPE,
        )
        self._task = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self._proc is not None
        assert self._proc.stdout is not None
        async for line in self._proc.stdout:
            self.starts[line.decode().strip()] += 1

    async def __aexit__(self, *exc: object) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.terminate()
            await self._proc.wait()
        if self._task is not None:
            await self._task
