"""The text fields an image file carries, read from its container without decoding pixels.

Every read is bounded: chunk and segment headers are walked, not trusted, and no field over
MAX_FIELD bytes is read into memory.

Layouts (from the formats' specifications; the code is our own):
- PNG (ISO/IEC 15948): signature, then chunks of length, type, data, CRC-32; text sits in
  tEXt (Latin-1 by the spec, though some tools write UTF-8), zTXt (deflated) and iTXt (UTF-8).
- JPEG (ITU T.81 / JFIF): segments of a 0xFF marker and a 2-byte big-endian length up to the
  start of scan; EXIF and XMP in APP1 ("Exif\\0\\0" / "http://ns.adobe.com/xap/1.0/\\0"), a
  comment in COM.
- WebP (RIFF): "RIFF", size, "WEBP", then chunks of a FourCC, a little-endian 32-bit size and
  the data padded to an even length; "EXIF" holds a TIFF structure, "XMP " the packet.
- EXIF (CIPA DC-008): UserComment (tag 0x9286 in the Exif sub-IFD) starts with an 8-byte
  character code ("UNICODE\\0", "ASCII\\0\\0\\0" or zeros) before the text.
"""

from __future__ import annotations

import zlib
from typing import BinaryIO

from sd3desk.core.errors import MetadataError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_FIELD = 8 * 1024 * 1024  # bytes of one text field, compressed or not; real ones are KBs
MAX_TOTAL = 32 * 1024 * 1024  # bytes of text in one file
MAX_SEGMENTS = 4096  # JPEG segments or WebP chunks walked before the pixels; real files: < 20
EXIF_IFD, USER_COMMENT = 0x8769, 0x9286
XMP_HEADER = b"http://ns.adobe.com/xap/1.0/\0"
# IFD0 text tags ComfyUI's WebP/JPEG savers put their graphs in ("prompt:{...}", "workflow:{...}")
IFD0_TEXT_TAGS = {0x010E: "ImageDescription", 0x010F: "Make", 0x0110: "Model"}
KEYWORD_MAX = 79  # bytes of a PNG text keyword


def image_kind(head: bytes) -> str | None:
    """ "png", "jpeg" or "webp" from a file's first 12 bytes; None for anything else."""
    if head.startswith(PNG_SIGNATURE):
        return "png"
    if head.startswith(b"\xff\xd8"):
        return "jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None


def _file_size(handle: BinaryIO) -> int:
    handle.seek(0, 2)
    size = handle.tell()
    handle.seek(0)
    return size


# ---------------------------------------------------------------- PNG


def read_png_text(handle: BinaryIO, stop_when: frozenset[str] = frozenset()) -> dict[str, str]:
    """All tEXt/zTXt/iTXt chunks of a PNG, walking chunk headers and skipping image data.

    With `stop_when`, stop at the first image data chunk once one of those keywords was found
    (our own files put their text first): a truncated tail then goes unnoticed.
    """
    size = _file_size(handle)
    if handle.read(8) != PNG_SIGNATURE:
        raise MetadataError("not a PNG file")
    position = 8
    texts: dict[str, str] = {}
    total = 0
    while True:
        handle.seek(position)
        header = handle.read(8)
        if len(header) < 8:
            raise MetadataError("the PNG file is truncated (no end chunk)")
        length = int.from_bytes(header[:4], "big")
        kind = header[4:8]
        end = position + 8 + length + 4
        if length > 0x7FFFFFFF or end > size:
            raise MetadataError("the PNG file is truncated or damaged (a chunk runs past its end)")
        if kind == b"IEND" or (kind == b"IDAT" and not stop_when.isdisjoint(texts)):
            return texts
        if kind in (b"tEXt", b"zTXt", b"iTXt"):
            if length > MAX_FIELD:
                raise MetadataError(f"a PNG text chunk is {length} bytes; refusing more than 8 MB")
            data = handle.read(length)
            crc = int.from_bytes(handle.read(4), "big")
            if zlib.crc32(kind + data) != crc:
                raise MetadataError("a PNG text chunk is damaged (checksum mismatch)")
            key, text = _decode_text_chunk(kind, data)
            total += len(text)
            if total > MAX_TOTAL:
                raise MetadataError("the PNG file holds more than 32 MB of text; refusing it")
            texts.setdefault(key, text)
        position = end


