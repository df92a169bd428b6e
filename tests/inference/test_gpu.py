"""Checks that need a GPU (skipped without one): the tiny model on CUDA/MPS agrees with the CPU."""

from __future__ import annotations

import pytest
import torch

from sd3desk.core.params import GenerationParams
from sd3desk.core.settings import Device
from sd3desk.inference.engine import Engine
from sd3desk.inference.models import resolve_model
from tests.inference.conftest import pixels

HAS_MPS = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
ACCELERATOR = Device.cuda if torch.cuda.is_available() else Device.mps if HAS_MPS else None


@pytest.mark.gpu
@pytest.mark.skipif(ACCELERATOR is None, reason="needs a CUDA or MPS device")
def test_same_seed_on_the_gpu_is_close_to_the_cpu(engine, tiny_model_dir, cache_dir):
    params = GenerationParams("a cat", seed=5, steps=8, guidance_scale=5.0, width=256, height=256)
    gpu = Engine(ACCELERATOR, cache_dir=cache_dir)
    gpu.load(resolve_model(str(tiny_model_dir)))
    infos = []
    image = gpu.generate(params, on_step=infos.append).images[0]
    # Noise comes from a CPU generator, so the images differ only by half-precision rounding.
    assert abs(pixels(image) - pixels(engine.generate(params).images[0])).mean() < 4
    assert [i.step for i in infos] == list(range(1, 9))
    assert any(i.preview is not None for i in infos)  # previews arrive without stalling the GPU
