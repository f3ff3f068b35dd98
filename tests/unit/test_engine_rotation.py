"""Secret rotation through Agent.refresh_secrets over the fakes on virtual time: exactly the
servers whose values changed are replaced, gated; a value that cannot be read fails closed and
the running containers stay; no value reaches an event or an operation error."""

from __future__ import annotations

from dtma.engine.agent import Agent
from tests.unit.engine_harness import Engine, server, spec_json
from tests.virtual_time import run_virtual

WAIT = 120.0
SECRET = {"name": "TOKEN", "vault": {"mount": "secret", "path": "app", "key": "token"}}
OTHER = {"name": "KEY", "vault": {"mount": "secret", "path": "other", "key": "key"}}


async def _ready(e: Engine) -> Agent:
    agent = e.agent()
    await agent.start()
    body = spec_json(server("a", secrets=[SECRET]), server("b", secrets=[OTHER]), server("c"))
    result = await agent.apply("tb", body)
    assert result.operation is not None
    assert (await agent.wait(result.operation, WAIT)).state == "succeeded"
    return agent


def test_only_the_servers_whose_values_changed_are_replaced() -> None:
    e = Engine()
    e.vault.values[("secret", "app", "token")] = "first-value"
    e.vault.values[("secret", "other", "key")] = "other-value"

    async def main() -> None:
        agent = await _ready(e)
        before = {c.server: c.id for c in e.runtime.of("tb")}
        e.vault.values[("secret", "app", "token")] = "second-value"
        op = await agent.refresh_secrets("tb")
        assert (await agent.wait(op, WAIT)).state == "succeeded"
        after = {c.server: c.id for c in e.runtime.of("tb")}
        assert after["a"] != before["a"]
        assert (after["b"], after["c"]) == (before["b"], before["c"])
        assert len(e.runtime.of("tb")) == 3  # the old "a" is gone
        new_a = e.runtime.requests[after["a"]]
        assert e.files.dirs[new_a.name] == {"TOKEN": "second-value"}  # as: file (the default)
        assert new_a.bind_secrets_dir is not None
        assert len(e.files.dirs) == 2  # the old "a"'s directory went with its container
        assert all("-value" not in x.message for x in e.store.event_rows)
        await agent.stop()

    run_virtual(main)


def test_a_secret_that_cannot_be_read_fails_closed_and_keeps_the_containers() -> None:
    e = Engine()
    e.vault.values[("secret", "app", "token")] = "first-value"
    e.vault.values[("secret", "other", "key")] = "other-value"

    async def main() -> None:
        agent = await _ready(e)
        before = {c.id for c in e.runtime.of("tb")}
        del e.vault.values[("secret", "app", "token")]
        op = await agent.refresh_secrets("tb")
        record = await agent.wait(op, WAIT)
        assert record.state == "failed"
        assert "secret/app" in (record.error or "")
        assert {c.id for c in e.runtime.of("tb")} == before
        assert (await agent.status("tb"))["phase"] == "healthy"
        await agent.stop()

    run_virtual(main)
