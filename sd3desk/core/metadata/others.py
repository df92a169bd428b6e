"""Other tools' metadata: InvokeAI, NovelAI, Fooocus, SwarmUI, and where ComfyUI's graph hides
in JPEG/WebP files. Each reader maps the fields it knows onto GenerationParams names; the rest
of a tool's settings that change the picture are listed as unmapped.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from typing import Any

from sd3desk.core.errors import MetadataError
from sd3desk.core.metadata.a1111 import number
from sd3desk.core.metadata.record import ImageMetadata, ModelIdentity, load_json, stated

Reader = Callable[[dict[str, str]], "ImageMetadata | None"]


def _number(value: Any) -> int | float | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _mapped(
    record: dict[str, Any],
    fields: dict[str, tuple[str, Callable[[Any], Any]]],
) -> dict[str, Any]:
    """GenerationParams values from `record` per `fields` (their key -> (our name, check))."""
    values: dict[str, Any] = {}
    for key, (name, check) in fields.items():
        value = check(record.get(key))
        if value is not None:
            values[name] = value
    return values


def _unmapped(record: dict[str, Any], keys: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    out = []
    for key in keys:
        value = record.get(key)
        if value not in (None, "", [], {}):
            out.append((key, str(value)[:200]))
    return tuple(out)


def _json_object(text: str, what: str) -> dict[str, Any]:
    found = load_json(text, what)
    if not isinstance(found, dict):
        raise MetadataError(f"the {what} is not a JSON object")
    return found


# ---------------------------------------------------------------- InvokeAI


def _invokeai(texts: dict[str, str]) -> ImageMetadata | None:
    if "invokeai_metadata" not in texts:
        return None
    record = _json_object(texts["invokeai_metadata"], "InvokeAI metadata")
    values = _mapped(
        record,
        {
            "positive_prompt": ("prompt", _text),
            "negative_prompt": ("negative_prompt", _text),
            "seed": ("seed", _number),
            "steps": ("steps", _number),
            "cfg_scale": ("guidance_scale", _number),
            "width": ("width", _number),
            "height": ("height", _number),
        },
    )
    found = record.get("model")
    model = found if isinstance(found, dict) else {}
    return stated(
        values,
        model=ModelIdentity(name=str(model.get("name", "")), hash=str(model.get("hash", ""))[:64]),
        source="invokeai",
        unmapped=_unmapped(record, ("scheduler", "generation_mode", "loras", "strength")),
    )


# InvokeAI 2.x: "sd-metadata" (JSON) and "Dream" (its command line); the negative prompt is
# what the prompt holds in square brackets
_BRACKETS = re.compile(r"\[([^\[\]]*)\]")


def _split_brackets(text: str) -> dict[str, str]:
    negative = ", ".join(part.strip() for part in _BRACKETS.findall(text) if part.strip())
    return {"prompt": " ".join(_BRACKETS.sub(" ", text).split()), "negative_prompt": negative}


def _invokeai_legacy(texts: dict[str, str]) -> ImageMetadata | None:
    if "sd-metadata" in texts:
        record = _json_object(texts["sd-metadata"], "InvokeAI metadata")
        found = record.get("image")
        image = found if isinstance(found, dict) else {}
        prompts = image.get("prompt")
        first = prompts[0] if isinstance(prompts, list) and prompts else prompts
        text = first.get("prompt") if isinstance(first, dict) else first
        values = _split_brackets(text) if isinstance(text, str) else {}
        values.update(
            _mapped(
                image,
                {
                    "steps": ("steps", _number),
                    "cfg_scale": ("guidance_scale", _number),
                    "seed": ("seed", _number),
                    "width": ("width", _number),
                    "height": ("height", _number),
                },
            )
        )
        return stated(
            values,
            model=ModelIdentity(name=str(record.get("model_weights", ""))),
            source="invokeai",
            unmapped=_unmapped(image, ("sampler",)),
        )
    if "Dream" not in texts:
        return None
    import shlex

    try:
        words = shlex.split(texts["Dream"])
    except ValueError as exc:
        raise MetadataError("the InvokeAI Dream text is malformed") from exc
    if not words:
        raise MetadataError("the InvokeAI Dream text is empty")
    values: dict[str, Any] = _split_brackets(words[0])
    options = {"-s": "steps", "-S": "seed", "-W": "width", "-H": "height", "-C": "guidance_scale"}
    unmapped = []
    for flag, value in itertools.pairwise(words[1:]):
        if flag in options:
            values[options[flag]] = number(value, options[flag])
        elif flag == "-A":
            unmapped.append(("sampler", value))
    return stated(values, source="invokeai", unmapped=tuple(unmapped))


# ---------------------------------------------------------------- NovelAI


def _novelai(texts: dict[str, str]) -> ImageMetadata | None:
    if texts.get("Software", "").strip() != "NovelAI" or "Comment" not in texts:
        return None
    record = _json_object(texts["Comment"], "NovelAI comment")
    values = _mapped(
        record,
        {
            "prompt": ("prompt", _text),
            "uc": ("negative_prompt", _text),
            "seed": ("seed", _number),
            "steps": ("steps", _number),
            "scale": ("guidance_scale", _number),
            "width": ("width", _number),
            "height": ("height", _number),
        },
    )
    if "prompt" not in values and isinstance(texts.get("Description"), str):
        values["prompt"] = texts["Description"]
    return stated(
        values,
        model=ModelIdentity(name=texts.get("Source", "").strip()),
        source="novelai",
        unmapped=_unmapped(record, ("sampler", "noise_schedule", "cfg_rescale", "strength")),
    )


# ---------------------------------------------------------------- SwarmUI

# SwarmUI's metadata is JSON in the "parameters" text (PNG) or UserComment (JPEG/WebP)


def _swarmui(texts: dict[str, str]) -> ImageMetadata | None:
    text = texts.get("parameters", "")
    if "sui_image_params" not in text[:4096] or not text.lstrip().startswith("{"):
        return None
    found = _json_object(text, "SwarmUI metadata").get("sui_image_params")
    if not isinstance(found, dict):
        raise MetadataError("the SwarmUI metadata has no image parameters")
    values = _mapped(
        found,
        {
            "prompt": ("prompt", _text),
            "negativeprompt": ("negative_prompt", _text),
            "seed": ("seed", _number),
            "steps": ("steps", _number),
            "cfgscale": ("guidance_scale", _number),
            "width": ("width", _number),
            "height": ("height", _number),
            "sigmashift": ("shift", _number),
        },
    )
    return stated(
        values,
        model=ModelIdentity(name=str(found.get("model", ""))),
        source="swarmui",
        unmapped=_unmapped(found, ("sampler", "scheduler", "loras", "initimagecreativity")),
    )


# ---------------------------------------------------------------- Fooocus

_RESOLUTION = re.compile(r"^\(?\s*(\d{1,6})\s*[,x×]\s*(\d{1,6})\s*\)?$")


def _fooocus(texts: dict[str, str]) -> ImageMetadata | None:
    text = texts.get("parameters", "")
    scheme = texts.get("fooocus_scheme", "")
    # (Fooocus in A1111 form, not JSON, is read as A1111)
    if not text.lstrip().startswith("{"):
        return None
    if scheme != "fooocus" and '"fooocus' not in text[:200_000].lower():
        return None
    record = _json_object(text, "Fooocus metadata")
    values = _mapped(
        record,
        {
            "prompt": ("prompt", _text),
            "negative_prompt": ("negative_prompt", _text),
            "seed": ("seed", _seed_text),
            "steps": ("steps", _number),
            "guidance_scale": ("guidance_scale", _number),
        },
    )
    resolution = _RESOLUTION.match(str(record.get("resolution", "")).strip())
    if resolution:
        values["width"], values["height"] = int(resolution[1]), int(resolution[2])
    return stated(
        values,
        model=ModelIdentity(name=str(record.get("base_model", ""))),
        source="fooocus",
        unmapped=_unmapped(record, ("sampler", "scheduler", "styles", "performance")),
    )


def _seed_text(value: Any) -> int | None:
    if isinstance(value, str) and value.strip().isdigit() and len(value) < 40:
        return int(value)
    number = _number(value)
    return number if isinstance(number, int) else None


_READERS: tuple[Reader, ...] = (_invokeai, _invokeai_legacy, _novelai, _swarmui, _fooocus)


def parse(texts: dict[str, str]) -> ImageMetadata | None:
    """The metadata of the first of these tools whose marks `texts` carries; None if none."""
    for reader in _READERS:
        found = reader(texts)
        if found is not None:
            return found
    return None


def comfyui_graph(texts: dict[str, str]) -> str | None:
    """ComfyUI's API-format graph: the PNG "prompt" chunk, or in JPEG/WebP an EXIF text tag
    holding "prompt:{...}" (ComfyUI's own WebP saver and the common custom save nodes)."""
    if "prompt" in texts:
        return texts["prompt"]
    for name in ("Model", "Make", "ImageDescription"):
        value = texts.get(name, "")
        if value.startswith("prompt:"):
            return value[len("prompt:") :]
    return None
