"""The agent's policy for escape hatches: refused by default, each refusal naming its setting,
and opened only as far as the setting says."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dtma.bootstrap import spec_policy
from dtma.config import load_settings
from dtma.errors import ConfigError, SpecInvalid
from dtma.spec.policy import SpecPolicy
from dtma.spec.validate import parse_spec


def server(**fields: Any) -> str:
    return json.dumps({"servers": [{"name": "a", "image": "img:1", **fields}]})


def http(**fields: Any) -> str:
    body = json.loads(server(transport="streamable-http", port=8000, **fields))
    if "publish" in fields:
        body["network"] = {"egress": True}  # an internal network publishes nothing
    return json.dumps(body)


def refusal(body: str, policy: SpecPolicy) -> tuple[list[Any], str]:
    with pytest.raises(SpecInvalid) as caught:
        parse_spec(body, policy)
    (detail,) = caught.value.details
    return detail["loc"], detail["msg"]


def bind(source: str) -> dict[str, Any]:
    return {"mounts": [{"type": "bind", "source": source, "target": "/x"}]}


def volume(source: str, read_only: bool = True) -> dict[str, Any]:
    mount = {"type": "volume", "source": source, "target": "/v", "read_only": read_only}
    return {"mounts": [mount]}


MOUNT_SOURCE = ["servers", 0, "mounts", 0, "source"]
CASES: list[tuple[str, list[Any], str, SpecPolicy]] = [
    (
        server(privileged=True),
        ["servers", 0, "privileged"],
        "DTMA_POLICY_ALLOW_PRIVILEGED",
        SpecPolicy(allow_privileged=True),
    ),
    (
        server(cap_add=["NET_ADMIN"]),
        ["servers", 0, "cap_add", 0],
        "DTMA_POLICY_ALLOW_CAP_ADD",
        SpecPolicy(allow_cap_add=("NET_ADMIN",)),
    ),
    (
        server(network_mode="host"),
        ["servers", 0, "network_mode"],
        "DTMA_POLICY_ALLOW_HOST_NAMESPACES",
        SpecPolicy(allow_host_namespaces=True),
    ),
    (
        server(pid_mode="host"),
        ["servers", 0, "pid_mode"],
        "DTMA_POLICY_ALLOW_HOST_NAMESPACES",
        SpecPolicy(allow_host_namespaces=True),
    ),
    (
        server(ipc_mode="host"),
        ["servers", 0, "ipc_mode"],
        "DTMA_POLICY_ALLOW_HOST_NAMESPACES",
        SpecPolicy(allow_host_namespaces=True),
    ),
    (
        server(**bind("/srv/data/x")),
        MOUNT_SOURCE,
        "DTMA_POLICY_ALLOW_BIND_MOUNTS",
        SpecPolicy(allow_bind_mounts=("/srv/data",)),
    ),
    (
        server(**bind("/var/run/")),
        MOUNT_SOURCE,
        "DTMA_POLICY_ALLOW_BIND_MOUNTS",
        SpecPolicy(allow_bind_mounts=("/var/run",)),
    ),
    (
        server(**bind("//run/docker.sock")),
        MOUNT_SOURCE,
        "DTMA_POLICY_ALLOW_BIND_MOUNTS",
        SpecPolicy(allow_bind_mounts=("/run/docker.sock",)),
    ),
    (
        server(**volume("pgdata", read_only=False)),
        MOUNT_SOURCE,
        "DTMA_POLICY_ALLOW_VOLUMES",
        SpecPolicy(allow_volumes=("pgdata",)),
    ),
    (
        server(**volume("cache")),
        MOUNT_SOURCE,
        "DTMA_POLICY_ALLOW_VOLUMES",
        SpecPolicy(allow_volumes=("*",)),
    ),
    (
        http(publish="0.0.0.0:0"),
        ["servers", 0, "publish"],
        "DTMA_POLICY_ALLOW_PUBLIC_PUBLISH",
        SpecPolicy(allow_public_publish=True),
    ),
    (
        http(publish="[::]:0"),
        ["servers", 0, "publish"],
        "DTMA_POLICY_ALLOW_PUBLIC_PUBLISH",
        SpecPolicy(allow_public_publish=True),
    ),
    (
        http(publish="192.168.1.20:0"),
        ["servers", 0, "publish"],
        "DTMA_POLICY_ALLOW_PUBLIC_PUBLISH",
        SpecPolicy(allow_public_publish=True),
    ),
]


@pytest.mark.parametrize(("body", "loc", "setting", "opened"), CASES)
def test_refused_by_default_naming_the_setting_then_allowed_by_it(
    body: str, loc: list[Any], setting: str, opened: SpecPolicy
) -> None:
    got_loc, msg = refusal(body, SpecPolicy())
    assert got_loc == loc
    assert setting in msg
    parse_spec(body, opened)


@pytest.mark.parametrize(
    ("body", "policy"),
    [
        # a prefix opens what is under it, and nothing beside it
        (server(**bind("/srv/database")), SpecPolicy(allow_bind_mounts=("/srv/data",))),
        (server(**bind("/etc")), SpecPolicy(allow_bind_mounts=("/srv",))),
        # a parent never opens the Docker socket, not even "/"
        (server(**bind("/var/run")), SpecPolicy(allow_bind_mounts=("/",))),
        (server(**bind("/run/docker.sock")), SpecPolicy(allow_bind_mounts=("/run",))),
        # the capability named is the one allowed
        (server(cap_add=["SYS_ADMIN"]), SpecPolicy(allow_cap_add=("NET_ADMIN",))),
        # another application's volume
        (server(**volume("otherapp")), SpecPolicy(allow_volumes=("pgdata",))),
    ],
)
def test_a_policy_opens_only_what_it_names(body: str, policy: SpecPolicy) -> None:
    refusal(body, policy)


def test_cap_prefix_and_case_are_normalised() -> None:
    parse_spec(server(cap_add=["CAP_NET_ADMIN"]), SpecPolicy(allow_cap_add=("NET_ADMIN",)))
    refusal(server(cap_add=["net_admin"]), SpecPolicy(allow_cap_add=("NET_ADMIN",)))  # pattern


def test_loopback_publish_needs_no_policy() -> None:
    for publish in ("127.0.0.1:0", "127.0.0.2:8080", "[::1]:0", "9000"):
        order = {"rollout": {"order": "stop_first"}}
        body = json.loads(http(publish=publish)) | order
        parse_spec(json.dumps(body), SpecPolicy())


def test_publish_on_an_internal_network_is_refused_not_silently_dropped() -> None:
    # Docker accepts the port binding and maps nothing: the user would find no port.
    body = json.loads(http(publish="127.0.0.1:0"))
    del body["network"]
    loc, msg = refusal(json.dumps(body), SpecPolicy())
    assert loc == ["servers", 0, "publish"]
    assert "network.egress: true" in msg
    body["network"] = {"egress": False}
    assert refusal(json.dumps(body), SpecPolicy())[0] == ["servers", 0, "publish"]


def test_reserved_labels_are_refused_whatever_the_policy() -> None:
    everything = SpecPolicy(
        vault_configured=True,
        allow_public_publish=True,
        allow_volumes=("*",),
        allow_privileged=True,
        allow_host_namespaces=True,
        allow_bind_mounts=("/",),
        allow_cap_add=("NET_ADMIN",),
    )
    loc, msg = refusal(server(labels={"dtma.toolbox": "x"}), everything)
    assert loc == ["servers", 0, "labels", "dtma.toolbox"]
    assert "reserved" in msg


def test_settings_build_the_policy_from_the_environment() -> None:
    settings = load_settings(
        {
            "DTMA_POLICY_ALLOW_PUBLIC_PUBLISH": "true",
            "DTMA_POLICY_ALLOW_VOLUMES": "pgdata, cache",
            "DTMA_POLICY_ALLOW_BIND_MOUNTS": "/srv/data,/opt/models",
            "DTMA_POLICY_ALLOW_CAP_ADD": "cap_net_admin,SYS_PTRACE",
        }
    )
    policy = spec_policy(settings, vault_configured=False)
    assert policy.describe() == {
        "allow_public_publish": True,
        "allow_volumes": ["pgdata", "cache"],
        "allow_privileged": False,
        "allow_host_namespaces": False,
        "allow_bind_mounts": ["/srv/data", "/opt/models"],
        "allow_cap_add": ["NET_ADMIN", "SYS_PTRACE"],
    }


def test_a_policy_file_sets_the_same_keys_and_the_environment_wins(tmp_path: Path) -> None:
    f = tmp_path / "policy.yaml"
    f.write_text(
        "allow_privileged: true\nDTMA_POLICY_ALLOW_VOLUMES: [pgdata]\nallow_bind_mounts: [/srv]\n"
    )
    settings = load_settings({"DTMA_POLICY_FILE": str(f), "DTMA_POLICY_ALLOW_BIND_MOUNTS": "/opt"})
    policy = spec_policy(settings, vault_configured=False)
    assert (policy.allow_privileged, policy.allow_volumes, policy.allow_bind_mounts) == (
        True,
        ("pgdata",),
        ("/opt",),
    )


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"DTMA_POLICY_ALLOW_BIND_MOUNTS": "relative/path"}, "DTMA_POLICY_ALLOW_BIND_MOUNTS"),
        ({"DTMA_POLICY_ALLOW_BIND_MOUNTS": "/srv/../etc"}, "DTMA_POLICY_ALLOW_BIND_MOUNTS"),
        ({"DTMA_POLICY_ALLOW_CAP_ADD": "NET ADMIN"}, "DTMA_POLICY_ALLOW_CAP_ADD"),
        ({"DTMA_POLICY_ALLOW_PRIVILEGED": "perhaps"}, "DTMA_POLICY_ALLOW_PRIVILEGED"),
    ],
)
def test_bad_policy_settings_name_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_settings(env)


def test_a_policy_file_with_an_unknown_key_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "policy.yaml"
    f.write_text("allow_everything: true\n")
    with pytest.raises(ConfigError, match="unknown key 'allow_everything'"):
        load_settings({"DTMA_POLICY_FILE": str(f)})
