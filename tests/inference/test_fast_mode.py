"""Fast mode on the CPU with the tiny model: the MMDiT's blocks compiled (torch.compile runs on
the CPU too), q/k/v fused, images within rounding of eager ones and recorded as fast; what
cannot run here is refused with the reason."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from conftest import max_diff

from sd3desk.core.errors import SD3DeskError
from sd3desk.core.params import GenerationParams
from sd3desk.core.settings import Device, MemoryPlan, Speed
from sd3desk.inference.speed import qkv_fused

REQUEST = GenerationParams("a red cat", seed=8, steps=3, guidance_scale=5.0, width=256, height=256)


def engine_for(model: str, cache_dir: Path, speed: Speed):
    from sd3desk.inference.engine import Engine
    from sd3desk.inference.models import resolve_model

    engine = Engine(Device.cpu, cache_dir=cache_dir)
    engine.load(resolve_model(model), MemoryPlan.auto, speed=speed)
    return engine


@pytest.fixture(scope="module")
def eager_image(tiny_model_dir, cache_dir):
    return engine_for(str(tiny_model_dir), cache_dir, Speed.off).generate(REQUEST).images[0]


@pytest.fixture(scope="module")
def fast(tiny_model_dir, tmp_path_factory):
    cache = tmp_path_factory.mktemp("fast-cache")
    engine = engine_for(str(tiny_model_dir), cache, Speed.fast)
    return engine, engine.warm_up(256, 256), cache


def test_fast_mode_compiles_the_blocks_and_fuses_qkv(fast):
    engine, warm_up_s, _ = fast
    transformer = engine.pipeline.transformer
    assert all(b._compiled_call_impl is not None for b in transformer.transformer_blocks)
    assert qkv_fused(transformer)  # q, k, v in one projection
    assert warm_up_s > 0 and "fast" in engine.loaded_model().describe()


def test_fast_images_are_eager_ones_within_rounding_and_say_so(fast, eager_image, tmp_path):
    engine, _, _ = fast
    result = engine.generate(REQUEST)
    image = result.images[0]
    diff = np.abs(np.asarray(image, np.int16) - np.asarray(eager_image, np.int16))
    assert diff.max() <= 2 and diff.mean() <= 2 / 255  # the Settings tooltip's figure
    assert max_diff(engine.generate(REQUEST).images[0], image) == 0  # and it re-runs exactly
    assert dict(result.made_with)["speed"] == "fast"
    from sd3desk.core.metadata import ImageMetadata, json_text, parse_json

    meta = parse_json(json_text(ImageMetadata(REQUEST, result.model, made_with=result.made_with)))
    assert dict(meta.made_with) == dict(result.made_with)


def test_the_compiled_code_is_cached_in_our_cache_folder(fast):
    _, _, cache = fast
    assert Path(os.environ["TORCHINDUCTOR_CACHE_DIR"]) == cache / "torch-compile"
    assert any((cache / "torch-compile").rglob("*.py"))  # inductor's generated kernels


def test_a_lora_in_fast_mode_unfuses_and_acts(fast, tmp_path):
    from sd3desk.core.loras import LoraLibrary
    from sd3desk.inference import testlora

    engine, _, _ = fast
    pipe = engine.pipeline
    path = testlora.write_diffusers(testlora.random_lora(pipe, seed=9), tmp_path / "x.safetensors")
    library = LoraLibrary([tmp_path])
    ref = library.ref(path)
    bare = engine.generate(REQUEST).images[0]
    styled = engine.generate(REQUEST.replace(loras=(ref,)), loras=[(ref, path)]).images[0]
    assert not qkv_fused(pipe.transformer)  # q, k, v adapted one by one
    attention = pipe.transformer.transformer_blocks[0].attn
    assert not hasattr(attention, "to_qkv")  # and the joined copy's memory given back
    assert max_diff(styled, bare) > 20


def test_what_cannot_run_here_is_refused_with_the_reason(tiny_model_dir, cache_dir, monkeypatch):
    with pytest.raises(SD3DeskError, match="'fastest' needs an NVIDIA GPU"):
        engine_for(str(tiny_model_dir), cache_dir, Speed.fastest)
    from sd3desk.inference import speed
    from sd3desk.inference.devices import DeviceInfo
    from sd3desk.inference.speed import unavailable

    ada = DeviceInfo("cuda", 0, "RTX 4070", "bfloat16", capability=(8, 9))
    assert "Triton" in (unavailable(Speed.fast, ada) or "")  # (this CPU build of torch has none)
    monkeypatch.setattr(speed, "_has_triton", lambda: True)  # a CUDA build's

    mps = DeviceInfo("mps", 0, "Apple GPU", "float16")
    assert "MPS" in (unavailable(Speed.fast, mps) or "")
    ampere = DeviceInfo("cuda", 0, "RTX 3090", "bfloat16", capability=(8, 6))
    assert unavailable(Speed.fastest, ada) is None
    assert "8.6" in (unavailable(Speed.fastest, ampere) or "")
