"""Which mount holds a path, as this process sees it (/proc/self/mounts).

The secret files' tmpfs check and the agent-in-a-container path mapping (agent_container.py)
both ask it. `innermost_mount` is pure; `mount_of` reads the table and blocks briefly (call it
in a worker thread).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_OCTAL = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    """The kernel writes space, tab, newline and backslash in a mount point as octal escapes."""
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


def innermost_mount(mounts: str, target: str) -> tuple[str, str]:
    """(mount point, filesystem type) of the deepest mount in `mounts` (the text of
    /proc/self/mounts) that holds the absolute, normalized path `target`; the last one wins
    when several are stacked on one point, as the kernel shows the top one last. ("", "") when
    none does. Pure."""
    best, fstype = "", ""
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = _unescape(fields[1])
        holds = target == point or target.startswith(point.rstrip("/") + "/")
        if holds and len(point) >= len(best):
            best, fstype = point, fields[2]
    return best, fstype


def mount_of(path: Path) -> tuple[str, str]:
    """(mount point, filesystem type) of the mount holding `path` (symlinks resolved)."""
    with open("/proc/self/mounts") as f:
        return innermost_mount(f.read(), os.path.realpath(path))
