"""Atomic file writes: every file a step produces appears whole or not at all (temp file + fsync + rename)."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import uuid
from pathlib import Path


class DiskFull(OSError):
    """A write failed because the disk is full: one line naming the path and the free space."""

    def __init__(self, path):
        path = Path(path)
        folder = next((p for p in (path, *path.parents) if p.exists()), Path("."))
        free = shutil.disk_usage(folder).free / 2 ** 20
        super().__init__(errno.ENOSPC, f"disk full writing {path} ({free:.1f} MiB free there): free some space and "
                                       f"run the same command again (it resumes from the last checkpoint)")

    def __str__(self):
        return self.strerror


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` (an OSError, an h5py error, a TensorFlow error) says the disk is full."""
    if isinstance(error, DiskFull):
        return True
    if getattr(error, "errno", None) == errno.ENOSPC:
        return True
    text = str(error)
    return "No space left on device" in text or "[Errno 28]" in text


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
    except BaseException as error:
        _close_hdf5(tmp)
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
        if is_disk_full(error) and not isinstance(error, DiskFull):
            error.__traceback__ = None  # its frames hold the failed writer's objects
            raise DiskFull(path) from None
        raise


def _close_hdf5(path: Path) -> None:
    """Closes HDF5 files a failed weights write left open on ``path``: h5py would otherwise flush them when the
    process ends, into a full disk, and crash the interpreter (a segfault after the error was reported)."""
    import sys
    h5py = sys.modules.get("h5py")
    if h5py is None:
        return
    for fid in h5py.h5f.get_obj_ids(types=h5py.h5f.OBJ_FILE):
        with contextlib.suppress(Exception):
            name = fid.name.decode() if isinstance(fid.name, bytes) else str(fid.name)
            if Path(name).name != path.name:
                continue
            for obj in [*h5py.h5f.get_obj_ids(fid, types=h5py.h5f.OBJ_ALL & ~h5py.h5f.OBJ_FILE), fid]:
                for _ in range(1000):
                    if not obj.valid:
                        break
                    with contextlib.suppress(Exception):
                        h5py.h5i.dec_ref(obj)


def write_text(path, text: str) -> Path:
    """Writes ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path, data, indent: int = 2) -> Path:
    """Writes ``data`` as JSON to ``path`` atomically."""
    return write_text(path, json.dumps(data, indent=indent))
