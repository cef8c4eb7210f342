"""An exclusive lock on a folder (a run folder, a build's output): two processes never write into one folder at
once. The lock file holds the owner's pid, host and start time; it is created with O_EXCL, removed on exit, and
taken over when its owner is gone (same host, process not alive)."""
from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path


class FolderLocked(RuntimeError):
    """Another live process holds the folder's lock."""


def process_alive(pid: int) -> bool:
    """Whether a process of this host with ``pid`` exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class FolderLock:
    """``with FolderLock(folder, "run"):`` holds ``folder/.dmtl.lock`` (re-entrant within one process)."""

    def __init__(self, folder, what: str = "process", name: str = ".dmtl.lock"):
        self.path, self.what = Path(folder) / name, what
        self.owned = False

    def _holder(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # being written, or damaged: treated as stale below when its writer is gone

    def _mtime(self) -> float:
        try:
            return self.path.stat().st_mtime
        except FileNotFoundError:
            return 0.0

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(100):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is None:
                    continue  # released meanwhile: try again
                if not holder and time.time() - self._mtime() < 5:
                    time.sleep(0.05)  # its owner is still writing it
                    continue
                if holder.get("pid") == me["pid"] and holder.get("host") == me["host"]:
                    return self  # this process already holds it (nested use)
                same_host = holder.get("host") == me["host"]
                if holder and (not same_host or process_alive(int(holder.get("pid", 0)))):
                    raise FolderLocked(f"{self.path.parent} is in use by another {self.what} (pid {holder.get('pid')} "
                                       f"on {holder.get('host')} since {holder.get('since')}); wait for it, or "
                                       f"remove {self.path} if that process is gone")
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()  # stale: its owner is gone
                continue
            with os.fdopen(fd, "w") as handle:
                json.dump(me, handle)
            self.owned = True
            return self
        raise FolderLocked(f"could not take the lock {self.path}")

    def __exit__(self, *exc):
        if self.owned:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self.owned = False
