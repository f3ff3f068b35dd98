"""Secret files on a host tmpfs, one directory per container, bind-mounted at /run/secrets.

The base directory (DTMA_SECRETS_DIR) must be a tmpfs; if it is not, the agent mounts one there
(size=16m,mode=0700,noexec,nosuid,nodev, as Nomad does). Without the privilege to mount, file
secrets are refused unless DTMA_ALLOW_DISK_SECRETS is set. Files are mode 0400 and owned by the
container's user when the image names a numeric one. An agent that may not chown (not root) makes
a container's directory and files readable by all instead (0555/0444): the base directory stays
0700 and its own, so on the host only it and root reach them. A base directory it cannot create
is a ConfigError naming DTMA_SECRETS_DIR. All file I/O runs in threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import time
from pathlib import Path

import structlog

from dtma.adapters.mounts import mount_of
from dtma.errors import ConfigError, SecretsError

log = structlog.get_logger(__name__)

TMPFS_OPTIONS = "size=16m,mode=0700,noexec,nosuid,nodev"
SWEEP_MIN_AGE_S = 60.0
KEY_BYTES = 32


def load_or_create_key(path: Path) -> bytes:
    """A random key kept in the state dir (mode 0600), created on first use."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes()
    with os.fdopen(fd, "wb") as f:
        f.write(os.urandom(KEY_BYTES))
    return path.read_bytes()


def mount_point_fstype(path: Path) -> str:
    """The filesystem type of the mount that holds `path` (from /proc/self/mounts)."""
    return mount_of(path)[1]


def _rmtree(directory: Path) -> None:
    """Remove a container's directory, also one left read-only (0555) by a non-root agent."""
    with contextlib.suppress(OSError):
        directory.chmod(0o700)
    shutil.rmtree(directory, ignore_errors=True)


def _give(directory: Path, owner: tuple[int, int]) -> bool:
    """chown the directory and its files to `owner`; False if this process may not."""
    if (os.geteuid(), os.getegid()) == owner:
        return True
    try:
        for path in directory.iterdir():
            os.chown(path, *owner)
        os.chown(directory, *owner)
    except PermissionError:
        return False
    return True


class SecretFileStore:
    def __init__(self, base: Path, allow_disk: bool, namespace: str = "") -> None:
        """`namespace` (the agent id) is a subdirectory of its own: agents sharing
        DTMA_SECRETS_DIR never sweep or remove each other's files."""
        self.base = base
        self.root = base / namespace if namespace else base
        self._allow_disk = allow_disk
        self.unavailable: str | None = "not prepared"

    async def prepare(self) -> None:
        """Make sure the base is a tmpfs (mounting one if needed and allowed). Idempotent."""
        self.unavailable = await asyncio.to_thread(self._prepare)
        if self.unavailable:
            log.warning("secret_files_unavailable", reason=self.unavailable)

    def _prepare(self) -> str | None:
        problem = self._prepare_base()
        if problem is None:
            self.root.mkdir(exist_ok=True, mode=0o700)
        return problem

    def _prepare_base(self) -> str | None:
        try:
            self.base.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.base.chmod(0o700)
        except OSError as exc:
            raise ConfigError(
                f"DTMA_SECRETS_DIR={self.base}: cannot create it ({exc.strerror}); set "
                "DTMA_SECRETS_DIR to a directory of yours on a tmpfs, such as "
                "$XDG_RUNTIME_DIR/dtma/secrets, or run the agent as root"
            ) from None
        if mount_point_fstype(self.base) == "tmpfs":
            return None
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", TMPFS_OPTIONS, "tmpfs", str(self.base)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if proc.returncode == 0 and mount_point_fstype(self.base) == "tmpfs":
            log.info("secret_tmpfs_mounted", path=str(self.base), options=TMPFS_OPTIONS)
            return None
        if self._allow_disk:
            log.warning(
                "secret_files_on_disk",
                path=str(self.base),
                reason="DTMA_ALLOW_DISK_SECRETS is set and no tmpfs could be mounted",
            )
            return None
        fix = (
            "mount a tmpfs volume there (compose/docker-compose.yml shows one)"
            if Path("/.dockerenv").exists()  # Docker's marker: the agent runs in a container
            else "run the agent as root"
        )
        return (
            f"{self.base} is not a tmpfs and mounting one failed "
            f"({(proc.stderr or proc.stdout).strip() or 'exit ' + str(proc.returncode)}); "
            f"{fix}, or set DTMA_ALLOW_DISK_SECRETS=true to accept secrets on disk"
        )

    def dir_for(self, container_name: str) -> Path:
        return self.root / container_name

    async def write(
        self, container_name: str, files: dict[str, str], owner: tuple[int, int] | None
    ) -> Path:
        if self.unavailable:
            raise SecretsError(f"file secrets are unavailable: {self.unavailable}")
        return await asyncio.to_thread(self._write, container_name, files, owner)

    def _write(
        self, container_name: str, files: dict[str, str], owner: tuple[int, int] | None
    ) -> Path:
        directory = self.dir_for(container_name)
        _rmtree(directory)
        directory.mkdir(mode=0o700)
        for name, value in files.items():
            fd = os.open(directory / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
            with os.fdopen(fd, "w") as f:
                f.write(value)
        if owner and not _give(directory, owner):
            for path in directory.iterdir():
                path.chmod(0o444)
            directory.chmod(0o555)
        return directory

    async def remove(self, container_name: str) -> None:
        """Remove a container's directory; also where versions before agent ids put it (directly
        under DTMA_SECRETS_DIR), for an adopted container of theirs. Idempotent."""

        def go() -> None:
            _rmtree(self.dir_for(container_name))
            if self.root != self.base:
                _rmtree(self.base / container_name)

        await asyncio.to_thread(go)

    async def sweep(
        self, keep: set[str], prefix: str = "dtma-", min_age: float = SWEEP_MIN_AGE_S
    ) -> list[str]:
        """Remove directories (with `prefix`) whose container is not in `keep` and that are
        older than `min_age` seconds (a directory is written just before its container is
        created, so a young one may belong to a container that is not listed yet)."""

        def go() -> list[str]:
            if not self.root.is_dir():
                return []
            now = time.time()
            gone = [
                p.name
                for p in self.root.iterdir()
                if p.is_dir()
                and p.name.startswith(prefix)
                and p.name not in keep
                and now - p.stat().st_mtime >= min_age
            ]
            for name in gone:
                _rmtree(self.root / name)
            return gone

        return await asyncio.to_thread(go)
