"""Faults below the agent (issue 19) with `"live-restore": true` in the daemon's config: six
restarts of the test's own daemon, its containers keep running, so the agent re-attaches and
restarts nothing, and every call answers after each restart (the scenario and its checks are
tests/e2e/engine_faults_support.py; containers that stop are test_engine_faults.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.engine_faults_support import agent_on, own_engine, six_daemon_restarts

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(1200)
def test_six_daemon_restarts_with_live_restore_restart_nothing(tmp_path: Path) -> None:
    with own_engine(True, tmp_path) as engine, agent_on(engine, tmp_path) as agent:
        six_daemon_restarts(engine, agent)
