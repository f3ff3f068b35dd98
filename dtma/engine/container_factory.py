"""Creating and removing one toolbox's containers: its network, the prestart (secrets, read
now and never earlier) and the create itself. Used through ToolboxRunner.create_container and
remove_container, which ServerRunner and the executor call."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from dtma.domain.containers import (
    LABEL_SECRETS_HASH,
    ObservedContainer,
    container_request,
    subnet_prefix,
)
from dtma.engine.secrets import SecretInjector
from dtma.errors import SecretsError
from dtma.ports import ContainerRuntime
from dtma.spec.hashing import server_hash
from dtma.spec.models import ServerSpec, ToolboxSpec


class ContainerFactory:
    """One per toolbox. Concurrency: creates may run in parallel; the network is ensured under
    a lock, since Docker accepts several networks with one name."""

    def __init__(
        self, toolbox_id: str, runtime: ContainerRuntime, secrets: SecretInjector | None
    ) -> None:
        self._id = toolbox_id
        self._runtime = runtime
        self._secrets = secrets
        self._network_lock = asyncio.Lock()

    async def create(
        self, server: ServerSpec, revision: int, group: ToolboxSpec
    ) -> ObservedContainer:
        """Prestart (secrets), then create and start. On any failure nothing is left behind.
        Raises SecretsError or DockerError."""
        async with self._network_lock:
            network = await self._runtime.ensure_network(
                self._id, internal=not group.network.egress, prefix=subnet_prefix(group)
            )
        secrets = self._secrets
        if server.secrets and secrets is None:
            raise SecretsError("this agent has no Vault configured (VAULT_ADDR)")
        resolved = await secrets.resolve(server) if (server.secrets and secrets) else None
        labels = {LABEL_SECRETS_HASH: resolved.fingerprint} if resolved else None
        req = container_request(
            self._id, revision, group, server, server_hash(group, server.name), labels, network
        )
        if resolved and resolved.env:
            req = replace(req, env={**req.env, **resolved.env})
        if resolved and resolved.files and secrets is not None:
            owner = await self._runtime.image_owner(server.image)
            directory = await secrets.files.write(req.name, resolved.files, owner)
            req = replace(req, bind_secrets_dir=str(directory))
        try:
            return await self._runtime.create_and_start(req)
        except BaseException:
            if req.bind_secrets_dir and secrets is not None:
                await secrets.files.remove(req.name)
            raise

    async def remove(self, container: ObservedContainer) -> None:
        """Remove a container and its secret files. Idempotent."""
        await self._runtime.remove(container.id)
        if self._secrets is not None:
            await self._secrets.files.remove(container.name)
