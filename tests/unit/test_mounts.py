"""Which mount holds a path, from the text of /proc/self/mounts (pure parsing)."""

from __future__ import annotations

from dtma.adapters.mounts import innermost_mount

MOUNTS = """\
overlay / overlay rw,relatime,lowerdir=/a:/b 0 0
tmpfs /run tmpfs rw,nosuid,nodev,mode=755 0 0
/dev/vda /var/lib/dtma ext4 rw,relatime 0 0
tmpfs /run/dtma/secrets tmpfs rw,nosuid,nodev,noexec,relatime,size=16384k,mode=700 0 0
tmpfs /run/with\\040space tmpfs rw 0 0
"""


def test_the_deepest_mount_holding_the_path_wins() -> None:
    assert innermost_mount(MOUNTS, "/run/dtma/secrets/agent/x") == ("/run/dtma/secrets", "tmpfs")
    assert innermost_mount(MOUNTS, "/run/dtma/secrets") == ("/run/dtma/secrets", "tmpfs")
    assert innermost_mount(MOUNTS, "/run/dtma/other") == ("/run", "tmpfs")
    assert innermost_mount(MOUNTS, "/var/lib/dtma/state.db") == ("/var/lib/dtma", "ext4")
    assert innermost_mount(MOUNTS, "/var/lib/dtmax") == ("/", "overlay")  # not a prefix match


def test_escaped_mount_points_and_stacked_mounts() -> None:
    assert innermost_mount(MOUNTS, "/run/with space/a") == ("/run/with space", "tmpfs")
    stacked = MOUNTS + "tmpfs2 /var/lib/dtma tmpfs rw 0 0\n"  # mounted over: the top one counts
    assert innermost_mount(stacked, "/var/lib/dtma/x") == ("/var/lib/dtma", "tmpfs")
    assert innermost_mount("", "/x") == ("", "")
