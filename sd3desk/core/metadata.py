"""Parameters inside image files: write A1111 text and lossless JSON; read ours, A1111 and ComfyUI.

Formats (documented by their projects; our code is our own):
- A1111 "parameters": prompt lines, "Negative prompt: ..." line, then one line of "Key: value"
  pairs where values holding ',', ':' or a newline are JSON-quoted. PNG text chunk; in JPEG/WebP
  the same text sits in EXIF UserComment (tag 0x9286) with an 8-byte character-code prefix.
- ComfyUI: PNG text chunk "prompt" holding the API-format graph {node_id: {class_type, inputs}},
  where an input that is a list [node_id, output_index] links to another node.
- PNG chunk layout per the PNG specification (ISO/IEC 15948): length, type, data, CRC-32.
"""

from __future__ import annotations

import json
import re
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from sd3desk import __version__
from sd3desk.core.errors import InvalidParamsError, MetadataError
from sd3desk.core.params import GenerationParams

if TYPE_CHECKING:  # Pillow is imported where pixels or EXIF are touched: the window
    from PIL import PngImagePlugin  # starts faster without it

FORMAT_KEY = "sd3desk"
FORMAT_VERSION = 1
A1111_KEY = "parameters"
SAMPLER_NAME = "Euler"  # SD3's flow-matching Euler sampler, as A1111/Forge and Civitai name it

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_TEXT_CHUNK = 8 * 1024 * 1024  # bytes, compressed or not; real metadata is a few KB
MAX_TEXT_TOTAL = 32 * 1024 * 1024
MAX_EXIF_FILE = 256 * 1024 * 1024
EXIF_IFD, USER_COMMENT = 0x8769, 0x9286
TIFF_LONG, TIFF_UNDEFINED = 4, 7  # field types (TIFF 6.0, section 2)


@dataclass(frozen=True)
class ModelIdentity:
    """Which model made an image: display name, short hash (10 hex of SHA-256), family value."""

    name: str = ""
    hash: str = ""
    family: str = ""


@dataclass(frozen=True)
class JobRef:
    """Which job of which queue made an image, and which of its images it is: lets a restart
    after a crash recognise a job's images as already saved (never made twice)."""

    queue: str  # the queue database's own id (JobQueue.uid), so ids of two queues never mix
    job: int
    image: int = 0


@dataclass(frozen=True)
class ImageMetadata:
    """Parameters read from or written into an image file.

    `source` says which format they came from; `unmapped` lists fields another tool wrote that
    have no meaning for SD3 here (shown to the user, never silently dropped).
    """

    params: GenerationParams
    model: ModelIdentity = field(default_factory=ModelIdentity)
    app_version: str = __version__
    source: str = FORMAT_KEY
    unmapped: tuple[tuple[str, str], ...] = ()
    job: JobRef | None = None  # only in our own record


# ---------------------------------------------------------------- writing


def _number(value: float) -> str:
    return f"{value:g}"


def _quote(value: str) -> str:
    return json.dumps(value, ensure_ascii=False) if any(c in value for c in ',:\n"') else value


def a1111_text(meta: ImageMetadata) -> str:
    """The A1111-style "parameters" text that Civitai, Forge and most viewers read."""
    p = meta.params
    lines = [p.prompt]
    if p.negative_prompt:
        lines.append(f"Negative prompt: {p.negative_prompt}")
    pairs = [
        ("Steps", str(p.steps)),
        ("Sampler", SAMPLER_NAME),
        ("CFG scale", _number(p.guidance_scale)),
        ("Seed", str(p.seed)),
        ("Size", f"{p.width}x{p.height}"),
    ]
    if meta.model.hash:
        pairs.append(("Model hash", meta.model.hash))
    if meta.model.name:
        pairs.append(("Model", meta.model.name))
    pairs += [
        ("Shift", _number(p.shift)),
        ("T5 max length", str(p.max_sequence_length)),
        ("Version", f"sd3desk {meta.app_version}"),
    ]
    lines.append(", ".join(f"{key}: {_quote(value)}" for key, value in pairs))
    return "\n".join(lines)


def json_text(meta: ImageMetadata) -> str:
    """Our lossless, versioned record of the full request and the model."""
    record = {
        "format": FORMAT_KEY,
        "version": FORMAT_VERSION,
        "app_version": meta.app_version,
        "params": meta.params.to_dict(),
        "model": {"name": meta.model.name, "hash": meta.model.hash, "family": meta.model.family},
    }
    if meta.job is not None:
        record["job"] = {"queue": meta.job.queue, "id": meta.job.job, "image": meta.job.image}
    return json.dumps(record, ensure_ascii=False, sort_keys=True)


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


