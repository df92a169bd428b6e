"""File hashes as A1111 and Civitai name files: a model by the first 10 hex digits of its
SHA-256, a LoRA by the SHA-256 of its tensors (kohya's "addnet" hash, Civitai's AutoV3), each
computed once and cached by path, size and mtime."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from sd3desk.core.atomic import atomic_write_bytes

SHORT = 10
LORA_SHORT = 12  # A1111 writes a LoRA's hash with 12 hex digits ("Lora hashes")
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


def _digest_rest(digest: Any, handle: BinaryIO) -> None:
    while block := handle.read(_CHUNK):
        digest.update(block)


def sha256_of(paths: Sequence[Path]) -> str:
    """SHA-256 over the files' bytes in order (one file: that file's own hash)."""
    if len(paths) == 1:
        known = _known_sha256(paths[0])
        if known:
            return known
    digest = hashlib.sha256()
    for path in paths:
        with path.open("rb") as handle:
            _digest_rest(digest, handle)
    return digest.hexdigest()


def tensor_sha256(path: Path) -> str:
    """SHA-256 of a .safetensors file's bytes after its header: the hash kohya's sd-scripts
    call "addnet", A1111 names LoRAs by (modules/hashes.py, `addnet_hash_safetensors`) and
    Civitai lists as AutoV3. Metadata edits leave it unchanged."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        length = int.from_bytes(handle.read(8), "little")
        handle.seek(8 + length)
        _digest_rest(digest, handle)
    return digest.hexdigest()


def cached_hash(
    paths: Sequence[Path], cache_file: Path | None, compute: Callable[[list[Path]], str], kind: str
) -> str:
    """`compute(paths)`, remembered in `cache_file` under `kind` by the files' paths, sizes and
    modification times (hashing a 10 GB file takes a while)."""
    paths = [Path(p).resolve() for p in paths]
    key = os.pathsep.join(str(p) for p in paths)
    stamp = [_stamp(p) for p in paths]
    cache = read_cache(cache_file)
    entry = cache.get(key)
    if isinstance(entry, dict) and entry.get("stamp") == stamp and isinstance(entry.get(kind), str):
        return entry[kind]
    full = compute(paths)
    if cache_file is not None:
        fresh = entry if isinstance(entry, dict) and entry.get("stamp") == stamp else {}
        cache[key] = {**fresh, "stamp": stamp, kind: full}
        # A cache we cannot write only costs time on the next run.
        with contextlib.suppress(OSError):
            atomic_write_bytes(cache_file, json.dumps(cache, indent=1).encode("utf-8"))
    return full


def read_cache(cache_file: Path | None) -> dict[str, dict]:
    """The hash cache as stored (path -> {"stamp", "sha256", "tensors"}); {} when unreadable."""
    if cache_file is None:
        return {}
    try:
        cache = json.loads(cache_file.read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return cache if isinstance(cache, dict) else {}


def model_hash(paths: Sequence[Path], cache_file: Path | None = None) -> str:
    """First 10 hex digits of SHA-256 of `paths`, cached in `cache_file` by path, size and mtime."""
    return cached_hash(paths, cache_file, sha256_of, "sha256")[:SHORT]


def lora_hash(path: Path, cache_file: Path | None = None) -> str:
    """A LoRA's full tensor SHA-256 (see `tensor_sha256`), cached like `model_hash`."""
    return cached_hash([path], cache_file, lambda p: tensor_sha256(p[0]), "tensors")
