"""The Vault adapter against a real OpenBao dev server: logins, renewal, KV v1/v2, errors."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from pathlib import Path

import pytest

from dtma.adapters.vault import VaultClient, VaultConfig
from dtma.errors import ConfigError, SecretNotFound, VaultDenied, VaultUnavailable
from tests.conftest import BaoServer, free_port, in_thread, wait_until

pytestmark = pytest.mark.integration


def put_secret(bao: BaoServer, path: str, data: dict[str, str]) -> None:
    bao.client().secrets.kv.v2.create_or_update_secret(path=path, secret=data, mount_point="secret")


def policy_token(bao: BaoServer, hcl: str, **kwargs: object) -> str:
    name = "p-" + secrets.token_hex(3)
    bao.client().sys.create_or_update_policy(name=name, policy=hcl)
    return str(bao.client().auth.token.create(policies=[name], **kwargs)["auth"]["client_token"])


async def test_token_login_reads_kv2_and_kv1(bao: BaoServer) -> None:
    path, value = f"app/{secrets.token_hex(3)}", secrets.token_hex(12)
    await in_thread(put_secret, bao, path, {"token": value})
    mount = "kv1-" + secrets.token_hex(3)
    root = bao.client()
    await in_thread(root.sys.enable_secrets_engine, "kv", path=mount, options={"version": "1"})
    await in_thread(
        root.secrets.kv.v1.create_or_update_secret,
        path="db",
        secret={"password": value + "-v1"},
        mount_point=mount,
    )

    vault = VaultClient(VaultConfig(addr=bao.addr, token=bao.root_token))
    await vault.login()
    assert await vault.read("secret", path, "token") == value
    assert await vault.read(mount, "db", "password") == value + "-v1"
    await in_thread(put_secret, bao, path, {"token": "second"})
    assert await vault.read("secret", path, "token") == "second"
    assert await vault.read("secret", path, "token", version=1) == value


async def test_approle_login_from_files(bao: BaoServer, tmp_path: Path) -> None:
    root = bao.client()
    auth_path = "approle-" + secrets.token_hex(3)
    await in_thread(root.sys.enable_auth_method, "approle", path=auth_path)
    token_path = f"app/{secrets.token_hex(3)}"
    await in_thread(put_secret, bao, token_path, {"k": "approle-value"})
    name = "ro-" + secrets.token_hex(3)
    await in_thread(
        root.sys.create_or_update_policy,
        name=name,
        policy=f'path "secret/data/{token_path}" {{ capabilities = ["read"] }}',
    )
    await in_thread(
        root.auth.approle.create_or_update_approle,
        role_name="agent",
        token_policies=[name],
        token_ttl="1h",
        mount_point=auth_path,
    )
    role_id = (await in_thread(root.auth.approle.read_role_id, "agent", mount_point=auth_path))[
        "data"
    ]["role_id"]
    secret_id = (
        await in_thread(root.auth.approle.generate_secret_id, "agent", mount_point=auth_path)
    )["data"]["secret_id"]
    (tmp_path / "role_id").write_text(role_id)
    (tmp_path / "secret_id").write_text(secret_id)

    vault = VaultClient(
        VaultConfig(
            addr=bao.addr,
            role_id_file=tmp_path / "role_id",
            secret_id_file=tmp_path / "secret_id",
            approle_mount=auth_path,
        )
    )
    await vault.login()
    assert await vault.read("secret", token_path, "k") == "approle-value"
    assert vault.token_ttl
    assert 3500 < vault.token_ttl <= 3600
    with pytest.raises(VaultDenied, match="secret/other key 'k'"):
        await vault.read("secret", "other", "k")


async def test_a_short_lived_token_is_renewed_past_its_ttl(bao: BaoServer) -> None:
    token = await in_thread(
        policy_token,
        bao,
        'path "secret/*" { capabilities = ["read"] }',
        ttl="4s",
        explicit_max_ttl="5m",
        renewable=True,
    )
    vault = VaultClient(VaultConfig(addr=bao.addr, token=token))
    renewer = asyncio.create_task(vault.keep_alive())
    try:
        await in_thread(wait_until, lambda: vault.logins, 10, "the first login")
        assert vault.token_ttl is not None
        assert vault.token_ttl <= 4
        await asyncio.sleep(7)  # well past the original 4 s
        assert vault.renewals >= 2
        assert vault.renew_errors == 0
        lookup = await in_thread(bao.client(token).auth.token.lookup_self)
        assert lookup["data"]["ttl"] > 0
    finally:
        renewer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewer


async def test_errors_name_the_path_and_never_the_value(bao: BaoServer) -> None:
    path = f"app/{secrets.token_hex(3)}"
    await in_thread(put_secret, bao, path, {"present": "sup3r-s3cret"})
    vault = VaultClient(VaultConfig(addr=bao.addr, token=bao.root_token))
    await vault.login()
    with pytest.raises(SecretNotFound) as missing_key:
        await vault.read("secret", path, "absent")
    assert f"secret/{path}" in str(missing_key.value)
    assert "'absent'" in str(missing_key.value)
    assert "sup3r-s3cret" not in str(missing_key.value)
    with pytest.raises(SecretNotFound, match="no secret at secret/app/nothing-here"):
        await vault.read("secret", "app/nothing-here", "k")
    with pytest.raises(VaultDenied, match="mount 'nowhere' \\(it may not exist\\)"):
        await vault.read("nowhere", "x", "k")

    denied = VaultClient(
        VaultConfig(
            addr=bao.addr,
            token=await in_thread(
                policy_token, bao, 'path "secret/data/elsewhere" { capabilities = ["read"] }'
            ),
        )
    )
    await denied.login()
    with pytest.raises(VaultDenied, match=f"secret/{path} key 'present'"):
        await denied.read("secret", path, "present")


async def test_an_unreachable_vault_is_transient_and_bounded() -> None:
    vault = VaultClient(VaultConfig(addr=f"http://127.0.0.1:{free_port()}", token="t" * 20))
    with pytest.raises(VaultUnavailable) as caught:
        await vault.read("secret", "app/x", "k")
    assert caught.value.transient
    assert "secret/app/x key 'k'" in str(caught.value)
    with pytest.raises(VaultUnavailable):
        await vault.login()


async def test_no_credentials_is_a_config_error(bao: BaoServer) -> None:
    with pytest.raises(ConfigError, match="no Vault credentials"):
        await VaultClient(VaultConfig(addr=bao.addr)).login()
