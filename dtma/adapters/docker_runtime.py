"""ContainerRuntime on docker-py: networks, hardened containers, listing by label, events.

Every docker-py call runs in the engine's bounded Docker pool (docker_engine.py). Errors come
out as DtmaErrors (docker_client).
Idempotency: remove_* and ensure_network may be repeated safely.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import docker.errors
import docker.types

from dtma.adapters.agent_container import AgentContainer
from dtma.adapters.docker_client import call
from dtma.adapters.docker_engine import DockerEngine
from dtma.adapters.docker_networks import NetworkAllocator
from dtma.adapters.docker_shapes import create_kwargs, observe, observe_summary
from dtma.domain.containers import (
    LABEL_AGENT,
    LABEL_SERVER,
    LABEL_TOOLBOX,
    ContainerRequest,
    ObservedContainer,
    ObservedNetwork,
    network_name,
)
from dtma.domain.subnets import DEFAULT_POOL, MIN_PREFIX, parse_pool
from dtma.errors import ContainerNotFound, DockerError, DtmaError, ImageNotFound, SecretsError

STOP_TIMEOUT_S = 10
PULL_TIMEOUT_S = 300


class DockerRuntime:
    def __init__(
        self,
        engine: DockerEngine,
        *,
        agent_id: str,
        subnet_pool: str = DEFAULT_POOL,
        pull_timeout: float = PULL_TIMEOUT_S,
        agent_container: AgentContainer | None = None,
    ) -> None:
        self._engine = engine
        self._pull_timeout = pull_timeout
        self.agent_id = agent_id
        self._networks = NetworkAllocator(self._c, agent_id, parse_pool(subnet_pool))
        self._me = agent_container or AgentContainer(None)

    def _c(self) -> Any:
        return self._engine.client()

    async def engine_version(self) -> tuple[str, str]:
        """(Docker version, API version)."""
        info = await self._engine.info()
        return info.version, info.api_version

    # -- networks -----------------------------------------------------------------------------

    async def ensure_network(self, toolbox: str, internal: bool, prefix: int = MIN_PREFIX) -> str:
        """Create the toolbox network if missing, on a /prefix subnet from the agent's pool, and
        join it when the agent runs in a container (agent_container.py). Returns its name.
        Idempotent; allocations of this runtime are serialized."""
        name = network_name(toolbox, self.agent_id)

        def go() -> str:
            self._networks.ensure(toolbox, internal, prefix)
            self._me.join(self._c(), name)
            return name

        return await self._engine.run(call, f"network {name}", go)

    async def join_network(self, toolbox: str) -> None:
        """Join the toolbox network if it exists and the agent runs in a container (adoption
        after an agent restart). Idempotent; a missing network is not an error."""
        name = network_name(toolbox, self.agent_id)

        def go() -> None:
            with contextlib.suppress(docker.errors.NotFound):
                self._me.join(self._c(), name)

        await self._engine.run(call, f"join network {name}", go)

    async def remove_network(self, toolbox: str, legacy: bool = True) -> None:
        """Leave (when in a container) and remove the toolbox network (its subnet goes back to
        the pool). With `legacy`, also the network an older version made for this toolbox, if
        nothing is attached to it. A network already gone is fine."""
        name = network_name(toolbox, self.agent_id)

        def go() -> None:
            self._me.leave(self._c(), name)
            try:
                self._networks.remove(toolbox, legacy)
            except Exception:
                # Still in use (say a re-apply raced the reaper): stay on it, or its servers
                # cannot be probed.
                with contextlib.suppress(docker.errors.NotFound):
                    self._me.join(self._c(), name)
                raise

        await self._engine.run(call, f"remove network {name}", go)

    async def list_networks(self) -> list[ObservedNetwork]:
        """The toolbox networks of this agent (filtered by its id at the Docker query)."""
        return await self._engine.run(call, "list networks", self._networks.list_own)

    # -- images -------------------------------------------------------------------------------

    async def ensure_image(self, image: str) -> None:
        """Present locally, or pulled within the pull timeout; else ImageNotFound."""

        def present() -> bool:
            try:
                self._c().images.get(image)
            except docker.errors.ImageNotFound:
                return False
            return True

        if await self._engine.run(call, f"image {image}", present):
            return
        try:
            async with asyncio.timeout(self._pull_timeout):
                await self._engine.run(call, f"pull {image}", lambda: self._c().images.pull(image))
        except TimeoutError:
            raise ImageNotFound(
                f"image {image} is not present and pulling it timed out "
                f"after {self._pull_timeout:g}s"
            ) from None
        except DtmaError as exc:
            raise ImageNotFound(
                f"image {image} is not present locally and could not be pulled: {exc.message}"
            ) from None

    async def image_owner(self, image: str) -> tuple[int, int] | None:
        """(uid, gid) of the image's USER when numeric; None for root. A named user is an error
        for file secrets, since the host cannot resolve it."""

        def go() -> str:
            return str(self._c().api.inspect_image(image)["Config"].get("User") or "")

        user = await self._engine.run(call, f"image {image}", go)
        if user in ("", "root", "0", "0:0"):
            return None
        uid, _, gid = user.partition(":")
        if not uid.isdigit() or (gid and not gid.isdigit()):
            raise DockerError(
                f"image {image} runs as user {user!r}; file secrets need a numeric "
                "USER (uid[:gid]) or root, or use `as: env`"
            )
        return int(uid), int(gid or 0)

    # -- containers ---------------------------------------------------------------------------

    async def create_and_start(self, req: ContainerRequest) -> ObservedContainer:
        """Create and start one container. On a failed start the container is removed."""
        return await self._engine.run(
            call, f"start {req.labels.get(LABEL_SERVER)}", lambda: self._create_and_start(req)
        )

    def _create_and_start(self, req: ContainerRequest) -> ObservedContainer:
        client = self._c()
        if req.bind_secrets_dir:
            req = replace(req, bind_secrets_dir=self._daemon_path(client, req.bind_secrets_dir))
        kwargs = create_kwargs(req)
        kwargs["labels"] = {**req.labels, LABEL_AGENT: self.agent_id}
        if req.network and not req.host_network:
            kwargs["networking_config"] = {
                req.network: client.api.create_endpoint_config(aliases=[req.network_alias])
            }
        container = client.containers.create(req.image, **kwargs)
        try:
            container.start()
            container.reload()
        except Exception:
            with contextlib.suppress(Exception):
                container.remove(force=True)
            raise
        return observe(container.attrs, self.agent_id)

    def _daemon_path(self, client: Any, directory: str) -> str:
        """The agent wrote the secret files at `directory` as it sees it; the daemon
        bind-mounts them from where it sees them (AgentContainer.host_path). Raises
        SecretsError when it cannot see them at all."""
        found = self._me.host_path(client, Path(directory))
        if found is None:
            raise SecretsError(
                f"secret files at {directory} are in the agent's container but on no volume or "
                "bind mount of it, so the Docker daemon cannot mount them into a server: mount a "
                "tmpfs volume at DTMA_SECRETS_DIR (compose/docker-compose.yml shows one)"
            )
        return str(found)

    async def start(self, container_id: str) -> None:
        await self._engine.run(
            call, f"start {container_id[:12]}", lambda: self._c().api.start(container_id)
        )

    async def stop(self, container_id: str, timeout: int = STOP_TIMEOUT_S) -> None:
        def go() -> None:
            try:
                self._c().api.stop(container_id, timeout=timeout)
            except docker.errors.NotFound:
                return

        await self._engine.run(call, f"stop {container_id[:12]}", go)

    async def remove(self, container_id: str) -> None:
        """Force-remove; a container already gone is fine."""

        def go() -> None:
            try:
                self._c().api.remove_container(container_id, force=True, v=True)
            except docker.errors.NotFound:
                return
            except docker.errors.APIError as exc:
                if "already in progress" in str(exc) or "No such container" in str(exc):
                    return
                raise

        await self._engine.run(call, f"remove {container_id[:12]}", go)

    async def inspect(self, container_id: str) -> ObservedContainer | None:
        def go() -> ObservedContainer | None:
            try:
                return observe(self._c().api.inspect_container(container_id), self.agent_id)
            except docker.errors.NotFound:
                return None

        return await self._engine.run(call, f"inspect {container_id[:12]}", go)

    async def list_managed(
        self, toolbox: str | None = None, *, brief: bool = False
    ) -> list[ObservedContainer]:
        """This agent's containers (optionally of one toolbox), any state, plus containers made
        before agent ids (dtma labels, no dtma.agent; `agent` is "" on those). Containers of
        another agent id are never returned, nor inspected.

        `brief` (the watcher's periodic backstop): running containers come from the listing
        itself, without an inspect each, so they have no `started_at`; others are inspected
        (for the exit code). One call instead of one per container at a hundred containers."""
        label = f"{LABEL_TOOLBOX}={toolbox}" if toolbox else LABEL_TOOLBOX
        own = [label, f"{LABEL_AGENT}={self.agent_id}"]

        def go() -> list[ObservedContainer]:
            api = self._c().api
            found = api.containers(all=True, filters={"label": own})
            found += [
                s
                for s in api.containers(all=True, filters={"label": label})
                if LABEL_AGENT not in (s.get("Labels") or {})
            ]
            out = []
            for summary in found:
                if brief and summary.get("State") == "running":
                    out.append(observe_summary(summary, self.agent_id))
                    continue
                with contextlib.suppress(docker.errors.NotFound):
                    out.append(observe(api.inspect_container(summary["Id"]), self.agent_id))
            return out

        return await self._engine.run(call, "list containers", go)

    async def logs(self, container_id: str, tail: int) -> str:
        def go() -> str:
            raw = self._c().api.logs(container_id, stdout=True, stderr=True, tail=tail)
            return raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw)

        try:
            return await self._engine.run(call, f"logs {container_id[:12]}", go)
        except ContainerNotFound:
            return ""

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Container die/start/oom events for dtma-labelled containers, until cancelled.

        A daemon thread reads docker-py's blocking event stream; closing the stream on
        cancellation ends that thread.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[dict[str, Any] | BaseException] = asyncio.Queue()
        stream = await self._engine.run(
            call,
            "events",
            lambda: self._c().events(
                decode=True,
                filters={
                    "type": "container",
                    "label": LABEL_TOOLBOX,
                    "event": ["die", "start", "oom", "destroy"],
                },
            ),
        )

        def hand_over(item: dict[str, Any] | BaseException) -> bool:
            """False once the loop is closed: nobody listens any more."""
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:
                return False
            return True

        def pump() -> None:
            try:
                for event in stream:
                    # Another agent's containers are not ours to watch; no label = made
                    # before agent ids (adopted if a toolbox of ours wants it).
                    attrs = (event.get("Actor") or {}).get("Attributes") or {}
                    mine = attrs.get(LABEL_AGENT, self.agent_id) == self.agent_id
                    if mine and not hand_over(event):
                        return
            except Exception as exc:  # the stream broke (engine restart) or was closed
                hand_over(exc)
            else:
                hand_over(EOFError("event stream ended"))

        threading.Thread(target=pump, name="dtma-docker-events", daemon=True).start()
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise DockerError(f"Docker event stream ended: {item}")
                yield item
        finally:
            await self._engine.run(stream.close)