def _inflate(data: bytes) -> bytes:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, MAX_FIELD)
    except zlib.error as exc:
        raise MetadataError("a compressed PNG text chunk is damaged") from exc
    if inflater.unconsumed_tail:
        raise MetadataError("a compressed PNG text chunk expands past 8 MB; refusing it")
    return out


def _latin1_or_utf8(data: bytes) -> str:
    """tEXt/zTXt are Latin-1 by the PNG spec, but some tools (Stability Matrix, scripts using
    Pillow's add_text with str) write UTF-8 there. Bytes that decode as UTF-8 are taken as
    UTF-8: Latin-1 text almost never forms valid multi-byte UTF-8 sequences by chance."""
    if data.isascii():
        return data.decode("ascii")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _decode_text_chunk(kind: bytes, data: bytes) -> tuple[str, str]:
    key_bytes, sep, rest = data.partition(b"\0")
    if not sep or not 1 <= len(key_bytes) <= KEYWORD_MAX:
        raise MetadataError("a PNG text chunk has no valid keyword")
    key = key_bytes.decode("latin-1")
    if kind == b"tEXt":
        return key, _latin1_or_utf8(rest)
    if kind == b"zTXt":
        return key, _latin1_or_utf8(_inflate(rest[1:]))
    if len(rest) < 2:
        raise MetadataError("a PNG iTXt chunk is too short")
    compressed, body = rest[0], rest[2:]
    parts = body.split(b"\0", 2)
    if len(parts) != 3:
        raise MetadataError("a PNG iTXt chunk is malformed")
    text = parts[2]
    if compressed:
        text = _inflate(text)
    return key, text.decode("utf-8", errors="replace")


# ---------------------------------------------------------------- JPEG and WebP


def _jpeg_segments(handle: BinaryIO, size: int) -> tuple[bytes | None, bytes | None, bytes | None]:
    """(EXIF TIFF data, XMP packet, comment) from the segments before the first scan."""
    exif = xmp = comment = None
    position = 2
    for _ in range(MAX_SEGMENTS):
        handle.seek(position)
        header = handle.read(4)
        if len(header) < 4 or header[0] != 0xFF:
            raise MetadataError("the JPEG file is truncated or damaged before its image data")
        marker = header[1]
        if marker == 0xFF:  # fill byte before a marker
            position += 1
            continue
        if marker == 0xD8 or 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without length
            position += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no metadata after this
            break
        length = int.from_bytes(header[2:4], "big")
        if length < 2 or position + 2 + length > size:
            raise MetadataError(
                "the JPEG file is truncated or damaged (a segment runs past the end)"
            )
        if marker in (0xE1, 0xFE):
            data = handle.read(length - 2)
            if marker == 0xFE and comment is None:
                comment = data
            elif data.startswith(b"Exif\0\0") and exif is None:
                exif = data[6:]
            elif data.startswith(XMP_HEADER) and xmp is None:
                xmp = data[len(XMP_HEADER) :]
        position += 2 + length
    return exif, xmp, comment


def _webp_chunks(handle: BinaryIO, size: int) -> tuple[bytes | None, bytes | None]:
    """(EXIF TIFF data, XMP packet) of a WebP file."""
    exif = xmp = None
    position = 12
    for _ in range(MAX_SEGMENTS):
        handle.seek(position)
        header = handle.read(8)
        if len(header) < 8:
            break
        fourcc, length = header[:4], int.from_bytes(header[4:8], "little")
        if position + 8 + length > size:
            raise MetadataError("the WebP file is truncated or damaged (a chunk runs past its end)")
        if fourcc in (b"EXIF", b"XMP "):
            if length > MAX_FIELD:
                raise MetadataError(f"a WebP {fourcc.decode().strip()} chunk is over 8 MB")
            data = handle.read(length)
            if fourcc == b"EXIF" and exif is None:
                exif = data[6:] if data.startswith(b"Exif\0\0") else data
            elif fourcc == b"XMP " and xmp is None:
                xmp = data
        position += 8 + length + (length & 1)
    return exif, xmp