# ---------------------------------------------------------------- reading


def read_metadata(path: Path | str, fast: bool = False) -> ImageMetadata:
    """Parameters embedded in a PNG, JPEG or WebP file, from sd3desk, A1111/Forge or ComfyUI.

    Reads headers and text only, never pixels. With `fast` (indexing thousands of files), a PNG
    is read only up to its image data when parameters were found before it, as in our own
    files; a truncated tail then goes unnoticed. Raises MetadataError with a plain reason.
    """
    path = Path(path)
    try:
        with path.open("rb") as handle:
            head = handle.read(12)
            handle.seek(0)
            if head.startswith(PNG_SIGNATURE):
                texts = read_png_text(handle, stop_at_image=fast)
            elif head.startswith(b"\xff\xd8") or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
                texts = _read_exif_comment(path)
            else:
                raise MetadataError(f"{path.name} is not a PNG, JPEG or WebP image")
    except OSError as exc:
        raise MetadataError(f"cannot read {path.name}: {exc.strerror or exc}") from exc
    return parse_texts(texts, path.name)


def parse_texts(texts: dict[str, str], name: str = "image") -> ImageMetadata:
    """Pick the richest known format among an image's text fields and parse it."""
    try:
        if FORMAT_KEY in texts:
            return parse_json(texts[FORMAT_KEY])
        if A1111_KEY in texts:
            text = texts[A1111_KEY]
            if text.lstrip().startswith("{"):
                return parse_json(text)
            return parse_a1111(text)
        if "prompt" in texts:
            return parse_comfyui(texts["prompt"])
    except InvalidParamsError as exc:
        raise MetadataError(f"{name} has generation parameters that make no sense: {exc}") from exc
    raise MetadataError(f"{name} carries no generation parameters (sd3desk, A1111 or ComfyUI)")


def read_png_text(handle: BinaryIO, stop_at_image: bool = False) -> dict[str, str]:
    """All tEXt/zTXt/iTXt chunks of a PNG, walking chunk headers and skipping image data.

    With `stop_at_image`, stop at the first image data chunk if known parameters came before it.
    """
    if handle.read(8) != PNG_SIGNATURE:
        raise MetadataError("not a PNG file")
    handle.seek(0, 2)
    size = handle.tell()
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
        if kind == b"IEND" or (
            stop_at_image and kind == b"IDAT" and (FORMAT_KEY in texts or A1111_KEY in texts)
        ):
            return texts
        if kind in (b"tEXt", b"zTXt", b"iTXt"):
            if length > MAX_TEXT_CHUNK:
                raise MetadataError(f"a PNG text chunk is {length} bytes; refusing more than 8 MB")
            data = handle.read(length)
            crc = int.from_bytes(handle.read(4), "big")
            if zlib.crc32(kind + data) != crc:
                raise MetadataError("a PNG text chunk is damaged (checksum mismatch)")
            key, text = _decode_text_chunk(kind, data)
            total += len(text)
            if total > MAX_TEXT_TOTAL:
                raise MetadataError("the PNG file holds more than 32 MB of text; refusing it")
            texts.setdefault(key, text)
        position = end


def _inflate(data: bytes) -> bytes:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, MAX_TEXT_CHUNK)
    except zlib.error as exc:
        raise MetadataError("a compressed PNG text chunk is damaged") from exc
    if inflater.unconsumed_tail:
        raise MetadataError("a compressed PNG text chunk expands past 8 MB; refusing it")
    return out


def _decode_text_chunk(kind: bytes, data: bytes) -> tuple[str, str]:
    key_bytes, sep, rest = data.partition(b"\0")
    if not sep or not 1 <= len(key_bytes) <= 79:
        raise MetadataError("a PNG text chunk has no valid keyword")
    key = key_bytes.decode("latin-1")
    if kind == b"tEXt":
        return key, rest.decode("latin-1")
    if kind == b"zTXt":
        return key, _inflate(rest[1:]).decode("latin-1")
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


def _read_exif_comment(path: Path) -> dict[str, str]:
    if path.stat().st_size > MAX_EXIF_FILE:
        raise MetadataError(f"{path.name} is larger than 256 MB; refusing to read it")
    try:
        from PIL import Image

        with Image.open(path) as image:
            raw = image.getexif().get_ifd(EXIF_IFD).get(USER_COMMENT)
    except Exception as exc:  # Pillow raises many types for damaged files
        raise MetadataError(f"{path.name} is damaged or not an image Pillow can read") from exc
    if raw is None:
        return {}
    return {A1111_KEY: decode_user_comment(raw)}


