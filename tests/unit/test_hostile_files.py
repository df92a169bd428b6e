"""Hostile and odd files are bounded (issue 13, item 4): only regular files are opened, bitmaps
over a budget are never decoded, every number read is range-checked into a typed error, one bad
file never keeps a scan batch out of the index, the A1111 reader runs in linear time, prompts
with control characters or broken Unicode are refused naming the field, and model folders with
FIFOs, wrong-typed configs or custom code get a message instead of a hang or a traceback."""

from __future__ import annotations

import json
import os
import struct
import sys
import threading
import time
import zlib
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from sd3desk.core.errors import InvalidParamsError, MetadataError, ModelError
from sd3desk.core.gallery import GalleryIndex, ImageTooLargeError, make_thumbnail
from sd3desk.core.metadata import ImageMetadata, parse_a1111, parse_texts, png_info, read_metadata
from sd3desk.core.params import FOREIGN_SEED_MAX, GenerationParams, check
from sd3desk.core.store import Store

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")


def finishes(function, *args, within_s: float = 20.0):
    """Run `function` on a thread; its result, or a failure if it has not returned in time (a
    hang on a FIFO would otherwise hang the test run)."""
    out: list = []

    def run() -> None:
        try:
            out.append(("ok", function(*args)))
        except BaseException as exc:
            out.append(("raised", exc))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(within_s)
    assert out, f"{function} did not return within {within_s} s"
    kind, value = out[0]
    if kind == "raised":
        raise value
    return value


def png_with(tmp_path: Path, name: str, **texts: str) -> Path:
    info = PngImagePlugin.PngInfo()
    for key, text in texts.items():
        info.add_itxt(key, text)
    path = tmp_path / name
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    return path


def record(**params) -> str:
    return json.dumps({"format": "sd3desk", "version": 1, "params": {"prompt": "x", **params}})


# ---------------------------------------------------------------- not regular files


