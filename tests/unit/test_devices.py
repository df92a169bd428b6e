"""Memory-plan choice and VAE tiling rules (pure logic; torch is never imported here)."""

from __future__ import annotations

import pytest

from sd3desk.core.errors import SD3DeskError
from sd3desk.core.settings import MemoryPlan
from sd3desk.inference import quant
from sd3desk.inference.devices import GIB, DeviceInfo, Placement, resolve_plan
from sd3desk.inference.quant import Quant

# SD3 Medium in bf16, from its safetensors headers: MMDiT 4.2 GB, T5 9.5 GB, CLIP-G 1.4 GB, ...
SIZES = {
    "transformer": int(4.2 * GIB),
    "text_encoder_3": int(9.5 * GIB),
    "text_encoder_2": int(1.4 * GIB),
    "text_encoder": int(0.25 * GIB),
    "vae": int(0.17 * GIB),
}


def cuda(free_gib: float, capability: tuple[int, int] = (8, 6)) -> DeviceInfo:
    return DeviceInfo("cuda", 0, "GPU", "bfloat16", int(24 * GIB), int(free_gib * GIB), capability)


@pytest.fixture
def libraries(monkeypatch):
    """Which quantization libraries count as installed (all, unless a test says otherwise)."""
    installed = {"bitsandbytes", "torchao"}
    monkeypatch.setattr(quant, "installed", lambda name: name in installed)
    return installed


@pytest.mark.parametrize(
    ("free", "capability", "expected"),
    [
        (23.0, (8, 6), "all on the device"),
        (14.0, (8, 6), "all on the device · T5 in 8-bit"),
        (12.0, (8, 6), "all on the device · T5 in 4-bit NF4"),
        (10.0, (8, 9), "all on the device · MMDiT in fp8, T5 in 4-bit NF4"),
        (10.0, (8, 6), "all on the device · MMDiT in 4-bit NF4, T5 in 4-bit NF4"),
        (7.0, (8, 6), "sequential offload"),
    ],
)
def test_auto_takes_the_fastest_plan_that_fits(libraries, free, capability, expected):
    plan = resolve_plan(MemoryPlan.auto, cuda(free, capability), SIZES)
    assert plan.describe() == expected and plan.use_t5


def test_auto_without_the_quantization_libraries_offloads(libraries):
    libraries.clear()
    assert resolve_plan(MemoryPlan.auto, cuda(14.0), SIZES).placement is Placement.offload
    assert resolve_plan(MemoryPlan.auto, cuda(8.0), SIZES).placement is Placement.sequential


def test_a_gguf_mmdit_is_never_quantized_again(libraries):
    gguf = {**SIZES, "transformer": int(1.1 * GIB)}  # a Q4 file: its size as it runs
    plan = resolve_plan(MemoryPlan.auto, cuda(8.0, (9, 0)), gguf, mmdit_quantizable=False)
    assert (plan.mmdit_quant, plan.t5_quant) == (None, Quant.nf4)
    assert (
        resolve_plan(MemoryPlan.nf4, cuda(10.0), gguf, mmdit_quantizable=False).mmdit_quant is None
    )


def test_quantized_plans_say_where_they_cannot_run(libraries):
    cpu = DeviceInfo("cpu", 0, "CPU", "float32")
    mps = DeviceInfo("mps", 0, "Apple GPU", "float16")
    assert resolve_plan(MemoryPlan.t5_8bit, cpu, SIZES).t5_quant is Quant.int8  # bnb: CPU ok
    assert resolve_plan(MemoryPlan.fp8, cpu, SIZES).mmdit_quant is Quant.fp8  # torchao: CPU ok
    with pytest.raises(SD3DeskError, match="MMDiT in 4-bit needs an NVIDIA GPU"):
        resolve_plan(MemoryPlan.nf4, cpu, SIZES)
    with pytest.raises(SD3DeskError, match="does not run on Apple MPS"):
        resolve_plan(MemoryPlan.t5_4bit, mps, SIZES)
    with pytest.raises(SD3DeskError, match=r"compute capability 8\.9.*this one is 8\.6") as caught:
        resolve_plan(MemoryPlan.fp8, cuda(10.0, (8, 6)), SIZES)
    assert "t5-8bit" in caught.value.advice  # what it can run instead
    libraries.discard("bitsandbytes")
    with pytest.raises(SD3DeskError, match=r"bitsandbytes is not installed.*sd3desk\[quant\]"):
        resolve_plan(MemoryPlan.t5_8bit, cuda(20.0), SIZES)
    # the default, cpu and gpu plans never need them
    assert resolve_plan(MemoryPlan.auto, cpu, SIZES).placement is Placement.device


