"""Memory-plan choice and VAE tiling rules (pure logic; torch is never imported here)."""

from __future__ import annotations

import pytest

from sd3desk.core.errors import SD3DeskError
from sd3desk.core.settings import MemoryPlan
from sd3desk.inference.devices import GIB, DeviceInfo, Placement, resolve_plan

# SD3 Medium in bf16, from its safetensors headers: MMDiT 4.2 GB, T5 9.5 GB, CLIP-G 1.4 GB, ...
SIZES = {
    "transformer": int(4.2 * GIB),
    "text_encoder_3": int(9.5 * GIB),
    "text_encoder_2": int(1.4 * GIB),
    "text_encoder": int(0.25 * GIB),
    "vae": int(0.17 * GIB),
}


def cuda(free_gib: float) -> DeviceInfo:
    return DeviceInfo("cuda", 0, "GPU", "bfloat16", int(24 * GIB), int(free_gib * GIB))


@pytest.mark.parametrize(
    ("free", "placement"),
    [(23.0, Placement.device), (14.0, Placement.offload), (8.0, Placement.sequential)],
)
def test_auto_plan_follows_free_vram(free, placement):
    plan = resolve_plan(MemoryPlan.auto, cuda(free), SIZES)
    assert plan.placement is placement and plan.use_t5


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
