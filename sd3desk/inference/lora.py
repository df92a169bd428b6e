"""LoRAs on a loaded pipeline: read, converted to diffusers' PEFT layout, checked against the
model, applied with weights and switched between jobs without reloading the model.

Layouts read: diffusers/PEFT (`transformer.transformer_blocks.0.attn.to_q.lora_A.weight`, as
diffusers' trainers and ai-toolkit save them), kohya's sd-scripts (`lora_unet_joint_blocks_0_
x_block_attn_qkv.lora_down.weight` with `.alpha`, what Civitai mostly serves for SD3/SD3.5),
and ComfyUI's (`diffusion_model.joint_blocks.0.x_block.attn.qkv.lora_down.weight`, text
encoders under the single-file checkpoint's names). diffusers
0.42's `load_lora_weights` takes the first only: it loads nothing from the others, silently.
"""

from __future__ import annotations

import math
import re
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sd3desk.core.errors import LoraError
from sd3desk.core.loras import WIDTH_FAMILIES, LoraRef, require_sd3
from sd3desk.inference.checkpoint_layout import (
    CLIP_G_PREFIX,
    CLIP_L_PREFIX,
    T5_PREFIX,
    ModuleMap,
    transformer_modules,
)
from sd3desk.inference.speed import unfuse_qkv

# Adapters kept loaded but unused, so switching back to a recent LoRA costs nothing
KEEP_UNUSED = 4
# The text encoders' prefixes in kohya's layout and in diffusers' (sd-scripts: lora_te1 is
# CLIP-L, lora_te2 CLIP-G, lora_te3 T5-XXL, as the pipeline's text_encoder, _2 and _3)
_KOHYA_TEXT = {
    "lora_te1_": "text_encoder",
    "lora_te2_": "text_encoder_2",
    "lora_te3_": "text_encoder_3",
}
_SINGLE_FILE_TEXT = {
    CLIP_L_PREFIX: "text_encoder",
    CLIP_G_PREFIX: "text_encoder_2",
    T5_PREFIX: "text_encoder_3",
}
_PARTS = ("transformer", "text_encoder", "text_encoder_2", "text_encoder_3")
_SUFFIXES = {
    "lora_down.weight": "down",
    "lora_up.weight": "up",
    "lora_A.weight": "down",
    "lora_B.weight": "up",
    "lora.down.weight": "down",
    "lora.up.weight": "up",
    "alpha": "alpha",
}


@dataclass(frozen=True)
class ConvertedLora:
    """A LoRA in diffusers' PEFT layout, its scales folded into the weights."""

    state: dict[str, Any]  # "transformer.<module>.lora_A.weight" ... per part
    parts: frozenset[str]  # the pipeline components it changes
    skipped: frozenset[str] = frozenset()  # components it has that the model runs without (T5)


def _split_key(key: str) -> tuple[str, str] | None:
    """(module, role) of a LoRA tensor name; role is "down", "up" or "alpha"."""
    for suffix, role in _SUFFIXES.items():
        if key.endswith("." + suffix):
            return key[: -len(suffix) - 1], role
    return None


def _module_tables(pipe: Any) -> dict[str, dict[str, str]]:
    """Per component: every module name that can carry a LoRA, by each way a file may spell
    it (kohya: dots as underscores)."""
    tables: dict[str, dict[str, str]] = {}
    for part in _PARTS:
        model = getattr(pipe, part, None)
        if model is None:
            continue
        names = {n for n, m in model.named_modules() if hasattr(m, "weight") and n}
        tables[part] = {name.replace(".", "_"): name for name in names}
        tables[part].update({name: name for name in names})
    return tables


