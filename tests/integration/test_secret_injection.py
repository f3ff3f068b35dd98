"""Secrets from a real OpenBao injected into real containers: files on tmpfs (0400) or env,
failing closed, and rotation that restarts exactly the servers whose values changed."""

from __future__ import annotations

import contextlib
import secrets
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from dtma.adapters.secret_files import mount_point_fstype
from dtma.adapters.vault import VaultClient, VaultConfig
from dtma.domain import gate
from dtma.observability.redaction import MASK, REDACTOR, Redactor
from tests.conftest import BaoServer, bao_binary, die_with_parent, free_port, in_thread, wait_until
from tests.engine_fixture import EngineHarness, engine_harness, new_toolbox_id, notes_server, spec

pytestmark = pytest.mark.integration


def secret_ref(name: str, path: str, key: str, as_: str = "file") -> dict[str, Any]:
    return {"name": name, "vault": {"mount": "secret", "path": path, "key": key}, "as": as_}


def put(bao: BaoServer, path: str, **data: str) -> None:
    bao.client().secrets.kv.v2.create_or_update_secret(path=path, secret=data, mount_point="secret")


@contextlib.asynccontextmanager
async def _harness(
    tmp_path: Path, addr: str, token: str, redactor: Redactor = REDACTOR
) -> AsyncIterator[EngineHarness]:
    vault = VaultClient(VaultConfig(addr=addr, token=token))
    await vault.login()
    async with contextlib.asynccontextmanager(engine_harness)(
        tmp_path / "state", vault=vault, secrets_dir=tmp_path / "secrets", redactor=redactor
    ) as h:
        yield h


@pytest.fixture
async def harness(
    tmp_path: Path, images: dict[str, str], bao: BaoServer
) -> AsyncIterator[EngineHarness]:
    async with _harness(tmp_path, bao.addr, bao.root_token) as h:
        yield h


def exec_in(h: EngineHarness, container_id: str, code: str) -> str:
    result = h.docker_client.containers.get(container_id).exec_run(["python3", "-c", code])
    assert result.exit_code == 0, result.output
    return str(result.output.decode().strip())


async def test_file_and_env_secrets_reach_the_process(
    harness: EngineHarness, bao: BaoServer, tmp_path: Path
) -> None:
    path = f"app/{secrets.token_hex(3)}"
    api_key, token = "file-" + secrets.token_hex(12), "env-" + secrets.token_hex(12)
    await in_thread(put, bao, path, api_key=api_key, token=token)
    tb = new_toolbox_id()
    body = spec(
        notes_server(
            "notes",
            secrets=[
                secret_ref("API_KEY", path, "api_key"),
                secret_ref("TOKEN", path, "token", "env"),
            ],
        )
    )
    assert (await harness.apply_and_wait(tb, body)).state == "succeeded"
    (container,) = await harness.containers(tb)

    inside = await in_thread(
        exec_in,
        harness,
        container.id,
        "import os; print(open('/run/secrets/API_KEY').read()); "
        "print(oct(os.stat('/run/secrets/API_KEY').st_mode & 0o777)); "
        "print(os.environ['TOKEN'])",
    )
    assert inside.splitlines() == [api_key, "0o400", token]

    host_dir = tmp_path / "secrets" / container.name
    assert (host_dir / "API_KEY").is_file()
    assert mount_point_fstype(host_dir) == "tmpfs"
    assert oct(host_dir.stat().st_mode & 0o777) == "0o700"
    attrs = await in_thread(harness.docker_client.api.inspect_container, container.id)
    mounts = {m["Destination"]: m for m in attrs["Mounts"]}
    assert mounts["/run/secrets"]["RW"] is False
    assert api_key not in str(attrs)  # a file secret is not visible in `docker inspect`

    assert (await harness.wait(await harness.agent.delete(tb))).state == "succeeded"
    assert not host_dir.exists()


@pytest.mark.parametrize("failure", ["missing_key", "denied"])
async def test_a_secret_failure_rolls_back_and_names_the_path(
    failure: str, tmp_path: Path, images: dict[str, str], bao: BaoServer
) -> None:
    path = f"app/{secrets.token_hex(3)}"
    await in_thread(put, bao, path, good="g-" + secrets.token_hex(8))
    token = bao.root_token
    if failure == "denied":
        name = "only-" + secrets.token_hex(3)
        await in_thread(
            bao.client().sys.create_or_update_policy,
            name=name,
            policy=f'path "secret/data/{path}" {{ capabilities = ["read"] }}',
        )
        token = (await in_thread(bao.client().auth.token.create, policies=[name]))["auth"][
            "client_token"
        ]
    async with _harness(tmp_path, bao.addr, token) as h:
        tb = new_toolbox_id()
        one = spec(notes_server("notes", secrets=[secret_ref("GOOD", path, "good")]))
        assert (await h.apply_and_wait(tb, one)).state == "succeeded"
        old = {c.id for c in await h.containers(tb)}
        bad_ref = (
            secret_ref("BAD", path, "absent")
            if failure == "missing_key"
            else secret_ref("BAD", "app/forbidden", "k")
        )
        two = spec(notes_server("notes", secrets=[secret_ref("GOOD", path, "good"), bad_ref]))
        op = await h.apply_and_wait(tb, two)
        assert op.state == "rolled_back", op
        where = (
            [f"secret/{path}", "'absent'"] if failure == "missing_key" else ["secret/app/forbidden"]
        )
        assert op.error
        assert all(part in op.error for part in where), op.error
        assert {c.id for c in await h.containers(tb)} == old
        failed = [e for e in await h.events(tb) if e.kind == "rollout_failed"]
        assert (failed[0].server, failed[0].reason) == ("notes", gate.SECRETS_FAILED)


