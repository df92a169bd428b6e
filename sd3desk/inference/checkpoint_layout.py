"""Map diffusers SD3 components to the key layout of Stability AI's single-file checkpoints."""

# The mapping is the inverse of diffusers' own single-file converters in
# ``diffusers/loaders/single_file_utils.py`` (``convert_sd3_transformer_checkpoint_to_diffusers``,
# ``convert_ldm_vae_checkpoint``, the ``clip_sd3`` / ``open_clip_sd3`` branches of
# ``create_diffusers_clip_model_from_ldm`` and ``convert_sd3_t5_checkpoint_to_diffusers``), so a
# file written from this state dict loads back bit-exactly through ``from_single_file``.

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

MMDIT_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_L_PREFIX = "text_encoders.clip_l.transformer."
CLIP_G_PREFIX = "text_encoders.clip_g.transformer."
T5_PREFIX = "text_encoders.t5xxl.transformer."

# diffusers' attention-block names -> LDM names inside ``mid.attn_1``.
_VAE_ATTN_NAMES = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
}


class _Source:
    """A module's state dict that remembers which entries were mapped.

    Every entry must be mapped exactly once: a leftover means the model has weights that the
    original layout (and therefore diffusers' loader) cannot carry, which would otherwise be
    dropped without notice.
    """

    def __init__(self, module: nn.Module, what: str) -> None:
        self.state = module.state_dict()
        self.what = what
        self._unmapped = set(self.state)

    def has(self, key: str) -> bool:
        return key in self.state

    def take(self, key: str) -> torch.Tensor:
        if key not in self.state:
            raise ValueError(f"{self.what}: expected weight {key!r} is missing")
        self._unmapped.discard(key)
        return self.state[key]

    def check_all_mapped(self) -> None:
        if self._unmapped:
            raise ValueError(
                f"{self.what}: weights with no place in the single-file layout: "
                f"{sorted(self._unmapped)}"
            )


def _own(tensor: torch.Tensor) -> torch.Tensor:
    # state_dict() tensors alias the live parameters (and each other, for tied weights);
    # safetensors refuses shared storage, so every output tensor gets a private copy.
    import torch

    return tensor.detach().clone(memory_format=torch.contiguous_format)


def _concat(tensors: list[torch.Tensor]) -> torch.Tensor:
    import torch

    return torch.cat([t.detach() for t in tensors], dim=0).contiguous()


def _swap_halves(tensor: torch.Tensor) -> torch.Tensor:
    # diffusers' AdaLayerNormContinuous reads (scale, shift) where the original MMDiT reads
    # (shift, scale); the loader swaps the halves, and swapping again undoes it.
    first, second = tensor.detach().chunk(2, dim=0)
    return _concat([second, first])


def _block_count(state: dict[str, torch.Tensor], prefix: str) -> int:
    indices = {int(key[len(prefix) :].split(".", 1)[0]) for key in state if key.startswith(prefix)}
    if indices != set(range(len(indices))):
        raise ValueError(f"non-contiguous block indices under {prefix!r}: {sorted(indices)}")
    return len(indices)


@dataclass(frozen=True)
class ModuleMap:
    """One weight-bearing MMDiT module in Stability's layout and the diffusers module(s) it is."""

    original: str  # e.g. "joint_blocks.0.x_block.attn.qkv"
    diffusers: tuple[str, ...]  # one module, or q, k, v: the fused output split in equal thirds
    swapped: bool = False  # the output's two halves swapped: diffusers reads (scale, shift)


