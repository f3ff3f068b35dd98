"""deploy/ and compose/: alert rules pass promtool's unit tests (firing and quiet) and link real
runbook sections, the systemd units pass `systemd-analyze verify`, the compose file validates,
and every metric the alerts and the dashboard use exists. The compose stack itself runs in
tests/e2e/test_compose_stack.py."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from dtma.adapters.secret_files import TMPFS_OPTIONS
from dtma.observability.metrics import METRICS
from tests.conftest import REPO, build_images, wait_until

pytestmark = pytest.mark.integration
COMPOSE = str(REPO / "compose/docker-compose.yml")


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is missing; `make test` installs it (scripts/ensure-tools)")
    return path


def test_alert_rules_pass_promtool() -> None:
    run = subprocess.run(
        [_tool("promtool"), "test", "rules", "alerts_test.yml"],
        cwd=REPO / "deploy/prometheus",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout
    check = subprocess.run(
        [_tool("promtool"), "check", "config", "prometheus.yml"],
        cwd=REPO / "deploy/prometheus",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def _unit(name: str) -> dict[str, list[str]]:
    """A unit file's settings as {key: [values]} (sections merged; enough for these checks)."""
    settings: dict[str, list[str]] = {}
    for line in (REPO / "deploy/systemd" / name).read_text().splitlines():
        key, sep, val = line.partition("=")
        if sep and not line.startswith(("#", "[")):
            settings.setdefault(key.strip(), []).append(val.strip())
    return settings