def convert(
    state: dict[str, Any], pipe: Any, name: str, adapter_config: dict[str, Any] | None = None
) -> ConvertedLora:
    """`state` (any layout read here) for `pipe`'s modules, scaled as its alphas (kohya) or
    `adapter_config` (diffusers' `lora_adapter_metadata`: lora_alpha, rank and alpha
    patterns per component) say; LoraError naming the file when a part has no place in this
    model (another SD3 variant, another architecture)."""
    import torch

    mmdit = {m.original: m for m in transformer_modules(pipe.transformer)}
    kohya_mmdit = {original.replace(".", "_"): m for original, m in mmdit.items()}
    tables = _module_tables(pipe)
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    unplaced: dict[str, None] = {}  # modules (in order) with no place in this model
    skipped: set[str] = set()
    _refuse_other_kinds(state, name)
    for key, tensor in state.items():
        split = _split_key(key)
        if split is None:
            unplaced[key] = None
            continue
        module, role = split
        absent = _part_of(module)
        if absent and absent not in tables:  # the model runs without it (T5 off)
            skipped.add(absent)
            continue
        place = _place(module, mmdit, kohya_mmdit, tables)
        if place is None:
            unplaced[module] = None
            continue
        groups.setdefault(place, {})[role] = tensor
    if unplaced:
        raise _mismatch(name, list(unplaced), len(groups) + len(unplaced))
    out: dict[str, Any] = {}
    with torch.no_grad():
        for (part, module), found in groups.items():
            if "down" not in found or "up" not in found:
                raise LoraError(
                    f"the LoRA {name} is damaged: {module} has no "
                    f"{'up' if 'down' in found else 'down'} matrix",
                    "download the LoRA again",
                )
            down, up = found["down"].float(), found["up"].float()
            rank = down.shape[0]
            # kohya's scale, alpha / rank (no alpha, or 0: 1), folded in: PEFT then scales by 1.
            # The rank is the file's: a `split_qkv` LoRA (q, k, v of rank r saved as one of
            # rank 3r) is scaled by alpha / 3r, as kohya's, ComfyUI's and A1111's loaders do
            alpha = float(found["alpha"]) if "alpha" in found else 0.0
            scale = alpha / rank if alpha else _config_scale(adapter_config, part, module, rank)
            down = down * scale
            if part == "transformer" and module in mmdit:
                for target, a, b in _mmdit_pairs(mmdit[module], down, up):
                    out[f"transformer.{target}.lora_A.weight"] = a.contiguous()
                    out[f"transformer.{target}.lora_B.weight"] = b.contiguous()
            else:
                out[f"{part}.{module}.lora_A.weight"] = down.contiguous()
                out[f"{part}.{module}.lora_B.weight"] = up.contiguous()
    _check_shapes(out, pipe, name)
    parts = frozenset(key.split(".", 1)[0] for key in out)
    return ConvertedLora(out, parts, frozenset(skipped))


def _config_scale(config: dict[str, Any] | None, part: str, module: str, rank: int) -> float:
    """PEFT's scale of one module from diffusers' saved adapter config ("transformer.r",
    "transformer.lora_alpha", "transformer.alpha_pattern", ...): lora_alpha / r, or over √r
    with rsLoRA; 1 without a config (alpha = r, diffusers' default)."""
    if not config:
        return 1.0
    alpha = config.get(f"{part}.lora_alpha")
    if not isinstance(alpha, (int, float)):
        return 1.0
    patterns = config.get(f"{part}.alpha_pattern") or {}
    for key, value in patterns.items() if isinstance(patterns, dict) else ():
        if module == key or module.endswith("." + key):
            alpha = value
            break
    if config.get(f"{part}.use_rslora"):
        return float(alpha) / math.sqrt(rank)
    return float(alpha) / rank


def _part_of(module: str) -> str:
    """The text encoder a LoRA module name belongs to when its prefix says so ("": another)."""
    return (
        "text_encoder_3" if module.startswith(("lora_te3_", T5_PREFIX, "text_encoder_3.")) else ""
    )


