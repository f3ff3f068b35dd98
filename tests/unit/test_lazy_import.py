"""dtma/lazy_import.py: `load` imports in a worker thread (never on the loop), once; and
`without_charset_detection` keeps requests from importing a detection library."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import textwrap
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


# In a fresh interpreter (this one has imported requests), with every warning an error: requests
# imports without charset_normalizer and without its warning, and decodes a body with no charset
# as UTF-8. Called after requests is loaded, it changes nothing.
CHARSET_PROBE = textwrap.dedent(
    """
    import json, sys, warnings
    warnings.simplefilter("error")
    from dtma.lazy_import import without_charset_detection
    without_charset_detection()
    import docker, requests, requests.compat
    response = requests.Response()
    response._content = "h\u00e9".encode()
    response.headers["Content-Type"] = "application/octet-stream"  # no charset: detection
    seen = {
        "loaded": sorted(k for k in ("charset_normalizer", "chardet") if sys.modules.get(k)),
        "detector": requests.compat.chardet is None,
        "text": response.text,
    }
    del sys.modules["charset_normalizer"], sys.modules["chardet"]
    import charset_normalizer
    without_charset_detection()
    seen["after"] = sys.modules["charset_normalizer"] is charset_normalizer
    print(json.dumps(seen))
    """
)


def test_requests_imports_without_charset_detection_and_reads_utf8() -> None:
    run = subprocess.run(
        [sys.executable, "-c", CHARSET_PROBE], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    assert json.loads(run.stdout) == {
        "loaded": [],
        "detector": True,
        "text": "h\u00e9",
        "after": True,
    }
