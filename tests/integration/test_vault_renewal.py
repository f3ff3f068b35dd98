"""The agent keeps its Vault token alive against a real OpenBao: across an outage, past an
AppRole token_max_ttl (by logging in again), after a revocation, and it reports a plain token it
cannot keep. Each test runs its own `bao` dev server behind a TCP gate that can be shut
(connection refused) and reopened, so an outage loses none of the dev server's in-memory state.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import hvac.exceptions
import pytest
import structlog

from dtma.adapters.vault import VaultClient, VaultConfig
from dtma.domain import token_renewal as tr
from dtma.observability.metrics import METRICS
from tests.conftest import BaoServer, free_port, in_thread, run_bao, wait_until

pytestmark = pytest.mark.integration


class PortGate:
    """A TCP forwarder in front of a server; `shut()` refuses connections and cuts open ones,
    `open()` listens again on the same port."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self._target = target_port
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()

    @property
    def addr(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._pipe, "127.0.0.1", self.port)

    async def shut(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._conns):
            writer.close()
        await self._server.wait_closed()
        self._server = None

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target)
        except OSError:
            writer.close()
            return
        pair = {writer, up_writer}
        self._conns |= pair

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                dst.close()

        try:
            await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer))
        finally:
            self._conns -= pair


@pytest.fixture
def own_bao(tmp_path: Path) -> Iterator[BaoServer]:
    with run_bao(tmp_path) as server:
        yield server


@pytest.fixture
async def gate(own_bao: BaoServer) -> AsyncIterator[PortGate]:
    g = PortGate(int(own_bao.addr.rsplit(":", 1)[1]))
    await g.open()
    try:
        yield g
    finally:
        await g.shut()


class Reports:
    """What keep_alive reported: (failed, reason, message) in order."""

    def __init__(self) -> None:
        self.items: list[tuple[bool, str, str]] = []

    async def __call__(self, failed: bool, reason: str, message: str) -> None:
        self.items.append((failed, reason, message))


@contextlib.asynccontextmanager
async def keeping_alive(vault: VaultClient, reports: Reports | None = None) -> AsyncIterator[None]:
    task = asyncio.create_task(vault.keep_alive(reports))
    try:
        await in_thread(wait_until, lambda: vault.logins, 15, "the agent's first Vault login")
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def put_secret(bao: BaoServer, path: str, data: dict[str, str]) -> None:
    bao.client().secrets.kv.v2.create_or_update_secret(path=path, secret=data, mount_point="secret")


def read_policy(bao: BaoServer, path: str) -> str:
    name = "read-" + secrets.token_hex(3)
    bao.client().sys.create_or_update_policy(
        name=name, policy=f'path "secret/data/{path}" {{ capabilities = ["read"] }}'
    )
    return name


def renew_errors_metric() -> float:
    return METRICS.registry.get_sample_value("dtma_vault_token_renewal_errors_total") or 0.0


def assert_never_logged(logs: list[dict[str, Any]], *values: str) -> None:
    text = repr(logs)
    for value in values:
        assert value not in text


async def test_a_periodic_token_survives_an_outage_longer_than_a_renewal_interval(
    own_bao: BaoServer, gate: PortGate
) -> None:
    path, value = f"app/{secrets.token_hex(3)}", secrets.token_hex(12)
    await in_thread(put_secret, own_bao, path, {"k": value})
    policy = await in_thread(read_policy, own_bao, path)
    token = (await in_thread(own_bao.client().auth.token.create, policies=[policy], period="5s"))[
        "auth"
    ]["client_token"]
    vault = VaultClient(VaultConfig(addr=gate.addr, token=token))
    reports = Reports()
    errors_before = renew_errors_metric()
    with structlog.testing.capture_logs() as logs:
        async with keeping_alive(vault, reports):
            assert vault.token_ttl is not None
            assert 3 <= vault.token_ttl <= 5
            # The outage starts right after a renewal and lasts 3.5 s: longer than the 2.5 s
            # renewal interval, shorter than the 5 s TTL.
            renewed = vault.renewals
            await in_thread(wait_until, lambda: vault.renewals > renewed, 10, "a renewal")
            await gate.shut()
            await asyncio.sleep(3.5)
            await gate.open()
            errors = vault.renew_errors
            assert errors >= 2, "several renewals were tried during the outage"
            await asyncio.sleep(11)  # two more periods
            assert vault.renew_errors == errors
            assert await vault.read("secret", path, "k") == value
    lookup = await in_thread(own_bao.client(token).auth.token.lookup_self)
    assert lookup["data"]["ttl"] > 0
    assert vault.logins == 1
    assert reports.items == []  # an outage the schedule rode out is not an alarm
    assert renew_errors_metric() - errors_before == vault.renew_errors
    failures = [e for e in logs if e["event"] == "vault_renew_failed"]
    assert len(failures) == vault.renew_errors
    assert all("ConnectionError" in e["error"] for e in failures)
    assert_never_logged(logs, token, value)


