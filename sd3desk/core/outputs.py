"""Where finished images go: a folder per day, names that sort by time and never collide."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

from sd3desk.core.atomic import write_new_file
from sd3desk.core.metadata import ImageMetadata, png_info

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


def sweep_stale_temp_files(out_dir: Path, older_than_s: float = 600.0) -> int:
    """Remove temporary files a killed process left in the day folders (".NAME.XXXX.tmp").

    Only old ones: a save takes well under a second, so a younger file may be another
    process's write in progress.
    """
    removed = 0
    cutoff = time.time() - older_than_s
    for temp in out_dir.glob("*/.*.tmp"):
        with contextlib.suppress(OSError):
            if temp.stat().st_mtime < cutoff:
                temp.unlink()
                removed += 1
    return removed


def save_generated(
    image: Image.Image, meta: ImageMetadata, out_dir: Path, now: dt.datetime | None = None
) -> Path:
    """Save one generated image as out_dir/YYYY-MM-DD/NNNNN-SEED.png with its parameters inside."""
    folder = out_dir / (now or dt.datetime.now()).strftime("%Y-%m-%d")
    folder.mkdir(parents=True, exist_ok=True)
    seed = meta.params.seed

    def name_for(n: int) -> str:
        return f"{n:05d}-{seed}.png"

    info = png_info(meta)
    return write_new_file(
        folder,
        name_for,
        lambda handle: image.save(handle, format="PNG", pnginfo=info, compress_level=4),
        start=next_sequence(folder),
    )
