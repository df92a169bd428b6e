"""Metadata: A1111 text + JSON in PNGs; readers for ours, A1111 and ComfyUI; hostile files."""

from __future__ import annotations

import io
import json
import struct
import time
import zlib
from pathlib import Path

import piexif
import piexif.helper
import pytest
from PIL import Image, PngImagePlugin

from sd3desk.core.errors import MetadataError
from sd3desk.core.metadata import (
    ImageMetadata,
    ModelIdentity,
    a1111_text,
    decode_user_comment,
    exif_with_comment,
    parse_a1111,
    png_info,
    read_metadata,
)
from sd3desk.core.params import GenerationParams

PARAMS = GenerationParams(
    prompt="a cat, on a mat: 50% cute\nsecond line ünïcödé 猫",
    negative_prompt="blurry, low quality",
    seed=4_000_000_000,
    steps=28,
    guidance_scale=7.0,
    width=1216,
    height=832,
    shift=3.0,
    max_sequence_length=256,
    model="/models/sd3_medium_incl_clips.safetensors",
)
META = ImageMetadata(PARAMS, ModelIdentity("sd3_medium_incl_clips", "3bb7f21bc5", "sd3-medium"))


def save_png(path: Path, info: PngImagePlugin.PngInfo | None = None) -> Path:
    Image.new("RGB", (64, 48), (10, 20, 30)).save(path, pnginfo=info)
    return path


def test_png_round_trip_is_lossless(tmp_path):
    path = save_png(tmp_path / "a.png", png_info(META))
    read = read_metadata(path)
    assert read.params == PARAMS
    assert read.model == META.model
    assert read.source == "sd3desk"


def test_a1111_text_matches_the_documented_shape():
    text = a1111_text(META)
    lines = text.split("\n")
    assert lines[0] == "a cat, on a mat: 50% cute"
    assert lines[2] == "Negative prompt: blurry, low quality"
    assert lines[3].startswith("Steps: 28, Sampler: Euler, CFG scale: 7, Seed: 4000000000, ")
    assert "Size: 1216x832, Model hash: 3bb7f21bc5, Model: sd3_medium_incl_clips, Shift: 3" in text
    assert lines[3].endswith("Version: sd3desk 0.1.0")


def test_pillow_and_other_tools_see_the_parameters_chunk(tmp_path):
    path = save_png(tmp_path / "a.png", png_info(META))
    with Image.open(path) as image:
        assert image.text["parameters"] == a1111_text(META)
        assert json.loads(image.text["sd3desk"])["params"]["seed"] == PARAMS.seed


def test_a1111_only_png_reads_back_every_field(tmp_path):
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", a1111_text(META))
    read = read_metadata(save_png(tmp_path / "a1111.png", info))
    assert read.source == "a1111"
    assert read.params == PARAMS.replace(model="")
    assert read.model == ModelIdentity("sd3_medium_incl_clips", "3bb7f21bc5")


def test_a1111_fields_without_sd3_meaning_are_listed_not_dropped():
    text = (
        "masterpiece, a castle\nNegative prompt: ugly\n"
        "Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 6.5, Seed: 42, Size: 512x768, "
        'Model hash: abc, Model: sdxl, Clip skip: 2, Lora hashes: "a: 1, b: 2"'
    )
    meta = parse_a1111(text)
    assert meta.params.prompt == "masterpiece, a castle"
    assert meta.params.negative_prompt == "ugly"
    assert (meta.params.steps, meta.params.guidance_scale, meta.params.seed) == (20, 6.5, 42)
    assert (meta.params.width, meta.params.height) == (512, 768)
    assert dict(meta.unmapped) == {
        "Sampler": "DPM++ 2M Karras",
        "Clip skip": "2",
        "Lora hashes": "a: 1, b: 2",
    }


def test_a1111_text_without_a_settings_line_is_all_prompt():
    meta = parse_a1111("just a prompt, nothing else")
    assert meta.params.prompt == "just a prompt, nothing else"


