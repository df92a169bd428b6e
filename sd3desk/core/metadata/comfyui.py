"""ComfyUI's prompt graph: the settings of the sampler that made the image.

The graph is ComfyUI's API format, {node_id: {"class_type": ..., "inputs": {...}}}, where an input
that is a list [node_id, output_index] links to another node's output. Node and input names are
those of ComfyUI's own nodes (nodes.py, comfy_extras/nodes_custom_sampler.py, nodes_sd3.py).
"""

from __future__ import annotations

from typing import Any

from sd3desk.core.errors import MetadataError
from sd3desk.core.metadata.record import ImageMetadata, ModelIdentity, load_json, stated

# Samplers that read every setting from their own inputs, and the one that takes them from
# helper nodes (noise, guider, sampler, sigmas)
_SAMPLERS = ("KSampler", "KSamplerAdvanced", "SamplerCustom")
_CUSTOM_ADVANCED = "SamplerCustomAdvanced"
_LATENTS = ("EmptyLatentImage", "EmptySD3LatentImage")
_LOADERS = {"CheckpointLoaderSimple": "ckpt_name", "UNETLoader": "unet_name"}
# Text inputs of the prompt encoders (CLIPTextEncode, CLIPTextEncodeSD3, the SDXL one); the
# first that holds text is the prompt (SD3's t5xxl before clip_g and clip_l)
_TEXT_INPUTS = ("text", "t5xxl", "clip_g", "clip_l", "text_g", "text_l")
# Primitive and literal nodes whose one value other nodes link to
_VALUE_INPUTS = ("value", "seed", "noise_seed", "int", "float", "string", "text", "number")
# Inputs conditioning passes through (combine, concat, average, timestep range, area, ...)
_THROUGH = (
    "conditioning",
    "conditioning_1",
    "conditioning_to",
    "conditioning_2",
    "conditioning_from",
)
# Samplers and schedulers that are SD3's flow-matching Euler as sd3desk runs it
_OUR_SAMPLERS, _OUR_SCHEDULERS = ("euler",), ("simple", "normal", "sgm_uniform")
_DEPTH_MAX = 64  # links followed upstream; real graphs need a handful


def _node(nodes: dict[str, Any], link: Any) -> tuple[dict[str, Any], int] | None:
    """The node a link points at and the output index it reads, or None for a non-link."""
    if isinstance(link, list) and len(link) == 2 and isinstance(link[1], int):
        node = nodes.get(str(link[0]))
        if node is not None:
            return node, link[1]
    return None


def _value(nodes: dict[str, Any], value: Any) -> Any:
    """An input's value; a link to a primitive node yields that node's value."""
    found = _node(nodes, value)
    if found is None:
        return value
    inputs = found[0]["inputs"]
    for key in _VALUE_INPUTS:
        if key in inputs and not isinstance(inputs[key], list):
            return inputs[key]
    return None


def _texts(nodes: dict[str, Any], link: Any, depth: int = 0) -> list[str] | None:
    """The prompt texts a conditioning link carries, in order and each once: [] for
    zeroed-out conditioning, None when no text is upstream at all. Combining nodes (combine,
    concat, average, area) carry the texts of all their inputs."""
    found = _node(nodes, link)
    if found is None or depth > _DEPTH_MAX:
        return None
    node, output = found
    kind, inputs = node.get("class_type"), node["inputs"]
    if kind == "ConditioningZeroOut":
        return []  # how SD3/SD3.5 workflows make an empty negative from the positive encoding
    for key in _TEXT_INPUTS:
        value = _value(nodes, inputs.get(key))
        if isinstance(value, str) and value.strip():
            return [value]
    if "positive" in inputs and "negative" in inputs:
        # ControlNetApplySD3, ControlNetApplyAdvanced, InstructPixToPixConditioning, ...:
        # output 0 is the positive, output 1 the negative conditioning
        return _texts(nodes, inputs["positive" if output == 0 else "negative"], depth + 1)
    texts: list[str] | None = None
    for key in (*_THROUGH, *(k for k in inputs if k not in _THROUGH)):
        upstream = _texts(nodes, inputs.get(key), depth + 1)
        if upstream is not None:
            texts = (texts or []) + [t for t in upstream if t not in (texts or [])]
    return texts


