"""Vault over TLS (a CA file; skip-verify only when asked) and inside a namespace."""

from __future__ import annotations

import secrets
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import hvac
import pytest

from dtma.adapters.vault import VaultClient, VaultConfig
from dtma.errors import VaultUnavailable
from tests.conftest import BaoServer, bao_binary, die_with_parent, free_port, in_thread, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tls_bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    certs = tmp_path_factory.mktemp("bao-tls")
    port, token = free_port(), "root-" + secrets.token_hex(6)
    proc = subprocess.Popen(
        [
            bao_binary(),
            "server",
            "-dev",
            "-dev-tls",
            f"-dev-tls-cert-dir={certs}",
            f"-dev-listen-address=127.0.0.1:{port}",
        ],
        env={"BAO_DEV_ROOT_TOKEN_ID": token, "HOME": str(certs), "PATH": "/usr/bin:/bin"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=die_with_parent,
    )
    addr = f"https://127.0.0.1:{port}"
    ca = certs / "vault-ca.pem"
    try:
        wait_until(
            lambda: ca.exists() and hvac.Client(url=addr, verify=str(ca)).sys.is_initialized(),
            30,
            "TLS bao",
        )
        hvac.Client(url=addr, token=token, verify=str(ca)).secrets.kv.v2.create_or_update_secret(
            path="tls", secret={"k": "over-tls"}, mount_point="secret"
        )
        yield addr, token, ca
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


async def test_tls_with_the_ca_file(tls_bao: tuple[str, str, Path]) -> None:
    addr, token, ca = tls_bao
    vault = VaultClient(VaultConfig(addr=addr, token=token, cacert=ca))
    await vault.login()
    assert await vault.read("secret", "tls", "k") == "over-tls"


async def test_an_untrusted_certificate_is_refused_unless_skip_verify_is_set(
    tls_bao: tuple[str, str, Path],
) -> None:
    addr, token, _ = tls_bao
    with pytest.raises(VaultUnavailable, match="SSLError"):
        await VaultClient(VaultConfig(addr=addr, token=token)).login()
    insecure = VaultClient(VaultConfig(addr=addr, token=token, skip_verify=True))
    await insecure.login()
    assert await insecure.read("secret", "tls", "k") == "over-tls"


async def test_reads_inside_a_namespace(bao: BaoServer) -> None:
    ns = "team-" + secrets.token_hex(3)
    root = bao.client()
    await in_thread(root.adapter.post, f"/v1/sys/namespaces/{ns}")
    scoped = hvac.Client(url=bao.addr, token=bao.root_token, namespace=ns)
    await in_thread(scoped.sys.enable_secrets_engine, "kv", path="kv", options={"version": "2"})
    await in_thread(
        scoped.secrets.kv.v2.create_or_update_secret,
        path="app",
        secret={"k": "in-namespace"},
        mount_point="kv",
    )
    vault = VaultClient(VaultConfig(addr=bao.addr, token=bao.root_token, namespace=ns))
    await vault.login()
    assert await vault.read("kv", "app", "k") == "in-namespace"
    outside = VaultClient(VaultConfig(addr=bao.addr, token=bao.root_token))
    await outside.login()
    with pytest.raises(Exception, match="kv"):
        await outside.read("kv", "app", "k")
