"""AUTOMATIC1111's "parameters" text, written and read.

The shape (A1111's infotext, also Forge's, Civitai's and most viewers'): prompt lines, then an
optional "Negative prompt: ..." that runs to the last line, then one line of "Key: value" pairs
separated by ", ", where a value holding ',', ':' or a quote is JSON-quoted.

The reader is a single left-to-right scan: every character is looked at a bounded number of
times, so a hostile 1 MB line takes milliseconds (a regular expression like A1111's own
backtracks quadratically on a long line of key-like characters without a colon).
"""

from __future__ import annotations

import json
from typing import Any

from sd3desk.core.errors import MetadataError
from sd3desk.core.loras import lora_hashes_text, parse_lora_hashes, split_lora_tags
from sd3desk.core.metadata.record import ImageMetadata, ModelIdentity, stated

SAMPLER_NAME = "Euler"  # SD3's flow-matching Euler sampler, as A1111/Forge and Civitai name it
HIRES_UPSCALER = "Lanczos"  # A1111's name for the PIL Lanczos upscaler

NEGATIVE = "Negative prompt:"
PAIRS_MIN = 3  # A1111 takes its last line as settings when it holds at least three pairs


def _quote(value: str) -> str:
    return json.dumps(value, ensure_ascii=False) if any(c in value for c in ',:\n"') else value


def join_pairs(pairs: list[tuple[str, str]]) -> str:
    return ", ".join(f"{key}: {_quote(value)}" for key, value in pairs)


def _is_key_char(char: str) -> bool:
    return char.isalnum() or char in "_ -/"


def _quoted_end(line: str, start: int) -> int:
    """Index just past the closing quote of the JSON string opening at `start`; -1 if none."""
    i, n = start + 1, len(line)
    while i < n:
        char = line[i]
        if char == "\\":
            i += 2
        elif char == '"':
            return i + 1
        else:
            i += 1
    return -1


def split_pairs(line: str) -> list[tuple[str, str]]:
    """The "Key: value" pairs of a settings line, in order; text that is not a pair is skipped
    up to the next comma (as A1111's findall skips it)."""
    pairs: list[tuple[str, str]] = []
    i, n = 0, len(line)
    while i < n:
        while i < n and line[i].isspace():
            i += 1
        start = i
        if i < n and line[i].isalpha():
            i += 1
            while i < n and _is_key_char(line[i]):
                i += 1
        if i == start or i >= n or line[i] != ":":
            comma = line.find(",", i)
            i = n if comma < 0 else comma + 1
            continue
        key = line[start:i].strip()
        i += 1
        while i < n and line[i] == " ":
            i += 1
        end = _quoted_end(line, i) if i < n and line[i] == '"' else -1
        if end > 0 and (end == n or line[end] == ","):
            try:
                value = json.loads(line[i:end])
            except ValueError:
                value = line[i + 1 : end - 1]
            i = end + 1
        else:
            comma = line.find(",", i)
            stop = n if comma < 0 else comma
            value = line[i:stop]
            i = stop + 1
        pairs.append((key, str(value).strip()))
    return pairs


def split_text(text: str) -> tuple[str, str, list[tuple[str, str]]]:
    """(prompt, negative prompt, settings pairs) of an A1111 text."""
    lines = text.strip("\n").split("\n")
    pairs = split_pairs(lines[-1]) if lines else []
    if len(pairs) >= PAIRS_MIN:
        lines = lines[:-1]
    else:
        pairs = []
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    target = prompt_lines
    for line in lines:
        if line.startswith(NEGATIVE):
            target = negative_lines
            line = line[len(NEGATIVE) :].lstrip()
        target.append(line)
    return "\n".join(prompt_lines).strip(), "\n".join(negative_lines).strip(), pairs


def number(text: str, field_name: str) -> int | float:
    """A number from a settings value; MetadataError naming the field otherwise."""
    text = text.strip()
    if len(text) > 40:
        raise MetadataError(f"the {field_name} value is {len(text)} characters, not a number")
    try:
        value = float(text)
    except ValueError:
        raise MetadataError(f"the {field_name} value {text!r} is not a number") from None
    if value.is_integer():
        digits = text.lstrip("+-")
        return int(text) if digits.isdigit() else int(value)
    return value


def size(text: str) -> tuple[Any, Any]:
    width, sep, height = text.strip().partition("x")
    if not sep:
        raise MetadataError(f"the Size value {text!r} is not like 1024x1024")
    return number(width, "Size"), number(height, "Size")


def _number_text(value: float) -> str:
    return f"{value:g}"


