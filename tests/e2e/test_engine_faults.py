"""Faults below the agent (issue 19): the Docker daemon under a real agent restarts six times in
a row, on a daemon this test owns (tests/own_dockerd.py; the shared daemon is never touched),
without live-restore, so its containers stop each time.

After every restart each toolbox is healthy again with exactly one container per server and no
orphan network, a tools/call answers through every toolbox's MCP endpoint, no server reads
`failed`, and restart counts rose by at most one per daemon restart. While the daemon is down
/v1/ready is 503, and a PUT gets a clear 503 and is kept: its revision rolls out once the
daemon is back. The live-restore case is test_engine_faults_live_restore.py; the scenario is
tests/e2e/engine_faults_support.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.engine_faults_support import agent_on, own_engine, six_daemon_restarts

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(1200)
def test_six_daemon_restarts_leave_every_toolbox_serving(tmp_path: Path) -> None:
    with own_engine(False, tmp_path) as engine, agent_on(engine, tmp_path) as agent:
        six_daemon_restarts(engine, agent)
