"""GenerationParams: defaults, validation naming every field and range, presets, seeds."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sd3desk.core.errors import InvalidParamsError
from sd3desk.core.params import (
    FAMILY_DEFAULTS,
    SEED_MAX,
    SIZE_PRESETS,
    GenerationParams,
    ModelFamily,
    PromptLength,
    check,
    defaults_for,
    size_for_aspect,
    validate,
)

VALID = GenerationParams(prompt="a cat", seed=1)


def fields_of(params: GenerationParams, max_side: int | None = None) -> set[str]:
    return {e.field for e in validate(params, max_side)}


def test_defaults_are_valid_and_follow_sd3_medium():
    p = defaults_for(ModelFamily.sd3_medium, "a cat")
    assert (p.steps, p.guidance_scale, p.shift, p.width, p.height) == (28, 7.0, 3.0, 1024, 1024)
    for family in ModelFamily:
        assert validate(defaults_for(family, "x"), FAMILY_DEFAULTS[family].max_side) == []


def test_sd3_medium_position_limit_is_3072():
    assert FAMILY_DEFAULTS[ModelFamily.sd3_medium].max_side == 3072


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"width": 250}, "width", "between 256 and 2048"),
        ({"width": 2064}, "width", "between 256 and 2048"),
        ({"height": 1000}, "height", "multiple of 16"),
        ({"steps": 0}, "steps", "between 1 and 150"),
        ({"steps": 151}, "steps", "between 1 and 150"),
        ({"steps": 2.5}, "steps", "whole number"),
        ({"guidance_scale": -0.1}, "guidance_scale", "between 0 and 30"),
        ({"guidance_scale": 30.5}, "guidance_scale", "between 0 and 30"),
        ({"guidance_scale": math.nan}, "guidance_scale", "between 0 and 30"),
        ({"seed": -1}, "seed", f"between 0 and {SEED_MAX}"),
        ({"seed": SEED_MAX + 1}, "seed", f"between 0 and {SEED_MAX}"),
        ({"batch_size": 0}, "batch_size", "between 1 and 16"),
        ({"batch_size": 17}, "batch_size", "between 1 and 16"),
        ({"shift": 0}, "shift", "between 0.1 and 20"),
        ({"max_sequence_length": 513}, "max_sequence_length", "between 1 and 512"),
        ({"prompt": "x" * 20_001}, "prompt", "at most 20000"),
        ({"steps": True}, "steps", "whole number"),
    ],
)
def test_each_invalid_field_is_named_with_its_range(change, field, words):
    errors = validate(VALID.replace(**change))
    assert [e.field for e in errors] == [field]
    assert words in errors[0].message


def test_model_limit_tightens_the_size_range():
    assert fields_of(VALID.replace(width=2048), max_side=1024) == {"width"}
    assert "between 256 and 1024" in str(validate(VALID.replace(width=2048), 1024)[0])


def test_check_raises_with_every_bad_field():
    with pytest.raises(InvalidParamsError) as info:
        check(VALID.replace(width=1, steps=0, seed=-5))
    assert {e.field for e in info.value.errors} == {"width", "steps", "seed"}


@given(
    width=st.integers(-10_000, 10_000),
    height=st.integers(-10_000, 10_000),
    steps=st.integers(-1000, 1000),
    guidance=st.floats(allow_nan=True, allow_infinity=True),
    seed=st.integers(-(2**40), 2**40),
    batch=st.integers(-100, 100),
)
def test_validation_agrees_with_the_documented_ranges(width, height, steps, guidance, seed, batch):
    p = GenerationParams(
        "x",
        seed=seed,
        steps=steps,
        guidance_scale=guidance,
        width=width,
        height=height,
        batch_size=batch,
    )
    expected = set()
    for name, value in (("width", width), ("height", height)):
        if not (256 <= value <= 2048 and value % 16 == 0):
            expected.add(name)
    if not 1 <= steps <= 150:
        expected.add("steps")
    if not (math.isfinite(guidance) and 0 <= guidance <= 30):
        expected.add("guidance_scale")
    if not 0 <= seed <= SEED_MAX:
        expected.add("seed")
    if not 1 <= batch <= 16:
        expected.add("batch_size")
    assert fields_of(p) == expected


def test_guidance_at_or_below_one_means_no_cfg():
    assert not VALID.replace(guidance_scale=1.0).uses_cfg
    assert VALID.replace(guidance_scale=1.01).uses_cfg


def test_random_seed_resolves_to_a_concrete_number():
    p = GenerationParams("x")
    assert p.seed is None
    resolved = p.with_concrete_seed()
    assert resolved.seed is not None and 0 <= resolved.seed <= SEED_MAX
    assert resolved.with_concrete_seed() == resolved


def test_image_k_of_a_batch_uses_seed_plus_k_and_wraps():
    p = VALID.replace(seed=SEED_MAX, batch_size=3)
    assert [p.for_image(k).seed for k in range(3)] == [SEED_MAX, 0, 1]
    assert p.for_image(2).batch_size == 1


def test_presets_are_multiples_of_64_near_one_megapixel():
    for preset in SIZE_PRESETS:
        assert preset.width % 64 == 0 and preset.height % 64 == 0
        if not preset.name.startswith("fast"):
            assert 0.85 <= preset.width * preset.height / 2**20 <= 1.1
    names = {p.name for p in SIZE_PRESETS}
    assert {"1:1", "4:3", "3:2", "16:9", "21:9", "9:16", "fast 512²", "fast 768²"} <= names


def test_size_for_aspect():
    assert size_for_aspect("16:9") == (1344, 768)
    w, h = size_for_aspect("5:4")
    assert w % 64 == 0 and h % 64 == 0 and w > h
    with pytest.raises(InvalidParamsError, match="aspect"):
        size_for_aspect("wide")
    assert size_for_aspect("16:1")[0] > size_for_aspect("16:1")[1]


@pytest.mark.parametrize(
    "aspect",
    ["1:inf", "inf:1", "nan:1", "1e-300:1e300", "1e300:1e-300", "0:1", "17:1", "1:17", ":"],
)
def test_odd_aspects_are_field_errors_with_the_range(aspect):
    with pytest.raises(InvalidParamsError) as raised:
        size_for_aspect(aspect)
    (error,) = raised.value.errors
    assert error.field == "aspect" and "between 1:16 and 16:1" in error.message


def test_round_trip_through_dict_ignores_unknown_keys():
    data = VALID.to_dict() | {"sampler": "dpm"}
    assert GenerationParams.from_dict(data) == VALID
    with pytest.raises(InvalidParamsError, match="steps"):
        GenerationParams.from_dict({"prompt": "x", "steps": "many"})


def test_prompt_length_warnings():
    ok = PromptLength(clip_tokens=20, t5_tokens=20, t5_limit=256)
    assert ok.warnings() == []
    long = PromptLength(clip_tokens=120, t5_tokens=300, t5_limit=256)
    assert long.clip_truncated and long.t5_truncated
    assert len(long.warnings()) == 2
    no_t5 = PromptLength(clip_tokens=120, t5_tokens=None, t5_limit=256)
    assert any("T5 is off" in w for w in no_t5.warnings())
