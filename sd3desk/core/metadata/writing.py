"""Metadata written into our images and exports: A1111's text for every other tool, our JSON
record for exact re-runs.

- PNG: a "parameters" text chunk (A1111's) and an "sd3desk" iTXt chunk (our record).
- JPEG/WebP: A1111's text in EXIF UserComment, as A1111 writes it ("UNICODE\\0", then
  UTF-16BE), and our record in an XMP packet (an element of our own namespace), since EXIF has
  no field for a second text of any length.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING
from xml.sax.saxutils import escape

from sd3desk.core.metadata.a1111 import a1111_text
from sd3desk.core.metadata.containers import EXIF_IFD, USER_COMMENT
from sd3desk.core.metadata.record import FORMAT_KEY, ImageMetadata, json_text

if TYPE_CHECKING:  # Pillow is imported where pixels or EXIF are touched: the window
    from PIL import PngImagePlugin  # starts faster without it

A1111_KEY = "parameters"
TIFF_LONG, TIFF_UNDEFINED = 4, 7  # field types (TIFF 6.0, section 2)
XMP_NAMESPACE = "https://github.com/sd3desk/sd3desk/ns/record/1.0/"
XMP_ELEMENT = f"{FORMAT_KEY}:record"
JPEG_XMP_MAX = 65_000  # one APP1 segment holds 65,533 bytes, less XMP's own header


def png_info(meta: ImageMetadata) -> PngImagePlugin.PngInfo:
    """PNG text chunks for `meta`; Pillow writes them before the image data."""
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text(A1111_KEY, a1111_text(meta))  # tEXt when Latin-1, else iTXt (UTF-8)
    info.add_itxt(FORMAT_KEY, json_text(meta), zip=True)
    return info


def exif_with_comment(text: str) -> bytes:
    """EXIF (the "Exif\\0\\0" payload JPEG's APP1 and WebP's EXIF chunk carry) holding only
    UserComment with `text` the way A1111 writes it: "UNICODE\\0", then UTF-16BE.

    Built here because Pillow types a bytes value BYTE, while the EXIF standard types
    UserComment UNDEFINED: piexif, A1111's reader, hands a BYTE value back as a tuple, and
    A1111's read path fails on it."""
    comment = b"UNICODE\0" + text.encode("utf-16-be")
    # big-endian TIFF: header, IFD0 with one entry (LONG: where the Exif IFD starts), the Exif
    # IFD with one entry (UNDEFINED: the comment's length and where it starts), the comment
    exif_ifd = 8 + 2 + 12 + 4
    data = exif_ifd + 2 + 12 + 4
    tiff = b"MM\0\x2a" + struct.pack(">I", 8)
    tiff += struct.pack(">HHHII", 1, EXIF_IFD, TIFF_LONG, 1, exif_ifd) + struct.pack(">I", 0)
    tiff += struct.pack(">HHHII", 1, USER_COMMENT, TIFF_UNDEFINED, len(comment), data)
    tiff += struct.pack(">I", 0) + comment  # (no next IFD), then the value
    return b"Exif\0\0" + tiff


def xmp_packet(meta: ImageMetadata) -> bytes:
    """An XMP packet holding our JSON record as the text of one element."""
    record = escape(json_text(meta))
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">'
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        f'<rdf:Description rdf:about="" xmlns:{FORMAT_KEY}="{XMP_NAMESPACE}">'
        f"<{XMP_ELEMENT}>{record}</{XMP_ELEMENT}>"
        "</rdf:Description></rdf:RDF></x:xmpmeta>"
        '<?xpacket end="w"?>'
    ).encode()


def record_from_xmp(packet: str) -> str | None:
    """Our JSON record from an XMP packet, found by its element (no XML parser runs on a
    hostile packet: entity expansion and deep nesting cannot happen)."""
    from html import unescape

    start = packet.find(f"<{XMP_ELEMENT}>")
    end = packet.find(f"</{XMP_ELEMENT}>", start)
    if start < 0 or end < 0:
        return None
    return unescape(packet[start + len(XMP_ELEMENT) + 2 : end])


def export_fields(meta: ImageMetadata, kind: str) -> dict[str, object]:
    """Pillow save() arguments that carry `meta` in a "JPEG" or "WEBP" file. A record too long
    for JPEG's one XMP segment (prompts of tens of thousands of characters) travels as the
    A1111 text only."""
    fields: dict[str, object] = {"exif": exif_with_comment(a1111_text(meta))}
    xmp = xmp_packet(meta)
    if kind != "JPEG" or len(xmp) <= JPEG_XMP_MAX:
        fields["xmp"] = xmp
    return fields