def mmdit_modules(num_layers: int, attn2_blocks: Iterable[int] = ()) -> list[ModuleMap]:
    """Every linear (and the patch-embedding convolution) of an MMDiT with `num_layers` joint
    blocks, the blocks in `attn2_blocks` having SD3.5 Medium's second attention: how the
    single-file layout and diffusers' SD3Transformer2DModel name them (diffusers'
    convert_sd3_transformer_checkpoint_to_diffusers, read backwards)."""
    maps = [
        ModuleMap("x_embedder.proj", ("pos_embed.proj",)),
        ModuleMap("t_embedder.mlp.0", ("time_text_embed.timestep_embedder.linear_1",)),
        ModuleMap("t_embedder.mlp.2", ("time_text_embed.timestep_embedder.linear_2",)),
        ModuleMap("y_embedder.mlp.0", ("time_text_embed.text_embedder.linear_1",)),
        ModuleMap("y_embedder.mlp.2", ("time_text_embed.text_embedder.linear_2",)),
        ModuleMap("context_embedder", ("context_embedder",)),
    ]
    attn2 = set(attn2_blocks)
    for i in range(num_layers):
        d = f"transformer_blocks.{i}"
        x = f"joint_blocks.{i}.x_block"
        c = f"joint_blocks.{i}.context_block"
        # The last block's context stream is "pre-only": no output projection, no MLP, and a
        # 2-way (shift, scale) modulation that diffusers stores swapped.
        last = i == num_layers - 1
        maps += [
            ModuleMap(f"{x}.attn.qkv", (f"{d}.attn.to_q", f"{d}.attn.to_k", f"{d}.attn.to_v")),
            ModuleMap(
                f"{c}.attn.qkv",
                (f"{d}.attn.add_q_proj", f"{d}.attn.add_k_proj", f"{d}.attn.add_v_proj"),
            ),
            ModuleMap(f"{x}.attn.proj", (f"{d}.attn.to_out.0",)),
        ]
        if not last:
            maps.append(ModuleMap(f"{c}.attn.proj", (f"{d}.attn.to_add_out",)))
        # SD3.5 Medium (MMDiT-X) adds a second, image-only self-attention to some blocks
        if i in attn2:
            maps += [
                ModuleMap(
                    f"{x}.attn2.qkv", (f"{d}.attn2.to_q", f"{d}.attn2.to_k", f"{d}.attn2.to_v")
                ),
                ModuleMap(f"{x}.attn2.proj", (f"{d}.attn2.to_out.0",)),
            ]
        maps += [
            ModuleMap(f"{x}.adaLN_modulation.1", (f"{d}.norm1.linear",)),
            ModuleMap(f"{c}.adaLN_modulation.1", (f"{d}.norm1_context.linear",), swapped=last),
            ModuleMap(f"{x}.mlp.fc1", (f"{d}.ff.net.0.proj",)),
            ModuleMap(f"{x}.mlp.fc2", (f"{d}.ff.net.2",)),
        ]
        if not last:
            maps += [
                ModuleMap(f"{c}.mlp.fc1", (f"{d}.ff_context.net.0.proj",)),
                ModuleMap(f"{c}.mlp.fc2", (f"{d}.ff_context.net.2",)),
            ]
    maps += [
        ModuleMap("final_layer.linear", ("proj_out",)),
        ModuleMap("final_layer.adaLN_modulation.1", ("norm_out.linear",), swapped=True),
    ]
    return maps


def transformer_modules(transformer: Any) -> list[ModuleMap]:
    """`mmdit_modules` of a loaded SD3Transformer2DModel."""
    config = transformer.config
    attn2 = getattr(config, "dual_attention_layers", None) or ()
    return mmdit_modules(int(config.num_layers), attn2)


def _mmdit_entries(transformer: nn.Module) -> dict[str, torch.Tensor]:
    src = _Source(transformer, "transformer")
    out: dict[str, torch.Tensor] = {}

    def copy(dst: str, key: str) -> None:
        out[dst] = _own(src.take(key))

    copy("pos_embed", "pos_embed.pos_embed")
    num_layers = _block_count(src.state, "transformer_blocks.")
    attn2 = [i for i in range(num_layers) if src.has(f"transformer_blocks.{i}.attn2.to_q.weight")]
    for module in mmdit_modules(num_layers, attn2):
        for param in ("weight", "bias"):
            found = [src.take(f"{name}.{param}") for name in module.diffusers]
            # the original attention uses one fused qkv projection; the loader chunks it in 3
            tensor = _concat(found) if len(found) == 3 else _own(found[0])
            out[f"{module.original}.{param}"] = _swap_halves(tensor) if module.swapped else tensor
    # The loader decides "has qk-norm" once for the whole file (any ``ln_q``) and then expects
    # it in every block, so decide it the same way here.
    if src.has("transformer_blocks.0.attn.norm_q.weight"):
        for i in range(num_layers):
            d = f"transformer_blocks.{i}"
            x = f"joint_blocks.{i}.x_block"
            c = f"joint_blocks.{i}.context_block"
            copy(f"{x}.attn.ln_q.weight", f"{d}.attn.norm_q.weight")
            copy(f"{x}.attn.ln_k.weight", f"{d}.attn.norm_k.weight")
            copy(f"{c}.attn.ln_q.weight", f"{d}.attn.norm_added_q.weight")
            copy(f"{c}.attn.ln_k.weight", f"{d}.attn.norm_added_k.weight")
            if i in attn2:
                copy(f"{x}.attn2.ln_q.weight", f"{d}.attn2.norm_q.weight")
                copy(f"{x}.attn2.ln_k.weight", f"{d}.attn2.norm_k.weight")
    src.check_all_mapped()
    return {MMDIT_PREFIX + key: value for key, value in out.items()}


