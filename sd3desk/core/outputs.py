"""Where finished images go: a folder per day, names that sort by time and never collide, decided
before a job runs."""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from sd3desk.core.atomic import write_new_file
from sd3desk.core.errors import MetadataError
from sd3desk.core.metadata import ImageMetadata, JobRef, png_info, read_metadata

if TYPE_CHECKING:
    from PIL import Image

_SEQUENCE = re.compile(r"^(\d{5,})-")


def next_sequence(folder: Path) -> int:
    """One more than the highest "NNNNN-" prefix in `folder` (0 for a new folder)."""
    highest = -1
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                match = _SEQUENCE.match(entry.name)
                if match:
                    highest = max(highest, int(match.group(1)))
    except FileNotFoundError:
        pass
    return highest + 1


class OutputPlan:
    """Decides where a job's images will land before it runs, so the names can be stored with
    the job: after a crash, a restart finds the images that were saved and keeps them.

    Thread rule: one thread (the runner's). Names handed out are reserved in memory, so jobs
    planned back to back never share one even before either is written.
    """

    def __init__(self, out_dir: Path, clock: Callable[[], dt.datetime] = dt.datetime.now) -> None:
        self.out_dir = out_dir
        self._clock = clock
        self._reserved: dict[Path, int] = {}  # folder -> the next number not handed out

    def names(self, seeds: Sequence[int | None]) -> tuple[str, ...]:
        """Paths for images with these seeds: today's folder, numbers after every file there."""
        folder = self.out_dir / self._clock().strftime("%Y-%m-%d")
        first = max(next_sequence(folder), self._reserved.get(folder, 0))
        self._reserved[folder] = first + len(seeds)
        return tuple(str(folder / _name(first + k, seed)) for k, seed in enumerate(seeds))


def _name(number: int, seed: int | None) -> str:
    return f"{number:05d}-{seed}.png"


def saved_by(path: Path, job: JobRef) -> bool:
    """Whether `path` is a complete image whose record says `job` made it (a crash came after
    it was saved)."""
    try:
        return path.is_file() and read_metadata(path).job == job
    except MetadataError:
        return False


def save_generated(
    image: Image.Image,
    meta: ImageMetadata,
    out_dir: Path,
    now: dt.datetime | None = None,
    planned: Path | None = None,
) -> Path:
    """Save one generated image with its parameters inside, as `planned` when given (an image a
    crashed run saved there already is kept as it is), else as out_dir/YYYY-MM-DD/NNNNN-SEED.png.
    Never overwrites a file: when another program took the name, the next free number is used."""
    if planned is not None and meta.job is not None and saved_by(planned, meta.job):
        return planned
    folder = (
        planned.parent if planned else out_dir / (now or dt.datetime.now()).strftime("%Y-%m-%d")
    )
    folder.mkdir(parents=True, exist_ok=True)
    seed = meta.params.seed
    start = next_sequence(folder)

    def name_for(n: int) -> str:
        if planned is not None:
            return planned.name if n == 0 else _name(start + n - 1, seed)
        return _name(start + n, seed)

    info = png_info(meta)
    return write_new_file(
        folder,
        name_for,
        lambda handle: image.save(handle, format="PNG", pnginfo=info, compress_level=4),
    )
