"""Write files so that readers only ever see complete ones: temporary name, then rename or link."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def _temp_beside(path: Path) -> Iterator[tuple[BinaryIO, Path]]:
    """A temporary file in `path`'s folder (same file system, so renaming is atomic); removed
    unless the caller moved it away."""
    path.parent.mkdir(parents=True, exist_ok=True)
    import tempfile  # here, not at the top: the window starts faster without it

    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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
