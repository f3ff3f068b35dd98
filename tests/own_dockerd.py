"""A Docker daemon of the test's own, beside the shared one, that a test may stop and start.

The shared daemon is never restarted: other work on the machine uses it. This one has its own
socket, --data-root, --exec-root (so its own managed containerd), pidfile and containerd
namespaces; no default bridge and no iptables rules, so it never touches the shared daemon's
networking (the agent under test gives each toolbox network a subnet of its own pool, and the
host reaches a bridge's subnet through the kernel's own route). Images come from the shared
daemon with `docker save | docker load`.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import die_with_parent


@dataclass
class OwnDockerd:
    live_restore: bool = False
    # The subnet pool the agent under test gives its toolbox networks: reserved for these
    # daemons, so a bridge left in it by one that was killed is stale and safe to delete.
    pool: str = "10.219.0.0/16"
    root: Path = field(
        default_factory=lambda: Path(f"/tmp/dtma-dd-{secrets.token_hex(3)}")  # short: socket paths
    )
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0

    @property
    def host(self) -> str:
        return f"unix://{self.root}/docker.sock"

    def docker(self, *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # type: ignore[call-overload, no-any-return]
            ["docker", "-H", self.host, *args], capture_output=True, text=True, **kwargs
        )

    @property
    def bridge(self) -> str:
        return "dtd-" + self.root.name.rsplit("-", 1)[-1]  # at most 15 characters

    def start(self, wait: float = 60) -> None:
        if self.proc is None:
            self.remove_stale_bridges()  # a route of theirs would shadow a new network's
            self._make_bridge()
        self.root.mkdir(parents=True, exist_ok=True)
        ns = "dtma-test-" + self.root.name.rsplit("-", 1)[-1]
        argv = [
            "dockerd",
            "-H",
            self.host,
            "--data-root",
            str(self.root / "data"),
            "--exec-root",
            str(self.root / "exec"),
            "--pidfile",
            str(self.root / "docker.pid"),
            "--containerd-namespace",
            ns,
            "--containerd-plugins-namespace",
            ns + "-plugins",
            # Its own default bridge: with `--bridge none` a daemon deletes the link named
            # docker0 at start, which is the shared daemon's.
            "--bridge",
            self.bridge,
            "--iptables=false",
            "--ip6tables=false",
            "--log-level",
            "warn",
        ]
        if self.live_restore:
            argv.append("--live-restore")
        with (self.root / "dockerd.log").open("ab") as log:
            self.proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent,
            )
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dockerd exited {self.proc.returncode}:\n{self.log_tail()}")
            if self.docker("version", "--format", "{{.Server.Version}}").returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError(f"dockerd did not answer within {wait:g}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 60) -> None:
        """SIGTERM by PID, as an operator's `systemctl stop docker` would; wait for the exit."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def restart(self) -> None:
        self.stop()
        self.restarts += 1
        self.start()

    def load_images(self, *images: str) -> None:
        save = subprocess.Popen(["docker", "save", *images], stdout=subprocess.PIPE)
        assert save.stdout is not None
        loaded = subprocess.run(
            ["docker", "-H", self.host, "load"], stdin=save.stdout, capture_output=True
        )
        save.stdout.close()
        assert save.wait() == 0
        assert loaded.returncode == 0, loaded.stderr

    def log_tail(self, lines: int = 30) -> str:
        path = self.root / "dockerd.log"
        return (
            "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
            if path.exists()
            else ""
        )

    def destroy(self, keep_log: Path | None = None) -> None:
        """Remove every container and network it holds, stop it, and delete its root (its log
        is copied to `keep_log` first)."""
        if keep_log is not None and (self.root / "dockerd.log").exists():
            shutil.copy(self.root / "dockerd.log", keep_log)
        if self.proc is not None and self.proc.poll() is None:
            ids = self.docker("ps", "-aq").stdout.split()
            if ids:
                self.docker("rm", "-f", *ids)
            nets = self.docker("network", "ls", "-q", "--filter", "type=custom").stdout.split()
            if nets:
                self.docker("network", "rm", *nets)
        self.stop()
        self.remove_stale_bridges()
        for sub in ("exec", "data"):  # overlay mounts under data/ must go before the files
            target = self.root / sub
            if target.exists():
                subprocess.run(
                    ["sh", "-c", f"grep -o ' {target}[^ ]*' /proc/mounts | xargs -r -n1 umount -l"],
                    check=False,
                    capture_output=True,
                )
        shutil.rmtree(self.root, ignore_errors=True)

    def _make_bridge(self) -> None:
        """The daemon's default bridge, on the pool's last /24 (x.y.255.0/24): the agent's
        subnet allocator reads every network's subnet from the engine, so it never hands that
        block to a toolbox."""
        if subprocess.run(["ip", "link", "show", self.bridge], capture_output=True).returncode == 0:
            return
        net = ipaddress.ip_network(self.pool)
        gateway = ipaddress.ip_address(int(net.broadcast_address) - 254)  # x.y.255.1
        for argv in (
            ["ip", "link", "add", "name", self.bridge, "type", "bridge"],
            ["ip", "addr", "add", f"{gateway}/24", "dev", self.bridge],
            ["ip", "link", "set", self.bridge, "up"],
        ):
            subprocess.run(argv, check=True, capture_output=True)

    def remove_stale_bridges(self) -> None:
        """Delete the bridges with an address in `pool`: a daemon stops without removing its
        networks' bridges, and one that was killed leaves them with their routes."""
        pool = ipaddress.ip_network(self.pool)
        out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True)
        for line in out.stdout.splitlines():
            fields = line.split()
            if len(fields) < 4 or not fields[1].startswith(("br-", "dtd-")):
                continue
            if ipaddress.ip_interface(fields[3]).ip in pool:
                subprocess.run(["ip", "link", "delete", fields[1]], capture_output=True)


def can_run_own_dockerd() -> str | None:
    """Why a daemon of the test's own cannot run here, or None."""
    if os.geteuid() != 0:
        return "a second dockerd needs root"
    if shutil.which("dockerd") is None:
        return "dockerd is not installed"
    return None
