"""Files the agent generates once into its state dir (the API token, the agent id)."""

from __future__ import annotations

import os
from pathlib import Path


def create_once(path: Path, content: str) -> None:
    """Create `path` with mode 0600 holding `content`, unless it exists. Atomic against a
    concurrent start: O_EXCL lets exactly one process write, and its content stands."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as f:
        f.write(content + "\n")
