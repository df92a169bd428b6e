"""Short model hashes (first 10 hex digits of SHA-256, as A1111 and Civitai use), computed once."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

from sd3desk.core.atomic import atomic_write_bytes

SHORT = 10
_BLOB_NAME = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 8 * 1024 * 1024


def _stamp(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def _known_sha256(path: Path) -> str | None:
    """The Hugging Face cache names each large (LFS) file's blob after its SHA-256: reuse it."""
    target = path.resolve()
    if target.parent.name == "blobs" and _BLOB_NAME.match(target.name):
        return target.name
    return None


def sha256_of(paths: Sequence[Path]) -> str:
    """SHA-256 over the files' bytes in order (one file: that file's own hash)."""
    if len(paths) == 1:
        known = _known_sha256(paths[0])
        if known:
            return known
    digest = hashlib.sha256()
    for path in paths:
        with path.open("rb") as handle:
            while block := handle.read(_CHUNK):
                digest.update(block)
    return digest.hexdigest()


def model_hash(paths: Sequence[Path], cache_file: Path | None = None) -> str:
    """First 10 hex digits of SHA-256 of `paths`, cached in `cache_file` by path, size and mtime."""
    paths = [Path(p).resolve() for p in paths]
    key = os.pathsep.join(str(p) for p in paths)
    stamp = [_stamp(p) for p in paths]
    cache: dict[str, dict] = {}
    if cache_file is not None:
        try:
            cache = json.loads(cache_file.read_text("utf-8"))
            if not isinstance(cache, dict):
                cache = {}
        except (OSError, ValueError):
            cache = {}
        entry = cache.get(key)
        if isinstance(entry, dict) and entry.get("stamp") == stamp:
            return str(entry.get("sha256", ""))[:SHORT]
    full = sha256_of(paths)
    if cache_file is not None:
        cache[key] = {"stamp": stamp, "sha256": full}
        # A cache we cannot write only costs time on the next run.
        with contextlib.suppress(OSError):
            atomic_write_bytes(cache_file, json.dumps(cache, indent=1).encode("utf-8"))
    return full[:SHORT]
