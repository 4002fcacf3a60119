"""The ``hokusai-stack up`` environment file: the ``export`` lines for another shell, the full key
among them, in a file only the user can read (mode 0600), so that the key never shows on screen.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

__all__ = ["ENV_FILE_NAME", "write_env_file"]

#: The env file's name next to the state file (``hokusai-stack up --env-file`` chooses another).
ENV_FILE_NAME = "hokusai-stack.env"


def write_env_file(path: Path, lines: Sequence[str]) -> Path:
    """Write ``lines`` to ``path``, created with mode 0600 from the start (never readable by others,
    not even for a moment), replacing any earlier file; return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)  # a previous file may have looser permissions: start afresh
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write("# written by hokusai-stack up; holds a full API key: keep it to yourself\n")
        handle.write("\n".join(lines) + "\n")
    os.chmod(path, 0o600)  # whatever the umask did
    return path
