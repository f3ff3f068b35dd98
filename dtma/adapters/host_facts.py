"""The host's CPUs, memory, free disk of the state dir and 1-minute load, for heartbeats.

The reads are cheap (/proc/meminfo, statvfs, getloadavg) but they are file system calls, so
`read_host_facts` runs them in a worker thread and never on the event loop. A value the host
does not offer (no /proc/meminfo on a non-Linux host) is 0, never an exception.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

from dtma.domain.heartbeat import HostFacts

MEMINFO = Path("/proc/meminfo")


async def read_host_facts(state_dir: Path) -> HostFacts:
    return await asyncio.to_thread(host_facts_now, state_dir)


def host_facts_now(state_dir: Path) -> HostFacts:
    """Blocking; call from a thread."""
    total, available = _meminfo()
    try:
        disk_free = shutil.disk_usage(state_dir).free
    except OSError:
        disk_free = 0
    try:
        load1 = os.getloadavg()[0]
    except OSError:
        load1 = 0.0
    return HostFacts(
        cpus=os.cpu_count() or 1,
        memory_bytes=total,
        memory_available_bytes=available,
        disk_free_bytes=disk_free,
        load1=round(load1, 2),
    )


def _meminfo() -> tuple[int, int]:
    """(MemTotal, MemAvailable) in bytes from /proc/meminfo (its values are in KiB)."""
    values: dict[str, int] = {}
    try:
        text = MEMINFO.read_text()
    except OSError:
        return 0, 0
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name in ("MemTotal", "MemAvailable"):
            values[name] = int(rest.split()[0]) * 1024
    return values.get("MemTotal", 0), values.get("MemAvailable", 0)
