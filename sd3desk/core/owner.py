"""One owner per data folder: the process that runs the queue holds an OS file lock.

The lock is the operating system's (flock on Linux and macOS, a byte-range lock on Windows), so
it is released when its process ends, however it ends: a killed owner never leaves a stale lock.
Who holds it (program, process id, host, since when) is written beside it, for the message
another sd3desk shows when it finds the folder taken.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from sd3desk.core.atomic import atomic_write_bytes
from sd3desk.core.errors import FolderBusyError


@dataclass(frozen=True)
class Holder:
    """Who runs a data folder's queue."""

    role: str  # "the sd3desk window", "sd3desk queue run", "sd3desk serve"
    pid: int
    host: str
    since: float

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.since))
        where = "" if self.host == socket.gethostname() else f" on {self.host}"
        return f"{self.role} (process {self.pid}{where}, since {when})"


class FolderLock:
    """The data folder's owner lock. `acquire` never waits: it takes the lock or says who has it.

    Thread rule: any thread, one instance per owner. Two instances in one process exclude each
    other as two processes do (each opens the file itself).
    """

    def __init__(self, folder: Path) -> None:
        self.path = folder / "queue.lock"
        self.info_path = folder / "queue.owner.json"
        self._handle: IO[bytes] | None = None

    @property
    def held(self) -> bool:
        return self._handle is not None

    def acquire(self, role: str) -> None:
        """Become the owner, or raise FolderBusyError naming the current one."""
        if self._handle is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+b")
        if not _try_lock(handle):
            handle.close()
            holder = self.holder()
            who = holder.describe() if holder else "another sd3desk"
            raise FolderBusyError(
                f"The queue in {self.path.parent} is run by {who}.",
                "Jobs added here join that queue (sd3desk queue add). To run a second queue at "
                "the same time, give it a folder of its own (on the command line: --data-dir "
                "DIR).",
            )
        self._handle = handle
        record = {"role": role, "pid": os.getpid(), "host": socket.gethostname()}
        record["since"] = time.time()
        with contextlib.suppress(OSError):  # the lock is what counts; the note is a courtesy
            atomic_write_bytes(self.info_path, json.dumps(record).encode())

    def holder(self) -> Holder | None:
        """The owner as it wrote itself down (None when unknown or nobody holds the lock)."""
        try:
            record = json.loads(self.info_path.read_bytes())
            return Holder(
                str(record["role"]), int(record["pid"]), str(record["host"]), float(record["since"])
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def release(self) -> None:
        if self._handle is None:
            return
        with contextlib.suppress(OSError):
            self.info_path.unlink()
        self._handle.close()  # closing the file releases the lock
        self._handle = None


if sys.platform == "win32":
    import msvcrt

    def _try_lock(handle: IO[bytes]) -> bool:
        handle.seek(0)
        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

else:
    import fcntl

    def _try_lock(handle: IO[bytes]) -> bool:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        return True
