"""A real OpenBao dev server answers hvac (KV v2 round trip, token lookup, denied access)."""

from __future__ import annotations

import secrets

import hvac.exceptions
import pytest

from tests.conftest import BaoServer

pytestmark = pytest.mark.integration


def test_kv2_round_trip(bao: BaoServer) -> None:
    client = bao.client()
    assert client.is_authenticated()
    path = f"test/{secrets.token_hex(4)}"
    value = secrets.token_hex(16)
    client.secrets.kv.v2.create_or_update_secret(
        path=path, secret={"token": value}, mount_point="secret"
    )
    read = client.secrets.kv.v2.read_secret_version(
        path=path, mount_point="secret", raise_on_deleted_version=True
    )
    assert read["data"]["data"] == {"token": value}
    assert read["data"]["metadata"]["version"] == 1


def test_a_token_without_policy_is_denied(bao: BaoServer) -> None:
    root = bao.client()
    path = f"test/{secrets.token_hex(4)}"
    root.secrets.kv.v2.create_or_update_secret(path=path, secret={"k": "v"}, mount_point="secret")
    weak = root.auth.token.create(policies=["default"], ttl="5m")["auth"]["client_token"]
    with pytest.raises(hvac.exceptions.Forbidden):
        bao.client(weak).secrets.kv.v2.read_secret_version(
            path=path, mount_point="secret", raise_on_deleted_version=True
        )
    lookup = root.auth.token.lookup(weak)["data"]
    assert lookup["policies"] == ["default"]
    assert 0 < lookup["ttl"] <= 300