def read_jpeg_webp_text(handle: BinaryIO, kind: str) -> dict[str, str]:
    """The text fields of a JPEG or WebP: "parameters" (EXIF UserComment, where A1111, Forge
    and most tools write their text), "xmp" (the packet), "comment" (JPEG COM) and the IFD0
    text tags by name ("Make", "Model", "ImageDescription")."""
    size = _file_size(handle)
    if kind == "jpeg":
        exif, xmp, comment = _jpeg_segments(handle, size)
    else:
        (exif, xmp), comment = _webp_chunks(handle, size), None
    texts: dict[str, str] = {}
    if exif:
        texts.update(_exif_texts(exif))
    if xmp:
        texts["xmp"] = xmp.decode("utf-8", errors="replace")
    if comment:
        texts["comment"] = _latin1_or_utf8(comment).rstrip("\0")
    return texts


def _exif_texts(tiff: bytes) -> dict[str, str]:
    from PIL import Image  # here, not at the top: the window starts faster without Pillow

    exif = Image.Exif()
    try:
        exif.load(tiff)
        ifd0 = {name: exif.get(tag) for tag, name in IFD0_TEXT_TAGS.items()}
        comment = exif.get_ifd(EXIF_IFD).get(USER_COMMENT)
    except Exception as exc:  # Pillow raises many types for damaged EXIF
        raise MetadataError("the image's EXIF data is damaged") from exc
    texts = {name: value.rstrip("\0") for name, value in ifd0.items() if isinstance(value, str)}
    if isinstance(comment, (bytes, str)) and comment:
        texts["parameters"] = decode_user_comment(comment, little_endian=tiff[:2] == b"II")
    return texts


def decode_user_comment(raw: bytes | str, little_endian: bool = False) -> str:
    """EXIF UserComment: an 8-byte character code, then the text. `little_endian`: the TIFF
    structure's own byte order ("II"), which decides only when the text itself cannot."""
    if isinstance(raw, str):
        return raw
    prefix, body = raw[:8], raw[8:]
    if prefix == b"UNICODE\0":
        return _utf16(body, little_endian)
    if prefix.startswith(b"ASCII"):
        return body.decode("ascii", errors="replace").rstrip("\0")
    return (body if prefix == b"\0" * 8 else raw).decode("utf-8", errors="replace").rstrip("\0")


def _utf16(body: bytes, little_endian: bool) -> str:
    """UserComment's "UNICODE" text. The standard says UCS-2 in the TIFF's byte order, but tools
    write either (A1111 through piexif: big-endian whatever the TIFF's order). A byte-order mark
    decides when present. Else the zero bytes do: every ASCII character (spaces, digits, A1111's
    "Steps: 28, ..." line) puts its zero byte first in big-endian and second in little-endian,
    counted over the whole text, so a prompt that starts with CJK characters (no zero bytes)
    cannot tip it. Text without a single ASCII character follows the TIFF's byte order."""
    body = body[: len(body) - len(body) % 2]
    if body[:2] in (b"\xfe\xff", b"\xff\xfe"):
        order = "utf-16-be" if body[:2] == b"\xfe\xff" else "utf-16-le"
        return body[2:].decode(order, errors="replace").rstrip("\0")
    zeros_first, zeros_second = body[0::2].count(0), body[1::2].count(0)
    if zeros_first != zeros_second:
        little_endian = zeros_second > zeros_first
    order = "utf-16-le" if little_endian else "utf-16-be"
    return body.decode(order, errors="replace").rstrip("\0")
