"""Write files so that readers only ever see complete ones: temporary name, then rename or link."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from sd3desk.core import failpoints

# ".NAME.PID-RANDOM.tmp": the writer's process id is in the name, so a sweep can tell a dead
# process's leftover from a write in progress
_TEMP = re.compile(r"^\..+\.(\d+)-[A-Za-z0-9_]+\.tmp$")
STALE_AFTER_S = 600.0  # no write takes this long: an older temporary file is a leftover


@contextlib.contextmanager
def _temp_beside(path: Path) -> Iterator[tuple[BinaryIO, Path]]:
    """A temporary file in `path`'s folder (same file system, so renaming is atomic); removed
    unless the caller moved it away."""
    path.parent.mkdir(parents=True, exist_ok=True)
    import tempfile  # here, not at the top: the window starts faster without it

    prefix = f".{path.name}.{os.getpid()}-"
    fd, tmp_name = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    os.chmod(fd, 0o644)  # mkstemp makes files private; images and settings are ordinary files
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle, tmp
    finally:
        tmp.unlink(missing_ok=True)


def _flush(handle: BinaryIO) -> None:
    handle.flush()
    os.fsync(handle.fileno())


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Replace `path` with what `write` puts into a file handle, all or nothing."""
    with _temp_beside(path) as (handle, tmp):
        write(handle)
        _flush(handle)
        handle.close()
        os.replace(tmp, path)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    def write(handle: BinaryIO) -> None:
        handle.write(data)

    atomic_write(path, write)


def write_new_file(
    folder: Path, name_for: Callable[[int], str], write: Callable[[BinaryIO], None], start: int = 0
) -> Path:
    """Write a complete file under a name no other file has, never overwriting one.

    `name_for(n)` gives the candidate name for counter n (from `start`); the finished temporary
    file is hard-linked to the first free name, which fails instead of replacing when another
    writer took that name first.
    """
    with _temp_beside(folder / name_for(start)) as (handle, tmp):
        write(handle)
        _flush(handle)
        handle.close()
        failpoints.reached("file-written")
        n = start
        while True:
            target = folder / name_for(n)
            try:
                os.link(tmp, target)
                return target
            except FileExistsError:
                n += 1
            except OSError:
                # File systems without hard links (FAT, some network shares): check, then rename.
                if target.exists():
                    n += 1
                    continue
                os.replace(tmp, target)
                return target


def sweep_temp_files(folders: Iterable[Path]) -> int:
    """Remove the temporary files killed processes left in `folders` (not their subfolders);
    returns how many. A file whose writer is alive is kept unless it is older than any write
    takes (its process id was reused); where process ids cannot be checked, age decides."""
    removed = 0
    now = time.time()
    for folder in folders:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            if not (entry.name.startswith(".") and entry.name.endswith(".tmp")):
                continue
            match = _TEMP.match(entry.name)
            with contextlib.suppress(OSError):
                if not entry.is_file(follow_symlinks=False):
                    continue
                old = now - entry.stat(follow_symlinks=False).st_mtime > STALE_AFTER_S
                writer = int(match.group(1)) if match else None
                if old or (writer is not None and writer != os.getpid() and not _alive(writer)):
                    os.unlink(entry.path)
                    removed += 1
    return removed


def _alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (True where that cannot be told)."""
    if sys.platform == "win32":  # os.kill(pid, 0) would end the process there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process
        return True
    return True
