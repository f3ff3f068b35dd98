"""The agent container as deploy/kubernetes/dtma.yaml and deploy/nomad/dtma.nomad.hcl run it,
on the real engine.

No cluster is reachable here, so the kubelet's or the Nomad client's part is played by
docker-py with each manifest's own container settings, read from the file: the host network,
a read-only root with a tmpfs /tmp, only CHOWN, DAC_OVERRIDE and FOWNER, no-new-privileges,
the Docker socket, a host tmpfs for secret files bound at the same path (rslave, as
HostToContainer / host-to-task), token files of the manifest's mode where the manifest puts
them, and the manifest's environment with what the downward API or Nomad's interpolation would
fill in.

What it shows: under those settings the agent becomes ready, reaches an HTTP server on its
toolbox's internal network without joining it (DTMA_AGENT_CONTAINER=none), hands the host's
dockerd a secret directory on the host tmpfs at the path it wrote to, and heartbeats to a
controller with the advertised URL and the node's labels. Paths and the port differ from the
manifest's (a private tmpfs, a free port) so that it shares the engine with other runs.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import docker.types
import hcl2
import pytest
import yaml
from hcl2.utils import SerializationOptions

from dtma.adapters.secret_files import mount_point_fstype
from dtma.domain.containers import LABEL_AGENT
from tests.conftest import REPO, BaoServer, free_port, wait_until

pytestmark = pytest.mark.integration
MANIFEST = REPO / "deploy/kubernetes/dtma.yaml"
NOMAD_JOB = REPO / "deploy/nomad/dtma.nomad.hcl"
NOMAD_SECRETS = "/secrets"  # where Nomad's docker driver mounts a task's secrets directory
SOCKET = "/var/run/docker.sock"
SEEDED = "seeded-" + secrets.token_hex(8)


def _container_spec() -> tuple[dict[str, Any], dict[str, Any]]:
    """(the DaemonSet's agent container, its pod spec)."""
    (ds,) = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d and d["kind"] == "DaemonSet"]
    pod = ds["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return container, pod


class _Controller(BaseHTTPRequestHandler):
    bodies: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).bodies.append(json.loads(body))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture
def controller() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    bodies: ClassVar[list[dict[str, Any]]] = []
    handler = type("Recorder", (_Controller,), {"bodies": bodies})
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", bodies
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def host_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs on the host, as the node provides /run/dtma/secrets (deploy/systemd/)."""
    where = tmp_path / "secrets"
    where.mkdir(mode=0o700)
    run = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700,noexec,nosuid,nodev", "tmpfs", where],
        capture_output=True,
        text=True,
        check=False,
    )
    if run.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs for the test (root is needed): {run.stderr}")
    # Shared, as systemd makes every mount on a node: the rslave bind below (the manifests'
    # HostToContainer / host-to-task) is refused for a private one ("not a shared or slave
    # mount"), and this machine's mounts are private.
    subprocess.run(["mount", "--make-shared", str(where)], check=True, capture_output=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False, capture_output=True)


def _call(base: str, method: str, path: str, token: str, body: str | None = None) -> Any:
    req = urllib.request.Request(
        base + path,
        data=body.encode() if body else None,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/yaml"},
    )
    try:
        with urllib.request.urlopen(req, timeout=200) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def _ready(base: str) -> bool:
    try:
        with urllib.request.urlopen(base + "/v1/ready", timeout=3) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


@dataclass
class Run:
    """One manifest's container settings, as docker-py arguments, with the orchestrator's
    values filled in for this test (`fill`: placeholder -> value)."""

    kwargs: dict[str, Any]
    env: dict[str, str]
    labels: dict[str, str]  # the agent labels its heartbeats must carry
    token_dir: str  # where the manifest puts the token files in the container
    token_mode: int


def _filled(value: str, fill: dict[str, str]) -> str:
    for placeholder, real in fill.items():
        value = value.replace(placeholder, real)
    return value


def _kubernetes(fill: dict[str, str], state: Path, secrets_dir: Path) -> Run:
    spec, pod = _container_spec()
    assert pod["hostNetwork"] is True
    ctx = spec["securityContext"]
    mounts = {m["mountPath"]: m for m in spec["volumeMounts"]}
    tokens = next(v for v in pod["volumes"] if "secret" in v)
    token_dir = next(m["mountPath"] for m in spec["volumeMounts"] if m["name"] == tokens["name"])
    assert mounts["/run/dtma/secrets"]["mountPropagation"] == "HostToContainer"
    return Run(
        kwargs={
            "command": spec["args"],
            "user": str(ctx["runAsUser"]),
            "read_only": ctx["readOnlyRootFilesystem"],
            "tmpfs": {"/tmp": "size=16m"},  # the manifest's emptyDir (medium Memory) at /tmp
            "cap_drop": ctx["capabilities"]["drop"],
            "cap_add": ctx["capabilities"]["add"],
            "security_opt": ["no-new-privileges"],
            "mounts": [
                docker.types.Mount(SOCKET, SOCKET, type="bind"),
                docker.types.Mount(mounts["/var/lib/dtma"]["mountPath"], str(state), type="bind"),
                docker.types.Mount(
                    str(secrets_dir), str(secrets_dir), type="bind", propagation="rslave"
                ),
            ],
        },
        env={e["name"]: _filled(e["value"], fill) for e in spec["env"] if "value" in e},
        labels={"node": "test-node"},
        token_dir=token_dir,
        token_mode=tokens["secret"]["defaultMode"],
    )


def _block(blocks: list[dict[str, Any]], label: str) -> dict[str, Any]:
    """The block labelled `label` (python-hcl2 may keep a label's quotes)."""
    (found,) = [v for b in blocks for k, v in b.items() if k.strip('"') == label]
    return dict(found)


def _nomad(fill: dict[str, str], state: Path, secrets_dir: Path) -> Run:
    options = SerializationOptions(
        with_comments=False, explicit_blocks=False, strip_string_quotes=True
    )
    with NOMAD_JOB.open() as f:
        job = hcl2.load(f, serialization_options=options)
    (group,) = _block(job["job"], "dtma")["group"]
    task = _block(_block([group], "agent")["task"], "agent")
    (config,) = task["config"]
    assert config["network_mode"] == "host"
    (tmp,) = config["mount"]
    dests = {m["destination"]: m for m in task["volume_mount"]}
    assert dests["/run/dtma/secrets"]["propagation_mode"] == "host-to-task"
    assert "/var/lib/dtma" in dests
    socket_host, socket_inside = config["volumes"][0].split(":")
    (env,) = task["env"]
    perms = {t["perms"] for t in task["template"]}
    assert len(perms) == 1
    return Run(
        kwargs={
            "command": config["args"],
            "read_only": config["readonly_rootfs"],
            "tmpfs": {tmp["target"]: f"size={tmp['tmpfs_options'][0]['size']}"},
            "cap_drop": config["cap_drop"],
            "cap_add": config["cap_add"],
            "security_opt": config["security_opt"],
            "mounts": [
                docker.types.Mount(socket_inside, socket_host, type="bind"),
                docker.types.Mount("/var/lib/dtma", str(state), type="bind"),
                docker.types.Mount(
                    str(secrets_dir), str(secrets_dir), type="bind", propagation="rslave"
                ),
            ],
        },
        env={k: _filled(str(v), fill) for k, v in env.items()},
        labels={"node": "test-node", "dc": "dc1", "region": "global"},
        token_dir=NOMAD_SECRETS,
        token_mode=int(perms.pop(), 8),
    )


@pytest.mark.timeout(300)
@pytest.mark.parametrize("manifest", ["kubernetes", "nomad"])
def test_the_manifests_container_settings_run_a_toolbox_with_a_file_secret(
    manifest: str,
    docker_client: Any,
    agent_image: str,
    images: dict[str, str],
    make_container: Any,
    bao: BaoServer,
    controller: tuple[str, list[dict[str, Any]]],
    host_tmpfs: Path,
    tmp_path: Path,
) -> None:
    secrets_dir = host_tmpfs  # stands in for /run/dtma/secrets: same path inside and out
    state, tokens = tmp_path / "state", tmp_path / "tokens"
    state.mkdir()
    tokens.mkdir()
    port = free_port()
    url, heartbeats = controller
    fill = {  # what the kubelet's downward API or the Nomad client would put there
        "$(HOST_IP):8750": f"127.0.0.1:{port}",
        "$(NODE_NAME)": "test-node",
        "https://controller.example:8443": url,
        "${NOMAD_ADDR_api}": f"127.0.0.1:{port}",
        "${node.unique.name}": "test-node",
        "${node.datacenter}": "dc1",
        "${node.region}": "global",
        "${var.controller_url}": url,
        "${NOMAD_SECRETS_DIR}": NOMAD_SECRETS,
        "/run/dtma/secrets": str(secrets_dir),
    }
    run = {"kubernetes": _kubernetes, "nomad": _nomad}[manifest](fill, state, secrets_dir)
    api_token, controller_token = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    for name, value in (("api-token", api_token), ("controller-token", controller_token)):
        (tokens / name).write_text(value)
        (tokens / name).chmod(run.token_mode)
    agent_id = "orch-" + secrets.token_hex(4)
    env = {
        **run.env,
        "DTMA_AGENT_ID": agent_id,
        "DTMA_HEARTBEAT_INTERVAL": "2s",
        "DTMA_REAP_GRACE": "24h",  # other runs share this engine
        "VAULT_ADDR": bao.addr,  # the host network reaches the test's OpenBao on loopback
        "VAULT_TOKEN": bao.root_token,
    }
    bao.client().secrets.kv.v2.create_or_update_secret(
        path="dtma/orch/notes", secret={"token": SEEDED}, mount_point="secret"
    )
    agent = make_container(
        agent_image,
        environment=env,
        network_mode="host",
        **{
            **run.kwargs,
            "mounts": [
                *run.kwargs["mounts"],
                docker.types.Mount(run.token_dir, str(tokens), type="bind", read_only=True),
            ],
        },
    )
    base = f"http://127.0.0.1:{port}"
    toolbox = "orch" + secrets.token_hex(3)
    try:

        def ready() -> bool:
            agent.reload()
            if agent.status == "exited":
                pytest.fail(f"the agent exited:\n{agent.logs().decode()[-3000:]}")
            return _ready(base)

        wait_until(ready, 60, "agent ready")
        body = (
            "servers:\n"
            "  - name: notes\n"
            f"    image: {images['mcp-notes']}\n"
            "    transport: streamable-http\n"
            "    port: 8000\n"
            "    health: {expect_tools: [add_note], timeout: 20s}\n"
            "    secrets:\n"
            "      - name: NOTES_TOKEN\n"
            "        vault: {mount: secret, path: dtma/orch/notes, key: token}\n"
            "rollout: {min_healthy_time: 1s, healthy_deadline: 120s}\n"
        )
        status, answer = _call(base, "PUT", f"/v1/toolboxes/{toolbox}?wait=150", api_token, body)
        assert status in (200, 202), answer
        assert answer["phase"] == "healthy", (answer, agent.logs().decode()[-3000:])

        # The secret file: written by the agent, mounted by the host's dockerd from the host
        # tmpfs at the very path the agent wrote to.
        (notes,) = docker_client.containers.list(
            filters={"label": [f"{LABEL_AGENT}={agent_id}", "dtma.server=notes"]}
        )
        code, out = notes.exec_run(["cat", "/run/secrets/NOTES_TOKEN"])
        assert (code, out.decode()) == (0, SEEDED)
        (mount,) = [m for m in notes.attrs["Mounts"] if m["Destination"] == "/run/secrets"]
        assert mount["Source"].startswith(f"{secrets_dir}/{agent_id}/")
        assert mount_point_fstype(Path(mount["Source"])) == "tmpfs"
        assert (Path(mount["Source"]) / "NOTES_TOKEN").read_text() == SEEDED

        # The agent joined no network: it probes the internal network from the host's.
        agent.reload()
        assert set(agent.attrs["NetworkSettings"]["Networks"]) == {"host"}

        # Heartbeats carry the advertised URL and the node's label, and the toolbox.
        def healthy_heartbeat() -> bool:
            return any(
                t["id"] == toolbox and t["phase"] == "healthy"
                for hb in list(heartbeats)
                for t in hb["toolboxes"]
            )

        wait_until(healthy_heartbeat, 10, "a heartbeat with the healthy toolbox")
        first = heartbeats[0]["agent"]
        assert (first["id"], first["url"]) == (agent_id, base)
        assert first["labels"] == run.labels
        assert SEEDED not in json.dumps(heartbeats)

        status, _ = _call(base, "DELETE", f"/v1/toolboxes/{toolbox}?wait=60", api_token)
        assert status in (200, 202)
    finally:
        agent.stop(timeout=30)
        flt = {"label": f"{LABEL_AGENT}={agent_id}"}
        for c in docker_client.containers.list(all=True, filters=flt):
            c.remove(force=True, v=True)
        for n in docker_client.networks.list(filters=flt):
            n.remove()