@needs_fifo
def test_a_fifo_named_like_an_image_is_never_opened(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(MetadataError, match="named pipe"):
        finishes(read_metadata, fifo)
    with pytest.raises(OSError, match="named pipe"):
        finishes(make_thumbnail, fifo, tmp_path / "cache")


@needs_fifo
def test_a_gallery_scan_skips_fifos_and_finishes(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    os.mkfifo(out / "stuck.png")
    os.mkfifo(out / "also.webp")
    png_with(out, "real.png", parameters="a fox\nSteps: 5, Seed: 3, CFG scale: 4")
    database = tmp_path / "db.sqlite"
    result = finishes(lambda: GalleryIndex(Store(database), out).scan())
    assert (result.added, result.unreadable) == (1, 0)
    assert [row.prompt for row in GalleryIndex(Store(database), out).search()] == ["a fox"]


# ---------------------------------------------------------------- pixel budget


def bomb_png(path: Path, side: int) -> Path:
    """A PNG that says it is side x side RGB: a few KB on disk, side² x 4 bytes decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\0" * (1 + 3 * side) * 64, 9)  # only the first rows: never read
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    )
    return path


def test_a_decompression_bomb_gets_no_thumbnail_and_is_not_decoded(tmp_path):
    start = time.perf_counter()
    for side in (12_000, 100_000):  # 550 MB as a bitmap; 40 GB (past Pillow's own limit)
        bomb = bomb_png(tmp_path / f"bomb{side}.png", side)
        with pytest.raises(ImageTooLargeError, match="pixels"):
            make_thumbnail(bomb, tmp_path / "cache")
    assert time.perf_counter() - start < 5, "the header decides; the pixels are never decoded"


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads Linux's /proc")
def test_thumbnail_peak_memory_of_a_large_image_stays_under_300_mb(tmp_path):
    """A 6000 x 6000 PNG (the largest kind of image people upscale to) is thumbnailed in a
    fresh process whose peak RSS is measured."""
    big = tmp_path / "big.png"
    Image.effect_noise((6000, 6000), 64).convert("RGB").save(big, compress_level=1)
    # (VmHWM, not ru_maxrss: a child's ru_maxrss starts at its parent's, pytest's, on Linux)
    script = (
        "import re, sys\n"
        "from sd3desk.core.gallery import make_thumbnail\n"
        "make_thumbnail(sys.argv[1], sys.argv[2])\n"
        "print(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1])\n"
    )
    import subprocess

    found = subprocess.run(
        [sys.executable, "-c", script, str(big), str(tmp_path / "cache")],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    peak_mb = int(found.stdout.split()[-1]) / 1024  # in kB
    assert peak_mb <= 300, f"peak RSS {peak_mb:.0f} MB"


# ---------------------------------------------------------------- numbers from files


@pytest.mark.parametrize(
    ("params", "field_name"),
    [
        ({"seed": 1e999}, "seed"),
        ({"seed": FOREIGN_SEED_MAX + 1}, "seed"),
        ({"seed": -1}, "seed"),
        ({"steps": float("nan")}, "steps"),
        ({"width": 2**70}, "width"),
        ({"guidance_scale": "inf"}, "guidance_scale"),
        ({"shift": float("-inf")}, "shift"),
        ({"height": "9" * 5000}, "height"),
    ],
)
def test_numbers_no_field_can_hold_are_typed_errors_naming_the_field(params, field_name):
    with pytest.raises(InvalidParamsError) as raised:
        GenerationParams.from_dict({"prompt": "x", **params})
    assert [e.field for e in raised.value.errors] == [field_name]
    with pytest.raises(MetadataError, match=field_name):
        parse_texts({"sd3desk": record(**params)})


def test_a_comfyui_64_bit_seed_reads_and_is_indexed(tmp_path):
    graph = {
        "3": {
            "class_type": "KSampler",
            "inputs": {"seed": FOREIGN_SEED_MAX, "steps": 20, "cfg": 4.0, "positive": ["6", 0]},
        },
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "big seed"}},
    }
    out = tmp_path / "out"
    out.mkdir()
    png_with(out, "comfy.png", prompt=json.dumps(graph))
    assert read_metadata(out / "comfy.png").params.seed == FOREIGN_SEED_MAX
    index = GalleryIndex(Store(tmp_path / "db.sqlite"), out)
    assert index.scan().unreadable == 0
    (row,) = index.search("big")
    assert row.seed is None  # beyond SQLite's integers; the parameters keep it
    assert row.params() is not None and row.params().seed == FOREIGN_SEED_MAX
    with pytest.raises(InvalidParamsError, match="seed"):  # and it cannot be queued as it is
        check(row.params())


def test_one_bad_file_never_keeps_a_scan_batch_out_of_the_index(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for n in range(5):
        png_with(out, f"good{n}.png", sd3desk=record(seed=n))
    png_with(out, "inf.png", sd3desk=record(seed=1e999))
    png_with(out, "nan.png", parameters="x\nSteps: nan, Seed: 1, CFG scale: inf")
    png_with(out, "deep.png", sd3desk="[" * 100_000)
    index = GalleryIndex(Store(tmp_path / "db.sqlite"), out)
    result = index.scan()
    assert (result.added, result.unreadable) == (8, 3)
    assert sorted(r.seed for r in index.search() if r.seed is not None) == [0, 1, 2, 3, 4]
    assert index.scan().updated == 0  # and a rescan has nothing left to retry


def test_deeply_nested_json_is_a_metadata_error(tmp_path):
    for key in ("sd3desk", "prompt", "invokeai_metadata"):
        with pytest.raises(MetadataError, match="not valid JSON"):
            parse_texts({key: "[" * 200_000})


# ---------------------------------------------------------------- bounded readers


def test_the_a1111_reader_is_linear_on_text_shaped_for_backtracking():
    """A1111's own pattern backtracks on a long run of key characters with no colon: 40 KB
    took 5.8 s and 1 MB never finished. Here 1 MB of each shape reads in well under that."""
    shapes = {
        "key characters, no colon": "a" * 1_000_000,
        "spaces between words": "word " * 200_000,
        "an unclosed quote": 'Steps: 1, Seed: 2, CFG scale: 3, Model: "' + "x" * 1_000_000,
        "pairs without values": "Key: , " * 150_000,
    }
    for shape, line in shapes.items():
        start = time.perf_counter()
        parse_a1111("prompt\n" + line)
        took = time.perf_counter() - start
        assert took < 5, f"{shape}: {took:.1f} s"


def test_a_webp_with_a_100_mb_exif_chunk_is_refused_without_reading_it(tmp_path):
    path = tmp_path / "huge.webp"
    Image.new("RGB", (8, 8)).save(path, format="WEBP")
    data = path.read_bytes()
    exif = b"EXIF" + struct.pack("<I", 100 * 2**20)
    with path.open("wb") as handle:
        body = data[12:] + exif
        handle.write(b"RIFF" + struct.pack("<I", 4 + len(body) + 100 * 2**20) + b"WEBP" + body)
        handle.truncate(len(body) + 12 + 100 * 2**20)  # sparse: the 100 MB cost no disk
    with pytest.raises(MetadataError, match="over 8 MB"):
        read_metadata(path)


# ---------------------------------------------------------------- prompts


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("a\x00cat", "control character U\\+0000 at character 2"),
        ("cat\x1b[31m", "control character U\\+001B"),
        ("caf\udce9", "not valid Unicode .*U\\+DCE9"),
        ("\ud83d alone", "lone surrogate U\\+D83D at character 1"),
    ],
)
def test_prompts_with_control_characters_or_broken_unicode_are_refused(text, words):
    for field_name in ("prompt", "negative_prompt"):
        with pytest.raises(InvalidParamsError, match=words) as raised:
            check(GenerationParams(**{"prompt": "ok", field_name: text}))
        assert [e.field for e in raised.value.errors] == [field_name]


def test_newlines_tabs_and_any_script_are_fine_in_prompts():
    check(GenerationParams("a cat\n\tin a hat\r\n猫 🐈 кошка", negative_prompt="blur\n"))


def test_our_exports_round_trip_a_prompt_a1111_text_cannot(tmp_path):
    """Spaces around the prompt and a line starting "Negative prompt:" do not survive A1111's
    text; our record in XMP carries them into JPEG and WebP exports."""
    from sd3desk.core.gallery import export_image

    params = GenerationParams(
        "  lead and trail  \nNegative prompt: part of the prompt", seed=5, model="test"
    )
    source = tmp_path / "a.png"
    Image.new("RGB", (16, 16)).save(source, pnginfo=png_info(ImageMetadata(params)))
    for suffix in (".jpg", ".webp"):
        assert read_metadata(export_image(source, tmp_path / f"a{suffix}")).params == params


# ---------------------------------------------------------------- model folders


def model_folder(tmp_path: Path, tiny_model_dir: Path) -> Path:
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    return folder


@needs_fifo
@pytest.mark.parametrize(
    "name", ["model_index.json", "transformer/diffusion_pytorch_model.safetensors"]
)
def test_a_fifo_in_a_model_folder_is_an_error_not_a_hang(tmp_path, tiny_model_dir, name):
    from sd3desk.inference.models import resolve_model

    folder = model_folder(tmp_path, tiny_model_dir)
    (folder / name).unlink()
    os.mkfifo(folder / name)
    with pytest.raises(ModelError, match="named pipe"):
        finishes(resolve_model, str(folder))


@pytest.mark.parametrize("value", ["1536", 1e999, None, [1], True])
def test_a_config_with_wrong_types_is_a_model_error(tmp_path, tiny_model_dir, value):
    from sd3desk.inference.models import MARKER_FILE, resolve_model

    folder = model_folder(tmp_path, tiny_model_dir)
    (folder / MARKER_FILE).unlink()  # read as a real model: its config decides the family
    config = folder / "transformer" / "config.json"
    config.write_text(
        json.dumps({**json.loads(config.read_text()), "caption_projection_dim": value})
    )
    with pytest.raises(ModelError, match="caption_projection_dim"):
        resolve_model(str(folder))


def test_a_folder_naming_custom_code_is_loaded_standard_and_says_so(tmp_path, tiny_model_dir):
    from sd3desk.inference.models import resolve_model

    folder = model_folder(tmp_path, tiny_model_dir)
    index = json.loads((folder / "model_index.json").read_text())
    index["transformer"] = ["my_transformer", "FastTransformer"]
    (folder / "model_index.json").write_text(json.dumps(index))
    config = folder / "text_encoder" / "config.json"
    config.write_text(
        json.dumps({**json.loads(config.read_text()), "auto_map": {"AutoModel": "x.Model"}})
    )
    (notice,) = resolve_model(str(folder)).notices
    assert "my_transformer.FastTransformer" in notice
    assert "auto_map in text_encoder/config.json" in notice
    assert "never runs code" in notice