def _place(
    module: str,
    mmdit: dict[str, ModuleMap],
    kohya_mmdit: dict[str, ModuleMap],
    tables: dict[str, dict[str, str]],
) -> tuple[str, str] | None:
    """(component, module name) a LoRA module name means, or None when this model has none."""
    if module.startswith("lora_unet_"):
        found = kohya_mmdit.get(module[len("lora_unet_") :])
        return ("transformer", found.original) if found else None
    for prefix in ("diffusion_model.", "model.diffusion_model."):
        if module.startswith(prefix):
            rest = module[len(prefix) :]
            return ("transformer", rest) if rest in mmdit else None
    for prefix, part in _SINGLE_FILE_TEXT.items():  # ComfyUI: the single-file names
        if module.startswith(prefix):
            rest, table = module[len(prefix) :], tables.get(part, {})
            return (part, table[rest]) if rest in table else None
    for prefix, part in _KOHYA_TEXT.items():
        if module.startswith(prefix):
            rest, table = module[len(prefix) :], tables.get(part, {})
            # (CLIP under "text_model." or without it, as transformers versions differ)
            for name in (rest, rest.removeprefix("text_model_"), "text_model_" + rest):
                if name in table:
                    return part, table[name]
            return None
    head, _, rest = module.partition(".")
    if head in tables:  # diffusers' layout: the component, then its own module names
        return (head, rest) if rest in tables[head] else None
    return None


# LyCORIS and DoRA tensors: other ways of adapting a layer than LoRA's two matrices, by the
# last part of a tensor's name
_OTHER_KINDS = {
    "dora_scale": "a DoRA",
    "lora_magnitude_vector": "a DoRA",
    "hada_w1_a": "a LyCORIS LoHa",
    "lokr_w1": "a LyCORIS LoKr",
    "diff": "a LyCORIS full-weight difference",
    "diff_b": "a LyCORIS full-weight difference",
}


def _refuse_other_kinds(state: dict[str, Any], name: str) -> None:
    for key in state:
        for mark, kind in _OTHER_KINDS.items():
            if key.endswith("." + mark) or f".{mark}." in key:
                raise LoraError(
                    f"{name} is {kind}, which sd3desk cannot apply yet (only LoRA's up and "
                    "down matrices)",
                    "use a plain LoRA version of it, if its author offers one",
                )


def _mmdit_pairs(mapping: ModuleMap, down: Any, up: Any) -> list[tuple[str, Any, Any]]:
    """(diffusers module, A, B) for one original MMDiT module: a fused q/k/v split into its
    three projections (each keeps only the part of the rank its rows use, so a kohya
    `split_qkv` LoRA stays as small as it was trained), a swapped modulation reordered."""
    if mapping.swapped:
        first, second = up.chunk(2, dim=0)
        return [(mapping.diffusers[0], down, _cat(second, first))]
    if len(mapping.diffusers) == 1:
        return [(mapping.diffusers[0], down, up)]
    pairs = []
    for target, rows in zip(mapping.diffusers, up.chunk(3, dim=0), strict=True):
        used = rows.abs().sum(dim=tuple(d for d in range(rows.dim()) if d != 1)).nonzero()
        if used.numel() == 0:
            continue  # (this projection is not adapted at all)
        low, high = int(used.min()), int(used.max()) + 1
        pairs.append((target, down[low:high], rows[:, low:high]))
    return pairs


def _cat(a: Any, b: Any) -> Any:
    import torch

    return torch.cat([a, b], dim=0)


def _check_shapes(state: dict[str, Any], pipe: Any, name: str) -> None:
    """Every A matrix fits its module's input and every B its output: a LoRA for SD3.5 Large
    on a Medium model has the right names but not the right widths."""
    for key, tensor in state.items():
        if not key.endswith("lora_A.weight"):
            continue
        part, _, rest = key.partition(".")
        module = getattr(pipe, part).get_submodule(rest[: -len(".lora_A.weight")])
        # (from the layer, not its weight: a quantized weight is stored packed)
        inputs = getattr(module, "in_features", None) or getattr(module, "in_channels", 0)
        outputs = getattr(module, "out_features", None) or getattr(module, "out_channels", 0)
        up = state[key.replace("lora_A", "lora_B")]
        if tensor.shape[1] != inputs or up.shape[0] != outputs:
            width = WIDTH_FAMILIES.get(int(tensor.shape[1]), "")
            said = f" (it looks like one for {width})" if width and part == "transformer" else ""
            raise LoraError(
                f"the LoRA {name} was made for another model{said}: its {rest[:-14]} is "
                f"{int(up.shape[0])}x{int(tensor.shape[1])}, the model's is "
                f"{outputs}x{inputs}",
                "use a LoRA made for this model's family (on Civitai, its base model)",
            )