def decode_user_comment(raw: bytes | str) -> str:
    """EXIF UserComment: an 8-byte character code, then the text."""
    if isinstance(raw, str):
        return raw
    prefix, body = raw[:8], raw[8:]
    if prefix == b"UNICODE\0":
        # The standard says UCS-2 in the file's byte order; tools disagree, so look at the bytes:
        # ASCII text in UTF-16BE has its zero bytes first.
        if len(body) >= 2 and body[0] == 0 and body[1] != 0:
            return body.decode("utf-16-be", errors="replace")
        if len(body) >= 2 and body[1] == 0 and body[0] != 0:
            return body.decode("utf-16-le", errors="replace")
        return body.decode("utf-16-be", errors="replace")
    if prefix.startswith(b"ASCII"):
        return body.decode("ascii", errors="replace")
    return (body if prefix == b"\0" * 8 else raw).decode("utf-8", errors="replace").rstrip("\0")


def parse_json(text: str) -> ImageMetadata:
    try:
        record = json.loads(text)
    except ValueError as exc:
        raise MetadataError("the sd3desk record is not valid JSON") from exc
    if not isinstance(record, dict) or record.get("format") != FORMAT_KEY:
        raise MetadataError("the JSON record is not an sd3desk record")
    version = record.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise MetadataError(
            f"the image was written by a newer sd3desk (record version {version}); update sd3desk"
        )
    found = record.get("model")
    model: dict[str, Any] = found if isinstance(found, dict) else {}
    return ImageMetadata(
        params=GenerationParams.from_dict(record.get("params", {})),
        model=ModelIdentity(
            name=str(model.get("name", "")),
            hash=str(model.get("hash", "")),
            family=str(model.get("family", "")),
        ),
        app_version=str(record.get("app_version", "")),
        source=FORMAT_KEY,
        job=_job_ref(record.get("job")),
    )


def _job_ref(found: Any) -> JobRef | None:
    if not isinstance(found, dict):
        return None
    queue, job, image = found.get("queue"), found.get("id"), found.get("image", 0)
    counts = [v for v in (job, image) if type(v) is int and 0 <= v < 2**63]
    return (
        JobRef(queue, counts[0], counts[1]) if isinstance(queue, str) and len(counts) == 2 else None
    )


# One "Key: value" pair of A1111's last line; a value is JSON-quoted or runs to the next comma.
_PAIR = re.compile(r'\s*([A-Za-z][\w \-/]*):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)')


def _split_pairs(line: str) -> list[tuple[str, str]]:
    pairs = []
    for key, value in _PAIR.findall(line):
        if value.startswith('"'):
            try:
                value = json.loads(value)
            except ValueError:
                value = value.strip('"')
        pairs.append((key.strip(), value.strip()))
    return pairs


def parse_a1111(text: str) -> ImageMetadata:
    """A1111/Forge "parameters" text. Fields with no SD3 meaning here land in `unmapped`."""
    lines = text.strip("\n").split("\n")
    pairs = _split_pairs(lines[-1]) if lines else []
    if len(pairs) >= 3:
        lines = lines[:-1]
    else:
        pairs = []
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    target = prompt_lines
    for line in lines:
        if line.startswith("Negative prompt:"):
            target = negative_lines
            line = line[len("Negative prompt:") :].lstrip()
        target.append(line)
    values: dict[str, Any] = {
        "prompt": "\n".join(prompt_lines).strip(),
        "negative_prompt": "\n".join(negative_lines).strip(),
    }
    model = {"name": "", "hash": ""}
    unmapped: list[tuple[str, str]] = []
    simple = {
        "Steps": "steps",
        "CFG scale": "guidance_scale",
        "Seed": "seed",
        "Shift": "shift",
        "T5 max length": "max_sequence_length",
    }
    for key, value in pairs:
        if key in simple:
            values[simple[key]] = _to_number(value, key)
        elif key == "Size":
            width, _, height = value.partition("x")
            values["width"], values["height"] = _to_number(width, key), _to_number(height, key)
        elif key == "Model":
            model["name"] = value
        elif key == "Model hash":
            model["hash"] = value
        elif key == "Version" or (key == "Sampler" and value.lower().startswith("euler")):
            continue
        else:
            unmapped.append((key, value))
    return ImageMetadata(
        params=GenerationParams.from_dict(values),
        model=ModelIdentity(name=model["name"], hash=model["hash"]),
        app_version="",
        source="a1111",
        unmapped=tuple(unmapped),
    )