def _vae_entries(vae: nn.Module) -> dict[str, torch.Tensor]:
    src = _Source(vae, "vae")
    out: dict[str, torch.Tensor] = {}

    def copy_params(dst: str, key: str) -> None:
        for param in ("weight", "bias"):
            if src.has(f"{key}.{param}"):
                out[f"{dst}.{param}"] = _own(src.take(f"{key}.{param}"))

    def resnet(dst: str, key: str) -> None:
        for name in ("norm1", "conv1", "norm2", "conv2"):
            copy_params(f"{dst}.{name}", f"{key}.{name}")
        # Present only where the channel count changes.
        copy_params(f"{dst}.nin_shortcut", f"{key}.conv_shortcut")

    def mid_block(side: str) -> None:
        for j in range(_block_count(src.state, f"{side}.mid_block.resnets.")):
            resnet(f"{side}.mid.block_{j + 1}", f"{side}.mid_block.resnets.{j}")
        if not src.has(f"{side}.mid_block.attentions.0.to_q.weight"):
            return
        for d_name, ldm_name in _VAE_ATTN_NAMES.items():
            key = f"{side}.mid_block.attentions.0.{d_name}"
            dst = f"{side}.mid.attn_1.{ldm_name}"
            weight = src.take(f"{key}.weight")
            if d_name != "group_norm":
                # The original attention uses 1x1 convolutions; the loader drops the two
                # trailing singleton axes, so add them back.
                weight = weight.reshape(*weight.shape, 1, 1)
            out[f"{dst}.weight"] = _own(weight)
            out[f"{dst}.bias"] = _own(src.take(f"{key}.bias"))

    for side in ("encoder", "decoder"):
        copy_params(f"{side}.conv_in", f"{side}.conv_in")
        copy_params(f"{side}.norm_out", f"{side}.conv_norm_out")
        copy_params(f"{side}.conv_out", f"{side}.conv_out")
        mid_block(side)
    # SD3's VAE has neither; SD1/SDXL-style VAEs do, under the same names in both layouts.
    copy_params("quant_conv", "quant_conv")
    copy_params("post_quant_conv", "post_quant_conv")

    for i in range(_block_count(src.state, "encoder.down_blocks.")):
        d = f"encoder.down_blocks.{i}"
        for j in range(_block_count(src.state, f"{d}.resnets.")):
            resnet(f"encoder.down.{i}.block.{j}", f"{d}.resnets.{j}")
        copy_params(f"encoder.down.{i}.downsample.conv", f"{d}.downsamplers.0.conv")

    # The LDM decoder numbers its up blocks from the lowest resolution upward, diffusers from
    # the highest down, so the index is reversed.
    num_up = _block_count(src.state, "decoder.up_blocks.")
    for i in range(num_up):
        d = f"decoder.up_blocks.{i}"
        ldm = f"decoder.up.{num_up - 1 - i}"
        for j in range(_block_count(src.state, f"{d}.resnets.")):
            resnet(f"{ldm}.block.{j}", f"{d}.resnets.{j}")
        copy_params(f"{ldm}.upsample.conv", f"{d}.upsamplers.0.conv")

    src.check_all_mapped()
    return {VAE_PREFIX + key: value for key, value in out.items()}


