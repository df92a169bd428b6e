"""The one request type, its validation, model-family defaults and size presets."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from enum import Enum
from typing import Any

from sd3desk.core.errors import FieldError, InvalidParamsError
from sd3desk.core.loras import LoraRef, lora_errors, loras_from_list

SEED_MAX = 2**32 - 1
# What a file may say a seed was (ComfyUI's seeds run to 2**64 - 1); sd3desk makes 0..SEED_MAX
FOREIGN_SEED_MAX = 2**64 - 1
COUNT_MAX = 2**63 - 1  # the most any other whole-number field may read as (what SQLite holds)
SIZE_MIN, SIZE_MAX, SIZE_MULTIPLE = 256, 2048, 16
STEPS_MIN, STEPS_MAX = 1, 150
GUIDANCE_MIN, GUIDANCE_MAX = 0.0, 30.0
BATCH_MIN, BATCH_MAX = 1, 16
SHIFT_MIN, SHIFT_MAX = 0.1, 20.0
T5_LENGTH_MIN, T5_LENGTH_MAX = 1, 512  # diffusers' SD3 pipeline refuses more than 512
MASK_BLUR_MAX = 64  # pixels
MASK_PADDING_MAX = 256  # pixels around the masked area (A1111's "only masked padding" range)
HIRES_SCALE_MIN, HIRES_SCALE_MAX = 1.25, 2.0  # 1.0 means no hires pass
SLG_SCALE_MAX = 10.0
PROMPT_CHARS_MAX = 20_000
CLIP_TOKEN_LIMIT = 77  # both CLIP encoders: 75 tokens of text plus start and end
SD3_PIPELINE = "StableDiffusion3Pipeline"  # the diffusers class every SD3 / SD3.5 model names


class ModelFamily(Enum):
    """Which SD3 architecture a model is; decides defaults and limits."""

    sd3_medium = "sd3-medium"
    sd35_medium = "sd3.5-medium"
    sd35_large = "sd3.5-large"
    sd35_large_turbo = "sd3.5-large-turbo"  # Large's weights, distilled for 4 steps
    test = "sd3desk-test"


@dataclass(frozen=True)
class FamilyDefaults:
    """Recommended settings and hard limits of one model family."""

    label: str
    steps: int
    guidance_scale: float
    shift: float
    size: int
    # Largest side the transformer's position embedding covers:
    # pos_embed_max_size x patch size (2) x VAE downsampling (8).
    max_side: int


# Steps/guidance follow Stability AI's model cards; shift is the scheduler config of each repo.
FAMILY_DEFAULTS: dict[ModelFamily, FamilyDefaults] = {
    ModelFamily.sd3_medium: FamilyDefaults("SD3 Medium", 28, 7.0, 3.0, 1024, 192 * 16),
    ModelFamily.sd35_medium: FamilyDefaults("SD3.5 Medium", 40, 4.5, 3.0, 1024, 384 * 16),
    ModelFamily.sd35_large: FamilyDefaults("SD3.5 Large", 28, 3.5, 3.0, 1024, 192 * 16),
    # Stability's model card: 4 steps, guidance 0 (CFG off)
    ModelFamily.sd35_large_turbo: FamilyDefaults("SD3.5 Large Turbo", 4, 0.0, 3.0, 1024, 192 * 16),
    ModelFamily.test: FamilyDefaults(
        "sd3desk test model (random weights, makes noise)", 8, 5.0, 3.0, 256, 128 * 16
    ),
}


# Skip-layer guidance: the layers and the part of the schedule from Stability's SD3.5 Medium
# release notes (diffusers' StableDiffusion3Pipeline arguments); on by default for that family.
# (The test model skips its second of two layers, so the tests see SLG act.)
SLG_LAYERS: dict[ModelFamily, tuple[int, ...]] = {
    ModelFamily.sd35_medium: (7, 8, 9),
    ModelFamily.test: (1,),
}
SLG_START, SLG_STOP = 0.01, 0.2
SLG_DEFAULT_SCALE = {ModelFamily.sd35_medium: 2.8}


def architecture(family: ModelFamily) -> ModelFamily:
    """The family whose configs and weight layout `family` shares (Turbo is Large's)."""
    return ModelFamily.sd35_large if family is ModelFamily.sd35_large_turbo else family


def turbo_or(family: ModelFamily, *names: str) -> ModelFamily:
    """SD3.5 Large Turbo when the file or repo name says so: its weights are shaped like
    Large's, so the name is all there is to tell them apart."""
    if family is ModelFamily.sd35_large and any("turbo" in n.lower() for n in names):
        return ModelFamily.sd35_large_turbo
    return family


@dataclass(frozen=True)
class SizePreset:
    """A named resolution offered in the UI and by `--aspect`."""

    name: str
    width: int
    height: int


# About one megapixel in multiples of 64 (the bucket sizes SD3 was trained around), then fast sizes.
SIZE_PRESETS: tuple[SizePreset, ...] = (
    SizePreset("1:1", 1024, 1024),
    SizePreset("4:3", 1152, 896),
    SizePreset("3:4", 896, 1152),
    SizePreset("3:2", 1216, 832),
    SizePreset("2:3", 832, 1216),
    SizePreset("16:9", 1344, 768),
    SizePreset("9:16", 768, 1344),
    SizePreset("21:9", 1536, 640),
    SizePreset("9:21", 640, 1536),
    SizePreset("fast 512²", 512, 512),
    SizePreset("fast 768²", 768, 768),
)


ASPECT_MAX = 16.0  # wider than this clamps to the size limits anyway


def size_for_aspect(aspect: str, megapixels: float = 1.0) -> tuple[int, int]:
    """Width and height for "W:H": the preset if any, else ~`megapixels` in multiples of 64."""
    for preset in SIZE_PRESETS:
        if preset.name == aspect and megapixels == 1.0:
            return preset.width, preset.height
    try:
        a_text, b_text = aspect.split(":")
        a, b = float(a_text), float(b_text)
        # (a comparison is False for NaN; 1:inf or 1e-300:1e300 would make a side infinite)
        if not (a > 0 and b > 0 and 1 / ASPECT_MAX <= a / b <= ASPECT_MAX):
            raise ValueError
    except (ValueError, ZeroDivisionError, OverflowError):
        raise InvalidParamsError(
            [
                FieldError(
                    "aspect",
                    f"{aspect!r} is not an aspect ratio like 16:9 between 1:{ASPECT_MAX:g} and "
                    f"{ASPECT_MAX:g}:1",
                )
            ]
        ) from None
    area = megapixels * 1024 * 1024
    width = _clamp(round(math.sqrt(area * a / b) / 64) * 64)
    height = _clamp(round(math.sqrt(area * b / a) / 64) * 64)
    return width, height


def _clamp(side: int) -> int:
    return max(SIZE_MIN, min(SIZE_MAX, side))


@dataclass(frozen=True)
class GenerationParams:
    """Everything one generation job needs. `seed=None` means "random" until resolved."""

    prompt: str
    negative_prompt: str = ""
    seed: int | None = None
    steps: int = 28
    guidance_scale: float = 7.0
    width: int = 1024
    height: int = 1024
    batch_size: int = 1
    shift: float = 3.0
    max_sequence_length: int = 256
    model: str = ""
    # Starting from a picture: the pictures are named by the SHA-256 of their file in the data
    # folder's source store (core/sources.py), so a queued or re-run job finds the same pixels.
    source_image: str = ""  # "" means from noise (text to image)
    strength: float = 0.6  # how much of the source is changed, 0-1 (A1111: denoising strength)
    mask_image: str = ""  # white repaints, black keeps (inpainting); needs a source image
    mask_blur: int = 4  # pixels of feathering at the mask's edge
    mask_padding: int = 0  # 0: repaint at the picture's size; more: only the masked area with
    # this margin, at full resolution (diffusers' padding_mask_crop)
    hires_scale: float = 1.0  # 1: off; 1.25-2: upscale the result and run img2img over it
    hires_steps: int = 0  # steps of the hires pass; 0 means the same as `steps`
    hires_strength: float = 0.5
    slg_scale: float = 0.0  # skip-layer guidance (SD3.5 Medium); 0 is off
    # LoRAs applied with their weights, each named by the SHA-256 of its tensors (core/loras.py)
    loras: tuple[LoraRef, ...] = ()

    @property
    def mode(self) -> str:
        """ "txt2img", "img2img" or "inpaint" (a hires pass adds to any of them)."""
        if not self.source_image:
            return "txt2img"
        return "inpaint" if self.mask_image else "img2img"

    @property
    def hires(self) -> bool:
        return self.hires_scale != 1.0

    def hires_size(self) -> tuple[int, int]:
        """The size of the hires pass: the scaled size, in multiples of 16."""
        return (
            _multiple(self.width * self.hires_scale),
            _multiple(self.height * self.hires_scale),
        )

    def hires_pass_steps(self) -> int:
        return self.hires_steps or self.steps

    @property
    def uses_cfg(self) -> bool:
        """CFG runs only above 1; at or below it the negative prompt has no effect."""
        return self.guidance_scale > 1.0

    def replace(self, **changes: Any) -> GenerationParams:
        return dataclasses.replace(self, **changes)

    def with_concrete_seed(self) -> GenerationParams:
        """Resolve a random seed to a real number so every saved image can be re-made."""
        if self.seed is not None:
            return self
        import secrets  # here, not at the top: the window starts faster without it

        return self.replace(seed=secrets.randbelow(SEED_MAX + 1))

    def for_image(self, index: int) -> GenerationParams:
        """The single-image request that re-makes image `index` of this batch (seed + index)."""
        if self.seed is None:
            raise ValueError("resolve the seed first")
        return self.replace(seed=(self.seed + index) % (SEED_MAX + 1), batch_size=1)

    def to_dict(self) -> dict[str, Any]:
        """Every field a request uses: those of starting from a picture, inpainting, hires,
        skip-layer guidance and LoRAs only when it uses them (a text-to-image request reads as it
        always did, and hashes the same)."""
        data = dataclasses.asdict(self)
        data["loras"] = [ref.to_dict() for ref in self.loras]
        unused = [] if self.slg_scale else ["slg_scale"]
        if not self.loras:
            unused.append("loras")
        if not self.hires:
            unused += ["hires_scale", "hires_steps", "hires_strength"]
        if not self.mask_image:
            unused += ["mask_image", "mask_blur", "mask_padding"]
        if not self.source_image:
            unused += ["source_image", "strength"]
        for name in unused:
            del data[name]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationParams:
        """Build from a dict (saved metadata, settings); unknown keys are ignored, types checked."""
        if not isinstance(data, dict):
            raise InvalidParamsError([FieldError("params", "expected a mapping of fields")])
        names = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        errors: list[FieldError] = []
        for key, value in data.items():
            if key not in names:
                continue
            try:
                values[key] = _coerce(key, value)
            except (TypeError, ValueError, OverflowError) as exc:
                reason = exc.args[0] if isinstance(exc, _OutOfRange) else "is not a valid value"
                errors.append(FieldError(key, f"{_shown(value)} {reason}"))
        if "prompt" not in values:
            values["prompt"] = ""
        if errors:
            raise InvalidParamsError(errors)
        return cls(**values)


_INT_FIELDS = {
    "steps",
    "width",
    "height",
    "batch_size",
    "max_sequence_length",
    "mask_blur",
    "mask_padding",
    "hires_steps",
}
_FLOAT_FIELDS = {
    "guidance_scale",
    "shift",
    "strength",
    "hires_scale",
    "hires_strength",
    "slg_scale",
}
_STR_FIELDS = {"prompt", "negative_prompt", "model", "source_image", "mask_image"}


def _multiple(side: float) -> int:
    return max(SIZE_MULTIPLE, round(side / SIZE_MULTIPLE) * SIZE_MULTIPLE)


class _OutOfRange(ValueError):
    """A number that parses but that no field could hold (its message says the range)."""


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _coerce(key: str, value: Any) -> Any:
    """`value` as the type of field `key`: every number finite and within what the field can
    hold (a file may say anything; SQLite holds 64-bit integers, the UI 32-bit ones)."""
    if isinstance(value, bool):
        raise TypeError(key)
    if key == "seed":
        return None if value is None else _whole(value, FOREIGN_SEED_MAX)
    if key in _INT_FIELDS:
        return _whole(value, COUNT_MAX)
    if key in _FLOAT_FIELDS:
        number = float(value)
        if not math.isfinite(number):
            raise _OutOfRange("is not a finite number")
        return number
    if key in _STR_FIELDS:
        if not isinstance(value, str):
            raise TypeError(key)
        return value
    if key == "loras":
        try:
            return loras_from_list(value)
        except ValueError as exc:
            raise _OutOfRange(exc.args[0]) from None
    raise KeyError(key)


def _whole(value: Any, top: int) -> int:
    if isinstance(value, float) and not value.is_integer():
        raise ValueError("not whole")
    if isinstance(value, str) and len(value) > 40:  # int() of a long digit string is slow
        raise _OutOfRange(f"must be between 0 and {top}")
    number = int(value)  # OverflowError for inf, ValueError for NaN and text
    if not 0 <= number <= top:
        raise _OutOfRange(f"must be between 0 and {top}")
    return number


def defaults_for(family: ModelFamily, prompt: str = "", model: str = "") -> GenerationParams:
    """The recommended request for a model family."""
    d = FAMILY_DEFAULTS[family]
    return GenerationParams(
        prompt=prompt,
        steps=d.steps,
        guidance_scale=d.guidance_scale,
        shift=d.shift,
        width=d.size,
        height=d.size,
        model=model,
        slg_scale=SLG_DEFAULT_SCALE.get(family, 0.0),
    )


# C0 and C1 control characters except tab, newline and carriage return, and lone UTF-16 halves
# (what undecodable bytes in a command line become, or a "\ud800" in JSON): a tokenizer would
# fail on them far from where they came from
_UNPRINTABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def _unprintable(found: re.Match[str]) -> str:
    char, where = found.group(), found.start() + 1
    if "\ud800" <= char <= "\udfff":
        return (
            f"holds text that is not valid Unicode (a lone surrogate U+{ord(char):04X} at "
            f"character {where}); check the file's or terminal's encoding"
        )
    return (
        f"holds a control character U+{ord(char):04X} at character {where}; only newlines "
        "and tabs are allowed"
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_range(errors: list[FieldError], name: str, value: Any, low: float, high: float) -> None:
    if not _is_number(value) or not math.isfinite(value) or not low <= value <= high:
        errors.append(FieldError(name, f"must be between {low:g} and {high:g} (got {value!r})"))


def validate(params: GenerationParams, max_side: int | None = None) -> list[FieldError]:
    """Every problem with `params`, each naming its field and the allowed range; [] when valid.

    `max_side` is the loaded model's hard limit (its position embedding); the app's own range
    (256-2048) applies too.
    """
    errors: list[FieldError] = []
    for name in ("prompt", "negative_prompt"):
        text = getattr(params, name)
        if not isinstance(text, str):
            errors.append(FieldError(name, "must be text"))
        elif len(text) > PROMPT_CHARS_MAX:
            errors.append(
                FieldError(name, f"is {len(text)} characters; at most {PROMPT_CHARS_MAX}")
            )
        elif found := _UNPRINTABLE.search(text):
            errors.append(FieldError(name, _unprintable(found)))
    if params.seed is not None and (not _is_int(params.seed) or not 0 <= params.seed <= SEED_MAX):
        errors.append(FieldError("seed", f"must be between 0 and {SEED_MAX} (got {params.seed!r})"))
    top = SIZE_MAX if max_side is None else min(SIZE_MAX, max_side)
    for name in ("width", "height"):
        value = getattr(params, name)
        if not _is_int(value) or not SIZE_MIN <= value <= top:
            errors.append(FieldError(name, f"must be between {SIZE_MIN} and {top} (got {value!r})"))
        elif value % SIZE_MULTIPLE:
            errors.append(
                FieldError(
                    name,
                    f"must be a multiple of {SIZE_MULTIPLE} (got {value}; try "
                    f"{value - value % SIZE_MULTIPLE})",
                )
            )
    for name, low, high in (
        ("steps", STEPS_MIN, STEPS_MAX),
        ("batch_size", BATCH_MIN, BATCH_MAX),
        ("max_sequence_length", T5_LENGTH_MIN, T5_LENGTH_MAX),
    ):
        value = getattr(params, name)
        if not _is_int(value):
            errors.append(FieldError(name, f"must be a whole number from {low} to {high}"))
        else:
            _check_range(errors, name, value, low, high)
    _check_range(errors, "guidance_scale", params.guidance_scale, GUIDANCE_MIN, GUIDANCE_MAX)
    _check_range(errors, "shift", params.shift, SHIFT_MIN, SHIFT_MAX)
    _check_range(errors, "slg_scale", params.slg_scale, 0.0, SLG_SCALE_MAX)
    if not isinstance(params.model, str):
        errors.append(FieldError("model", "must be a path or a Hugging Face repo id"))
    errors += _picture_errors(params, top)
    errors += lora_errors(params.loras)
    return errors


_DIGEST = re.compile(r"[0-9a-f]{64}")


def picture_steps(steps: int, strength: float) -> int:
    """The steps a pass from a picture runs: diffusers starts `int(steps - steps x strength)`
    steps into the schedule, so any strength above 0 runs at least one."""
    return steps - int(steps - steps * strength)


def _strength_errors(name: str, strength: Any) -> list[FieldError]:
    if not _is_number(strength) or not math.isfinite(strength) or not 0 < strength <= 1:
        return [FieldError(name, f"must be more than 0 and at most 1 (got {strength!r})")]
    return []


def _picture_errors(params: GenerationParams, top: int) -> list[FieldError]:
    """The fields of starting from a picture, inpainting and the hires pass."""
    errors: list[FieldError] = []
    for name in ("source_image", "mask_image"):
        value = getattr(params, name)
        if not isinstance(value, str) or (value and not _DIGEST.fullmatch(value)):
            errors.append(FieldError(name, "must name a stored picture by its SHA-256 (64 hex)"))
    if params.mask_image and not params.source_image:
        errors.append(FieldError("mask_image", "needs a source image to paint over"))
    if params.source_image:
        errors += _strength_errors("strength", params.strength)
    for name, high in (("mask_blur", MASK_BLUR_MAX), ("mask_padding", MASK_PADDING_MAX)):
        value = getattr(params, name)
        if not _is_int(value) or not 0 <= value <= high:
            errors.append(FieldError(name, f"must be a whole number from 0 to {high}"))
    if not _is_number(params.hires_scale) or not (
        params.hires_scale == 1.0 or HIRES_SCALE_MIN <= params.hires_scale <= HIRES_SCALE_MAX
    ):
        errors.append(
            FieldError(
                "hires_scale",
                f"must be 1 (off) or between {HIRES_SCALE_MIN:g} and {HIRES_SCALE_MAX:g} "
                f"(got {params.hires_scale!r})",
            )
        )
    elif params.hires:
        if params.source_image:
            errors.append(
                FieldError(
                    "hires_scale",
                    "is for text to image; to enlarge a picture, give a bigger size instead",
                )
            )
        if _is_int(params.width) and _is_int(params.height):
            width, height = params.hires_size()
            if max(width, height) > top:
                errors.append(
                    FieldError(
                        "hires_scale",
                        f"makes {width}x{height}, over this model's limit of {top} a side",
                    )
                )
        if not _is_int(params.hires_steps) or not 0 <= params.hires_steps <= STEPS_MAX:
            errors.append(FieldError("hires_steps", f"must be 0 (as steps) to {STEPS_MAX}"))
        errors += _strength_errors("hires_strength", params.hires_strength)
    return errors


def check(params: GenerationParams, max_side: int | None = None) -> GenerationParams:
    """Return `params` unchanged when valid, else raise InvalidParamsError listing every field."""
    errors = validate(params, max_side)
    if errors:
        raise InvalidParamsError(errors)
    return params


@dataclass(frozen=True)
class PromptLength:
    """Token counts of a prompt per encoder, so the UI can warn before text is cut off."""

    clip_tokens: int
    t5_tokens: int | None  # None when the model runs without T5
    t5_limit: int
    clip_limit: int = CLIP_TOKEN_LIMIT

    @property
    def clip_truncated(self) -> bool:
        return self.clip_tokens > self.clip_limit

    @property
    def t5_truncated(self) -> bool:
        return self.t5_tokens is not None and self.t5_tokens > self.t5_limit

    def warnings(self) -> list[str]:
        out = []
        if self.clip_truncated:
            out.append(
                f"CLIP encoders see {self.clip_limit} of {self.clip_tokens} tokens; "
                "the rest of the prompt is cut off for them"
            )
        if self.t5_tokens is None:
            if self.clip_truncated:
                out.append("T5 is off, so nothing past the CLIP limit reaches the model")
        elif self.t5_truncated:
            out.append(
                f"T5 sees {self.t5_limit} of {self.t5_tokens} tokens; raise the T5 max sequence "
                f"length (up to {T5_LENGTH_MAX}) or shorten the prompt"
            )
        return out
