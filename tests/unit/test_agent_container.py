"""Finding the agent's own container id from what a container sees of itself (pure parsing)."""

from __future__ import annotations

from dtma.adapters.agent_container import host_source, id_candidates

ID = "9bc973d1e50f4f9ddc04139ee7a1252b8564243c3226b61c9ad5127b299cc42e"
OTHER = "063988745e397d638b6463169e8e7e561cbe363eba12a0519c49493b01304cdc"
MOUNTINFO = f"""\
85 84 0:48 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - tmpfs tmpfs rw,mode=755
86 85 0:29 /docker/{OTHER} /sys/fs/cgroup/cpu ro,nosuid - cgroup cgroup rw,cpu
98 80 254:0 /var/lib/docker/containers/{ID}/hostname /etc/hostname rw,relatime - ext4 /dev/vda rw
99 80 254:0 /var/lib/docker/containers/{ID}/hosts /etc/hosts rw,relatime - ext4 /dev/vda rw
"""
HOST_MOUNTINFO = """\
42 27 254:0 /var/lib/docker /var/lib/docker rw,relatime shared:1 - ext4 /dev/vda rw
"""


def test_the_mountinfo_id_comes_first_and_only_once() -> None:
    cgroup = f"9:name=systemd:/docker/{ID}\n8:pids:/docker/{ID}\n"
    assert id_candidates(MOUNTINFO, cgroup, ID[:12]) == [ID]


def test_cgroup_v1_and_systemd_scopes_are_read_when_mountinfo_has_nothing() -> None:
    assert id_candidates("", f"9:name=systemd:/docker/{ID}\n", "web") == [ID]
    scope = f"0::/system.slice/docker-{ID}.scope\n"
    assert id_candidates(HOST_MOUNTINFO, scope, "web") == [ID]


def test_a_hostname_that_looks_like_a_short_id_is_the_last_resort() -> None:
    assert id_candidates(HOST_MOUNTINFO, "0::/\n", "abc123def456") == ["abc123def456"]


def test_a_host_shows_no_candidate() -> None:
    cgroup = "4:memory:/process_api/78f16b5f7a63ece700f0ac7c99c04e4e\n0::/\n"
    assert id_candidates(HOST_MOUNTINFO, cgroup, "vm") == []
    assert id_candidates(HOST_MOUNTINFO, "0::/user.slice/session-3.scope\n", "buildhost1") == []


# -- where the Docker daemon finds a path of the agent's container (host_source) ---------------

VOLUME = "/var/lib/docker/volumes/stack_dtma-secrets/_data"
MOUNTS = [
    {
        "Type": "volume",
        "Source": "/var/lib/docker/volumes/stack_dtma-state/_data",
        "Destination": "/var/lib/dtma",
    },
    {"Type": "volume", "Source": VOLUME, "Destination": "/run/dtma/secrets"},
    {"Type": "bind", "Source": "/var/run/docker.sock", "Destination": "/var/run/docker.sock"},
]


def test_a_path_on_a_volume_maps_to_the_volume_directory_on_the_host() -> None:
    base = "/run/dtma/secrets"
    assert host_source(MOUNTS, base, base) == VOLUME
    assert host_source(MOUNTS, f"{base}/agent1/dtma-x-notes-r1-ab", base) == (
        f"{VOLUME}/agent1/dtma-x-notes-r1-ab"
    )
    assert host_source(MOUNTS, "/run/dtma/secrets/", base) == VOLUME  # normalized


def test_a_bind_mount_maps_to_its_source_and_the_same_path_stays_the_same() -> None:
    same = [{"Type": "bind", "Source": "/run/user/1000/s", "Destination": "/run/user/1000/s"}]
    assert host_source(same, "/run/user/1000/s/a/b", "/run/user/1000/s") == "/run/user/1000/s/a/b"
    parent = [{"Type": "bind", "Source": "/srv/stack/run", "Destination": "/run"}]
    assert host_source(parent, "/run/dtma/secrets/a", "/run") == "/srv/stack/run/dtma/secrets/a"


def test_the_closest_mount_wins_over_an_enclosing_one() -> None:
    nested = [
        {"Type": "bind", "Source": "/srv/run", "Destination": "/run"},
        {"Type": "volume", "Source": VOLUME, "Destination": "/run/dtma/secrets"},
    ]
    assert host_source(nested, "/run/dtma/secrets/a", "/run/dtma/secrets") == f"{VOLUME}/a"
    assert host_source(nested, "/run/other", "/run") == "/srv/run/other"
    # A sibling whose name merely starts the same is not inside the mount.
    assert host_source(nested, "/run/dtma/secrets2/a", "/run") == "/srv/run/dtma/secrets2/a"


def test_no_mount_a_tmpfs_mount_or_a_mount_hidden_inside_the_container_maps_to_nothing() -> None:
    assert host_source(MOUNTS, "/run/elsewhere", "/") is None  # the container's own layer
    private = [{"Type": "tmpfs", "Source": "", "Destination": "/run/dtma/secrets"}]
    assert host_source(private, "/run/dtma/secrets/a", "/run/dtma/secrets") is None
    # The agent mounted a tmpfs of its own over the volume: the daemon would see the volume,
    # not what the agent wrote, so there is no answer rather than a wrong one.
    assert host_source(MOUNTS, "/run/dtma/secrets/a", "/run/dtma/secrets/a") is None
    assert host_source([], "/run/dtma/secrets", "/") is None