def comfy_graph() -> dict:
    return {
        "4": {
            "class_type": "CheckpointLoaderSimple",
            "inputs": {"ckpt_name": "sd3_medium.safetensors"},
        },
        "5": {
            "class_type": "EmptySD3LatentImage",
            "inputs": {"width": 1344, "height": 768, "batch_size": 1},
        },
        "6": {
            "class_type": "CLIPTextEncode",
            "inputs": {"text": "a red fox in snow", "clip": ["4", 1]},
        },
        "7": {
            "class_type": "CLIPTextEncodeSD3",
            "inputs": {"clip_l": "", "clip_g": "", "t5xxl": "watermark", "clip": ["4", 1]},
        },
        "8": {
            "class_type": "ConditioningSetTimestepRange",
            "inputs": {"conditioning": ["7", 0], "start": 0.0, "end": 1.0},
        },
        "9": {"class_type": "PrimitiveNode", "inputs": {"value": 1234}},
        "10": {"class_type": "ModelSamplingSD3", "inputs": {"shift": 3.0, "model": ["4", 0]}},
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": ["9", 0],
                "steps": 30,
                "cfg": 4.5,
                "sampler_name": "dpmpp_2m",
                "scheduler": "sgm_uniform",
                "denoise": 1.0,
                "model": ["10", 0],
                "positive": ["6", 0],
                "negative": ["8", 0],
                "latent_image": ["5", 0],
            },
        },
    }


def test_comfyui_graph_best_effort(tmp_path):
    info = PngImagePlugin.PngInfo()
    info.add_text("prompt", json.dumps(comfy_graph()))
    info.add_text("workflow", "{}")
    meta = read_metadata(save_png(tmp_path / "comfy.png", info))
    assert meta.source == "comfyui"
    p = meta.params
    assert (p.prompt, p.negative_prompt) == ("a red fox in snow", "watermark")
    assert (p.seed, p.steps, p.guidance_scale, p.width, p.height, p.shift) == (
        1234,
        30,
        4.5,
        1344,
        768,
        3.0,
    )
    assert meta.model.name == "sd3_medium.safetensors"
    # (sgm_uniform, simple and normal space SD3's flow steps as diffusers does: not listed)
    assert dict(meta.unmapped) == {"sampler_name": "dpmpp_2m"}


def test_comfyui_graph_with_a_cycle_terminates(tmp_path):
    graph = comfy_graph()
    graph["6"]["inputs"] = {"conditioning": ["11", 0]}
    graph["11"] = {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["6", 0]}}
    info = PngImagePlugin.PngInfo()
    info.add_text("prompt", json.dumps(graph))
    assert read_metadata(save_png(tmp_path / "c.png", info)).params.prompt == ""


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_exif_user_comment_in_jpeg_and_webp(tmp_path, fmt):
    path = tmp_path / f"a.{fmt.lower()}"
    Image.new("RGB", (32, 32)).save(path, format=fmt, exif=exif_with_comment(a1111_text(META)))
    meta = read_metadata(path)
    assert meta.params == PARAMS.replace(model="")
    assert meta.source == "a1111"


@pytest.mark.parametrize("suffix", [".jpg", ".webp"])
def test_exports_read_in_a1111s_own_way(tmp_path, suffix):
    """What AUTOMATIC1111's read_info_from_image does with a JPEG or WebP (piexif, the reader
    it uses), on a file exported from one of our PNGs."""
    from sd3desk.core.gallery import export_image

    png = Image.new("RGB", (32, 32))
    source = tmp_path / "a.png"
    png.save(source, pnginfo=png_info(META))
    target = export_image(source, tmp_path / f"a{suffix}")
    with Image.open(target) as image:
        exif = piexif.load(image.info["exif"])
    comment = exif.get("Exif", {}).get(piexif.ExifIFD.UserComment, b"")
    assert isinstance(comment, bytes)  # typed UNDEFINED: a BYTE tag comes back as a tuple
    assert piexif.helper.UserComment.load(comment) == a1111_text(META)
    # and our record travels in XMP: the export reads back exactly, model path and all
    read = read_metadata(target)
    assert (read.params, read.model, read.source) == (PARAMS, META.model, "sd3desk")