def _mismatch(name: str, unplaced: list[str], total: int) -> LoraError:
    shown = ", ".join(_readable(m) for m in unplaced[:3])
    if len(unplaced) >= total:
        return LoraError(
            f"none of the {total} layers of the LoRA {name} exists in this model "
            f"(e.g. {shown}): it was made for another model",
            "use a LoRA made for SD3 / SD3.5 and for this model's family",
        )
    return LoraError(
        f"{len(unplaced)} of the {total} layers of the LoRA {name} have no place in this "
        f"model (e.g. {shown}): it was made for another SD3 variant",
        "use a LoRA made for this model's family (SD3 Medium, SD3.5 Medium or SD3.5 Large)",
    )


def _readable(module: str) -> str:
    return re.sub(r"^(lora_unet_|diffusion_model\.|transformer\.)", "", module)


# ------------------------------------------------------------------ on the pipeline


class LoraSet:
    """The LoRA adapters loaded into one pipeline, switched per request: loading the base
    model again is never needed, and a LoRA used recently stays loaded (unused). diffusers'
    SD3 loader covers the MMDiT and the CLIP encoders; a T5 part goes through PEFT here.

    Thread rule: the engine's thread only.
    """

    def __init__(self, pipe: Any) -> None:
        self._pipe = pipe
        # hash -> (adapter name, parts it changes, parts it has that this model lacks)
        self._loaded: OrderedDict[str, tuple[str, frozenset[str], frozenset[str]]] = OrderedDict()
        # (hash, weight) of what runs now; None: not known (PEFT makes each adapter it loads
        # the active one, and a failed load may leave another active), so switch next time
        self._active: tuple[tuple[str, float], ...] | None = ()

    def text_key(self, loras: Sequence[LoraRef]) -> tuple[tuple[str, float], ...]:
        """The part of a prompt-cache key that LoRAs make: those changing a text encoder."""
        return tuple(
            (ref.hash, ref.weight)
            for ref in loras
            if ref.hash in self._loaded and self._loaded[ref.hash][1] & _TEXT_PARTS
        )

    def apply(self, loras: Sequence[tuple[LoraRef, Path]]) -> list[str]:
        """Make exactly `loras` active with their weights (none: the bare model); returns
        what the user should know (a part of a LoRA that cannot act on this model)."""
        notices: list[str] = []
        try:
            for ref, path in loras:
                if ref.hash not in self._loaded:
                    self._active = None
                    self._load(ref, path)
                self._loaded.move_to_end(ref.hash)
                if "text_encoder_3" in self._loaded[ref.hash][2]:
                    notices.append(
                        f"{path.name} also changes T5, which is off: that part is unused"
                    )
            self._evict({ref.hash for ref, _ in loras})
            wanted = tuple((ref.hash, ref.weight) for ref, _ in loras if ref.weight != 0)
            if wanted != self._active:
                self._active = None
                self._switch(wanted)
                self._active = wanted
        except BaseException:
            self._active = None  # whatever PEFT left active, the next request sets it again
            raise
        return notices

    def _switch(self, wanted: tuple[tuple[str, float], ...]) -> None:
        pipe = self._pipe
        chosen = [(self._loaded[h][:2], w) for h, w in wanted]
        on_pipe = [(name, w) for (name, parts), w in chosen if parts & _PIPE_PARTS]
        if on_pipe:
            pipe.enable_lora()
            pipe.set_adapters([n for n, _ in on_pipe], adapter_weights=[w for _, w in on_pipe])
        elif any(parts & _PIPE_PARTS for _, parts, _ in self._loaded.values()):
            pipe.disable_lora()
        t5 = pipe.text_encoder_3
        if t5 is not None and any("text_encoder_3" in p for _, p, _ in self._loaded.values()):
            from diffusers.utils.peft_utils import (
                set_adapter_layers,
                set_weights_and_activate_adapters,
            )

            on_t5 = [(name, w) for (name, parts), w in chosen if "text_encoder_3" in parts]
            set_adapter_layers(t5, enabled=bool(on_t5))
            if on_t5:
                set_weights_and_activate_adapters(t5, [n for n, _ in on_t5], [w for _, w in on_t5])

    def _load(self, ref: LoraRef, path: Path) -> None:
        from safetensors.torch import load_file

        from sd3desk.inference.devices import is_out_of_memory

        require_sd3(path)
        unfuse_qkv(self._pipe.transformer)  # (fast mode's fused q/k/v: a LoRA adapts each)
        converted = convert(load_file(str(path)), self._pipe, path.name, _adapter_config(path))
        adapter = f"lora_{ref.hash[:16]}"
        t5_prefix = "text_encoder_3."
        try:
            state = {k: v for k, v in converted.state.items() if not k.startswith(t5_prefix)}
            if state:
                with warnings.catch_warnings():  # PEFT warns of every second adapter, as meant
                    warnings.filterwarnings("ignore", "Already found a `peft_config`")
                    self._pipe.load_lora_weights(state, adapter_name=adapter)
            t5_state = {
                k[len(t5_prefix) :]: v
                for k, v in converted.state.items()
                if k.startswith(t5_prefix)
            }
            if t5_state and self._pipe.text_encoder_3 is not None:
                _load_t5(self._pipe.text_encoder_3, t5_state, adapter)
        except Exception as exc:
            self._delete(adapter, converted.parts)
            if is_out_of_memory(exc):
                raise
            raise LoraError(
                f"the LoRA {path.name} could not be applied: {exc}",
                "use a LoRA made for this model's family",
            ) from exc
        self._loaded[ref.hash] = (adapter, converted.parts, converted.skipped)

    def _evict(self, keep: set[str]) -> None:
        unused = [h for h in self._loaded if h not in keep]
        for digest in unused[: max(0, len(unused) - KEEP_UNUSED)]:
            adapter, parts, _ = self._loaded.pop(digest)
            self._delete(adapter, parts)
            self._active = None  # (deleting an adapter may change which one PEFT runs)

    def _delete(self, adapter: str, parts: frozenset[str]) -> None:
        import contextlib

        from diffusers.utils.peft_utils import delete_adapter_layers

        with contextlib.suppress(ValueError, KeyError):  # (a load that failed half-way)
            if parts & _PIPE_PARTS:
                self._pipe.delete_adapters(adapter)
        if "text_encoder_3" in parts and self._pipe.text_encoder_3 is not None:
            delete_adapter_layers(self._pipe.text_encoder_3, adapter)