def a1111_text(meta: ImageMetadata) -> str:
    """The A1111-style "parameters" text that Civitai, Forge and most viewers read."""
    p = meta.params
    # LoRAs as A1111 writes them: their tags in the prompt, their hashes in "Lora hashes"
    tags = " ".join(ref.tag() for ref in p.loras)
    lines = [f"{p.prompt} {tags}" if p.prompt and tags else p.prompt or tags]
    if p.negative_prompt:
        lines.append(f"{NEGATIVE} {p.negative_prompt}")
    pairs = [
        ("Steps", str(p.steps)),
        ("Sampler", SAMPLER_NAME),
        ("CFG scale", _number_text(p.guidance_scale)),
        ("Seed", str(p.seed)),
        ("Size", f"{p.width}x{p.height}"),
    ]
    if meta.model.hash:
        pairs.append(("Model hash", meta.model.hash))
    if meta.model.name:
        pairs.append(("Model", meta.model.name))
    if p.loras:
        pairs.append(("Lora hashes", lora_hashes_text(p.loras)))
    pairs += _picture_pairs(p)
    pairs += [
        ("Shift", _number_text(p.shift)),
        ("T5 max length", str(p.max_sequence_length)),
        ("Version", f"sd3desk {meta.app_version}"),
    ]
    lines.append(join_pairs(pairs))
    return "\n".join(lines)


def _picture_pairs(p: Any) -> list[tuple[str, str]]:
    """A1111's names for img2img, inpainting and hires fix (its processing.py writes them so);
    "Denoising strength" is the hires pass's when there is one, as in A1111's txt2img."""
    pairs: list[tuple[str, str]] = []
    if p.source_image:
        pairs.append(("Denoising strength", _number_text(p.strength)))
    if p.mask_image:
        pairs.append(("Mask blur", str(p.mask_blur)))
        if p.mask_padding:
            pairs += [("Inpaint area", "Only masked"), ("Masked area padding", str(p.mask_padding))]
    if p.hires:
        pairs += [
            ("Denoising strength", _number_text(p.hires_strength)),
            ("Hires upscale", _number_text(p.hires_scale)),
            ("Hires steps", str(p.hires_steps)),
            ("Hires upscaler", HIRES_UPSCALER),
        ]
    if p.slg_scale:
        pairs.append(("Skip layer guidance scale", _number_text(p.slg_scale)))
    return pairs


_SIMPLE = {
    "Steps": "steps",
    "CFG scale": "guidance_scale",
    "Seed": "seed",
    "Shift": "shift",
    "T5 max length": "max_sequence_length",
    "Mask blur": "mask_blur",
    "Masked area padding": "mask_padding",
    "Hires steps": "hires_steps",
    "Skip layer guidance scale": "slg_scale",
}
SOURCE_NOT_STORED = (
    "Made from a picture (img2img or inpainting), which the file does not hold: give the "
    "source picture again to re-make it"
)
# Sampler names that are SD3's flow-matching Euler (A1111/Forge's "Euler" with the SD3 model;
# the ancestral "Euler a" is another sampler and is listed as unmapped)
_OUR_SAMPLERS = ("euler", "euler (flow)", "flowmatcheulerdiscretescheduler")
_IGNORED = ("Version", "Template", "Negative Template")


def parse_a1111(text: str) -> ImageMetadata:
    """A1111/Forge "parameters" text. Fields with no SD3 meaning here land in `unmapped`."""
    prompt, negative, pairs = split_text(text)
    tagged = split_lora_tags(prompt)
    # (A1111 leaves the negative line out when it was empty: absent means empty here)
    values: dict[str, Any] = {"prompt": tagged.prompt, "negative_prompt": negative}
    lora_hashes: dict[str, str] = {}
    model = {"name": "", "hash": ""}
    unmapped: list[tuple[str, str]] = []
    denoising: Any = None
    inpaint_area = ""
    for key, value in pairs:
        if key in _SIMPLE:
            values[_SIMPLE[key]] = number(value, key)
        elif key == "Size":
            values["width"], values["height"] = size(value)
        elif key == "Model":
            model["name"] = value
        elif key == "Model hash":
            model["hash"] = value
        elif key == "Sampler" and value.strip().lower() in _OUR_SAMPLERS:
            continue
        elif key == "Denoising strength":
            denoising = number(value, key)
        elif key == "Hires upscale":
            values["hires_scale"] = number(value, key)
        elif key == "Inpaint area":
            inpaint_area = value.strip()
        elif key == "Hires upscaler" and value.strip().lower() == HIRES_UPSCALER.lower():
            continue
        elif key == "Lora hashes":
            lora_hashes = parse_lora_hashes(value)
            tagged_names = {name for name, _ in tagged.loras}
            if not lora_hashes or set(lora_hashes) - tagged_names:  # LoRAs the prompt lacks
                unmapped.append((key, value))
        elif key not in _IGNORED:
            unmapped.append((key, value))
    notes: tuple[str, ...] = tagged.notes
    if tagged.loras:  # (hashes resolve to files when the request is queued)
        values["loras"] = [
            {"name": name, "hash": lora_hashes.get(name, ""), "weight": weight}
            for name, weight in tagged.loras
        ]
    if "hires_scale" in values:
        if denoising is not None:
            values["hires_strength"] = denoising
    elif denoising is not None:  # img2img or inpainting: the settings, not the picture
        values["strength"] = denoising
        notes += (SOURCE_NOT_STORED,)
    if inpaint_area != "Only masked":
        values.pop("mask_padding", None)  # (the padding is used only with "Only masked")
    return stated(
        values,
        model=ModelIdentity(name=model["name"], hash=model["hash"]),
        source="a1111",
        unmapped=tuple(unmapped),
        notes=notes,
    )
