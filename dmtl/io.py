"""Atomic file writes: every file a step produces appears whole or not at all (temp file + fsync + rename)."""
from __future__ import annotations

import contextlib
import json
import os
import uuid
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path, prefix: str = "tmp-"):
    """Yields a temporary path beside ``path``; on success it is fsynced and renamed onto ``path``.

    The temporary name is unique (``tmp-<pid>-<random>-best.weights.h5``: two writers never share one) and keeps
    the final suffix, so libraries that check extensions accept it. On an exception the temporary is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{prefix}{os.getpid()}-{uuid.uuid4().hex[:8]}-{path.name}")
    try:
        yield tmp
        if tmp.is_file():
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            tmp.unlink()
        raise


def write_text(path, text: str) -> Path:
    """Writes ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path, data, indent: int = 2) -> Path:
    """Writes ``data`` as JSON to ``path`` atomically."""
    return write_text(path, json.dumps(data, indent=indent))
