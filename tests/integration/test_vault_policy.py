"""deploy/vault against a real OpenBao dev server: approle-setup.sh gives a host an AppRole whose
policy reads only its own toolboxes' secrets (secret/dtma/<toolbox>/...), whose secret_id expires
and works only from the bound CIDR; every example in the docs follows that path convention."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import hvac
import pytest
import yaml

from dtma.adapters.vault import VaultClient, VaultConfig
from dtma.errors import VaultDenied
from tests.conftest import REPO, BaoServer, in_thread

pytestmark = pytest.mark.integration
SCRIPT = REPO / "deploy/vault/approle-setup.sh"


def setup_host(bao: BaoServer, *args: str, ttl: str = "") -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "VAULT_ADDR": bao.addr,
        "VAULT_TOKEN": bao.root_token,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",  # the venv's `bao`
    }
    if ttl:
        env["SECRET_ID_TTL"] = ttl
    return subprocess.run([str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=60)


def put(bao: BaoServer, path: str, value: str) -> None:
    bao.client().secrets.kv.v2.create_or_update_secret(
        path=path, secret={"api_key": value}, mount_point="secret"
    )


async def test_a_host_reads_its_own_toolboxes_and_is_denied_the_others(
    bao: BaoServer, tmp_path: Path
) -> None:
    host, mine, theirs = (f"{p}-{secrets.token_hex(3)}" for p in ("host", "mine", "theirs"))
    await in_thread(put, bao, f"dtma/{mine}/notes", "mine-value")
    await in_thread(put, bao, f"dtma/{theirs}/notes", "their-value")
    run = await in_thread(setup_host, bao, host, "127.0.0.1/32", str(tmp_path), mine)
    assert run.returncode == 0, run.stderr
    for name in ("vault-role-id", "vault-secret-id"):
        assert (tmp_path / name).stat().st_mode & 0o077 == 0

    vault = VaultClient(
        VaultConfig(
            addr=bao.addr,
            role_id_file=tmp_path / "vault-role-id",
            secret_id_file=tmp_path / "vault-secret-id",
        )
    )
    await vault.login()
    assert await vault.read("secret", f"dtma/{mine}/notes", "api_key") == "mine-value"
    with pytest.raises(VaultDenied):
        await vault.read("secret", f"dtma/{theirs}/notes", "api_key")
    with pytest.raises(VaultDenied):
        await vault.read("secret", f"dtma/{mine}-other/notes", "api_key")  # no prefix match

    role = bao.client().read(f"auth/approle/role/dtma-{host}")["data"]
    assert role["secret_id_ttl"] == 720 * 3600
    assert role["secret_id_bound_cidrs"] == ["127.0.0.1/32"]
    assert role["token_bound_cidrs"] in (["127.0.0.1"], ["127.0.0.1/32"])  # /32 shown bare
    assert role["token_policies"] == [f"dtma-{host}"]


def test_a_secret_id_is_refused_outside_its_cidr(bao: BaoServer, tmp_path: Path) -> None:
    host = "far-" + secrets.token_hex(3)
    run = setup_host(bao, host, "192.0.2.7/32", str(tmp_path), "demo", ttl="1h")
    assert run.returncode == 0, run.stderr
    assert "valid for 1h from 192.0.2.7/32" in run.stdout
    role_id = (tmp_path / "vault-role-id").read_text().strip()
    secret_id = (tmp_path / "vault-secret-id").read_text().strip()
    with pytest.raises(hvac.exceptions.VaultError):  # we log in from 127.0.0.1
        hvac.Client(url=bao.addr).auth.approle.login(role_id=role_id, secret_id=secret_id)
    role = bao.client().read(f"auth/approle/role/dtma-{host}")["data"]
    assert role["secret_id_ttl"] == 3600


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["h1", "10.0.0.1/32", "/tmp/x"], "usage:"),
        (["H/1", "10.0.0.1/32", "/tmp/x", "demo"], "HOST must be a DNS label"),
        (["h1", "everywhere", "/tmp/x", "demo"], "CIDR must look like"),
        (["h1", "10.0.0.1/32", "/tmp/x", "../x"], "TOOLBOX must be a toolbox id"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(
    bao: BaoServer, args: list[str], complaint: str
) -> None:
    run = setup_host(bao, *args)
    assert run.returncode == 2
    assert complaint in run.stderr


def test_every_example_uses_the_path_convention() -> None:
    """Specs name secrets under dtma/<toolbox id>/; prose and commands say secret/dtma/..."""
    demo = yaml.safe_load((REPO / "docs/examples/demo-toolbox.yaml").read_text())
    refs = [s["vault"] for srv in demo["servers"] for s in srv.get("secrets", [])]
    assert refs
    assert all(r["mount"] == "secret" and r["path"].startswith("dtma/demo/") for r in refs)
    run_dev = (REPO / "scripts/run_dev.py").read_text()
    assert re.search(r'DEMO_SECRET_PATH = "dtma/demo/notes"', run_dev)
    assert {r["path"] for r in refs} == {"dtma/demo/notes"}
    files = [REPO / "README.md", *(REPO / "docs").rglob("*.md"), *(REPO / "compose").rglob("*")]
    files = [f for f in files if f.is_file()]
    for f in files:
        for path in re.findall(r"\bsecret/(?!data/|metadata/)[\w./<>-]+", f.read_text()):
            assert path.startswith("secret/dtma/"), (f.name, path)
        for spec_path in re.findall(r"\bmount: secret, path: ([\w./<>-]+)", f.read_text()):
            assert spec_path.startswith("dtma/"), (f.name, spec_path)
