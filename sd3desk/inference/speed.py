"""Fast mode: the MMDiT's repeated blocks compiled with torch.compile (regional compilation:
one block is compiled and every other reuses it, seconds instead of minutes), fused q/k/v
projections and a channels-last VAE; "fastest" adds fp8 activations and weights (torchao) on
GPUs with fp8 units. Compiled code is cached on disk (inductor's caches in sd3desk's cache
folder), so the second start is warm."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from sd3desk.core.settings import Speed
from sd3desk.inference.devices import DeviceInfo
from sd3desk.inference.quant import FP8_CAPABILITY, installed

COMPILE_CACHE = "torch-compile"  # inside the cache folder


def unavailable(speed: Speed, device: DeviceInfo) -> str | None:
    """Why `speed` cannot run on `device`; None when it can."""
    if speed is Speed.off:
        return None
    if device.kind == "mps":
        return "fast mode needs an NVIDIA GPU or the CPU: torch.compile does not speed up MPS"
    if speed is Speed.fastest:
        if device.kind != "cuda":
            return "'fastest' needs an NVIDIA GPU with fp8 units (RTX 40xx, L4, L40, H100)"
        capability: tuple[int, int] = device.capability or (0, 0)
        if capability < FP8_CAPABILITY:
            return (
                "'fastest' needs an NVIDIA GPU of compute capability 8.9 or newer (RTX 40xx, "
                f"L4, L40, H100); this one is {capability[0]}.{capability[1]}: use 'fast'"
            )
        if not installed("torchao"):
            return "'fastest' needs torchao (pip install 'sd3desk[quant]')"
    if device.kind == "cpu" and not any(shutil.which(c) for c in ("c++", "g++", "clang++", "cl")):
        return "fast mode on the CPU compiles C++: install a compiler (gcc or clang)"
    if device.kind == "cuda" and not _has_triton():
        return "fast mode on an NVIDIA GPU compiles with Triton, which this install lacks"
    return None


def _has_triton() -> bool:
    from torch.utils._triton import has_triton

    return bool(has_triton())


def use_compile_cache(cache_dir: Path | None) -> None:
    """Keep inductor's compiled code (FX graph, AOTAutograd, autotuning caches) in sd3desk's
    cache folder, which outlives /tmp; set before the first compile (inductor reads it at
    each use, and writes its /tmp default there once it has needed one)."""
    if cache_dir is not None:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir / COMPILE_CACHE)


def make_fast(pipe: Any, speed: Speed, device: DeviceInfo, *, plain_mmdit: bool) -> None:
    """Turn a loaded, placed pipeline fast. `plain_mmdit`: the MMDiT's weights are plain
    tensors (a quantized or GGUF MMDiT's can be neither joined nor quantized again: it is only
    compiled). The compile itself happens at the first denoising step (`Engine.warm_up`)."""
    import torch

    transformer = pipe.transformer
    # 1. one matmul for q, k and v instead of three (undone for a LoRA: inference/lora.py)
    if plain_mmdit:
        transformer.fuse_qkv_projections()
    # 2. fp8 activations and weights, per row (torchao): Ada and Hopper's fp8 tensor cores
    if speed is Speed.fastest and plain_mmdit:
        from torchao.quantization import (
            Float8DynamicActivationFloat8WeightConfig,
            PerRow,
            quantize_,
        )

        quantize_(transformer, Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()))
    # 3. regional compilation: the joint blocks, every one of the same class (the last one,
    # "pre-only", is a second graph); shapes go dynamic after a second size is seen, so a new
    # size reuses the code instead of compiling again
    for block in transformer.transformer_blocks:
        block.compile()
    # 4. the VAE's convolutions in the layout cuDNN is fastest with
    if device.kind == "cuda":
        pipe.vae.to(memory_format=torch.channels_last)


def qkv_fused(transformer: Any) -> bool:
    """Whether attention runs through the fused q/k/v projections."""
    processors = transformer.attn_processors.values()
    return any(type(p).__name__.startswith("Fused") for p in processors)


def unfuse_qkv(transformer: Any) -> None:
    """Back to separate q, k, v projections (a LoRA adapts them one by one): diffusers puts
    the processors it kept back (and empties what it kept); the joined copies of the weights
    it made go, so unfusing gives their memory back."""
    if not qkv_fused(transformer):
        return
    transformer.unfuse_qkv_projections()
    for module in transformer.modules():
        for joined in ("to_qkv", "to_kv", "to_added_qkv"):
            if hasattr(module, joined):
                delattr(module, joined)
        if getattr(module, "fused_projections", False):
            module.fused_projections = False
