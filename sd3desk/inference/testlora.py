"""Tiny LoRAs for the test model, in the key layouts real LoRA files use: diffusers/PEFT (as
diffusers' `save_lora_weights` writes it), kohya's sd-scripts (fused q/k/v, alphas) and
ComfyUI's; and LoRAs of other architectures (SDXL, Flux) to be refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sd3desk.inference.checkpoint_layout import transformer_modules

LAYOUTS = ("diffusers", "kohya", "comfyui")
_TEXT_TARGETS = (".q_proj", ".v_proj", ".out_proj", ".fc1")  # CLIP
_T5_TARGETS = (".q", ".v", ".o", ".wo")


def random_lora(
    pipe: Any, seed: int, rank: int = 4, parts: tuple[str, ...] = ("transformer", "text_encoder")
) -> dict[str, Any]:
    """A random LoRA over every MMDiT linear (and the patch embedding) and some text-encoder
    projections of `pipe`, in diffusers' layout: "transformer.<module>.lora_A.weight", ..."""
    import torch

    generator = torch.Generator().manual_seed(seed)

    def noise(*shape: int) -> Any:
        return torch.randn(*shape, generator=generator) * 0.15

    names: list[tuple[str, str]] = []
    if "transformer" in parts:
        for module in transformer_modules(pipe.transformer):
            names += [("transformer", name) for name in module.diffusers]
    for part, targets in (
        ("text_encoder", _TEXT_TARGETS),
        ("text_encoder_2", _TEXT_TARGETS),
        ("text_encoder_3", _T5_TARGETS),
    ):
        if part in parts:
            names += [
                (part, n) for n, _ in getattr(pipe, part).named_modules() if n.endswith(targets)
            ]
    state: dict[str, Any] = {}
    for part, name in names:
        weight = getattr(pipe, part).get_submodule(name).weight
        extra = tuple(weight.shape[2:])  # a convolution: (r, in, kh, kw) and (out, r, 1, 1)
        state[f"{part}.{name}.lora_A.weight"] = noise(rank, weight.shape[1], *extra)
        state[f"{part}.{name}.lora_B.weight"] = noise(weight.shape[0], rank, *((1,) * len(extra)))
    return state


def write_diffusers(state: dict[str, Any], path: Path) -> Path:
    """`state` as diffusers' SD3 pipeline saves LoRAs (its own writer)."""
    from diffusers import StableDiffusion3Pipeline

    layers: dict[str, Any] = {}
    for key, tensor in state.items():
        part, _, rest = key.partition(".")
        layers.setdefault(part, {})[rest] = tensor
    StableDiffusion3Pipeline.save_lora_weights(
        str(path.parent),
        transformer_lora_layers=layers.get("transformer", {}),
        text_encoder_lora_layers=layers.get("text_encoder", {}),
        text_encoder_2_lora_layers=layers.get("text_encoder_2", {}),
        weight_name=path.name,
    )
    return path


def to_kohya(state: dict[str, Any], pipe: Any, alpha_ratio: float = 0.5) -> dict[str, Any]:
    """The same LoRA as kohya's sd-scripts save it: MMDiT modules under their original names
    (dots as underscores, after "lora_unet_"), q/k/v fused into one module whose down matrix
    stacks the three and whose up matrix is block-diagonal (sd-scripts' `split_qkv`), the
    last context block's modulation in the original (shift, scale) order, text encoders under
    lora_te1_/2_/3_, and an alpha per module (each up matrix scaled to make up for it)."""
    import torch

    out: dict[str, Any] = {}

    def put(name: str, down: Any, up: Any, alpha: float) -> None:
        out[f"{name}.lora_down.weight"] = down.contiguous()
        out[f"{name}.lora_up.weight"] = up.contiguous()
        out[f"{name}.alpha"] = torch.tensor(alpha)

    for module in transformer_modules(pipe.transformer):
        keys = [f"transformer.{n}" for n in module.diffusers]
        if f"{keys[0]}.lora_A.weight" not in state:
            continue
        downs = [state[f"{k}.lora_A.weight"] for k in keys]
        ups = [state[f"{k}.lora_B.weight"] for k in keys]
        name = "lora_unet_" + module.original.replace(".", "_")
        rank = sum(d.shape[0] for d in downs)
        if len(keys) == 3:  # alpha = rank: the scale is 1, the block-diagonal up as it is
            up = torch.block_diag(*ups)
            put(name, torch.cat(downs), up, float(rank))
            continue
        up = ups[0]
        if module.swapped:
            first, second = up.chunk(2, dim=0)
            up = torch.cat([second, first])
        put(name, downs[0], up / alpha_ratio, rank * alpha_ratio)
    prefixes = {"text_encoder": "lora_te1_", "text_encoder_2": "lora_te2_"}
    prefixes["text_encoder_3"] = "lora_te3_"
    for key, tensor in state.items():
        part, _, rest = key.partition(".")
        if part in prefixes and key.endswith(".lora_A.weight"):
            module = rest[: -len(".lora_A.weight")]
            up = state[f"{part}.{module}.lora_B.weight"]
            name = prefixes[part] + module.replace(".", "_")
            put(name, tensor, up / alpha_ratio, tensor.shape[0] * alpha_ratio)
    return out


def to_comfyui(kohya: dict[str, Any], pipe: Any) -> dict[str, Any]:
    """A kohya-layout LoRA as ComfyUI saves LoRAs: "diffusion_model." and the original MMDiT
    module names with their dots; text encoders under their single-file checkpoint names."""
    from sd3desk.inference.checkpoint_layout import CLIP_G_PREFIX, CLIP_L_PREFIX, T5_PREFIX

    names = {
        "lora_unet_" + m.original.replace(".", "_"): "diffusion_model." + m.original
        for m in transformer_modules(pipe.transformer)
    }
    for kohya_prefix, part, prefix in (
        ("lora_te1_", "text_encoder", CLIP_L_PREFIX),
        ("lora_te2_", "text_encoder_2", CLIP_G_PREFIX),
        ("lora_te3_", "text_encoder_3", T5_PREFIX),
    ):
        for name, _ in getattr(pipe, part).named_modules():
            names[kohya_prefix + name.replace(".", "_")] = prefix + name
    out = {}
    for key, tensor in kohya.items():
        module, _, role = key.partition(".")
        out[f"{names[module]}.{role}"] = tensor
    return out


def other_architecture(kind: str) -> dict[str, Any]:
    """A few tensors named as a LoRA for SDXL or Flux is (kohya's layout, real key names)."""
    import torch

    names = {
        "sdxl": [
            "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q",
            "lora_unet_output_blocks_2_1_transformer_blocks_0_attn2_to_k",
            "lora_te1_text_model_encoder_layers_0_self_attn_q_proj",
            "lora_te2_text_model_encoder_layers_0_self_attn_q_proj",
        ],
        "flux": [
            "lora_unet_double_blocks_0_img_attn_qkv",
            "lora_unet_single_blocks_0_linear1",
        ],
    }[kind]
    out = {}
    for name in names:
        out[f"{name}.lora_down.weight"] = torch.zeros(4, 64)
        out[f"{name}.lora_up.weight"] = torch.zeros(64, 4)
        out[f"{name}.alpha"] = torch.tensor(4.0)
    return out


def save(state: dict[str, Any], path: Path) -> Path:
    """`state` as a .safetensors file (written whole, then renamed into place)."""
    from safetensors.torch import save

    from sd3desk.core.atomic import atomic_write_bytes

    atomic_write_bytes(path, save({k: v.contiguous() for k, v in state.items()}))
    return path