@pytest.fixture
def lone_bao(tmp_path: Path) -> Iterator[tuple[str, str, subprocess.Popen[bytes]]]:
    """An OpenBao of this test's own, so that it can be stopped."""
    port, token = free_port(), "root-" + secrets.token_hex(6)
    proc = subprocess.Popen(
        [bao_binary(), "server", "-dev", f"-dev-listen-address=127.0.0.1:{port}"],
        env={"BAO_DEV_ROOT_TOKEN_ID": token, "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=die_with_parent,
    )
    server = BaoServer(f"http://127.0.0.1:{port}", token, proc.pid)
    wait_until(lambda: server.client().sys.is_initialized(), 30, "lone bao")
    yield server.addr, token, proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


async def test_vault_down_rolls_back_and_the_old_revision_keeps_serving(
    tmp_path: Path, images: dict[str, str], lone_bao: tuple[str, str, subprocess.Popen[bytes]]
) -> None:
    addr, token, proc = lone_bao
    server = BaoServer(addr, token, proc.pid)
    await in_thread(put, server, "app/x", k="v-" + secrets.token_hex(8))
    async with _harness(tmp_path, addr, token) as h:
        tb = new_toolbox_id()
        one = spec(notes_server("notes", secrets=[secret_ref("K", "app/x", "k")]))
        assert (await h.apply_and_wait(tb, one)).state == "succeeded"
        old = {c.id for c in await h.containers(tb)}
        proc.send_signal(signal.SIGTERM)
        await in_thread(proc.wait, 10)
        two = spec(notes_server("notes", env={"V": "2"}, secrets=[secret_ref("K", "app/x", "k")]))
        op = await h.apply_and_wait(tb, two)
        assert op.state == "rolled_back", op
        assert op.error
        assert "unreachable" in op.error
        assert "secret/app/x key 'k'" in op.error
        assert {c.id for c in await h.containers(tb)} == old
        assert all(c.running for c in await h.containers(tb))


async def test_refresh_restarts_only_the_servers_whose_values_changed(
    harness: EngineHarness, bao: BaoServer
) -> None:
    a, b = f"app/{secrets.token_hex(3)}", f"app/{secrets.token_hex(3)}"
    await in_thread(put, bao, a, v="a1-" + secrets.token_hex(6))
    await in_thread(put, bao, b, v="b1-" + secrets.token_hex(6))
    tb = new_toolbox_id()
    body = spec(
        notes_server("na", secrets=[secret_ref("V", a, "v")]),
        notes_server("nb", secrets=[secret_ref("V", b, "v", "env")]),
        notes_server("plain"),
    )
    assert (await harness.apply_and_wait(tb, body)).state == "succeeded"
    before = {s["name"]: s["container_id"] for s in (await harness.agent.status(tb))["servers"]}

    new_value = "a2-" + secrets.token_hex(6)
    await in_thread(put, bao, a, v=new_value)
    op = await harness.wait(await harness.agent.refresh_secrets(tb))
    assert op.state == "succeeded", op
    after = {s["name"]: s for s in (await harness.agent.status(tb))["servers"]}
    assert after["na"]["container_id"] != before["na"]
    assert after["nb"]["container_id"] == before["nb"]
    assert after["plain"]["container_id"] == before["plain"]
    assert after["na"]["health"] == "healthy"
    assert after["na"]["restarts"] == 1
    inside = await in_thread(
        exec_in, harness, after["na"]["container_id"], "print(open('/run/secrets/V').read())"
    )
    assert inside == new_value
    assert len(await harness.containers(tb)) == 3
    rotated = [e.server for e in await harness.events(tb) if e.kind == "secrets_rotated"]
    assert rotated == ["na"]

    op = await harness.wait(await harness.agent.refresh_secrets(tb))  # nothing changed now
    assert op.state == "succeeded"
    assert [e.server for e in await harness.events(tb) if e.kind == "secrets_rotated"] == ["na"]


async def test_the_redactor_forgets_a_value_once_no_container_holds_it(
    tmp_path: Path, images: dict[str, str], bao: BaoServer
) -> None:
    redactor = Redactor(grace=0)  # no grace: only the containers' labels keep a value
    path, value = f"app/{secrets.token_hex(3)}", "bounded-" + secrets.token_hex(12)
    await in_thread(put, bao, path, token=value)
    async with _harness(tmp_path, bao.addr, bao.root_token, redactor) as h:
        tb = new_toolbox_id()
        body = spec(notes_server("notes", secrets=[secret_ref("TOKEN", path, "token", "env")]))
        assert (await h.apply_and_wait(tb, body)).state == "succeeded"
        await h.agent.watcher.relist_once()
        assert redactor.redact(f"x {value} y") == f"x {MASK} y"  # a live container holds it
        assert (await h.wait(await h.agent.delete(tb))).state == "succeeded"
        await h.agent.watcher.relist_once()
        assert redactor.redact(value) == value
        assert len(redactor) == 0
