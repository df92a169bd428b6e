"""Quantized plans on the CPU with the tiny model: T5 in 8-bit and 4-bit (bitsandbytes, which
runs on the CPU for transformers' models), the MMDiT in fp8 (torchao); the MMDiT in 4-bit is
CUDA-only and refused here with the reason."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import max_diff

from sd3desk.core.errors import SD3DeskError
from sd3desk.core.params import GenerationParams
from sd3desk.core.settings import Device, MemoryPlan
from sd3desk.inference.quant import Quant

pytest.importorskip("bitsandbytes")
pytest.importorskip("torchao")

REQUEST = GenerationParams("a red cat", seed=4, steps=3, guidance_scale=5.0, width=256, height=256)


def load(model: str, plan: MemoryPlan, cache_dir):
    from sd3desk.inference.engine import Engine
    from sd3desk.inference.models import resolve_model

    engine = Engine(Device.cpu, cache_dir=cache_dir)
    engine.load(resolve_model(model, test_model_dir=cache_dir / "test-model"), plan)
    return engine


@pytest.fixture(scope="module")
def sixteen_bit(tiny_model_dir, cache_dir):
    """The reference image, every part in the device's own dtype."""
    return load(str(tiny_model_dir), MemoryPlan.gpu, cache_dir).generate(REQUEST).images[0]


@pytest.mark.parametrize(
    ("plan", "t5", "mmdit"),
    [
        (MemoryPlan.t5_8bit, Quant.int8, None),
        (MemoryPlan.t5_4bit, Quant.nf4, None),
        (MemoryPlan.fp8, Quant.nf4, Quant.fp8),
    ],
)
def test_quantized_plans_generate_close_to_16_bit_and_re_run_exactly(
    tiny_model_dir, cache_dir, sixteen_bit, plan, t5, mmdit
):
    engine = load(str(tiny_model_dir), plan, cache_dir)
    loaded = engine.loaded_model()
    assert (loaded.plan.t5_quant, loaded.plan.mmdit_quant) == (t5, mmdit)
    pipe = engine.pipeline
    t5_layer = pipe.text_encoder_3.encoder.block[0].layer[0].SelfAttention.q
    expected = {Quant.int8: "Linear8bitLt", Quant.nf4: "Linear4bit"}[t5]
    assert type(t5_layer).__name__ == expected  # stored quantized, not converted back
    if mmdit is Quant.fp8:
        weight = pipe.transformer.transformer_blocks[0].attn.to_q.weight
        assert "Float8" in type(weight).__name__
    image = engine.generate(REQUEST).images[0]
    engine._prompt_cache.clear()  # (T5 runs again too)
    again = engine.generate(REQUEST).images[0]
    assert max_diff(image, again) == 0  # same seed, same plan: the same image
    # random tiny weights magnify quantization error; the picture is still the same noise
    diff = np.abs(np.asarray(image, np.int16) - np.asarray(sixteen_bit, np.int16))
    assert diff.mean() < 40


def test_a_single_file_reads_its_t5_quantized_from_a_folder(tmp_path, cache_dir):
    from sd3desk.inference.testmodel import write_test_single_file

    path = write_test_single_file(tmp_path / "tiny.safetensors")
    engine = load(str(path), MemoryPlan.t5_4bit, cache_dir)
    assert engine.loaded_model().plan.t5_quant is Quant.nf4
    assert engine.generate(REQUEST).images[0].size == (256, 256)


def test_a_gguf_mmdit_stays_as_it_is_under_the_4_bit_plan(tmp_path, cache_dir):
    """The 4-bit plan's MMDiT part does not apply to a GGUF file (quantized already): only its
    T5 part does, and that runs on the CPU."""
    from sd3desk.inference.testmodel import write_test_gguf

    path = write_test_gguf(tmp_path / "tiny.gguf", "Q8_0")
    engine = load(str(path), MemoryPlan.nf4, cache_dir)
    plan = engine.loaded_model().plan
    assert (plan.t5_quant, plan.mmdit_quant) == (Quant.nf4, None)
    assert engine.generate(REQUEST).images[0].size == (256, 256)


def test_the_mmdit_in_4_bit_is_refused_on_the_cpu_with_the_reason(tiny_model_dir, cache_dir):
    with pytest.raises(SD3DeskError, match="needs an NVIDIA GPU") as caught:
        load(str(tiny_model_dir), MemoryPlan.nf4, cache_dir)
    assert "t5-8bit" in caught.value.advice
