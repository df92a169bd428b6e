"""Opening files that may not be what their names say: only regular files are ever read.

A FIFO named `x.png` blocks whoever opens it until a writer comes, and a device never ends;
the gallery, the metadata readers and the model loader open user folders, so they go through here.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


class NotRegularFileError(OSError):
    """The path is a FIFO, socket, device or folder, not a file to read."""


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def describe_kind(path: Path | str) -> str:
    """What `path` is, in words ("a named pipe (FIFO)", "a folder", ...)."""
    return _kind(os.stat(path).st_mode)


def check_regular(path: Path | str) -> os.stat_result:
    """`path`'s stat when it is a regular file (links followed); else NotRegularFileError."""
    found = os.stat(path)
    if not stat.S_ISREG(found.st_mode):
        raise NotRegularFileError(
            errno.EINVAL, f"{Path(path).name} is {_kind(found.st_mode)}", str(path)
        )
    return found


def open_regular(path: Path | str) -> BinaryIO:
    """`path` opened for binary reading, refusing anything but a regular file.

    Opened without blocking (so a FIFO cannot hang the open itself), then checked on the open
    descriptor (so the file cannot be swapped between the check and the open).
    """
    flags = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            name = Path(path).name
            raise NotRegularFileError(errno.EINVAL, f"{name} is {_kind(mode)}", str(path))
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def walk(folder: Path, suffixes: tuple[str, ...], depth: int = 64) -> Iterator[os.DirEntry]:
    """Regular files below `folder` whose names end in one of `suffixes` (lower case), at most
    `depth` folders down; hidden entries (temporary files) and linked folders are skipped."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                if depth > 0:
                    yield from walk(Path(entry.path), suffixes, depth - 1)
            elif entry.name.lower().endswith(suffixes) and entry.is_file():
                yield entry  # (a FIFO, socket or device with such a name is never opened)
        except OSError:
            continue
