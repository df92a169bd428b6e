"""The request fields of starting from a picture (issue 12): validation naming every field, the
content-addressed picture store, the size a picture suggests, and the A1111 fields written and
read (sd-parsers as the oracle for what we write)."""

from __future__ import annotations

import hashlib
import io
import os

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from sd3desk.core.errors import InvalidParamsError
from sd3desk.core.metadata import ImageMetadata, png_info, read_metadata
from sd3desk.core.metadata.a1111 import SOURCE_NOT_STORED, a1111_text, parse_a1111
from sd3desk.core.params import GenerationParams, picture_steps, validate
from sd3desk.core.sources import SOURCE_PIXELS_MAX, SourceStore, fit, suggested_size

BASE = GenerationParams("a fox", seed=1, steps=20, width=1024, height=1024)
DIGEST = "c" * 64


def fields(params: GenerationParams, max_side: int | None = None) -> dict[str, str]:
    return {e.field: e.message for e in validate(params, max_side)}


def test_every_bad_picture_field_is_named_with_its_range():
    assert fields(BASE.replace(source_image=DIGEST)) == {}
    bad = fields(
        BASE.replace(
            source_image="photo.png",
            strength=1.5,
            mask_blur=65,
            mask_padding=-1,
            hires_scale=3.0,
            slg_scale=11.0,
        )
    )
    assert "SHA-256" in bad["source_image"]
    assert bad["strength"] == "must be more than 0 and at most 1 (got 1.5)"
    assert bad["mask_blur"] == "must be a whole number from 0 to 64"
    assert bad["mask_padding"] == "must be a whole number from 0 to 256"
    assert bad["hires_scale"] == "must be 1 (off) or between 1.25 and 2 (got 3.0)"
    assert bad["slg_scale"] == "must be between 0 and 10 (got 11.0)"
    assert fields(BASE.replace(mask_image=DIGEST)) == {
        "mask_image": "needs a source image to paint over"
    }
    assert fields(BASE.replace(source_image=DIGEST, strength=0.0))["strength"].startswith(
        "must be more than 0"
    )
    over = fields(BASE.replace(hires_scale=2.0), max_side=1536)
    assert over == {"hires_scale": "makes 2048x2048, over this model's limit of 1536 a side"}
    both = fields(BASE.replace(source_image=DIGEST, hires_scale=1.5))
    assert "for text to image" in both["hires_scale"]
    assert fields(BASE.replace(hires_scale=1.5, hires_strength=0.0)).keys() == {"hires_strength"}


def test_any_strength_above_zero_runs_a_step_as_diffusers_counts_them():
    assert picture_steps(20, 0.6) == 12
    assert picture_steps(10, 0.55) == 6  # diffusers starts int(10 - 5.5) = 4 steps in
    assert picture_steps(4, 0.01) == 1
    assert picture_steps(28, 1.0) == 28


def test_a_text_to_image_record_is_unchanged_and_a_picture_job_states_its_fields():
    assert set(BASE.to_dict()) == {
        "prompt",
        "negative_prompt",
        "seed",
        "steps",
        "guidance_scale",
        "width",
        "height",
        "batch_size",
        "shift",
        "max_sequence_length",
        "model",
    }
    job = BASE.replace(source_image=DIGEST, mask_image=DIGEST, hires_scale=1.0)
    data = job.to_dict()
    assert {"source_image", "strength", "mask_image", "mask_blur", "mask_padding"} <= set(data)
    assert "hires_scale" not in data
    assert GenerationParams.from_dict(data) == job
    hires = BASE.replace(hires_scale=1.5, hires_steps=10)
    assert GenerationParams.from_dict(hires.to_dict()) == hires


def png_bytes(size=(64, 48), colour="teal") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_store_keeps_a_picture_once_by_its_sha256(tmp_path):
    store = SourceStore(tmp_path / "sources")
    data = png_bytes()
    digest = store.put(data)
    assert digest == hashlib.sha256(data).hexdigest() and digest in store
    assert store.path(digest).read_bytes() == data
    assert store.put(data) == digest and len(list((tmp_path / "sources").rglob("*"))) == 2
    assert not [p for p in (tmp_path / "sources").rglob(".*")]  # no temporary file left
    assert store.open(digest).size == (64, 48)
    (tmp_path / "photo.png").write_bytes(data)
    assert store.put_file(tmp_path / "photo.png") == digest