async def approle_files(
    bao: BaoServer, tmp_path: Path, path: str, **role: str
) -> tuple[Path, Path, str, str]:
    root = bao.client()
    await in_thread(root.sys.enable_auth_method, "approle")
    policy = await in_thread(read_policy, bao, path)
    await in_thread(
        root.auth.approle.create_or_update_approle,
        role_name="agent",
        token_policies=[policy],
        **role,
    )
    role_id = (await in_thread(root.auth.approle.read_role_id, "agent"))["data"]["role_id"]
    secret_id = (await in_thread(root.auth.approle.generate_secret_id, "agent"))["data"][
        "secret_id"
    ]
    (tmp_path / "role_id").write_text(role_id)
    (tmp_path / "secret_id").write_text(secret_id)
    return tmp_path / "role_id", tmp_path / "secret_id", role_id, secret_id


async def test_approle_logs_in_again_past_token_max_ttl_and_after_a_revocation(
    own_bao: BaoServer, gate: PortGate, tmp_path: Path
) -> None:
    path, value = f"app/{secrets.token_hex(3)}", secrets.token_hex(12)
    await in_thread(put_secret, own_bao, path, {"k": value})
    role_file, secret_file, role_id, secret_id = await approle_files(
        own_bao, tmp_path, path, token_ttl="4s", token_max_ttl="6s"
    )
    vault = VaultClient(VaultConfig(gate.addr, role_id_file=role_file, secret_id_file=secret_file))
    reports = Reports()
    tokens: set[str] = set()
    with structlog.testing.capture_logs() as logs:
        async with keeping_alive(vault, reports):
            first = str(vault._client.token)
            tokens.add(first)
            await asyncio.sleep(8)  # past the first token's 6 s token_max_ttl
            assert vault.logins >= 2
            assert await vault.read("secret", path, "k") == value
            with pytest.raises(hvac.exceptions.Forbidden):
                await in_thread(own_bao.client(first).auth.token.lookup_self)

            # A token revoked right after a login: its first renewal is denied and the agent
            # logs in again at once.
            logins = vault.logins
            await in_thread(wait_until, lambda: vault.logins > logins, 10, "a fresh login")
            current = str(vault._client.token)
            tokens.add(current)
            await in_thread(own_bao.client().auth.token.revoke, current)
            await in_thread(wait_until, lambda: vault.logins > logins + 1, 10, "a new login")
            tokens.add(str(vault._client.token))
            assert await vault.read("secret", path, "k") == value
    renewed = [e for e in logs if e["event"] == "vault_token_renewed"]
    assert any(e["ttl"] < e["asked"] for e in renewed), "a renewal was capped by token_max_ttl"
    assert any(e["event"] == "vault_renew_failed" and e["reason"] == tr.RENEW_DENIED for e in logs)
    assert reports.items == []  # AppRole recovered on its own each time
    assert_never_logged(logs, role_id, secret_id, value, *tokens)


async def test_a_plain_token_at_its_max_ttl_is_reported_and_a_new_token_file_recovers(
    own_bao: BaoServer, gate: PortGate, tmp_path: Path
) -> None:
    path, value = f"app/{secrets.token_hex(3)}", secrets.token_hex(12)
    await in_thread(put_secret, own_bao, path, {"k": value})
    policy = await in_thread(read_policy, own_bao, path)

    def make_token(**kw: str) -> str:
        created = own_bao.client().auth.token.create(policies=[policy], **kw)
        return str(created["auth"]["client_token"])

    old = await in_thread(make_token, ttl="2s", explicit_max_ttl="3s")
    token_file = tmp_path / "token"
    token_file.write_text(old)
    vault = VaultClient(VaultConfig(gate.addr, token_file=token_file))
    reports = Reports()
    with structlog.testing.capture_logs() as logs:
        async with keeping_alive(vault, reports):
            await in_thread(wait_until, lambda: len(reports.items) >= 2, 15, "two alarms")
            assert [r[:2] for r in reports.items[:2]] == [
                (True, tr.TTL_CAPPED),
                (True, tr.LOGIN_RETRY),
            ]
            assert "maximum TTL" in reports.items[0][2]
            assert "DTMA_VAULT_TOKEN_FILE" in reports.items[0][2]
            assert "denied" in reports.items[1][2]
            await asyncio.sleep(2)
            assert len(reports.items) == 2, "one episode, not one report per retry"

            new = await in_thread(make_token, ttl="1h")
            token_file.write_text(new)
            await in_thread(wait_until, lambda: len(reports.items) >= 3, 15, "the recovery")
            assert reports.items[2][0] is False
            assert await vault.read("secret", path, "k") == value
    loud = [e for e in logs if e["event"] == "vault_token_unusable"]
    assert [e["log_level"] for e in loud] == ["error", "error"]
    assert_never_logged(logs, old, new, value)
    for _, _, message in reports.items:
        assert old not in message
        assert new not in message
