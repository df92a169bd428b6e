"""Device, dtype and memory-plan choice. Imports torch lazily (inside functions)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

from sd3desk.core.errors import SD3DeskError
from sd3desk.core.settings import Device, MemoryPlan
from sd3desk.inference.quant import Quant, quantized_bytes, unavailable

GIB = 1024**3
# Room left for activations, attention and the VAE decode at about one megapixel; less with a
# quantized plan, which decodes one megapixel and more in tiles (engine._wants_tiling)
ACTIVATION_HEADROOM = 3 * GIB
QUANTIZED_HEADROOM = 2 * GIB


class Placement(Enum):
    """Where the weights live while generating."""

    device = "device"  # all on the GPU (or all on the CPU when that is the device)
    offload = "offload"  # components move to the GPU one at a time
    sequential = "sequential"  # layers stream to the GPU one at a time


@dataclass(frozen=True)
class DeviceInfo:
    """The device generation runs on, as the user should see it."""

    kind: str  # "cuda", "mps" or "cpu"
    index: int
    name: str
    dtype: str  # "bfloat16", "float16" or "float32"
    total_bytes: int | None = None
    free_bytes: int | None = None
    capability: tuple[int, int] | None = None  # a CUDA GPU's compute capability

    @property
    def torch_device(self) -> str:
        return f"cuda:{self.index}" if self.kind == "cuda" else self.kind

    def describe(self) -> str:
        text = f"{self.name} · {self.dtype}"
        if self.free_bytes is not None:
            text += f" · {self.free_bytes / GIB:.1f} GB free"
        if self.kind == "cpu":
            text += " — slow; for trying only"
        return text


@dataclass(frozen=True)
class ResolvedPlan:
    """A concrete memory plan: placement, whether T5 is loaded, and what is quantized."""

    placement: Placement
    use_t5: bool
    t5_quant: Quant | None = None
    mmdit_quant: Quant | None = None

    @property
    def quantized(self) -> bool:
        return self.t5_quant is not None or self.mmdit_quant is not None

    def describe(self) -> str:
        words = {
            Placement.device: "all on the device",
            Placement.offload: "model offload",
            Placement.sequential: "sequential offload",
        }[self.placement]
        stored = [
            f"{part} in {quant.value}"
            for part, quant in (("MMDiT", self.mmdit_quant), ("T5", self.t5_quant))
            if quant is not None
        ]
        if stored:
            words += " · " + ", ".join(stored)
        return words + ("" if self.use_t5 else ", without T5 (CLIP prompts only)")


# The quantized plans: (T5, MMDiT) storage, all on the device
PLAN_QUANTS: dict[MemoryPlan, tuple[Quant | None, Quant | None]] = {
    MemoryPlan.t5_8bit: (Quant.int8, None),
    MemoryPlan.t5_4bit: (Quant.nf4, None),
    MemoryPlan.fp8: (Quant.nf4, Quant.fp8),
    MemoryPlan.nf4: (Quant.nf4, Quant.nf4),
}
# `auto` on a GPU tries these, fastest first: T5 runs once per prompt (and its embeddings are
# cached), so storing it smaller costs almost nothing per image; the MMDiT runs every step
AUTO_ORDER = (
    MemoryPlan.gpu,
    MemoryPlan.t5_8bit,
    MemoryPlan.t5_4bit,
    MemoryPlan.fp8,
    MemoryPlan.nf4,
)


# Libraries that log warnings about themselves while they are imported (torchao: kernels for
# other GPUs; bitsandbytes: optional CPU kernels; torch: its own deprecations)
_CHATTY_LOGGERS = ("torchao", "bitsandbytes", "kernels", "torch.utils._pytree")


def quiet_libraries() -> None:
    """No progress bars or info chatter from diffusers/transformers and the quantization
    libraries; we report progress, and what matters reaches the user as a notice."""
    import logging
    import warnings

    for name in _CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    # bitsandbytes' 8-bit matmul says this on every call with float32 inputs (on the CPU)
    warnings.filterwarnings("ignore", message="MatMul8bitLt: inputs will be cast")
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    for module in (diffusers_logging, transformers_logging):
        module.disable_progress_bar()
        module.set_verbosity_error()


# torch's native libraries, in dependency order. `import torch` maps them through the dynamic
# linker while holding the GIL: ~0.2 s here during which no other Python thread runs, so the GUI
# would freeze. Called as a foreign function through ctypes, dlopen runs with the GIL released;
# the import then finds them loaded. (ctypes.CDLL(path) itself keeps the GIL: measured.)
_TORCH_LIBRARIES = ("libc10", "libtorch_cpu", "libtorch", "libtorch_python")


def preload_torch_libraries() -> int:
    """Map torch's big shared libraries without holding the GIL; returns how many were loaded.

    Only an optimisation for a thread that imports torch next to a GUI: any failure leaves the
    work to `import torch`. Linux and macOS only.
    """
    import ctypes
    import importlib.util
    import os
    import sys
    from pathlib import Path

    if "torch" in sys.modules or sys.platform not in ("linux", "darwin"):
        return 0
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return 0
    folder = Path(next(iter(spec.submodule_search_locations))) / "lib"
    try:
        dlopen = ctypes.CDLL(None).dlopen
    except (OSError, AttributeError):
        return 0
    dlopen.restype = ctypes.c_void_p
    dlopen.argtypes = [ctypes.c_char_p, ctypes.c_int]
    suffix = ".dylib" if sys.platform == "darwin" else ".so"
    loaded = 0
    for name in _TORCH_LIBRARIES:
        path = folder / (name + suffix)
        if not path.exists():
            continue
        if not dlopen(os.fsencode(path), os.RTLD_NOW | os.RTLD_GLOBAL):
            break  # e.g. a dependency not on the search path yet: torch's import will handle it
        loaded += 1
    return loaded


@contextlib.contextmanager
def gc_paused(freeze: bool = False) -> Iterator[None]:
    """No cyclic garbage collection inside the block (imports, model loading).

    Those create hundreds of thousands of objects, and each full collection over them holds the
    GIL for 0.1 s and more, freezing the GUI thread. With `freeze`, everything alive afterwards
    (import-time objects, which live forever) is kept out of later collections too.
    """
    import gc

    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if freeze:
            gc.freeze()
        if was_enabled:
            gc.enable()


def t5_tokenizer_class() -> Any:
    """The fast (Rust) T5 tokenizer class: transformers 4 names it T5TokenizerFast; transformers
    5 resolves that name lazily to its T5Tokenizer, which is the fast one (so type checkers, which
    only see the lazy module, cannot find it)."""
    import transformers

    return transformers.T5TokenizerFast  # pyright: ignore[reportAttributeAccessIssue]


def import_ml_stack() -> None:
    """Import everything loading and generating will need, at once, so it can be frozen."""
    with gc_paused(freeze=True):
        preload_torch_libraries()
        quiet_libraries()  # before the imports that log
        import diffusers  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
        from diffusers import (  # noqa: F401
            AutoencoderKL,
            FlowMatchEulerDiscreteScheduler,
            SD3Transformer2DModel,
            StableDiffusion3Pipeline,
        )
        from transformers import (  # noqa: F401
            CLIPTextModelWithProjection,
            CLIPTokenizer,
            T5EncoderModel,
        )

        t5_tokenizer_class()


def torch_dtype(name: str) -> Any:
    import torch

    return getattr(torch, name)


def pick_device(requested: Device = Device.auto, index: int = 0) -> DeviceInfo:
    """The device to use: CUDA (bf16 where supported, else fp16), Apple MPS (fp16), CPU (fp32)."""
    import torch

    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    kind = requested.value
    if requested is Device.auto:
        kind = "cuda" if cuda else "mps" if mps else "cpu"
    elif requested is Device.cuda and not cuda:
        raise SD3DeskError(
            "no CUDA GPU is available to this Python",
            "install a CUDA build of torch (see the README) or choose --device cpu",
        )
    elif requested is Device.mps and not mps:
        raise SD3DeskError("Apple MPS is not available on this machine", "choose --device cpu")
    if kind == "cuda":
        if index >= torch.cuda.device_count():
            raise SD3DeskError(f"there is no CUDA device {index}")
        free, total = torch.cuda.mem_get_info(index)
        dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        capability = tuple(torch.cuda.get_device_capability(index))
        name = torch.cuda.get_device_name(index)
        return DeviceInfo("cuda", index, name, dtype, total, free, capability)  # type: ignore[arg-type]
    if kind == "mps":
        return DeviceInfo("mps", 0, "Apple GPU (MPS)", "float16")
    return DeviceInfo("cpu", 0, "CPU", "float32")


def backend_report(requested: Device = Device.auto) -> dict[str, Any]:
    """The device `requested` resolves to and what torch can see, for `sd3desk self-test`."""
    import torch

    info = pick_device(requested)
    mps = getattr(torch.backends, "mps", None)
    return {
        "kind": info.kind,
        "name": info.name,
        "dtype": info.dtype,
        "cuda_available": torch.cuda.is_available(),
        "mps_available": bool(mps is not None and mps.is_available()),
        "torch_cuda": torch.version.cuda or "",
    }


def resolve_plan(
    plan: MemoryPlan,
    device: DeviceInfo,
    component_bytes: dict[str, int],
    has_t5: bool = True,
    *,
    mmdit_quantizable: bool = True,
    t5_quantizable: bool = True,
) -> ResolvedPlan:
    """Turn the user's plan into a concrete one. `component_bytes` are weight sizes at the
    device's dtype (a GGUF MMDiT at its file size: `mmdit_quantizable` False, it stays as it
    is; `t5_quantizable` False: a single file's T5 with no diffusers folder to read it from
    quantized). `auto` on a GPU takes the fastest plan whose weights fit the free memory with
    headroom (16-bit, then T5 in 8-bit, T5 in 4-bit, the MMDiT in fp8 or 4-bit: only those
    this device and the installed libraries can run), else offloads whole components, else
    streams layers."""
    use_t5 = has_t5 and plan is not MemoryPlan.no_t5
    if plan in (MemoryPlan.offload, MemoryPlan.sequential):
        if device.kind == "cpu":
            raise SD3DeskError(
                f"the memory plan {plan.value!r} needs a GPU; on the CPU everything already sits "
                "in system memory",
                "choose --memory auto or gpu",
            )
        placement = Placement.offload if plan is MemoryPlan.offload else Placement.sequential
        return ResolvedPlan(placement, use_t5)
    if plan in PLAN_QUANTS:
        resolved = _quantized(plan, device, use_t5, mmdit_quantizable)
        why = _why_not(resolved, device)
        if not why and resolved.t5_quant and not t5_quantizable:
            why = (
                "T5 is read quantized from an SD3 diffusers folder's text_encoder_3, and none "
                "was found (a single file's own T5 cannot be quantized as it loads)"
            )
        if why:
            raise SD3DeskError(
                f"the memory plan {plan.value!r} cannot run here: {why}",
                "choose another memory plan (Settings, or --memory): "
                + ", ".join(p.value for p in lighter_plans(device, use_t5)),
            )
        return resolved
    if plan in (MemoryPlan.gpu, MemoryPlan.no_t5) or device.kind != "cuda":
        return ResolvedPlan(Placement.device, use_t5)
    free = device.free_bytes or 0
    for candidate in AUTO_ORDER:
        resolved = _quantized(candidate, device, use_t5 and t5_quantizable, mmdit_quantizable)
        resolved = replace(resolved, use_t5=use_t5)
        room = QUANTIZED_HEADROOM if resolved.quantized else ACTIVATION_HEADROOM
        fits = sum(plan_bytes(resolved, device, component_bytes).values()) + room
        if fits <= free and not _why_not(resolved, device):
            return resolved
    sizes = {k: v for k, v in component_bytes.items() if use_t5 or k != "text_encoder_3"}
    if max(sizes.values(), default=0) + ACTIVATION_HEADROOM <= free:
        return ResolvedPlan(Placement.offload, use_t5)
    return ResolvedPlan(Placement.sequential, use_t5)


def _quantized(
    plan: MemoryPlan, device: DeviceInfo, use_t5: bool, mmdit_quantizable: bool
) -> ResolvedPlan:
    t5_quant, mmdit_quant = PLAN_QUANTS.get(plan, (None, None))
    return ResolvedPlan(
        Placement.device,
        use_t5,
        t5_quant if use_t5 else None,
        mmdit_quant if mmdit_quantizable else None,
    )


def _why_not(plan: ResolvedPlan, device: DeviceInfo) -> str | None:
    for quant, part in ((plan.t5_quant, "text_encoder_3"), (plan.mmdit_quant, "transformer")):
        why = unavailable(quant, device, part) if quant is not None else None
        if why:
            return why
    return None


def plan_bytes(
    plan: ResolvedPlan, device: DeviceInfo, component_bytes: dict[str, int]
) -> dict[str, int]:
    """What each component weighs in memory under `plan` (sizes given at the device's dtype)."""
    per_param = 4 if device.dtype == "float32" else 2
    sizes = {}
    for part, size in component_bytes.items():
        if part == "text_encoder_3" and not plan.use_t5:
            continue
        quant = {"text_encoder_3": plan.t5_quant, "transformer": plan.mmdit_quant}.get(part)
        sizes[part] = quantized_bytes(size // per_param, quant, per_param) if quant else size
    return sizes


def lighter_plans(device: DeviceInfo, use_t5: bool = True) -> list[MemoryPlan]:
    """The plans that take less memory than all in 16-bit and can run on `device`, lightest
    in speed order (for advice after running out of memory)."""
    found = [
        plan
        for plan in AUTO_ORDER[1:]
        if use_t5 or PLAN_QUANTS[plan][1] is not None
        if not _why_not(_quantized(plan, device, use_t5, True), device)
    ]
    if device.kind != "cpu":
        found += [MemoryPlan.offload, MemoryPlan.sequential]
    if use_t5:
        found.append(MemoryPlan.no_t5)
    return found


def place_pipeline(pipe: Any, placement: Placement, device: DeviceInfo) -> None:
    """Put a pipeline's weights where `placement` says."""
    if placement is Placement.offload:
        pipe.enable_model_cpu_offload(device=device.torch_device)
    elif placement is Placement.sequential:
        pipe.enable_sequential_cpu_offload(device=device.torch_device)
    else:
        pipe.to(device.torch_device)


def free_memory(device: DeviceInfo | None = None) -> None:
    """Give cached memory back after a failure (out-of-memory) or an unload."""
    import gc

    import torch

    gc.collect()
    _trim_heap()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.ipc_collect()
    if device is not None and device.kind == "mps":
        torch.mps.empty_cache()


def _trim_heap() -> None:
    """Hand freed heap pages back to the OS (glibc keeps them otherwise, so an unloaded model
    would still show in the process's memory)."""
    import contextlib
    import ctypes
    import sys

    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
            ctypes.CDLL("libc.so.6").malloc_trim(0)


def is_out_of_memory(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "mps backend out of" in text
    )