def test_the_store_refuses_what_is_not_a_picture_and_names_the_field(tmp_path):
    store = SourceStore(tmp_path / "sources")
    with pytest.raises(InvalidParamsError) as refused:
        store.put(b"not a picture", "mask_image")
    assert refused.value.errors[0].field == "mask_image"
    assert "not a picture Pillow can read" in refused.value.errors[0].message
    with pytest.raises(InvalidParamsError) as missing:
        store.put_file(tmp_path / "nowhere.png")
    assert "cannot be read" in missing.value.errors[0].message
    os.mkfifo(tmp_path / "fifo.png")
    with pytest.raises(InvalidParamsError):  # never blocks on a FIFO
        store.put_file(tmp_path / "fifo.png")
    # a "decompression bomb": a tiny file that says it is 20,000 x 20,000
    bomb = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(bomb, format="PNG")
    assert len(bomb.getvalue()) < 100_000 and SOURCE_PIXELS_MAX < 20_000**2
    with pytest.raises(InvalidParamsError) as large:
        store.put(bomb.getvalue())
    assert "pixels" in large.value.errors[0].message
    assert not (tmp_path / "sources").exists() or not list((tmp_path / "sources").rglob("*.*"))


def test_a_gone_picture_and_a_mask_of_another_size_are_named(tmp_path):
    store = SourceStore(tmp_path / "sources")
    source = store.put(png_bytes((64, 48)))
    mask = store.put(png_bytes((32, 32), "white"), "mask_image")
    with pytest.raises(InvalidParamsError) as wrong:
        store.check(BASE.replace(source_image=source, mask_image=mask))
    assert [(e.field, e.message) for e in wrong.value.errors] == [
        ("mask_image", "is 32x32; it must be the source's size, 64x48")
    ]
    store.path(source).unlink()
    with pytest.raises(InvalidParamsError) as gone:
        store.check(BASE.replace(source_image=source))
    assert gone.value.errors[0].field == "source_image"
    assert "is gone from" in gone.value.errors[0].message


def test_a_picture_suggests_its_own_size_within_the_limits():
    assert suggested_size(400, 300) == (400, 304)
    assert suggested_size(4000, 3000, max_side=2048) == (2048, 1536)
    assert suggested_size(100, 80) == (320, 256)  # small pictures go up to 256 a side
    assert suggested_size(3000, 200, max_side=2048) == (2048, 256)  # a strip: the long side
    assert fit(Image.new("RGB", (400, 300)), 256, 256).size == (256, 256)


def test_a1111_fields_of_img2img_inpainting_and_hires(tmp_path):
    job = BASE.replace(
        source_image=DIGEST, strength=0.45, mask_image=DIGEST, mask_blur=6, mask_padding=32
    )
    text = a1111_text(ImageMetadata(job))
    assert "Denoising strength: 0.45, Mask blur: 6, Inpaint area: Only masked, " in text
    assert "Masked area padding: 32" in text
    read = parse_a1111(text)
    assert (read.params.strength, read.params.mask_blur, read.params.mask_padding) == (
        0.45,
        6,
        32,
    )
    assert read.params.source_image == "" and read.notes == (SOURCE_NOT_STORED,)
    hires = BASE.replace(hires_scale=1.5, hires_steps=12, hires_strength=0.4, slg_scale=2.8)
    text = a1111_text(ImageMetadata(hires))
    assert "Denoising strength: 0.4, Hires upscale: 1.5, Hires steps: 12, Hires upscaler: " in text
    read = parse_a1111(text)
    assert read.params.hires_scale == 1.5 and read.params.hires_strength == 0.4
    assert read.params.hires_steps == 12 and read.params.slg_scale == 2.8
    assert read.notes == () and read.unmapped == ()
    # sd-parsers (the oracle) reads the same fields from the PNG we write
    from sd_parsers import ParserManager

    path = tmp_path / "hires.png"
    Image.new("RGB", (64, 64)).save(path, pnginfo=png_info(ImageMetadata(hires)))
    info = ParserManager().parse(path)
    found = {k: str(v) for k, v in info.metadata.items()} | {
        k: str(v) for s in info.samplers for k, v in s.parameters.items()
    }
    assert found.get("Hires upscale") == "1.5" and found.get("Denoising strength") == "0.4"
    assert read_metadata(path).params == hires


def test_an_a1111_img2img_png_says_its_picture_is_not_in_it(tmp_path):
    info = PngInfo()
    info.add_text(
        "parameters",
        "a knight\nSteps: 30, Sampler: Euler, CFG scale: 5, Seed: 9, Size: 768x768, "
        "Denoising strength: 0.35, Mask blur: 4, Model: sd3.5_large",
    )
    path = tmp_path / "a1111-img2img.png"
    Image.new("RGB", (64, 64)).save(path, pnginfo=info)
    meta = read_metadata(path)
    assert meta.params.strength == 0.35 and meta.params.mask_blur == 4
    assert meta.notes == (SOURCE_NOT_STORED,)
