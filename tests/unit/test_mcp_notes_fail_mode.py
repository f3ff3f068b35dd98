"""FAIL_MODE parsing of the example server (images/mcp-notes), as pure logic."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import REPO


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "mcp_notes", REPO / "images/mcp-notes/mcp_notes.py"
    )
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["mcp_notes"] = module
    spec.loader.exec_module(module)
    return module


notes = _load()


@pytest.mark.parametrize(
    ("raw", "kind", "arg"),
    [
        ("", "", ""),
        ("exit_at_start", "exit_at_start", ""),
        ("hang_initialize", "hang_initialize", ""),
        ("crash_after:2.5", "crash_after", "2.5"),
        ("slow_start:3", "slow_start", "3"),
        ("drop_tool:get_note", "drop_tool", "get_note"),
        ("error_env:API_KEY", "error_env", "API_KEY"),
    ],
)
def test_valid_modes(raw: str, kind: str, arg: str) -> None:
    mode = notes.FailMode.parse(raw)
    assert (mode.kind, mode.arg) == (kind, arg)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("explode", "is not one of"),
        ("crash_after", "needs seconds"),
        ("crash_after:x", "needs seconds"),
        ("slow_start:-1", ">= 0"),
        ("drop_tool:nope", "unknown tool"),
        ("drop_tool", "is not one of"),
        ("exit_at_start:1", "is not one of"),
        ("error_env", "is not one of"),
    ],
)
def test_invalid_modes_say_why(raw: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        notes.FailMode.parse(raw)


def test_notes_store_round_trip() -> None:
    store = notes.NoteStore()
    a = store.add("Groceries", "eggs, milk")
    store.add("Ideas", "rollback gate")
    assert store.search("MILK") == [{"id": a, "title": "Groceries"}]
    assert store.get(a)["body"] == "eggs, milk"
    assert store.delete(a)
    assert not store.delete(a)
    assert [n["title"] for n in store.all()] == ["Ideas"]


def test_leaked_values_reads_env_names_and_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = tmp_path / "key"
    f.write_text("line-1\nline-2\n")
    monkeypatch.setenv("LEAK_ME", "env-value")
    assert notes.leaked_values(f"LEAK_ME, {f},") == "env-value\nline-1\nline-2\n"
    assert "No such file" in notes.leaked_values("/no/such/file")
