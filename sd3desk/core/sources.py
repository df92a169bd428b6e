"""Pictures a job starts from (img2img sources, inpainting masks), stored once by content.

A job names its pictures by the SHA-256 of their file, so a queued job survives a crash and a
re-run months later finds the same pixels however the original file was moved or edited. The
store keeps each picture as `<data>/sources/<first two hex digits>/<digest>`, written under a
temporary name and renamed; a file is never changed after that, so nothing is half-written.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from sd3desk.core.atomic import atomic_write_bytes
from sd3desk.core.errors import FieldError, InvalidParamsError
from sd3desk.core.files import open_regular
from sd3desk.core.params import (
    SIZE_MAX,
    SIZE_MIN,
    SIZE_MULTIPLE,
    GenerationParams,
)

if TYPE_CHECKING:  # (Pillow is imported when a picture is first used: the window starts sooner)
    from PIL import Image

SOURCE_FILE_MAX = 200 * 2**20  # bytes of one picture file
SOURCE_PIXELS_MAX = 8192 * 8192  # decoded size of one picture (a bigger one is surely a mistake)
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError)


class SourceStore:
    """The content-addressed pictures of one data folder.

    Thread rule: any thread; files are only ever added whole.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def path(self, digest: str) -> Path:
        return self.folder / digest[:2] / digest

    def __contains__(self, digest: str) -> bool:
        return bool(digest) and self.path(digest).is_file()

    def put(self, data: bytes, field: str = "source_image") -> str:
        """Store a picture file's bytes (PNG, JPEG, WebP, …) after checking it decodes within
        the limits; returns its digest. InvalidParamsError naming `field` when it does not."""
        if len(data) > SOURCE_FILE_MAX:
            raise _refused(field, f"is {len(data) // 2**20} MB; at most {SOURCE_FILE_MAX >> 20}")
        _decode(io.BytesIO(data), field, "the picture")
        digest = hashlib.sha256(data).hexdigest()
        target = self.path(digest)
        if not target.is_file():
            atomic_write_bytes(target, data)
        return digest

    def put_file(self, path: Path | str, field: str = "source_image") -> str:
        """Store the picture at `path` (a regular file only)."""
        try:
            with open_regular(path) as handle:
                data = handle.read(SOURCE_FILE_MAX + 1)
        except OSError as exc:
            reason = f"{Path(path).name} cannot be read ({exc.strerror or exc})"
            raise _refused(field, reason) from exc
        return self.put(data, field)

    def put_image(self, image: Image.Image, field: str = "source_image") -> str:
        """Store a picture made in memory (pasted, or a painted mask) as PNG."""
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return self.put(buffer.getvalue(), field)

    def open(self, digest: str, field: str = "source_image") -> Image.Image:
        """The stored picture, decoded (RGB for a source, L for a mask), its EXIF orientation
        applied; InvalidParamsError naming `field` when it is gone or damaged."""
        path = self.path(digest)
        try:
            handle = open_regular(path)
        except FileNotFoundError:
            raise _refused(
                field,
                f"the stored picture {digest[:12]}… is gone from {self.folder} (deleted?); "
                "pick the picture again",
            ) from None
        except OSError as exc:
            raise _refused(field, f"the stored picture cannot be read ({exc})") from exc
        with handle:
            image = _decode(handle, field, f"the stored picture {digest[:12]}…")
        return image.convert("L" if field == "mask_image" else "RGB")

    def check(self, params: GenerationParams) -> None:
        """The pictures `params` names are here, readable, and the mask fits the source."""
        self.pictures(params)

    def pictures(self, params: GenerationParams) -> tuple[Image.Image | None, Image.Image | None]:
        """The source picture and mask `params` names, decoded (None where it names none);
        InvalidParamsError naming every field whose picture is gone, damaged or, for the
        mask, not the source's size."""
        errors: list[FieldError] = []
        found: dict[str, Image.Image] = {}
        for field in ("source_image", "mask_image"):
            digest = getattr(params, field)
            if not digest:
                continue
            try:
                found[field] = self.open(digest, field)
            except InvalidParamsError as exc:
                errors += exc.errors
        source, mask = found.get("source_image"), found.get("mask_image")
        if source is not None and mask is not None and mask.size != source.size:
            errors.append(
                FieldError(
                    "mask_image",
                    f"is {mask.width}x{mask.height}; it must be the source's size, "
                    f"{source.width}x{source.height}",
                )
            )
        if errors:
            raise InvalidParamsError(errors)
        return source, mask


def _refused(field: str, reason: str) -> InvalidParamsError:
    return InvalidParamsError([FieldError(field, reason)])


def _decode(handle, field: str, what: str) -> Image.Image:
    from PIL import Image, ImageOps

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(handle)
            if image.width * image.height > SOURCE_PIXELS_MAX:
                raise _refused(
                    field,
                    f"{what} is {image.width}x{image.height} pixels; at most "
                    f"{SOURCE_PIXELS_MAX:,} pixels",
                )
            image.load()
            return ImageOps.exif_transpose(image)
        except Image.DecompressionBombError as exc:
            raise _refused(field, f"{what} is too large to decode ({exc})") from exc
        except _DECODE_ERRORS as exc:
            raise _refused(field, f"{what} is not a picture Pillow can read ({exc})") from exc


def suggested_size(width: int, height: int, max_side: int | None = None) -> tuple[int, int]:
    """A valid generation size for a picture of `width` x `height`: its own aspect, as close to
    its own size as the limits allow (256 up to the model's largest side, multiples of 16)."""
    top = SIZE_MAX if max_side is None else min(SIZE_MAX, max_side)
    scale = min(1.0, top / max(width, height))
    scale = max(scale, SIZE_MIN / min(width, height))
    scale = min(scale, top / max(width, height))  # (a very long strip: the long side wins)

    def side(value: float) -> int:
        rounded = round(value * scale / SIZE_MULTIPLE) * SIZE_MULTIPLE
        return max(SIZE_MIN, min(top - top % SIZE_MULTIPLE, rounded))

    return side(width), side(height)


def fit(image: Image.Image, width: int, height: int) -> Image.Image:
    """`image` scaled (Lanczos) to cover `width` x `height`, then cropped to it around the
    centre (what A1111 calls "crop and resize"): what the job runs on, as the form shows it."""
    from PIL import Image, ImageOps

    method = Image.Resampling.LANCZOS
    return ImageOps.fit(image, (width, height), method=method, centering=(0.5, 0.5))
