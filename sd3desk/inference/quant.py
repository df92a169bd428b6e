"""Quantized weights: T5 in 8-bit or 4-bit NF4 and the MMDiT in 4-bit NF4 (bitsandbytes), the
MMDiT in fp8 weight-only (torchao); what each needs, what it weighs, how it is loaded."""

from __future__ import annotations

import importlib.util
from enum import Enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # (devices imports this module)
    from sd3desk.inference.devices import DeviceInfo

QUANT_EXTRA = "pip install 'sd3desk[quant]' (bitsandbytes and torchao)"


class Quant(Enum):
    """How a component's weights are stored while generating."""

    int8 = "8-bit"  # bitsandbytes LLM.int8
    nf4 = "4-bit NF4"  # bitsandbytes 4-bit NormalFloat, computing in the device's dtype
    fp8 = "fp8"  # torchao float8 (e4m3) weight-only, computing in the device's dtype


# Bytes per parameter in memory: int8 and fp8 one byte; NF4 half a byte plus its per-block
# scales (bitsandbytes: one absmax per 64 weights, itself quantized) and the layers it leaves
# in 16-bit (norms, embeddings), measured as about 0.56 on T5-XXL and the MMDiT
BYTES_PER_PARAM = {Quant.int8: 1.0, Quant.nf4: 0.56, Quant.fp8: 1.0}
FP8_CAPABILITY: tuple[int, int] = (8, 9)  # Ada (RTX 40xx, L4, L40) and Hopper (H100) have fp8 units


def installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def unavailable(quant: Quant, device: DeviceInfo, part: str) -> str | None:
    """Why `quant` cannot store `part` ("transformer" or "text_encoder_3") on `device`; None
    when it can."""
    library = "torchao" if quant is Quant.fp8 else "bitsandbytes"
    if device.kind == "mps":
        return f"{library} does not run on Apple MPS"
    if not installed(library):
        return f"{library} is not installed ({QUANT_EXTRA})"
    if quant is Quant.nf4 and part == "transformer" and device.kind != "cuda":
        return "the MMDiT in 4-bit needs an NVIDIA GPU (diffusers' bitsandbytes loader)"
    if quant is Quant.fp8 and device.kind == "cuda":
        capability: tuple[int, int] = device.capability or (0, 0)
        if capability < FP8_CAPABILITY:
            return (
                "fp8 needs an NVIDIA GPU of compute capability 8.9 or newer (RTX 40xx, L4, "
                f"L40, H100); this one is {capability[0]}.{capability[1]}"
            )
    return None


def bnb_config(quant: Quant, dtype: str, library: str) -> Any:
    """bitsandbytes settings for `quant`, as transformers' or diffusers' class."""
    from sd3desk.inference.devices import torch_dtype

    if library == "diffusers":
        from diffusers import BitsAndBytesConfig
    else:
        from transformers import BitsAndBytesConfig
    if quant is Quant.int8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch_dtype(dtype)
    )


def quantize_fp8(module: Any, device: str) -> None:
    """`module`'s linear layers to fp8 weight-only (torchao), moved onto `device` a block at a
    time and quantized there: the device never holds more than one block in 16-bit."""
    import torch
    from torchao.quantization import Float8WeightOnlyConfig, quantize_

    config = Float8WeightOnlyConfig()

    def place(part: Any) -> None:
        for child in part.children():
            if isinstance(child, torch.nn.ModuleList):
                for block in child:
                    block.to(device)
                    quantize_(block, config)
            else:
                child.to(device)
                quantize_(child, config)

    place(module)
    module.to(device)  # (what sits on the module itself)


def quantized_bytes(params: int, quant: Quant | None, bytes_per_param: int) -> int:
    """Memory of `params` parameters stored as `quant` (None: the device's dtype)."""
    if quant is None:
        return params * bytes_per_param
    return int(params * BYTES_PER_PARAM[quant])