def _to_number(text: str, field_name: str) -> float:
    try:
        number = float(text)
    except ValueError:
        raise MetadataError(f"the {field_name} value {text!r} is not a number") from None
    return int(number) if number.is_integer() else number


_SAMPLER_NODES = ("KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced")


def parse_comfyui(text: str) -> ImageMetadata:
    """Best effort over ComfyUI's prompt graph: prompts, seed, steps, cfg, size, shift."""
    try:
        graph = json.loads(text)
    except ValueError as exc:
        raise MetadataError("the ComfyUI prompt graph is not valid JSON") from exc
    if not isinstance(graph, dict):
        raise MetadataError("the ComfyUI prompt graph is not a node map")
    nodes = {
        k: v for k, v in graph.items() if isinstance(v, dict) and isinstance(v.get("inputs"), dict)
    }
    sampler = next(
        (n for n in nodes.values() if n.get("class_type") in _SAMPLER_NODES),
        None,
    )
    if sampler is None:
        raise MetadataError("the ComfyUI graph has no sampler node to read settings from")
    inputs = sampler["inputs"]
    values: dict[str, Any] = {
        "prompt": _comfy_text(nodes, inputs.get("positive"), set()) or "",
        "negative_prompt": _comfy_text(nodes, inputs.get("negative"), set()) or "",
    }
    unmapped: list[tuple[str, str]] = []
    for key, name in (
        ("seed", "seed"),
        ("noise_seed", "seed"),
        ("steps", "steps"),
        ("cfg", "guidance_scale"),
    ):
        value = _comfy_value(nodes, inputs.get(key))
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            values[name] = value
    for key in ("sampler_name", "scheduler", "denoise"):
        value = inputs.get(key)
        if value is not None and not isinstance(value, list) and value not in ("euler", 1, 1.0):
            unmapped.append((key, str(value)))
    model = ModelIdentity()
    for node in nodes.values():
        kind, node_inputs = node.get("class_type"), node["inputs"]
        if kind in ("EmptyLatentImage", "EmptySD3LatentImage"):
            for key in ("width", "height"):
                value = _comfy_value(nodes, node_inputs.get(key))
                if isinstance(value, int) and not isinstance(value, bool):
                    values[key] = value
        elif kind == "ModelSamplingSD3" and isinstance(node_inputs.get("shift"), (int, float)):
            values["shift"] = node_inputs["shift"]
        elif kind in ("CheckpointLoaderSimple", "UNETLoader"):
            name = node_inputs.get("ckpt_name") or node_inputs.get("unet_name")
            if isinstance(name, str):
                model = ModelIdentity(name=name)
    return ImageMetadata(
        params=GenerationParams.from_dict(values),
        model=model,
        app_version="",
        source="comfyui",
        unmapped=tuple(unmapped),
    )


def _comfy_value(nodes: dict[str, Any], value: Any) -> Any:
    """An input's value; a link to a primitive node yields that node's value."""
    if isinstance(value, list) and value and str(value[0]) in nodes:
        linked = nodes[str(value[0])]["inputs"]
        for key in ("value", "seed", "noise_seed", "int", "float", "string", "text"):
            if key in linked and not isinstance(linked[key], list):
                return linked[key]
        return None
    return value


_TEXT_INPUTS = ("text", "t5xxl", "clip_g", "clip_l", "text_g", "text_l", "string", "value")


def _comfy_text(nodes: dict[str, Any], link: Any, seen: set[str]) -> str | None:
    """Follow a conditioning link upstream to the first node that holds prompt text."""
    if not (isinstance(link, list) and link) or str(link[0]) in seen or len(seen) > 64:
        return None
    node_id = str(link[0])
    seen.add(node_id)
    node = nodes.get(node_id)
    if node is None:
        return None
    inputs = node["inputs"]
    for key in _TEXT_INPUTS:
        value = inputs.get(key)
        if isinstance(value, str) and value.strip():
            return value
        if isinstance(value, list):
            linked = _comfy_value(nodes, value)
            if isinstance(linked, str) and linked.strip():
                return linked
    for value in inputs.values():  # conditioning passes through combine/zero-out/range nodes
        text = _comfy_text(nodes, value, seen)
        if text:
            return text
    return None