def _adapter_config(path: Path) -> dict[str, Any] | None:
    """diffusers' `lora_adapter_metadata` of a LoRA file (its LoraConfig per component), or
    None; a malformed one is ignored, as diffusers would fail on it anyway."""
    import json

    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        raw = (handle.metadata() or {}).get("lora_adapter_metadata")
    try:
        found = json.loads(raw) if raw else None
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


def _load_t5(t5: Any, state: dict[str, Any], adapter: str) -> None:
    """A LoRA's T5 part into the T5 encoder through PEFT (diffusers' SD3 loader has no T5):
    each module's own rank, its scale already folded into the weights."""
    from peft import LoraConfig

    ranks = {
        key[: -len(".lora_A.weight")]: int(tensor.shape[0])
        for key, tensor in state.items()
        if key.endswith(".lora_A.weight")
    }
    first = next(iter(ranks.values()))
    config = LoraConfig(
        r=first,
        lora_alpha=first,
        target_modules=list(ranks),
        rank_pattern=ranks,
        alpha_pattern=ranks,
    )
    t5.load_adapter(adapter_name=adapter, adapter_state_dict=state, peft_config=config)


_TEXT_PARTS = frozenset({"text_encoder", "text_encoder_2", "text_encoder_3"})
_PIPE_PARTS = frozenset({"transformer", "text_encoder", "text_encoder_2"})