def test_plan_sizes_and_the_advice_after_running_out_of_memory(libraries):
    from sd3desk.inference.devices import plan_bytes
    from sd3desk.inference.engine import oom_advice

    plan = resolve_plan(MemoryPlan.t5_8bit, cuda(20.0), SIZES)
    sizes = plan_bytes(plan, cuda(20.0), SIZES)
    assert sizes["text_encoder_3"] == pytest.approx(SIZES["text_encoder_3"] / 2, rel=0.01)
    assert sizes["transformer"] == SIZES["transformer"]
    advice = oom_advice(cuda(20.0, (9, 0)), resolve_plan(MemoryPlan.gpu, cuda(20.0), SIZES))
    assert "'t5-8bit', 't5-4bit', 'fp8', '4bit', 'offload', 'sequential', 'no-t5'" in advice
    advice = oom_advice(cuda(20.0, (8, 6)), plan)
    assert "'t5-8bit'" not in advice and "'fp8'" not in advice and "'4bit'" in advice


def test_no_t5_plan_and_models_without_t5():
    assert not resolve_plan(MemoryPlan.no_t5, cuda(8), SIZES).use_t5
    assert resolve_plan(MemoryPlan.no_t5, cuda(8), SIZES).placement is Placement.device
    assert not resolve_plan(MemoryPlan.auto, cuda(23), SIZES, has_t5=False).use_t5


def test_cpu_and_mps_keep_everything_on_the_device():
    cpu = DeviceInfo("cpu", 0, "CPU", "float32")
    mps = DeviceInfo("mps", 0, "Apple GPU", "float16")
    assert resolve_plan(MemoryPlan.auto, cpu, SIZES).placement is Placement.device
    assert resolve_plan(MemoryPlan.auto, mps, SIZES).placement is Placement.device
    assert resolve_plan(MemoryPlan.offload, mps, SIZES).placement is Placement.offload
    with pytest.raises(SD3DeskError, match="needs a GPU"):
        resolve_plan(MemoryPlan.sequential, cpu, SIZES)


def test_device_description_for_the_status_line():
    assert cuda(11.2).describe() == "GPU · bfloat16 · 11.2 GB free"
    assert "for trying only" in DeviceInfo("cpu", 0, "CPU", "float32").describe()


def test_a_single_file_whose_t5_cannot_be_read_quantized_is_planned_without_it(libraries):
    """A single file with its own T5 and no diffusers folder to read T5 from quantized: auto
    keeps T5 in 16-bit (and may quantize the MMDiT), an explicit T5 plan says why it cannot."""
    plan = resolve_plan(MemoryPlan.auto, cuda(14.0), SIZES, t5_quantizable=False)
    assert plan.t5_quant is None and plan.use_t5
    plan = resolve_plan(MemoryPlan.auto, cuda(16.0, (8, 9)), SIZES, t5_quantizable=False)
    assert (plan.t5_quant, plan.mmdit_quant) == (None, Quant.fp8)
    with pytest.raises(SD3DeskError, match="text_encoder_3"):
        resolve_plan(MemoryPlan.t5_8bit, cuda(20.0), SIZES, t5_quantizable=False)
