"""Time from PUT (apply) to `healthy` for toolboxes of 3 and 10 servers, on a real agent.

Usage: .venv/bin/python bench/rollout_time.py [--runs N]
Needs the example images (make images). Starts its own agent on a free port with a private
state dir, and deletes what it created. The gate holds every server for min_healthy_time, so the
script reports the total and the total minus min_healthy_time (start + first healthy probes).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

DTMA = str(Path(sys.executable).parent / "dtma")
TIME_TOOLS = ["get_current_time", "convert_time"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def call(base: str, token: str, method: str, path: str, body: Any = None,
         timeout: float = 300) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method,  # noqa: S310
                                 headers={"Authorization": f"Bearer {token}",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - loopback
        return json.loads(resp.read())


def toolbox(n: int, min_healthy: float) -> dict[str, Any]:
    servers = []
    for i in range(n):
        if i % 2 == 0:
            servers.append({"name": f"time-{i}", "image": "dtma-examples/mcp-time:latest",
                            "health": {"expect_tools": TIME_TOOLS}})
        else:
            servers.append({"name": f"notes-{i}", "image": "dtma-examples/mcp-notes:latest",
                            "transport": "streamable-http", "port": 8000,
                            "health": {"expect_tools": ["add_note"]}})
    return {"servers": servers, "rollout": {"min_healthy_time": min_healthy}}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="dtma-bench-"))
    port = free_port()
    env = {**os.environ, "DTMA_LISTEN": f"127.0.0.1:{port}", "DTMA_STATE_DIR": str(state),
           "DTMA_LOG_FORMAT": "json", "DTMA_LOG_LEVEL": "warning"}
    env.pop("VAULT_ADDR", None)
    agent = subprocess.Popen([DTMA, "serve"], env=env, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                with urllib.request.urlopen(base + "/v1/ready", timeout=1):  # noqa: S310
                    break
            except OSError:
                time.sleep(0.1)
        token = (state / "api-token").read_text().strip()
        print(f"{'servers':>7} {'min_healthy':>11} {'median s':>9} {'min s':>6} {'max s':>6} "
              f"{'median minus gate hold':>22}")
        for n in (3, 10):
            for min_healthy in (5.0, 1.0):
                times = []
                for run in range(args.runs):
                    tb = f"bench-{n}-{int(min_healthy)}-{run}"
                    t0 = time.perf_counter()
                    out = call(base, token, "PUT", f"/v1/toolboxes/{tb}?wait=300",
                               toolbox(n, min_healthy))
                    elapsed = time.perf_counter() - t0
                    if out.get("phase") != "healthy":
                        print(f"run failed: {json.dumps(out)[:500]}", file=sys.stderr)
                        return 1
                    times.append(elapsed)
                    op = call(base, token, "DELETE", f"/v1/toolboxes/{tb}")["operation"]
                    while call(base, token, "GET", f"/v1/operations/{op}")["state"] == "running":
                        time.sleep(0.2)
                med = statistics.median(times)
                print(f"{n:>7} {min_healthy:>10.0f}s {med:>9.2f} {min(times):>6.2f} "
                      f"{max(times):>6.2f} {med - min_healthy:>22.2f}")
    finally:
        agent.terminate()
        agent.wait(30)
        shutil.rmtree(state, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
