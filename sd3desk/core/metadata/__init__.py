"""Parameters inside image files: we write A1111's text and our lossless JSON record; we read
ours, A1111/Forge's, ComfyUI's graphs, InvokeAI's, NovelAI's, Fooocus's and SwarmUI's.

- `containers`: the text fields of a PNG, JPEG or WebP, read with bounds, never pixels.
- `record`: what the metadata says (ImageMetadata) and our own JSON record.
- `a1111`, `comfyui`, `others`: the other tools' formats.
- `writing`: what our images and exports carry.
"""

from __future__ import annotations

from pathlib import Path

from sd3desk.core.errors import InvalidParamsError, MetadataError
from sd3desk.core.files import NotRegularFileError, open_regular
from sd3desk.core.metadata import others
from sd3desk.core.metadata.a1111 import a1111_text, parse_a1111
from sd3desk.core.metadata.comfyui import parse_comfyui
from sd3desk.core.metadata.containers import (
    decode_user_comment,
    image_kind,
    read_jpeg_webp_text,
    read_png_text,
)
from sd3desk.core.metadata.record import (
    FORMAT_KEY,
    ImageMetadata,
    JobRef,
    ModelIdentity,
    json_text,
    parse_json,
)
from sd3desk.core.metadata.writing import (
    A1111_KEY,
    exif_with_comment,
    export_fields,
    png_info,
    record_from_xmp,
    xmp_packet,
)

__all__ = [
    "A1111_KEY",
    "FORMAT_KEY",
    "ImageMetadata",
    "JobRef",
    "ModelIdentity",
    "a1111_text",
    "decode_user_comment",
    "exif_with_comment",
    "export_fields",
    "json_text",
    "parse_a1111",
    "parse_comfyui",
    "parse_json",
    "parse_texts",
    "png_info",
    "read_metadata",
    "read_texts",
    "xmp_packet",
]

# Keywords after which a fast read of a PNG may stop at the image data: ours come first
_FAST_STOP = frozenset({FORMAT_KEY, A1111_KEY})


def read_texts(path: Path | str, fast: bool = False) -> dict[str, str]:
    """The text fields of a PNG, JPEG or WebP file (see `containers`), pixels never decoded.

    With `fast` (indexing thousands of files), a PNG is read only up to its image data when
    parameters were found before it, as in our own files. Only regular files are opened.
    """
    path = Path(path)
    try:
        with open_regular(path) as handle:
            kind = image_kind(handle.read(12))
            handle.seek(0)
            if kind == "png":
                return read_png_text(handle, _FAST_STOP if fast else frozenset())
            if kind is not None:
                return read_jpeg_webp_text(handle, kind)
    except NotRegularFileError as exc:
        raise MetadataError(f"{exc.strerror}, not an image file") from exc
    except OSError as exc:
        raise MetadataError(f"cannot read {path.name}: {exc.strerror or exc}") from exc
    raise MetadataError(f"{path.name} is not a PNG, JPEG or WebP image")


def read_metadata(path: Path | str, fast: bool = False) -> ImageMetadata:
    """Parameters embedded in a PNG, JPEG or WebP file, from any format we read.

    Reads headers and text only, never pixels. Raises MetadataError with a plain reason.
    """
    return parse_texts(read_texts(path, fast), Path(path).name)


def parse_texts(texts: dict[str, str], name: str = "image") -> ImageMetadata:
    """Pick the richest known format among an image's text fields and parse it."""
    try:
        return _parse(texts, name)
    except InvalidParamsError as exc:
        raise MetadataError(f"{name} has generation parameters that make no sense: {exc}") from exc


def _parse(texts: dict[str, str], name: str) -> ImageMetadata:
    if FORMAT_KEY in texts:
        return parse_json(texts[FORMAT_KEY])
    record = record_from_xmp(texts["xmp"]) if "xmp" in texts else None
    if record is not None:
        return parse_json(record)
    found = others.parse(texts)
    if found is not None:
        return found
    if A1111_KEY in texts and not texts[A1111_KEY].lstrip().startswith("{"):
        return parse_a1111(texts[A1111_KEY])
    graph = others.comfyui_graph(texts)
    if graph is not None:
        return parse_comfyui(graph)
    if A1111_KEY in texts:
        raise MetadataError(f"{name} has JSON parameters in a format sd3desk does not know")
    raise MetadataError(
        f"{name} carries no generation parameters (sd3desk, A1111, ComfyUI, InvokeAI, NovelAI, "
        "Fooocus or SwarmUI)"
    )
