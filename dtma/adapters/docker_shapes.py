"""Translate between dtma's container shapes and docker-py's: create arguments from a
ContainerRequest, ObservedContainer from an inspect result or a listing entry. Pure."""

from __future__ import annotations

from typing import Any

import docker.types

from dtma.domain.containers import (
    LABEL_AGENT,
    LABEL_REVISION,
    LABEL_SECRETS_HASH,
    LABEL_SERVER,
    LABEL_SPEC_HASH,
    LABEL_TOOLBOX,
    LOG_MAX_FILES,
    LOG_MAX_SIZE,
    TMP_SIZE,
    ContainerRequest,
    ObservedContainer,
    legacy_network_name,
    network_name,
)


def create_kwargs(req: ContainerRequest) -> dict[str, Any]:
    mounts = [
        docker.types.Mount(target=t, source=s, type=kind, read_only=ro)
        for kind, t, s, ro in req.mounts
    ]
    if req.bind_secrets_dir:
        mounts.append(
            docker.types.Mount(
                target="/run/secrets", source=req.bind_secrets_dir, type="bind", read_only=True
            )
        )
    kwargs: dict[str, Any] = {
        "name": req.name,
        "command": req.command,
        "environment": req.env,
        "labels": req.labels,
        "stdin_open": req.stdin_open,
        "tty": False,
        "detach": True,
        "init": True,
        "read_only": True,
        "tmpfs": {"/tmp": f"rw,noexec,nosuid,size={TMP_SIZE}"},  # noqa: S108 - in the container
        "cap_drop": ["ALL"],
        "cap_add": list(req.cap_add) or None,
        "security_opt": ["no-new-privileges:true"],
        "privileged": req.privileged,
        "mem_limit": req.memory,
        "memswap_limit": req.memory,
        "nano_cpus": req.nano_cpus,
        "pids_limit": req.pids,
        "log_config": docker.types.LogConfig(
            type="json-file", config={"max-size": LOG_MAX_SIZE, "max-file": LOG_MAX_FILES}
        ),
        "restart_policy": {"Name": "no"},
        "mounts": mounts,
        "network_mode": "host" if req.host_network else "none",
    }
    if req.pid_host:
        kwargs["pid_mode"] = "host"
    if req.ipc_host:
        kwargs["ipc_mode"] = "host"
    if req.publish and req.port:
        ip, port = req.publish
        kwargs["ports"] = {f"{req.port}/tcp": (ip, port or None)}
    if req.network and not req.host_network:
        # Created on the toolbox network directly (with the server's name as DNS alias).
        kwargs["network"] = req.network
        kwargs.pop("network_mode")
    return kwargs


def observe_summary(summary: dict[str, Any], agent_id: str) -> ObservedContainer:
    """A running container from a listing entry (the same shape `inspect` has, minus the
    start time, which a listing does not carry)."""
    ports: dict[str, Any] = {}
    for p in summary.get("Ports") or []:
        if p.get("PublicPort"):
            ports.setdefault(f"{p.get('PrivatePort')}/tcp", [{"HostPort": str(p["PublicPort"])}])
    return observe(
        {
            "Id": summary["Id"],
            "Name": (summary.get("Names") or [""])[0],
            "Config": {"Labels": summary.get("Labels") or {}},
            "State": {"Status": summary.get("State", "unknown")},
            "NetworkSettings": {
                "Networks": (summary.get("NetworkSettings") or {}).get("Networks") or {},
                "Ports": ports,
            },
        },
        agent_id,
    )


def observe(attrs: dict[str, Any], agent_id: str) -> ObservedContainer:
    labels = attrs["Config"].get("Labels") or {}
    state = attrs.get("State") or {}
    networks = (attrs.get("NetworkSettings") or {}).get("Networks") or {}
    toolbox = labels.get(LABEL_TOOLBOX, "")
    ours = (network_name(toolbox, agent_id), legacy_network_name(toolbox))
    ip = None
    for name, net in networks.items():
        if name in ours and net.get("IPAddress"):
            ip = net["IPAddress"]
    host_port = None
    for bindings in ((attrs.get("NetworkSettings") or {}).get("Ports") or {}).values():
        if bindings:
            host_port = int(bindings[0]["HostPort"])
    try:
        revision = int(labels.get(LABEL_REVISION, "0"))
    except ValueError:
        revision = 0
    status = str(state.get("Status", "unknown"))
    return ObservedContainer(
        id=attrs["Id"],
        name=attrs.get("Name", "").lstrip("/"),
        toolbox=toolbox,
        server=labels.get(LABEL_SERVER, ""),
        revision=revision,
        spec_hash=labels.get(LABEL_SPEC_HASH, ""),
        state=status,
        exit_code=state.get("ExitCode") if status in ("exited", "dead") else None,
        ip=ip,
        host_port=host_port,
        started_at=str(state.get("StartedAt", "")),
        secrets_hash=labels.get(LABEL_SECRETS_HASH, ""),
        agent=labels.get(LABEL_AGENT, ""),
    )
