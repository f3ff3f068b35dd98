"""`make run`: the agent on the embedded defaults, plus a dev OpenBao when VAULT_ADDR is unset.

Starts (each in its own session, so Ctrl-C reaches only this script, which then stops them in
order): `bao server -dev` holding a demo secret at secret/dtma/demo/notes, then `dtma serve`.
Prints where the API token is and a curl to try. Ctrl-C or SIGTERM stops the agent, then
OpenBao, and exits. Honours DTMA_LISTEN and DTMA_STATE_DIR like the agent does.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType

VENV_BIN = Path(sys.executable).parent
DEMO_SECRET_PATH = "dtma/demo/notes"  # noqa: S105 - a Vault path, not a secret


def say(msg: str) -> None:
    print(f"run-dev: {msg}", file=sys.stderr, flush=True)


def free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise RuntimeError("no free port")


def http_json(
    url: str,
    *,
    method: str = "GET",
    token: str | None = None,
    body: dict[str, object] | None = None,
    timeout: float = 2,
) -> object:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["X-Vault-Token"] = token
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - loopback only
        raw = resp.read()
    return json.loads(raw) if raw else None


def wait_for(check: object, timeout: float, what: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"run-dev: {what} exited with status {proc.returncode} while starting")
        try:
            if check():  # type: ignore[operator]
                return
        except (OSError, urllib.error.URLError, ValueError):
            pass
        time.sleep(0.1)
    raise SystemExit(f"run-dev: {what} did not come up within {timeout:.0f}s")


class DevStack:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []

    def spawn(
        self, name: str, argv: list[str], env: dict[str, str], log: Path | None = None
    ) -> subprocess.Popen[bytes]:
        out = log.open("ab") if log else None
        proc = subprocess.Popen(
            argv,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        if out:
            out.close()
        self.children.append((name, proc))
        return proc

    def start_openbao(self, env: dict[str, str]) -> None:
        bao = shutil.which("bao", path=str(VENV_BIN)) or shutil.which("bao")
        if not bao:
            raise SystemExit("run-dev: the `bao` binary is missing; run `make venv`")
        port = free_port(8200)
        token = "dev-root-" + secrets.token_hex(12)
        addr = f"http://127.0.0.1:{port}"
        log = self.state_dir / "openbao-dev.log"
        log.touch(mode=0o600)  # the dev server prints its root token there
        # The token goes through the environment, not argv, so `ps` does not show it.
        proc = self.spawn(
            "openbao",
            [bao, "server", "-dev", f"-dev-listen-address=127.0.0.1:{port}"],
            {**env, "HOME": str(self.state_dir), "BAO_DEV_ROOT_TOKEN_ID": token},
            log,
        )
        wait_for(lambda: http_json(f"{addr}/v1/sys/health"), 30, "OpenBao", proc)
        http_json(
            f"{addr}/v1/secret/data/{DEMO_SECRET_PATH}",
            method="POST",
            token=token,
            body={"data": {"api_key": "demo-" + secrets.token_hex(8)}},
        )
        env_file = self.state_dir / "dev-vault.env"
        env_file.touch(mode=0o600)
        env_file.write_text(f"export VAULT_ADDR={addr}\nexport VAULT_TOKEN={token}\n")
        env.update(VAULT_ADDR=addr, VAULT_TOKEN=token)
        say(
            f"dev OpenBao at {addr} (pid {proc.pid}, in-memory); demo secret at "
            f"secret/{DEMO_SECRET_PATH} key api_key; credentials: source {env_file}"
        )

    def start_agent(self, env: dict[str, str]) -> subprocess.Popen[bytes]:
        dtma = shutil.which("dtma", path=str(VENV_BIN))
        if not dtma:
            raise SystemExit("run-dev: .venv/bin/dtma is missing; run `make venv`")
        listen = env.get("DTMA_LISTEN", "127.0.0.1:8750")
        proc = self.spawn("agent", [dtma, "serve"], env)
        wait_for(lambda: http_json(f"http://{listen}/v1/health"), 30, "the agent", proc)
        token_file = Path(env.get("DTMA_API_TOKEN_FILE") or self.state_dir / "api-token")
        say(f"dtma agent listening on http://{listen} (pid {proc.pid}, state in {self.state_dir})")
        say(f"API token: {token_file}")
        say(f'try: curl -H "Authorization: Bearer $(cat {token_file})" http://{listen}/v1/ready')
        say("Ctrl-C stops the agent and everything run-dev started")
        return proc

    def stop(self) -> None:
        """Stop children newest first: SIGTERM, then SIGKILL after a grace period."""
        for name, proc in reversed(self.children):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    say(f"{name} did not stop within 15s; killing it")
                    proc.kill()
                    proc.wait()
            say(f"stopped {name} (pid {proc.pid})")


def main() -> int:
    env = dict(os.environ)
    state_dir = Path(env.setdefault("DTMA_STATE_DIR", ".dtma")).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    stack = DevStack(state_dir)
    stopping = False

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        if not env.get("VAULT_ADDR"):
            stack.start_openbao(env)
        else:
            say(f"using Vault at {env['VAULT_ADDR']}")
        agent = stack.start_agent(env)
        while not stopping and agent.poll() is None:
            time.sleep(0.2)
        if agent.poll() is not None and not stopping:
            say(f"the agent exited with status {agent.returncode}")
            return agent.returncode or 1
        return 0
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