def _text(nodes: dict[str, Any], link: Any) -> str | None:
    texts = _texts(nodes, link)
    return None if texts is None else ", ".join(t.strip() for t in texts)


def _number(nodes: dict[str, Any], value: Any) -> int | float | None:
    found = _value(nodes, value)
    return found if isinstance(found, (int, float)) and not isinstance(found, bool) else None


def _sampler(nodes: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    def order(node_id: str) -> tuple[int, str]:
        return (int(node_id), "") if node_id.isdigit() else (1 << 62, node_id)

    for node_id in sorted(nodes, key=order):
        kind = nodes[node_id].get("class_type")
        if kind in _SAMPLERS or kind == _CUSTOM_ADVANCED:
            return kind, nodes[node_id]["inputs"]
    raise MetadataError("the ComfyUI graph has no sampler node to read settings from")


def _flatten_custom(nodes: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """SamplerCustomAdvanced's settings as a KSampler would hold them: the seed from its noise
    node (RandomNoise), prompts and cfg from its guider (CFGGuider; BasicGuider has one
    conditioning and no cfg), sampler name from KSamplerSelect, steps and scheduler from the
    sigmas node (BasicScheduler and the like)."""
    flat: dict[str, Any] = {"latent_image": inputs.get("latent_image")}
    for link in (inputs.get(k) for k in ("noise", "guider", "sampler", "sigmas")):
        found = _node(nodes, link)
        if found is None:
            continue
        helper = found[0]["inputs"]
        for key in ("noise_seed", "positive", "negative", "cfg", "sampler_name", "steps"):
            if key in helper:
                flat.setdefault(key, helper[key])
        if "conditioning" in helper and "positive" not in helper:  # BasicGuider
            flat.setdefault("positive", helper["conditioning"])
            flat.setdefault("cfg", 1.0)
        for key in ("scheduler", "denoise"):
            if key in helper:
                flat.setdefault(key, helper[key])
    return flat


def parse_comfyui(text: str) -> ImageMetadata:
    """Prompts, seed, steps, cfg, size and shift from ComfyUI's prompt graph; settings with no
    SD3 meaning here (other samplers, denoise below 1) are listed as unmapped."""
    graph = load_json(text, "ComfyUI prompt graph")
    if not isinstance(graph, dict):
        raise MetadataError("the ComfyUI prompt graph is not a node map")
    nodes = {
        str(k): v
        for k, v in graph.items()
        if isinstance(v, dict) and isinstance(v.get("inputs"), dict)
    }
    kind, inputs = _sampler(nodes)
    if kind == _CUSTOM_ADVANCED:
        inputs = _flatten_custom(nodes, inputs)
    values: dict[str, Any] = {}
    for key, name in (("positive", "prompt"), ("negative", "negative_prompt")):
        found = _text(nodes, inputs.get(key))
        if found is not None:
            values[name] = found
    for key, name in (("seed", "seed"), ("noise_seed", "seed"), ("steps", "steps")):
        value = _number(nodes, inputs.get(key))
        if value is not None:
            values[name] = value
    cfg = _number(nodes, inputs.get("cfg"))
    if cfg is not None:
        values["guidance_scale"] = cfg
    unmapped: list[tuple[str, str]] = []
    for key, ours in (("sampler_name", _OUR_SAMPLERS), ("scheduler", _OUR_SCHEDULERS)):
        value = _value(nodes, inputs.get(key))
        if isinstance(value, str) and value not in ours:
            unmapped.append((key, value))
    denoise = _number(nodes, inputs.get("denoise"))
    if denoise is not None and denoise != 1:
        unmapped.append(("denoise", f"{denoise:g}"))
    model = ModelIdentity()
    for node in nodes.values():
        node_kind, node_inputs = node.get("class_type"), node["inputs"]
        if node_kind in _LATENTS:
            for key in ("width", "height"):
                value = _number(nodes, node_inputs.get(key))
                if value is not None:
                    values[key] = value
        elif node_kind == "ModelSamplingSD3":
            shift = _number(nodes, node_inputs.get("shift"))
            if shift is not None:
                values["shift"] = shift
        elif node_kind in _LOADERS and not model.name:
            name = node_inputs.get(_LOADERS[node_kind])
            if isinstance(name, str):
                model = ModelIdentity(name=name)
    return stated(values, model=model, source="comfyui", unmapped=tuple(unmapped))
