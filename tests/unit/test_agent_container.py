"""Finding the agent's own container id from what a container sees of itself (pure parsing)."""

from __future__ import annotations

from dtma.adapters.agent_container import id_candidates

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
