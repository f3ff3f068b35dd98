"""The engine's shape (issue 19): no module in dtma/engine/ grows past 300 lines, so that a
runner or facade is split by responsibility before it becomes the class every change touches."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MAX_LINES = 300


def _too_long(paths: list[Path]) -> list[str]:
    return [
        f"{p.name}: {n} lines" for p in paths if (n := len(p.read_text().splitlines())) > MAX_LINES
    ]


def test_no_engine_module_is_over_300_lines() -> None:
    paths = sorted(REPO.glob("dtma/engine/**/*.py"))
    assert len(paths) > 10  # the scan sees the engine
    assert _too_long(paths) == []


def test_the_scan_sees_a_long_file(tmp_path: Path) -> None:
    (tmp_path / "short.py").write_text("x = 1\n" * MAX_LINES)
    (tmp_path / "long.py").write_text("x = 1\n" * (MAX_LINES + 1))
    assert _too_long(sorted(tmp_path.glob("*.py"))) == ["long.py: 301 lines"]