def _clip_entries(
    text_encoder: nn.Module, prefix: str, *, drop_projection: bool
) -> dict[str, torch.Tensor]:
    # The real files keep CLIP in transformers' own layout (``text_model.*`` plus
    # ``text_projection.weight``) under a per-encoder prefix; the loader only strips the prefix.
    # transformers >= 5.6 flattens plain ``CLIPTextModel`` (no ``text_model.`` level), so the
    # level is put back to match the files' layout, which the loader removes again as needed.
    out: dict[str, torch.Tensor] = {}
    for key, value in text_encoder.state_dict().items():
        if key == "text_projection.weight":
            if drop_projection:
                continue
        elif not key.startswith("text_model."):
            key = f"text_model.{key}"
        out[prefix + key] = _own(value)
    return out


def _check_clip_l_projection(text_encoder: nn.Module) -> None:
    import torch

    # SD3 uses CLIP-L's pooled output unprojected: Stability's files carry no CLIP-L projection
    # and diffusers' loader always installs an identity there, so any other value cannot
    # survive a round trip. Refuse it rather than write a file that loads as a different model.
    weight = text_encoder.state_dict().get("text_projection.weight")
    if weight is None or weight.is_meta:
        return
    rows, cols = weight.shape
    if rows != cols or not torch.equal(weight, torch.eye(rows, dtype=weight.dtype)):
        raise ValueError(
            "text_encoder (CLIP-L): text_projection must be the identity, as in SD3; "
            "the single-file layout has no place for any other CLIP-L projection"
        )


def _position_width(text_encoder: nn.Module) -> int:
    for key, value in text_encoder.state_dict().items():
        if key.endswith("embeddings.position_embedding.weight"):
            return int(value.shape[-1])
    raise ValueError("text encoder has no position embedding; is it a CLIP text model?")


def to_single_file_state_dict(
    transformer: nn.Module,
    vae: nn.Module,
    text_encoder: nn.Module | None = None,
    text_encoder_2: nn.Module | None = None,
    text_encoder_3: nn.Module | None = None,
) -> dict[str, torch.Tensor]:
    """Return the state dict of an SD3 / SD3.5 single-file checkpoint built from diffusers parts.

    ``transformer`` is an ``SD3Transformer2DModel`` (SD3 Medium, SD3.5 Large, or SD3.5 Medium
    with qk-norm and dual attention), ``vae`` an ``AutoencoderKL``; the optional text encoders
    are CLIP-L and CLIP-G (``CLIPTextModelWithProjection``) and T5-XXL (``T5EncoderModel``), as
    in ``sd3_medium_incl_clips_t5xxlfp8.safetensors``. Every tensor is a contiguous private copy
    in its original dtype, ready for ``safetensors.torch.save_file``.

    Raises ValueError for models the layout cannot represent exactly: weights with no
    counterpart, a CLIP-L projection that is not the identity, or CLIP-L and CLIP-G of the same
    width (diffusers tells them apart only by that width).
    """
    state: dict[str, torch.Tensor] = {}
    state.update(_mmdit_entries(transformer))
    state.update(_vae_entries(vae))

    if (
        text_encoder is not None
        and text_encoder_2 is not None
        and _position_width(text_encoder) == _position_width(text_encoder_2)
    ):
        raise ValueError(
            "CLIP-L and CLIP-G have the same hidden size; diffusers' loader picks the "
            "encoder for each slot by that size, so it would load CLIP-L weights twice"
        )
    if text_encoder is not None:
        _check_clip_l_projection(text_encoder)
        state.update(_clip_entries(text_encoder, CLIP_L_PREFIX, drop_projection=True))
    if text_encoder_2 is not None:
        state.update(_clip_entries(text_encoder_2, CLIP_G_PREFIX, drop_projection=False))
    if text_encoder_3 is not None:
        # T5 goes in transformers' layout. ``shared.weight`` and ``encoder.embed_tokens.weight``
        # are the same tied tensor; the real files store both, and the loader needs
        # ``shared.weight`` to recognise the T5 at all.
        state.update(
            {T5_PREFIX + key: _own(value) for key, value in text_encoder_3.state_dict().items()}
        )
        if T5_PREFIX + "shared.weight" not in state:
            raise ValueError("text_encoder_3: expected a T5 encoder with a 'shared' embedding")
    return state
