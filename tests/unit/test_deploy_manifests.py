"""deploy/nomad and deploy/kubernetes: the orchestrator manifests, checked offline.

The Kubernetes file goes through kubernetes-validate (the bundled JSON schemas, strict: an
unknown or misspelt field fails). No `nomad` binary is installable here, so the Nomad job is
parsed with python-hcl2 (HCL2 syntax) and its structure asserted. Both are then held to what
dtma needs under an orchestrator (docs/fleet.md, "Beyond one host"): every DTMA_* setting
exists in dtma.config, the Docker socket and the secrets tmpfs are mounted (the latter at its
host path, because DTMA_AGENT_CONTAINER=none hands dockerd the agent's own path), the probes
hit /v1/health and /v1/ready, and token files are not readable by others.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hcl2
import kubernetes_validate
import pytest
import yaml
from hcl2.utils import SerializationOptions

from dtma.config import ENV_KEYS, load_settings

REPO = Path(__file__).resolve().parents[2]
NOMAD_JOB = REPO / "deploy/nomad/dtma.nomad.hcl"
K8S = REPO / "deploy/kubernetes/dtma.yaml"
SECRETS_DIR = "/run/dtma/secrets"
STATE_DIR = "/var/lib/dtma"
SOCKET = "/var/run/docker.sock"
K8S_VERSION = "1.29"  # the oldest the manifests claim; the newest is checked too


# -- Kubernetes -------------------------------------------------------------------------------


def _k8s_docs() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(K8S.read_text()) if d]


def _by_kind(kind: str) -> dict[str, Any]:
    (doc,) = [d for d in _k8s_docs() if d["kind"] == kind]
    return doc


def _agent_container() -> dict[str, Any]:
    (container,) = _by_kind("DaemonSet")["spec"]["template"]["spec"]["containers"]
    return container


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container["env"]}


@pytest.mark.parametrize("version", [K8S_VERSION, kubernetes_validate.latest_version()])
def test_every_kubernetes_resource_passes_strict_schema_validation(version: str) -> None:
    docs = _k8s_docs()
    assert {d["kind"] for d in docs} == {"Namespace", "ServiceAccount", "DaemonSet", "Service"}
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} (k8s {version}): {exc.message}")


def test_the_validator_rejects_a_misspelt_field() -> None:
    """The check above can fail: the same DaemonSet with one field misspelt does not pass."""
    daemonset = _by_kind("DaemonSet")
    daemonset["spec"]["template"]["spec"]["hostNetwrk"] = True
    with pytest.raises(kubernetes_validate.ValidationError, match="hostNetwrk"):
        kubernetes_validate.validate(daemonset, K8S_VERSION, strict=True)


def test_the_daemonset_mounts_the_docker_socket_and_the_node_tmpfs_at_its_host_path() -> None:
    pod = _by_kind("DaemonSet")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in _agent_container()["volumeMounts"]}
    host = {path: volumes[m["name"]].get("hostPath") for path, m in mounts.items()}
    assert host[SOCKET] == {"path": SOCKET, "type": "Socket"}
    assert host[STATE_DIR] is not None
    assert host[STATE_DIR]["path"] == STATE_DIR
    # Not an emptyDir: dockerd must find the files at the path the agent hands it.
    assert host[SECRETS_DIR] == {"path": SECRETS_DIR, "type": "Directory"}
    assert mounts[SECRETS_DIR]["mountPropagation"] == "HostToContainer"
    env = _env(_agent_container())
    assert env["DTMA_SECRETS_DIR"] == SECRETS_DIR
    assert env["DTMA_STATE_DIR"] == STATE_DIR
    assert env["DTMA_AGENT_CONTAINER"] == "none"
    assert pod["hostNetwork"] is True


def test_the_daemonset_probes_health_and_readiness_on_the_api_port() -> None:
    container = _agent_container()
    assert container["livenessProbe"]["httpGet"] == {"path": "/v1/health", "port": "api"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/v1/ready", "port": "api"}
    assert container["ports"] == [{"name": "api", "containerPort": 8750, "protocol": "TCP"}]
    assert _env(container)["DTMA_LISTEN"].endswith(":8750")


def test_the_daemonset_takes_its_address_from_the_downward_api_and_tokens_from_files() -> None:
    container = _agent_container()
    refs = {
        e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"]
        for e in container["env"]
        if "valueFrom" in e
    }
    assert refs == {"HOST_IP": "status.hostIP", "NODE_NAME": "spec.nodeName"}
    env = _env(container)
    assert env["DTMA_ADVERTISE_URL"] == "http://$(HOST_IP):8750"
    assert "DTMA_CONTROLLER_TOKEN" not in env
    assert "DTMA_API_TOKEN" not in env
    pod = _by_kind("DaemonSet")["spec"]["template"]["spec"]
    (tokens,) = [v for v in pod["volumes"] if "secret" in v]
    assert tokens["secret"]["defaultMode"] == 0o400
    mount = next(m for m in container["volumeMounts"] if m["name"] == tokens["name"])
    for var in ("DTMA_CONTROLLER_TOKEN_FILE", "DTMA_API_TOKEN_FILE"):
        assert env[var].startswith(mount["mountPath"] + "/")


def test_the_daemonset_runs_with_three_capabilities_and_a_read_only_root() -> None:
    container = _agent_container()
    ctx = container["securityContext"]
    assert ctx["privileged"] is False
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN", "DAC_OVERRIDE", "FOWNER"]}
    assert container["image"].startswith("dtma/agent:")
    assert "memory" in container["resources"]["limits"]
    assert {"/tmp"} <= {m["mountPath"] for m in container["volumeMounts"]}


# -- Nomad ------------------------------------------------------------------------------------


def _nomad() -> dict[str, Any]:
    options = SerializationOptions(
        with_comments=False, explicit_blocks=False, strip_string_quotes=True
    )
    with NOMAD_JOB.open() as f:
        return hcl2.load(f, serialization_options=options)


def _labelled(blocks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """[{'"name"': {...}}, ...] -> {name: {...}} (python-hcl2 keeps block labels quoted)."""
    return {k.strip('"'): v for block in blocks for k, v in block.items()}


def _job() -> dict[str, Any]:
    return _labelled(_nomad()["job"])["dtma"]


def _group() -> dict[str, Any]:
    return _labelled(_job()["group"])["agent"]


def _task() -> dict[str, Any]:
    return _labelled(_group()["task"])["agent"]


def test_the_nomad_job_is_a_system_job_of_the_docker_driver() -> None:
    job = _job()
    assert job["type"] == "system"
    task = _task()
    assert task["driver"] == "docker"
    (config,) = task["config"]
    assert config["image"] == "${var.image}"
    assert _labelled(_nomad()["variable"])["image"]["default"].startswith("dtma/agent:")
    assert config["network_mode"] == "host"
    assert config["volumes"] == [f"{SOCKET}:{SOCKET}"]
    assert config["readonly_rootfs"] is True
    assert config["cap_add"] == ["chown", "dac_override", "fowner"]


def test_the_nomad_job_mounts_state_and_the_secrets_tmpfs_at_its_host_path() -> None:
    volumes = _labelled(_group()["volume"])
    mounts = {m["destination"]: m for m in _task()["volume_mount"]}
    assert volumes[mounts[STATE_DIR]["volume"]] == {
        "type": "host",
        "source": "dtma-state",
        "read_only": False,
    }
    secrets = mounts[SECRETS_DIR]
    assert volumes[secrets["volume"]]["type"] == "host"
    assert secrets["propagation_mode"] == "host-to-task"
    (env,) = _task()["env"]
    assert env["DTMA_SECRETS_DIR"] == SECRETS_DIR
    assert env["DTMA_AGENT_CONTAINER"] == "none"
    assert env["DTMA_ADVERTISE_URL"] == "http://${NOMAD_ADDR_api}"


def test_the_nomad_job_checks_health_and_readiness_and_restarts_on_liveness() -> None:
    (service,) = _task()["service"]
    assert service["provider"] == "nomad"
    checks = {c["path"]: c for c in service["check"]}
    assert set(checks) == {"/v1/health", "/v1/ready"}
    assert all(c["type"] == "http" for c in checks.values())
    assert checks["/v1/health"]["check_restart"][0]["limit"] >= 1
    (network,) = _group()["network"]
    assert _labelled(network["port"])["api"]["static"] == 8750
    (restart,) = _group()["restart"]
    assert restart["mode"] in ("delay", "fail")
    (resources,) = _task()["resources"]
    assert resources["memory"] > 0


def test_the_nomad_job_renders_token_files_only_the_agent_can_read() -> None:
    templates = {t["destination"]: t for t in _task()["template"]}
    (env,) = _task()["env"]
    for var in ("DTMA_CONTROLLER_TOKEN_FILE", "DTMA_API_TOKEN_FILE"):
        name = env[var].removeprefix("${NOMAD_SECRETS_DIR}/")
        assert templates[f"secrets/{name}"]["perms"] == "0400"
    assert "DTMA_CONTROLLER_TOKEN" not in env


# -- both -------------------------------------------------------------------------------------


def _manifest_env() -> dict[str, dict[str, str]]:
    (nomad_env,) = _task()["env"]
    return {"nomad": nomad_env, "kubernetes": _env(_agent_container())}


@pytest.mark.parametrize("where", ["nomad", "kubernetes"])
def test_every_dtma_setting_in_the_manifests_exists_in_dtma_config(where: str) -> None:
    env = _manifest_env()[where]
    ours = {k for k in env if k.startswith(("DTMA_", "VAULT_", "DOCKER_"))}
    assert ours - set(ENV_KEYS) == set()
    assert {
        "DTMA_CONTROLLER_URL",
        "DTMA_CONTROLLER_TOKEN_FILE",
        "DTMA_ADVERTISE_URL",
        "DTMA_AGENT_LABELS",
        "DTMA_LISTEN",
    } <= ours


@pytest.mark.parametrize("where", ["nomad", "kubernetes"])
def test_the_manifests_settings_load_once_the_orchestrator_fills_them_in(
    where: str, tmp_path: Path
) -> None:
    """Substitute what Nomad / the kubelet would, and the agent's own settings loader accepts
    the result (a label or URL the agent refuses would stop it with exit 2 on every node)."""
    filled = {
        "${NOMAD_ADDR_api}": "10.0.0.7:8750",
        "$(HOST_IP)": "10.0.0.7",
        "$(NODE_NAME)": "node-7.example",
        "${node.unique.name}": "node-7",
        "${node.datacenter}": "dc1",
        "${node.region}": "global",
        "${var.controller_url}": "https://controller.example:8443",
        "${NOMAD_SECRETS_DIR}": str(tmp_path),
        "/etc/dtma/tokens": str(tmp_path),
    }
    env = {}
    for key, value in _manifest_env()[where].items():
        for placeholder, real in filled.items():
            value = value.replace(placeholder, real)
        env[key] = value
    settings = load_settings(env)
    assert settings.advertise_url == "http://10.0.0.7:8750"
    assert settings.listen == "10.0.0.7:8750"
    assert settings.agent_container == "none"
    assert "node" in settings.agent_labels
    assert settings.controller_token_file == tmp_path / "controller-token"
