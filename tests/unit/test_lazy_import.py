"""dtma/lazy_import.py: `load` imports in a worker thread (never on the loop), once."""

from __future__ import annotations

import secrets
import sys
import threading
from pathlib import Path

import pytest

from dtma import lazy_import


async def test_load_imports_in_a_worker_thread_and_only_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"dtma_lazy_probe_{secrets.token_hex(4)}"
    (tmp_path / f"{name}.py").write_text(
        "import threading\nTHREAD = threading.current_thread().name\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        await lazy_import.load(name)
        imported_in = sys.modules[name].THREAD
        assert imported_in != threading.main_thread().name
        del sys.modules[name]
        await lazy_import.load(name)  # known loaded: no second import
        assert name not in sys.modules
    finally:
        sys.modules.pop(name, None)
        lazy_import._loaded.discard(name)


async def test_a_failed_import_is_not_marked_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"dtma_lazy_broken_{secrets.token_hex(4)}"
    (tmp_path / f"{name}.py").write_text("raise RuntimeError('half made')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for _ in range(2):  # raises again: a later call retries the import
        with pytest.raises(RuntimeError, match="half made"):
            await lazy_import.load(name)
    assert name not in lazy_import._loaded
