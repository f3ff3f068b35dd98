"""Run a real `dtma serve` process for tests: free port, private state dir, stop by PID."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import die_with_parent

DTMA = str(Path(sys.executable).parent / "dtma")


@dataclass
class AgentProcess:
    state_dir: Path
    port: int
    extra_env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    made: list[str] = field(default_factory=list)
    argv_prefix: list[str] = field(default_factory=list)  # e.g. setpriv, to run as another user

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def token(self) -> str:
        return (self.state_dir / "api-token").read_text().strip()

    def start(self, wait: float = 60, ready: bool = True, probe: bool = True) -> AgentProcess:
        """Start and wait for /v1/health (and /v1/ready unless ready=False). probe=False only
        starts it (for a TLS agent, which this plain-HTTP helper cannot probe)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.state_dir / "agent.log"
        env = {
            **os.environ,
            "DTMA_LISTEN": f"127.0.0.1:{self.port}",
            "DTMA_STATE_DIR": str(self.state_dir),
            "DTMA_LOG_FORMAT": "json",
            **self.extra_env,
        }
        env.pop("VAULT_ADDR", None) if "VAULT_ADDR" not in self.extra_env else None
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [*self.argv_prefix, DTMA, "serve"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent,
            )
        if not probe:
            return self
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc.wait()
                raise RuntimeError(f"agent exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                if self.get("/v1/ready" if ready else "/v1/health")[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop(signal.SIGKILL)
        raise RuntimeError(f"agent not ready within {wait}s:\n{self.logs()[-4000:]}")

    def logs(self) -> str:
        return self.log_path.read_text() if self.log_path and self.log_path.exists() else ""

    def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float = 30,
        raw: bytes | None = None,
    ) -> tuple[int, dict[str, str], Any]:
        hdrs = dict(headers or {})
        if token:
            hdrs["Authorization"] = f"Bearer {token}"
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if data is not None:
            hdrs.setdefault("Content-Type", "application/json")
        req = urllib.request.Request(self.base_url + path, data=data, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw, status, rh = resp.read(), resp.status, dict(resp.headers)
        except urllib.error.HTTPError as err:
            raw, status, rh = err.read(), err.code, dict(err.headers)
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        return status, rh, parsed

    def get(self, path: str, token: str | None = None) -> tuple[int, Any]:
        status, _, body = self.request("GET", path, token=token)
        return status, body

    def put_toolbox(self, tb: str, body: str, wait: int = 120) -> dict[str, Any]:
        """PUT a spec and wait for its rollout (`?wait`); the toolbox is removed at teardown.
        Returns the toolbox's answer after asserting it was accepted."""
        self.made.append(tb)
        status, _, resp = self.request(
            "PUT",
            f"/v1/toolboxes/{tb}?wait={wait}",
            token=self.token,
            raw=body.encode(),
            timeout=wait + 10,
        )
        assert status in (200, 202), resp
        return dict(resp)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        """Signal the agent by PID and wait; SIGKILL if it does not exit in time."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


@contextmanager
def running_agent(
    state_dir: Path, docker_client: Any, *, stop_signal: int = signal.SIGTERM, **env: str
) -> Iterator[AgentProcess]:
    """A started agent; afterwards it is stopped and every toolbox it was given is removed."""
    from tests.conftest import free_port
    from tests.engine_fixture import remove_toolboxes

    # Other agents' containers (parallel runs, make run) share this engine: never reap them.
    env.setdefault("DTMA_REAP_GRACE", "24h")
    agent = AgentProcess(state_dir, free_port(), extra_env=dict(env)).start()
    try:
        yield agent
    finally:
        agent.stop(stop_signal)
        remove_toolboxes(docker_client, agent.made)
