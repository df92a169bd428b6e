"""Starting from a picture (issue 12) on the tiny model: img2img, inpainting, the hires fix and
skip-layer guidance through the Engine; the same pixels in two processes; a queued img2img job
that outlives its process and its original file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from sd3desk.core.errors import GenerationCancelled, InvalidParamsError
from sd3desk.core.params import ModelFamily
from sd3desk.core.sources import SourceStore, fit
from tests.inference.conftest import max_diff, pixels, sd3desk

SOURCE_DIGEST, MASK_DIGEST = "a" * 64, "b" * 64  # (the engine takes the pictures themselves)


@pytest.fixture(scope="module")
def picture() -> Image.Image:
    """A 400x300 photo-like picture: smooth colour gradients and a bright disc."""
    y, x = np.mgrid[0:300, 0:400]
    rgb = np.stack([x * 255 / 400, y * 255 / 300, 128 + 0 * x], axis=-1)
    rgb[(x - 260) ** 2 + (y - 140) ** 2 < 60**2] = (250, 230, 40)
    return Image.fromarray(rgb.astype("uint8"))


@pytest.fixture(scope="module")
def mask() -> Image.Image:
    found = Image.new("L", (400, 300), 0)
    found.paste(255, (80, 80, 200, 220))
    return found


def test_img2img_is_repeatable_and_strength_changes_it(engine, params, picture):
    job = params.replace(source_image=SOURCE_DIGEST, strength=0.5)
    reports = []
    first = engine.generate(job, on_step=reports.append, source=picture).images[0]
    assert first.size == (256, 256)
    assert [(r.step, r.total) for r in reports] == [(1, 2), (2, 2)]  # 0.5 of 4 steps
    assert reports[0].preview is None and reports[1].preview is not None
    again = engine.generate(job, source=picture).images[0]
    assert max_diff(first, again) == 0
    stronger = engine.generate(job.replace(strength=0.9), source=picture).images[0]
    assert max_diff(first, stronger) > 0
    # the result keeps something of the source: closer to it than text to image is
    from_noise = engine.generate(params).images[0]
    fitted = fit(picture, 256, 256)
    assert (
        np.abs(pixels(first) - pixels(fitted)).mean()
        < np.abs(pixels(from_noise) - pixels(fitted)).mean()
    )


def test_a_batch_of_img2img_images_equals_the_single_runs(engine, params, picture):
    job = params.replace(source_image=SOURCE_DIGEST, strength=0.75, batch_size=2)
    batch = engine.generate(job, source=picture)
    for image, single in zip(batch.images, batch.params, strict=True):
        # (as for text to image: batched products round differently in the last bit)
        assert max_diff(image, engine.generate(single, source=picture).images[0]) <= 1


def test_inpainting_keeps_every_unmasked_pixel_and_blends_the_edge(engine, params, picture, mask):
    job = params.replace(source_image=SOURCE_DIGEST, mask_image=MASK_DIGEST, strength=1.0)
    fitted, hard = pixels(fit(picture, 256, 256)), np.asarray(fit(mask, 256, 256))
    sharp = pixels(engine.generate(job.replace(mask_blur=0), source=picture, mask=mask).images[0])
    assert np.array_equal(sharp[hard == 0], fitted[hard == 0])
    assert (sharp[hard == 255] != fitted[hard == 255]).mean() > 0.9
    blurred = engine.generate(job.replace(mask_blur=8), source=picture, mask=mask).images[0]
    feather = np.asarray(fit(mask, 256, 256).filter(ImageFilter.GaussianBlur(8)))
    result = pixels(blurred)
    assert np.array_equal(result[feather == 0], fitted[feather == 0])  # far out: the source
    edge = (hard == 0) & (feather > 60)  # outside the painted mask, inside its feather
    assert edge.any() and (result[edge] != fitted[edge]).any()  # blended, not cut


def test_only_the_masked_area_at_full_size(engine, params, picture, mask):
    job = params.replace(
        source_image=SOURCE_DIGEST, mask_image=MASK_DIGEST, mask_blur=0, mask_padding=16
    )
    whole = job.replace(mask_padding=0)
    cropped = pixels(engine.generate(job, source=picture, mask=mask).images[0])
    full = pixels(engine.generate(whole, source=picture, mask=mask).images[0])
    hard = np.asarray(fit(mask, 256, 256))
    fitted = pixels(fit(picture, 256, 256))
    assert np.array_equal(cropped[hard == 0], fitted[hard == 0])
    assert not np.array_equal(cropped[hard == 255], full[hard == 255])  # made at another scale


def test_hires_fix_is_one_job_at_the_scaled_size_and_repeats(engine, params):
    job = params.replace(hires_scale=1.5, hires_steps=4, hires_strength=0.5)
    reports = []
    made = engine.generate(job, on_step=reports.append)
    assert made.images[0].size == (384, 384) and made.params[0] == job
    assert [r.step for r in reports] == list(range(1, 7)) and {r.total for r in reports} == {6}
    assert max_diff(made.images[0], engine.generate(job).images[0]) == 0
    plain = engine.generate(params).images[0].resize((384, 384), Image.Resampling.LANCZOS)
    assert max_diff(made.images[0], plain) > 0  # the second pass did something


def test_cancel_during_the_hires_pass_stops_it(engine, params):
    import threading

    cancel = threading.Event()

    def on_step(info):
        if info.step == 5:  # the hires pass's first step
            cancel.set()

    job = params.replace(hires_scale=1.25, hires_steps=4)
    with pytest.raises(GenerationCancelled) as stopped:
        engine.generate(job, on_step=on_step, cancel=cancel)
    assert stopped.value.step == 5


def test_the_picture_pipelines_share_the_weights(engine, params, picture):
    engine.generate(params.replace(source_image=SOURCE_DIGEST), source=picture)
    img2img = engine._picture_pipe("img2img")
    inpaint = engine._picture_pipe("inpaint")
    base = engine.pipeline
    for name in ("transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3"):
        assert getattr(img2img, name) is getattr(base, name) is getattr(inpaint, name)
    assert base.transformer.dtype == base.vae.dtype  # (from_pipe cast nothing)


def test_skip_layer_guidance_acts_only_where_the_family_has_layers_to_skip(engine, params):
    from dataclasses import replace

    job = params.replace(steps=20)  # SLG runs from 1 % to 20 % of the steps: steps 1-3 here
    plain = engine.generate(job).images[0]
    assert max_diff(plain, engine.generate(job.replace(slg_scale=2.8)).images[0]) > 0
    loaded = engine.loaded_model()
    medium = replace(loaded.source, family=ModelFamily.sd3_medium)  # no layers known
    engine.attach(engine.pipeline, medium, loaded.plan)
    try:
        same = engine.generate(job.replace(slg_scale=2.8)).images[0]
        assert max_diff(plain, same) == 0
    finally:
        engine.attach(engine.pipeline, loaded.source, loaded.plan)


def test_a_picture_the_job_names_must_be_given(engine, params, picture):
    with pytest.raises(InvalidParamsError) as refused:
        engine.generate(params.replace(source_image=SOURCE_DIGEST))
    assert refused.value.errors[0].field == "source_image"


# ---------------------------------------------------------------------- end to end, processes


def test_the_same_seed_and_picture_give_the_same_pixels_in_two_processes(
    tmp_path, picture, mask, tiny_model_dir
):
    picture.save(tmp_path / "photo.png")
    mask.save(tmp_path / "mask.png")
    made = []
    for run in ("one", "two"):
        done = sd3desk(
            tmp_path / run,
            "generate",
            "--model",
            str(tiny_model_dir),
            "--prompt",
            "a red door",
            "--seed",
            "11",
            "--steps",
            "4",
            "--image",
            str(tmp_path / "photo.png"),
            "--mask",
            str(tmp_path / "mask.png"),
            "--strength",
            "0.75",
            "--out",
            str(tmp_path / run / "out"),
        )
        assert done.returncode == 0, done.stderr
        made.append(Path(done.stdout.split()[-1]))
    first, second = (Image.open(p) for p in made)
    assert first.size == (400, 304)  # the picture's own size, in multiples of 16
    assert max_diff(first, second) == 0
    from sd3desk.core.metadata import read_metadata

    params = read_metadata(made[0]).params
    digest = SourceStore(tmp_path / "one" / "sources").put_file(tmp_path / "photo.png")
    assert params.source_image == digest and params.strength == 0.75 and params.mask_image
    text = Image.open(made[0]).text["parameters"]
    assert "Denoising strength: 0.75" in text and "Mask blur: 4" in text


def test_a_queued_img2img_job_runs_from_the_stored_picture_after_a_crash(
    tmp_path, picture, tiny_model_dir
):
    photo = tmp_path / "photo.jpg"
    picture.save(photo, quality=90)
    data = tmp_path / "data"
    added = sd3desk(
        data,
        "queue",
        "add",
        "--model",
        str(tiny_model_dir),
        "--prompt",
        "a lighthouse",
        "--seed",
        "5",
        "--steps",
        "4",
        "--width",
        "256",
        "--height",
        "256",
        "--image",
        str(photo),
    )
    assert added.returncode == 0, added.stderr
    photo.unlink()  # the user moved it away: the job has its own copy
    out = ("--out", str(tmp_path / "out"))
    crashed = sd3desk(
        data, "queue", "run", "--device", "cpu", *out, env={"SD3DESK_KILL_AT": "model-load:1"}
    )
    assert crashed.returncode == -9, crashed.stderr  # killed while loading: the job waits
    ran = sd3desk(data, "queue", "run", "--device", "cpu", *out)
    assert ran.returncode == 0, ran.stderr
    (made,) = (tmp_path / "out").rglob("*.png")
    record = json.loads(Image.open(made).text["sd3desk"])
    assert record["params"]["source_image"] and record["params"]["strength"] == 0.6
    assert Image.open(made).size == (256, 256)
