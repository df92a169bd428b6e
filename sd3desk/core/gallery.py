"""The gallery index: one row per image file, full-text search, filters, favourites, thumbnails.

The image files are the source of truth. The index (in the app's SQLite file) can be rebuilt from
them at any time by `scan()`, which reads metadata only, never pixels.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import sqlite3
import struct
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sd3desk.core.atomic import atomic_write_bytes
from sd3desk.core.errors import MetadataError
from sd3desk.core.files import check_regular, open_regular, walk
from sd3desk.core.metadata import read_metadata
from sd3desk.core.params import GenerationParams
from sd3desk.core.store import Store

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
SQLITE_INT_MAX = 2**63 - 1
# A row's columns after path, mtime_ns, size and created for a file without parameters: no
# prompts, seed, size or model, "{}" as parameters, source "none"
_NO_PARAMETERS = ("", "", None, None, None, "", "", "{}", "none")
# The most memory a thumbnail's decoded bitmap may take: 40 megapixels of RGBA (an 8K image
# decodes; a "decompression bomb" PNG of 100,000 x 100,000 tiny on disk is refused)
THUMBNAIL_DECODE_MAX = 160 * 2**20
BATCH = 500  # rows per transaction while scanning
_COLUMNS = (
    "id, path, created, prompt, negative_prompt, seed, width, height, model_name, model_hash, "
    "params, source, favourite"
)


@dataclass(frozen=True)
class ImageRow:
    """One indexed image."""

    id: int
    path: str
    created: float  # the file's modification time (seconds since the epoch)
    prompt: str
    negative_prompt: str
    seed: int | None
    width: int | None
    height: int | None
    model_name: str
    model_hash: str
    params_json: str
    source: str  # "sd3desk", "a1111", "comfyui", or "none" when the file carries no parameters
    favourite: bool

    @property
    def badge(self) -> str:
        """How it was made, when not from noise alone: "inpaint", "from image" or "hires"."""
        text = self.params_json
        if '"mask_image"' in text:
            return "inpaint"
        if '"source_image"' in text:
            return "from image"
        return "hires" if '"hires_scale"' in text else ""

    def params(self) -> GenerationParams | None:
        """The request that re-makes this image, when the file carried one."""
        data = json.loads(self.params_json)
        return GenerationParams.from_dict(data) if data else None


@dataclass(frozen=True)
class ScanResult:
    added: int
    updated: int
    removed: int
    unreadable: int


def _iter_images(folder: Path) -> Iterator[os.DirEntry]:
    """Image files below `folder` (day folders and any others), skipping hidden temp files."""
    return walk(folder, IMAGE_SUFFIXES)


# The gallery's "made by" filter: SQL over the parameters the index keeps (a field is in the
# JSON only when the request used it, see GenerationParams.to_dict).
MODES = {
    "txt2img": "json_extract(params, '$.source_image') IS NULL",
    "img2img": "json_extract(params, '$.source_image') IS NOT NULL "
    "AND json_extract(params, '$.mask_image') IS NULL",
    "inpaint": "json_extract(params, '$.mask_image') IS NOT NULL",
    "hires": "json_extract(params, '$.hires_scale') IS NOT NULL",
}


def _fts_query(text: str) -> str:
    """User words to an FTS5 query: every word must appear (as a prefix), quotes escaped."""
    words = re.findall(r"\w[\w'-]*", text.lower())
    return " AND ".join('"' + w.replace('"', '""') + '"*' for w in words)


class GalleryIndex:
    """Index of the images under the output folder and any other folders the user added (a
    batch's --out folder, another tool's outputs).

    Thread rule: use it from the thread that owns the Store (the GUI thread); a background
    rebuild opens its own Store on the same file.
    """

    def __init__(self, store: Store, folder: Path, extra: Sequence[Path | str] = ()) -> None:
        self.store = store
        self.db = store.db
        self.folder = Path(folder)
        self.extra = [Path(f) for f in extra]

    @property
    def folders(self) -> list[Path]:
        return [self.folder, *self.extra]

    # ------------------------------------------------------------------ keeping in step with files

    def _row_values(self, path: str, stat: os.stat_result) -> tuple[tuple, bool]:
        try:
            meta = read_metadata(path, fast=True)
        except MetadataError:
            meta = None
        except Exception:  # a reader's bug must not stop the scan: the file shows unreadable
            log.exception("reading the parameters of %s failed", path)
            meta = None
        if meta is None:
            return (path, stat.st_mtime_ns, stat.st_size, stat.st_mtime, *_NO_PARAMETERS), False
        p, missing = meta.params, meta.missing
        values = (
            path,
            stat.st_mtime_ns,
            stat.st_size,
            stat.st_mtime,
            p.prompt,
            p.negative_prompt,
            p.seed if p.seed is None or p.seed <= SQLITE_INT_MAX else None,  # (64-bit seeds)
            None if "width" in missing else p.width,
            None if "height" in missing else p.height,
            meta.model.name,
            meta.model.hash,
            json.dumps({k: v for k, v in p.to_dict().items() if k not in missing}),
            meta.source,
        )
        return values, True

    def add(self, path: Path | str) -> None:
        """Index one new or changed file (e.g. an image a job just wrote)."""
        path = str(path)
        values, _ = self._row_values(path, os.stat(path))
        self._upsert([values])

    def _upsert(self, rows: list[tuple]) -> None:
        self.db.executemany(
            "INSERT INTO images (path, mtime_ns, size, created, prompt, negative_prompt, seed, "
            "width, height, model_name, model_hash, params, source) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(path) DO UPDATE SET mtime_ns = excluded.mtime_ns, size = excluded.size, "
            "created = excluded.created, prompt = excluded.prompt, "
            "negative_prompt = excluded.negative_prompt, seed = excluded.seed, "
            "width = excluded.width, height = excluded.height, model_name = excluded.model_name, "
            "model_hash = excluded.model_hash, params = excluded.params, source = excluded.source",
            rows,
        )

    def scan(self, progress: Callable[[int, int], None] | None = None) -> ScanResult:
        """Bring the index in line with the files: add new, re-read changed, drop vanished ones.

        An empty index (first run, or a deleted database) is rebuilt in full this way.
        """
        known = {
            path: (mtime, size)
            for path, mtime, size in self.db.execute("SELECT path, mtime_ns, size FROM images")
        }
        found: dict[str, os.DirEntry] = {}  # (once each, when one folder is inside another)
        for folder in self.folders:
            for entry in _iter_images(folder):
                found.setdefault(entry.path, entry)
        entries = list(found.values())
        seen: set[str] = set()
        pending: list[tuple] = []
        added = updated = unreadable = 0
        for done, entry in enumerate(entries, start=1):
            seen.add(entry.path)
            try:
                stat = entry.stat()
            except OSError:
                continue
            before = known.get(entry.path)
            if before != (stat.st_mtime_ns, stat.st_size):
                values, readable = self._row_values(entry.path, stat)
                pending.append(values)
                added += before is None
                updated += before is not None
                unreadable += not readable
            if len(pending) >= BATCH:
                self._commit(pending)
            if progress is not None and (done % BATCH == 0 or done == len(entries)):
                progress(done, len(entries))
        self._commit(pending)
        gone = [(p,) for p in known if p not in seen]
        self.db.execute("BEGIN")
        self.db.executemany("DELETE FROM images WHERE path = ?", gone)
        self.db.execute("COMMIT")
        return ScanResult(added, updated, len(gone), unreadable)

    def _commit(self, pending: list[tuple]) -> None:
        """Write a batch in one transaction. A row the database refuses is written without its
        parameters instead, so one odd file never keeps a batch out of the index."""
        if not pending:
            return
        self.db.execute("BEGIN")
        try:
            self._upsert(pending)
        except (sqlite3.InterfaceError, sqlite3.DataError, OverflowError, ValueError):
            for row in pending:
                try:
                    self._upsert([row])
                except (sqlite3.InterfaceError, sqlite3.DataError, OverflowError, ValueError):
                    log.warning("indexing %s without parameters: the index refused them", row[0])
                    self._upsert([(*row[:4], *_NO_PARAMETERS)])
        self.db.execute("COMMIT")
        pending.clear()

    def forget(self, paths: list[str]) -> None:
        """Drop rows (after the files were moved to the trash)."""
        self.db.executemany("DELETE FROM images WHERE path = ?", [(p,) for p in paths])

    def set_favourite(self, image_id: int, favourite: bool) -> None:
        self.db.execute("UPDATE images SET favourite = ? WHERE id = ?", (int(favourite), image_id))

    # ------------------------------------------------------------------ reading

    def _where(
        self,
        text: str,
        model: str | None,
        size: tuple[int, int] | None,
        since: float | None,
        until: float | None,
        favourites: bool,
        mode: str | None = None,
    ) -> tuple[str, list[Any]]:
        clauses, args = [], []
        if mode is not None:
            clauses.append(MODES[mode])
        query = _fts_query(text)
        if query:
            clauses.append("id IN (SELECT rowid FROM images_text WHERE images_text MATCH ?)")
            args.append(query)
        if model is not None:
            clauses.append("model_name = ?")
            args.append(model)
        if size is not None:
            clauses.append("width = ? AND height = ?")
            args += list(size)
        if since is not None:
            clauses.append("created >= ?")
            args.append(since)
        if until is not None:
            clauses.append("created < ?")
            args.append(until)
        if favourites:
            clauses.append("favourite = 1")
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", args

    def search(
        self,
        text: str = "",
        *,
        model: str | None = None,
        size: tuple[int, int] | None = None,
        since: float | None = None,
        until: float | None = None,
        favourites: bool = False,
        mode: str | None = None,
        newest_first: bool = True,
        limit: int = 200,
        offset: int = 0,
    ) -> list[ImageRow]:
        """Images matching every given filter; `text` searches prompt and negative prompt;
        `mode` is a key of MODES (how the image was made)."""
        where, args = self._where(text, model, size, since, until, favourites, mode)
        order = "DESC" if newest_first else "ASC"
        rows = self.db.execute(
            # Walk the time index and stop at `limit` matches, rather than sorting every match
            # of a common word (measured at 100,000 rows: 75 ms -> see bench/gallery_index.py).
            f"SELECT {_COLUMNS} FROM images INDEXED BY images_by_time{where} "
            f"ORDER BY created {order} "
            "LIMIT ? OFFSET ?",
            [*args, limit, offset],
        ).fetchall()
        return [ImageRow(*row[:12], favourite=bool(row[12])) for row in rows]

    def get(self, image_id: int) -> ImageRow | None:
        row = self.db.execute(f"SELECT {_COLUMNS} FROM images WHERE id = ?", (image_id,)).fetchone()
        return ImageRow(*row[:12], favourite=bool(row[12])) if row else None

    def count(self, text: str = "", **filters: Any) -> int:
        where, args = self._where(
            text,
            filters.get("model"),
            filters.get("size"),
            filters.get("since"),
            filters.get("until"),
            filters.get("favourites", False),
            filters.get("mode"),
        )
        return self.db.execute(f"SELECT COUNT(*) FROM images{where}", args).fetchone()[0]

    def models(self) -> list[str]:
        """Model names present, for the filter menu."""
        rows = self.db.execute("SELECT DISTINCT model_name FROM images WHERE model_name != ''")
        return sorted(r[0] for r in rows)


# ---------------------------------------------------------------------- thumbnails


def thumbnail_path(cache_dir: Path, image: Path | str, mtime_ns: int, size: int = 256) -> Path:
    """Where the thumbnail of this version of `image` is cached (path + mtime key)."""
    key = hashlib.sha1(f"{image}|{mtime_ns}|{size}".encode()).hexdigest()
    return Path(cache_dir) / "thumbnails" / key[:2] / f"{key[2:]}.webp"


class ThumbnailError(ValueError):
    """An image no thumbnail can be made of (damaged, or not an image Pillow decodes)."""


class ImageTooLargeError(ThumbnailError):
    """An image whose bitmap would take more memory than a thumbnail may."""


# What Pillow raises on damaged files, besides OSError (truncated data, bad headers)
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error, zlib.error)


def make_thumbnail(image: Path | str, cache_dir: Path, size: int = 256) -> Path:
    """The cached thumbnail of `image`, made now if missing. Call it off the GUI thread.

    Only the header is read before deciding: JPEGs decode at a reduced scale (draft), and any
    image whose decoded bitmap would pass THUMBNAIL_DECODE_MAX is refused (ImageTooLargeError)
    instead of decoded, however small its file (a "decompression bomb"). A damaged image is a
    ThumbnailError; a file that is gone or not a regular file, an OSError."""
    image = Path(image)
    target = thumbnail_path(cache_dir, image, check_regular(image).st_mtime_ns, size)
    if target.exists():
        return target
    import warnings

    from PIL import Image

    with open_regular(image) as handle, warnings.catch_warnings():
        # (our budget is below Pillow's warning level; larger images are refused below)
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            source = Image.open(handle)
        except Image.DecompressionBombError as exc:
            raise ImageTooLargeError(f"{image.name}: {exc}") from exc
        except _DECODE_ERRORS as exc:
            raise ThumbnailError(f"{image.name} is not an image Pillow can read: {exc}") from exc
        with source:
            source.draft("RGB", (size, size))  # JPEG: decode at 1/2, 1/4 or 1/8 scale
            width, height = source.size
            needed = width * height * _bytes_per_pixel(source.mode)
            if needed > THUMBNAIL_DECODE_MAX:
                raise ImageTooLargeError(
                    f"{image.name} is {width}x{height} pixels ({needed // 2**20} MB decoded); "
                    f"thumbnails are made of images up to {THUMBNAIL_DECODE_MAX // 2**20} MB"
                )
            try:
                source.thumbnail((size, size))
                buffer = io.BytesIO()
                source.convert("RGB").save(buffer, format="WEBP", quality=80)
            except _DECODE_ERRORS as exc:
                raise ThumbnailError(f"{image.name} is damaged: {exc}") from exc
    atomic_write_bytes(target, buffer.getvalue())
    return target


def _bytes_per_pixel(mode: str) -> int:
    """What Pillow keeps per pixel in memory: one byte for 1/L/P, two for 16-bit grey, four
    for everything else (it stores RGB in 32-bit pixels, like RGBA, I and F)."""
    if mode in ("1", "L", "P"):
        return 1
    return 2 if mode.startswith("I;16") else 4


def export_image(source: Path | str, target: Path | str) -> Path:
    """Save `source` as PNG, JPEG or WebP (by the target's suffix), keeping its parameters:
    PNG text chunks for PNG; for JPEG and WebP, A1111's text in EXIF UserComment and our
    record in XMP (see metadata.writing)."""
    from sd3desk.core.metadata import export_fields, png_info

    source, target = Path(source), Path(target)
    formats = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
    kind = formats.get(target.suffix.lower())
    if kind is None:
        raise ValueError(f"export as .png, .jpg or .webp, not {target.suffix or 'no suffix'}")
    try:
        meta = read_metadata(source)
    except MetadataError:
        meta = None
    buffer = io.BytesIO()
    from PIL import Image

    with Image.open(source) as image:
        rgb = image.convert("RGB")
        if kind == "PNG":
            rgb.save(buffer, format=kind, pnginfo=png_info(meta) if meta else None)
        else:
            extra = export_fields(meta, kind) if meta is not None else {}
            rgb.save(buffer, format=kind, quality=95, **extra)
    atomic_write_bytes(target, buffer.getvalue())
    return target
