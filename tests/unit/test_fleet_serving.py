"""Which revision a toolbox serves, as the fleet client reads it from a status: the status's
`revision` is the newest applied (a rolled-back one too), so the servers' numbers decide."""

from __future__ import annotations

from typing import Any

from dtma.api.schemas import ToolboxStatusOut
from dtma.fleet.status import serving


def status(revision: int, stable: int | None, servers: list[int]) -> ToolboxStatusOut:
    def server(rev: int) -> dict[str, Any]:
        return {
            "name": f"s{rev}",
            "revision": rev,
            "container_id": "c",
            "state": "running",
            "health": "healthy",
            "restarts": 0,
            "endpoint": None,
            "tools": [],
            "last_error": None,
        }

    return ToolboxStatusOut.model_validate(
        {
            "id": "tb",
            "revision": revision,
            "stable_revision": stable,
            "phase": "healthy",
            "servers": [server(r) for r in servers],
            "updated_at": 0.0,
        }
    )


def test_a_rolled_back_revision_is_not_the_serving_one() -> None:
    assert serving(status(revision=3, stable=2, servers=[2, 2])) == 2


def test_while_a_start_first_rollout_gates_the_old_revision_serves() -> None:
    assert serving(status(revision=3, stable=2, servers=[2, 3])) == 2


def test_without_servers_the_stable_revision_is_the_answer() -> None:
    assert serving(status(revision=4, stable=2, servers=[])) == 2
    assert serving(status(revision=1, stable=None, servers=[])) is None
