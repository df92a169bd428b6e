"""Other projects' parsers as oracles (issue 13, item 5): sd-parsers and sd-prompt-reader (from
PyPI) read our PNG, JPEG and WebP files as we wrote them; and on real files other tools wrote
(tests/data, with their licences) our readers agree with sd-parsers, whose test files they are.
AUTOMATIC1111's own read path (piexif) is checked in test_metadata.py."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from PIL import Image

from sd3desk.core.metadata import ImageMetadata, ModelIdentity, export_fields, png_info
from sd3desk.core.metadata import read_metadata as read
from sd3desk.core.params import GenerationParams

SAMPLES = Path(__file__).parents[1] / "data" / "sd-parsers"
META = ImageMetadata(
    GenerationParams(
        "a cat, on a mat: 50% cute\nsecond line 猫 ünï",
        "blurry, low quality",
        seed=4_000_000_000,
        steps=28,
        guidance_scale=4.5,
        width=1216,
        height=832,
    ),
    ModelIdentity("sd3.5_medium", "3bb7f21bc5"),
)


@pytest.fixture(params=["PNG", "JPEG", "WEBP"])
def ours(request, tmp_path) -> Path:
    path = tmp_path / f"ours.{request.param.lower()}"
    image = Image.new("RGB", (64, 64), (10, 120, 200))
    if request.param == "PNG":
        image.save(path, pnginfo=png_info(META))
    else:
        image.save(path, format=request.param, **export_fields(META, request.param))
    return path


def test_sd_parsers_reads_our_files_as_written(ours):
    from sd_parsers import ParserManager

    info = ParserManager().parse(ours)
    assert info is not None and info.generator.value == "AUTOMATIC1111"
    p = META.params
    assert (info.full_prompt, info.full_negative_prompt) == (p.prompt, p.negative_prompt)
    (sampler,) = info.samplers
    assert sampler.name == "Euler"
    assert sampler.parameters == {"cfg_scale": "4.5", "seed": "4000000000", "steps": "28"}
    assert {(m.name, m.hash) for m in info.models} == {("sd3.5_medium", "3bb7f21bc5")}


def test_sd_prompt_reader_reads_our_files_as_written(ours):
    reader_module = pytest.importorskip("sd_prompt_reader.image_data_reader")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = reader_module.ImageDataReader(str(ours))
    assert found.tool == "A1111 webUI"
    assert (found.positive, found.negative) == (META.params.prompt, META.params.negative_prompt)
    assert found.parameter == {
        "model": "sd3.5_medium",
        "sampler": "Euler",
        "seed": "4000000000",
        "cfg": "4.5",
        "steps": "28",
        "size": "1216x832",
    }


def _sd_parsers(path: Path):
    from sd_parsers import ParserManager

    info = ParserManager().parse(path)
    assert info is not None, f"sd-parsers read nothing from {path.name}"
    return info


SAMPLE_FILES = sorted(p.name for p in SAMPLES.iterdir() if p.suffix in (".png", ".jpg"))


@pytest.mark.parametrize("name", SAMPLE_FILES)
def test_real_files_from_other_tools_read_as_sd_parsers_reads_them(name):
    """Prompts, seed, steps and CFG of the sampler that made the image (the first, in graphs
    with two passes) agree with sd-parsers. Where it reports the prompt Fooocus expanded with
    its styles, ours is the user's prompt inside that expansion."""
    path = SAMPLES / name
    meta, theirs = read(path), _sd_parsers(path)
    p, sampler = meta.params, theirs.samplers[0]
    if theirs.generator.value == "Fooocus":
        assert p.prompt and any(p.prompt in prompt.value for prompt in sampler.prompts)
        assert ("styles", "['Fooocus V2', 'Fooocus Enhance', 'Fooocus Sharp']") in meta.unmapped
    else:
        for prompt in sampler.prompts:  # (a graph's combined prompts each appear in ours)
            assert prompt.value.strip() in p.prompt
        for prompt in sampler.negative_prompts:
            assert prompt.value.strip() in p.negative_prompt
        assert bool(sampler.negative_prompts) == bool(p.negative_prompt)
    settings = sampler.parameters
    assert p.seed == int(settings.get("seed", settings.get("noise_seed")))
    assert p.guidance_scale == float(settings["cfg_scale"])
    assert p.steps == int(settings.get("steps", p.steps))  # (NovelAI's: sd-parsers omits it)


def test_the_sample_set_covers_every_tool_we_read():
    sources = {read(SAMPLES / name).source for name in SAMPLE_FILES}
    assert sources == {"a1111", "comfyui", "fooocus", "invokeai", "novelai"}


@pytest.mark.parametrize(
    "name",
    [
        "automatic1111_cropped.png",
        "automatic1111_cropped.jpg",
        "img2img_cropped.png",
        "invokeai_dream1.png",
        "invokeai_imeta1.png",
        "invokeai_sdmeta1.png",
        "novelai1_cropped.png",
    ],
)
def test_real_files_read_as_sd_prompt_reader_reads_them(name):
    """The files of one sampler that sd-prompt-reader reads (it gives tuples for graphs with
    several, and does not read this Fooocus version)."""
    reader_module = pytest.importorskip("sd_prompt_reader.image_data_reader")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = reader_module.ImageDataReader(str(SAMPLES / name))
    p = read(SAMPLES / name).params
    assert (p.prompt, p.negative_prompt) == (theirs.positive.strip(), theirs.negative.strip())
    found = theirs.parameter
    assert (p.seed, p.steps, p.guidance_scale) == (
        int(found["seed"]),
        int(found["steps"]),
        float(found["cfg"]),
    )
