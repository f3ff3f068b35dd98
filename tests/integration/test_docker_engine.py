"""The real Docker engine: our adapter reaches it and a hardened container runs."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from dtma.adapters.docker_engine import DEFAULT_ATTACH_THREADS, DockerEngine
from dtma.errors import DockerUnavailable
from tests.conftest import wait_until

pytestmark = pytest.mark.integration


async def test_engine_ping_and_version(docker_client: Any) -> None:
    engine = DockerEngine(None)
    try:
        await engine.ping()
        info = await engine.info()
    finally:
        await engine.close()
    assert info.version == docker_client.version()["Version"]
    assert info.os == "linux"


async def test_docker_calls_do_not_queue_behind_a_busy_default_executor() -> None:
    """Engine calls have a pool of their own: asyncio's default executor (shared with every
    to_thread in the process) fully blocked does not delay them, and docker-py keeps an HTTP
    connection for every thread that may hold one."""
    engine = DockerEngine(None, threads=4)
    release = threading.Event()
    loop = asyncio.get_running_loop()
    blockers = [loop.run_in_executor(None, release.wait, 60) for _ in range(64)]
    try:
        async with asyncio.timeout(20):
            await asyncio.gather(*(engine.ping() for _ in range(12)))
        client = await engine.run(engine.client)
        adapter = client.api.get_adapter("http+docker://localhost")
        assert adapter.max_pool_size == 4 + DEFAULT_ATTACH_THREADS + 4  # + the event stream, pings
    finally:
        release.set()
        await asyncio.gather(*blockers)
        await engine.close()


async def test_unreachable_engine_is_a_transient_error(tmp_path: Any) -> None:
    engine = DockerEngine(f"unix://{tmp_path}/no-such.sock")
    with pytest.raises(DockerUnavailable) as caught:
        await engine.ping()
    assert caught.value.transient
    assert "unreachable" in str(caught.value)


def test_a_hardened_container_runs(images: dict[str, str], make_container: Any) -> None:
    c = make_container(
        images["mcp-notes"],
        read_only=True,
        tmpfs={"/tmp": "rw,size=16m"},
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        pids_limit=64,
        mem_limit="128m",
    )
    wait_until(lambda: c.reload() or c.status == "running", 30, "container running")
    c.reload()
    assert c.attrs["HostConfig"]["ReadonlyRootfs"] is True
    assert c.attrs["HostConfig"]["CapDrop"] == ["ALL"]
    exit_code, out = c.exec_run(["python3", "-c", "import os; print(os.getuid())"])
    assert exit_code == 0
    assert out.decode().strip() == "10001"
