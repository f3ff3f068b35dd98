"""One writer per piece of state (issue 19), checked on the source as test_supervised_tasks.py
checks tasks: a toolbox's row in the state DB is written only by engine/toolbox_state.py (the
ToolboxState that every ToolboxRunner is built on), a toolbox's phase is assigned only there (it
is derived, domain/phase.py: nobody pushes it), and a server's state and health are set only
inside its ServerRunner's own class."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

TOOLBOX_ROW_WRITES = re.compile(
    r"\brepo\.(update_toolbox|mark_stable|clear_target|delete_toolbox|save_restart_state|set_tools)\("
)
# A server's state or health assigned on anything but `self` (tuple targets included).
SERVER_STATE_WRITES = re.compile(r"\b(?!self\b)\w+\.(state|health)\s*(,[^=]*)?=(?!=)")

# A phase pushed: set_phase() (the call sites before issue 19), or `.phase` assigned (tuple and
# annotated targets included), or set through setattr.
PHASE_WRITES = re.compile(
    r"\bset_phase\(|\.phase\s*(:[^=]*)?(,[^=]*)?(?<![=!<>])=(?!=)"
    r"|setattr\([^,]+,\s*['\"]phase['\"]"
)

SERVER_RUNNER_FILES = {"server_runner.py", "server_restarts.py", "server_calls.py"}


def _engine_api_and_gateway() -> list[Path]:
    return sorted(p for d in ("engine", "api", "gateway") for p in REPO.glob(f"dtma/{d}/*.py"))


def test_only_the_toolbox_runner_writes_its_toolbox_row() -> None:
    found = [
        f"{path.relative_to(REPO)}:{n}: {line.strip()}"
        for path in _engine_api_and_gateway()
        if path.name != "toolbox_state.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if TOOLBOX_ROW_WRITES.search(line)
    ]
    assert found == []


def test_the_phase_is_written_only_where_it_is_derived() -> None:
    """Anywhere in dtma/ (the gateway, the CLI and the fleet code included)."""
    found = [
        f"{path.relative_to(REPO)}:{n}: {line.strip()}"
        for path in sorted(REPO.glob("dtma/**/*.py"))
        if path.relative_to(REPO).as_posix() != "dtma/engine/toolbox_state.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if PHASE_WRITES.search(line)
    ]
    assert found == []


def test_a_servers_state_is_set_only_inside_its_runner() -> None:
    found = [
        f"{path.relative_to(REPO)}:{n}: {line.strip()}"
        for path in _engine_api_and_gateway()
        if path.name not in SERVER_RUNNER_FILES
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if SERVER_STATE_WRITES.search(line)
    ]
    assert found == []


def test_the_scans_see_what_they_look_for() -> None:
    """The patterns match the writes they must catch, and not reads or comparisons."""
    assert TOOLBOX_ROW_WRITES.search("await tb.repo.update_toolbox(tb.id, stopped=0)")
    assert TOOLBOX_ROW_WRITES.search("await self.repo.mark_stable(self.id, n)")
    assert SERVER_STATE_WRITES.search('runner.state = "stopped"')
    assert SERVER_STATE_WRITES.search('runner.state, runner.health = "failed", "x"')
    assert not SERVER_STATE_WRITES.search('if runner.state == "running":')
    assert not SERVER_STATE_WRITES.search('self.state = "running"')
    assert PHASE_WRITES.search('await tb.set_phase("healthy")')
    assert PHASE_WRITES.search('tb.phase = "failed"')
    assert PHASE_WRITES.search("previous, self.phase = self.phase, phase")
    assert PHASE_WRITES.search("self.phase: str = derived")
    assert PHASE_WRITES.search('setattr(tb, "phase", "healthy")')
    assert not PHASE_WRITES.search('if tb.phase == "failed":')
    assert not PHASE_WRITES.search('if status.phase != "deploying":')
    assert not PHASE_WRITES.search("phases[tb.phase] = phases.get(tb.phase, 0) + 1")
