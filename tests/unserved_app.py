"""The agent's whole aiohttp app (create_app with an Agent), for tests that read its router or
its middlewares and never serve a request that reaches the engine."""

from __future__ import annotations

import random
from typing import Any

from aiohttp import web

from dtma.api.app import create_app
from dtma.engine.agent import Agent
from dtma.engine.engine_watch import EngineWatch
from dtma.engine.supervisor import Supervisor
from dtma.spec.validate import SpecPolicy
from tests.fakes import FakeEnginePing, StaticReadiness


def unserved_app(token: str = "t" * 32) -> web.Application:
    unused: Any = None  # the router is built without touching the agent's collaborators
    agent = Agent(
        runtime=unused,
        repo=unused,
        journal=unused,
        probe_factory=unused,
        policy=SpecPolicy(),
        engine=EngineWatch(FakeEnginePing()),
        supervisor=Supervisor(),
        rng=random.Random(0),
    )
    return create_app(token=token, readiness=StaticReadiness(), agent=agent)