def test_systemd_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """The units as installed, with ExecStart pointed at this checkout's dtma (verify checks
    that the binary exists). Any warning counts as a failure: verify exits 0 on unknown keys."""
    for unit in ("dtma.service", "run-dtma-secrets.mount"):
        text = (REPO / "deploy/systemd" / unit).read_text()
        text = text.replace("/opt/dtma/.venv/bin/dtma", str(REPO / ".venv/bin/dtma"))
        (tmp_path / unit).write_text(text)
    run = subprocess.run(
        [_tool("systemd-analyze"), "verify", "dtma.service", "run-dtma-secrets.mount"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SYSTEMD_LOG_LEVEL": "notice"},
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout + run.stderr == "", run.stdout + run.stderr


def test_systemd_unit_mounts_the_secrets_tmpfs_outside_the_sandbox() -> None:
    service, mount = _unit("dtma.service"), _unit("run-dtma-secrets.mount")
    # The tmpfs is systemd's (host namespace), with the options the agent would use itself.
    assert mount["Where"] == ["/run/dtma/secrets"]
    assert mount["Type"] == ["tmpfs"]
    assert mount["Options"] == [TMPFS_OPTIONS]
    assert service["RequiresMountsFor"] == ["/run/dtma/secrets"]
    assert "DTMA_SECRETS_DIR=/run/dtma/secrets" in service["Environment"]
    # So the agent mounts nothing: no CAP_SYS_ADMIN, no mount syscalls.
    assert "CAP_SYS_ADMIN" not in service["CapabilityBoundingSet"][0]
    assert "~@mount" in service["SystemCallFilter"]
    # A Docker restart does not restart the agent.
    assert "Requires" not in service
    assert "docker.service" in service["Wants"][0]
    assert "docker.service" in service["After"][0]
    # Paths that may be missing on a host are optional; the rest must exist.
    rw = service["ReadWritePaths"][0].split()
    assert [p for p in rw if "docker.sock" in p] == ["-/run/docker.sock", "-/var/run/docker.sock"]
    assert "/run/dtma/secrets" in rw


def test_cloud_init_takes_the_repo_in_one_place_and_picks_python_3_11(tmp_path: Path) -> None:
    import yaml

    doc = yaml.safe_load((REPO / "deploy/cloud-init/user-data.yaml").read_text())
    files = {f["path"]: f["content"] for f in doc["write_files"]}
    assert "/etc/dtma/install.env" in files
    assert "DTMA_REPO=\n" in files["/etc/dtma/install.env"]
    assert ["/usr/local/sbin/dtma-install"] in doc["runcmd"]
    text = (REPO / "deploy/cloud-init/user-data.yaml").read_text()
    assert "example.invalid" not in text
    assert text.count("DTMA_REPO=") == 1  # the one place to edit
    script, env_file = tmp_path / "dtma-install", tmp_path / "install.env"
    script.write_text(files["/usr/local/sbin/dtma-install"])
    script.chmod(0o755)
    env_file.write_text(files["/etc/dtma/install.env"])
    env = {**os.environ, "DTMA_INSTALL_ENV": str(env_file)}

    def run(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(script), *args], env={**env, **extra}, capture_output=True, text=True, timeout=60
        )

    assert subprocess.run(["sh", "-n", str(script)], check=False).returncode == 0
    unset = run()  # DTMA_REPO left empty: a clear message, nothing cloned
    assert unset.returncode == 1
    assert "set DTMA_REPO in /etc/dtma/install.env" in unset.stderr
    chosen = run("--print-python").stdout.strip()
    version = subprocess.run(
        [chosen, "-c", "import sys; print(sys.version_info >= (3, 11))"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert version.stdout.strip() == "True"
    old = tmp_path / "bin"  # a host whose only python3 is too old (Ubuntu 22.04's 3.10)
    old.mkdir()
    (old / "python3").write_text("#!/bin/sh\nexit 1\n")
    (old / "python3").chmod(0o755)
    assert run("--print-python", PATH=str(old)).stdout.strip() == "none (would install python3.11)"


def _github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to -."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_alert_links_a_runbook_section_and_has_a_quiet_case() -> None:
    import yaml

    rules = yaml.safe_load((REPO / "deploy/prometheus/alerts.yml").read_text())
    alerts = [r for g in rules["groups"] for r in g["rules"]]
    runbook = (REPO / "docs/runbook.md").read_text()
    anchors = {_github_anchor(h) for h in re.findall(r"^#+ (.+)$", runbook, re.M)}
    tests = yaml.safe_load((REPO / "deploy/prometheus/alerts_test.yml").read_text())["tests"]
    cases = [c for t in tests for c in t["alert_rule_test"]]
    assert alerts
    for alert in alerts:
        name, url = alert["alert"], alert["annotations"]["runbook_url"]
        page, _, anchor = url.partition("#")
        assert page == "docs/runbook.md", (name, url)
        assert anchor in anchors, (name, url, sorted(anchors))
        mine = [c for c in cases if c["alertname"] == name]
        assert any(c.get("exp_alerts") for c in mine), f"{name}: no case where it fires"
        assert any(not c.get("exp_alerts") for c in mine), f"{name}: no case where it stays quiet"


def test_compose_file_validates() -> None:
    # No variable is needed (the API token is generated into the state volume).
    env = {k: v for k, v in os.environ.items() if not k.startswith("DTMA_")}
    run = subprocess.run(
        [_tool("docker-compose"), "-f", COMPOSE, "config"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert "dtma/agent:latest" in run.stdout
    assert "DTMA_API_TOKEN" not in run.stdout


def _registry_names() -> set[str]:
    names = set()
    for metric in METRICS.registry.collect():
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
        names.add(metric.name)
        names.update(metric.name + sfx for sfx in suffixes.get(metric.type, ()))
    return names


def test_alerts_and_dashboard_use_only_existing_metrics() -> None:
    used = set(re.findall(r"\b(dtma_[a-z_]+)", (REPO / "deploy/prometheus/alerts.yml").read_text()))
    dashboard = json.loads((REPO / "deploy/grafana/dtma-dashboard.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            used |= set(re.findall(r"\b(dtma_[a-z_]+)", target["expr"]))
    known = _registry_names() | {"dtma_toolbox_phase", "dtma_server_healthy"}
    # Exported only by an agent with a controller (METRICS.watch_heartbeat).
    known |= {"dtma_controller_heartbeat_age_seconds", "dtma_controller_heartbeat_interval_seconds"}
    assert used, "no metrics found"
    assert used <= known, used - known


@pytest.fixture(scope="module")
def openbao_image(docker_client: Any) -> str:
    build_images("openbao")
    return "dtma-examples/openbao-dev:latest"


def test_the_compose_openbao_image_serves_the_vault_api(
    openbao_image: str, make_container: Any
) -> None:
    import hvac

    token = "root-" + secrets.token_hex(6)
    c = make_container(
        openbao_image,
        environment={"BAO_DEV_ROOT_TOKEN_ID": token},
        ports={"8200/tcp": ("127.0.0.1", None)},
    )
    wait_until(lambda: c.reload() or c.ports.get("8200/tcp"), 30, "published port")
    client = hvac.Client(url=f"http://127.0.0.1:{c.ports['8200/tcp'][0]['HostPort']}", token=token)
    wait_until(lambda: client.sys.is_initialized() and not client.sys.is_sealed(), 60, "OpenBao")
    client.secrets.kv.v2.create_or_update_secret(path="x", secret={"k": "v"}, mount_point="secret")
    assert client.secrets.kv.v2.read_secret_version(
        path="x", mount_point="secret", raise_on_deleted_version=True
    )["data"]["data"] == {"k": "v"}
