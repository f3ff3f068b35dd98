"""The API over TLS and mTLS, on a real agent, with certificates made by openssl for the test."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from dtma.client import DtmaClient, Unreachable
from tests.agent_process import DTMA, AgentProcess
from tests.conftest import free_port, wait_until

pytestmark = pytest.mark.e2e


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=dtma-test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        cwd=d,
    )
    for name, ext in (
        ("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth"),
        ("client", "extendedKeyUsage=clientAuth"),
    ):
        (d / f"{name}.ext").write_text(ext + "\n")
        _openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN={name}",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            cwd=d,
        )
        _openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            f"{name}.ext",
            "-out",
            f"{name}.pem",
            cwd=d,
        )
    return d


@pytest.fixture
def mtls_agent(tmp_path: Path, pki: Path, docker_client: Any) -> Iterator[AgentProcess]:
    a = AgentProcess(
        tmp_path / "state",
        free_port(),
        extra_env={
            "DTMA_TLS_CERT": str(pki / "server.pem"),
            "DTMA_TLS_KEY": str(pki / "server.key"),
            "DTMA_TLS_CLIENT_CA": str(pki / "ca.pem"),
        },
    )
    a.start(ready=False, probe=False)
    wait_until(lambda: (tmp_path / "state" / "api-token").exists(), 30, "the token file")
    yield a
    a.stop(signal.SIGTERM)


def _context(pki: Path, client_cert: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    if client_cert:
        context.load_cert_chain(str(pki / "client.pem"), str(pki / "client.key"))
    return context


async def test_mtls_needs_a_client_certificate_and_the_token(
    mtls_agent: AgentProcess, pki: Path
) -> None:
    url = f"https://127.0.0.1:{mtls_agent.port}"
    await _until_up(url, _context(pki, True))
    async with DtmaClient(url, mtls_agent.token, ssl=_context(pki, True)) as client:
        assert (await client.health()).status == "ok"
        assert (await client.agent()).version == "0.1.0"
    async with DtmaClient(url, mtls_agent.token, ssl=_context(pki, False), retries=1) as client:
        with pytest.raises(Unreachable):
            await client.health()
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/v1/toolboxes", ssl=_context(pki, True)) as resp:
            assert resp.status == 401  # the certificate is not a substitute for the token
        with pytest.raises(aiohttp.ClientError):
            async with session.get(f"http://127.0.0.1:{mtls_agent.port}/v1/health") as resp:
                await resp.read()


async def _until_up(url: str, context: ssl.SSLContext) -> None:
    import asyncio

    async with aiohttp.ClientSession() as session:
        for _ in range(100):
            try:
                async with session.get(f"{url}/v1/health", ssl=context) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    pytest.fail("the TLS agent did not come up")


def test_the_cli_speaks_mtls(mtls_agent: AgentProcess, pki: Path) -> None:
    import time

    env = {
        **os.environ,
        "DTMA_URL": f"https://127.0.0.1:{mtls_agent.port}",
        "DTMA_API_TOKEN": mtls_agent.token,
        "DTMA_CACERT": str(pki / "ca.pem"),
        "DTMA_CLIENT_CERT": str(pki / "client.pem"),
        "DTMA_CLIENT_KEY": str(pki / "client.key"),
    }
    deadline = time.monotonic() + 30
    while True:
        run = subprocess.run([DTMA, "ls"], env=env, capture_output=True, text=True, timeout=60)
        if run.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert run.returncode == 0, run.stderr
    assert "TOOLBOX" in run.stdout
    no_cert = {k: v for k, v in env.items() if not k.startswith("DTMA_CLIENT_")}
    run = subprocess.run([DTMA, "ls"], env=no_cert, capture_output=True, text=True, timeout=120)
    assert run.returncode == 3
