"""Switching between two models keeps the one switched away from in RAM (pinned, from a GPU),
RAM allowing: switching back reads nothing from disk and makes the same images."""

from __future__ import annotations

import pytest
from conftest import max_diff

from sd3desk.core.params import GenerationParams
from sd3desk.core.settings import Device
from sd3desk.inference import engine as engine_module
from sd3desk.inference.models import resolve_model

REQUEST = GenerationParams("a red cat", seed=6, steps=3, guidance_scale=5.0, width=256, height=256)


@pytest.fixture
def two_models(tiny_model_dir, tmp_path):
    from sd3desk.inference.testmodel import write_test_single_file

    single = write_test_single_file(tmp_path / "tiny.safetensors")
    return resolve_model(str(tiny_model_dir)), resolve_model(str(single))


def fresh_engine(cache_dir):
    from sd3desk.inference.engine import Engine

    return Engine(Device.cpu, cache_dir=cache_dir)


def test_switching_back_takes_the_parked_model(two_models, cache_dir):
    first, second = two_models
    engine = fresh_engine(cache_dir)
    engine.load(first)
    pipe = engine.pipeline
    before = engine.generate(REQUEST).images[0]
    engine.load(second)
    assert engine.loaded_model().source == second
    engine.load(first)
    assert engine.pipeline is pipe  # nothing read again: the same weights, back
    assert max_diff(engine.generate(REQUEST).images[0], before) == 0
    engine.load(second)  # and the other way: the second is the one parked now
    assert engine.loaded_model().source == second


def test_without_room_in_ram_the_model_is_freed_and_read_again(two_models, cache_dir, monkeypatch):
    first, second = two_models
    engine = fresh_engine(cache_dir)
    engine.load(first)
    pipe = engine.pipeline
    monkeypatch.setattr(engine_module, "available_ram", lambda: 0)
    engine.load(second)
    assert engine._parked is None
    engine.load(first)
    assert engine.pipeline is not pipe


def test_unloading_frees_the_parked_model_too(two_models, cache_dir):
    first, second = two_models
    engine = fresh_engine(cache_dir)
    engine.load(first)
    engine.load(second)
    assert engine._parked is not None
    engine.unload()
    assert engine._parked is None and engine.loaded is None