def test_user_comment_encodings():
    text = "a cat, Steps: 3"
    assert decode_user_comment(b"UNICODE\0" + text.encode("utf-16-be")) == text
    assert decode_user_comment(b"UNICODE\0" + text.encode("utf-16-le")) == text
    assert decode_user_comment(b"ASCII\0\0\0" + text.encode()) == text
    assert decode_user_comment(b"\0" * 8 + text.encode()) == text


# ------------------------------------------------------------------ hostile files


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(*chunks: bytes) -> bytes:
    ihdr = chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
    idat = chunk(b"IDAT", zlib.compress(b"\0\0"))
    return b"\x89PNG\r\n\x1a\n" + ihdr + b"".join(chunks) + idat + chunk(b"IEND", b"")


def read_bytes(tmp_path: Path, data: bytes, name: str = "x.png"):
    path = tmp_path / name
    path.write_bytes(data)
    start = time.perf_counter()
    try:
        return read_metadata(path)
    finally:
        assert time.perf_counter() - start < 2.0, "hostile input must fail fast"


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"", "not a PNG, JPEG or WebP"),
        (b"garbage" * 100, "not a PNG, JPEG or WebP"),
        (png_bytes()[:40], "truncated"),
        (
            png_bytes(chunk(b"tEXt", b"parameters\0" + b"x" * (9 * 1024 * 1024))),
            "refusing more than 8 MB",
        ),
        (
            png_bytes(
                chunk(b"zTXt", b"parameters\0\0" + zlib.compress(b"a" * (64 * 1024 * 1024), 9))
            ),
            "expands past 8 MB",
        ),
        (png_bytes(chunk(b"zTXt", b"parameters\0\0" + b"not zlib")), "damaged"),
        (png_bytes(chunk(b"tEXt", b"\0no keyword")), "keyword"),
        (png_bytes(), "carries no generation parameters"),
        (png_bytes(chunk(b"tEXt", b"sd3desk\0{not json")), "not valid JSON"),
        (
            png_bytes(chunk(b"tEXt", b'sd3desk\0{"format": "sd3desk", "version": 99}')),
            "newer sd3desk",
        ),
        (
            png_bytes(
                chunk(
                    b"tEXt",
                    b'sd3desk\0{"format": "sd3desk", "version": 1, "params": {"steps": "many"}}',
                )
            ),
            "make no sense",
        ),
        (
            png_bytes(chunk(b"tEXt", b"parameters\0x\nSteps: lots, Seed: 1, CFG scale: 2")),
            "not a number",
        ),
        (b"\xff\xd8\xff\xe0" + b"\0" * 50, "damaged"),
    ],
)
def test_hostile_files_fail_fast_with_a_clear_error(tmp_path, data, words):
    with pytest.raises(MetadataError, match=words):
        read_bytes(tmp_path, data)


def test_bad_checksum_on_a_text_chunk(tmp_path):
    good = chunk(b"tEXt", b"parameters\0a cat")
    bad = good[:-4] + b"\0\0\0\0"
    with pytest.raises(MetadataError, match="checksum"):
        read_bytes(tmp_path, png_bytes(bad))


def test_huge_chunk_length_in_header_does_not_allocate(tmp_path):
    huge = struct.pack(">I", 0x7FFFFFF0) + b"tEXt" + b"abc"
    with pytest.raises(MetadataError, match="truncated"):
        read_bytes(tmp_path, png_bytes(huge))


def test_reader_does_not_decode_pixels(tmp_path, monkeypatch):
    path = save_png(tmp_path / "a.png", png_info(META))
    monkeypatch.setattr(
        Image, "open", lambda *a, **k: pytest.fail("PNG metadata must not need Pillow")
    )
    assert read_metadata(path).params == PARAMS


def test_text_chunks_after_the_image_data_are_found(tmp_path):
    data = png_bytes()
    tail = chunk(b"iTXt", b"parameters\0\0\0\0\0" + a1111_text(META).encode())
    data = data[: -len(chunk(b"IEND", b""))] + tail + chunk(b"IEND", b"")
    assert read_bytes(tmp_path, data).params.seed == PARAMS.seed


def test_png_info_writes_before_image_data():
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG", pnginfo=png_info(META))
    raw = buffer.getvalue()
    assert raw.index(b"sd3desk") < raw.index(b"IDAT")
