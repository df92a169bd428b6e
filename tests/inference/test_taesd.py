"""TAESD3 previews on the tiny model: decoded at half the image's size (at most 512 px), found
where the Models dialog puts it, never changing an image nor failing a job; linear previews
otherwise or with the setting off (which reaches the workers without a reload)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from tinytaesd import cache_taesd3, write_tiny_taesd3

from sd3desk.inference.discovery import find_taesd3
from sd3desk.inference.engine import _initial_latents, _Steps
from sd3desk.inference.preview import decoded_rgb, latents_to_image, rgb_to_image
from tests.inference.conftest import max_diff


@pytest.fixture(scope="module")
def taesd3_files(tmp_path_factory) -> Path:
    return write_tiny_taesd3(tmp_path_factory.mktemp("taesd3") / "built")


@pytest.fixture
def own_cache(own_hub_cache: Path) -> Path:
    return own_hub_cache


@pytest.fixture
def taesd3(own_cache: Path, taesd3_files: Path) -> Path:
    """The tiny TAESD3 in this test's Hugging Face cache (refs/main naming its snapshot), where
    the Models dialog downloads it."""
    return cache_taesd3(own_cache, taesd3_files)


@pytest.fixture
def engine(engine):
    """The session's tiny engine, given back with linear previews whatever a test set."""
    yield engine
    engine.set_preview_decoder(None)
    assert engine.preview_kind == "linear"


def run(engine, params):
    """The job's images and the preview of each step."""
    previews = []
    result = engine.generate(params, on_step=lambda info: previews.append(info.preview))
    return result.images, previews


def test_previews_are_decoded_and_the_images_stay_the_same(engine, params, taesd3):
    plain_images, linear = run(engine, params)
    assert {p.size for p in linear} == {(32, 32)}  # 256x256: the latent size

    folder = find_taesd3()
    assert folder == taesd3
    engine.set_preview_decoder(folder)
    assert engine.preview_kind == "taesd3"
    assert engine.loaded.preview == "taesd3" and "TAESD3 previews" in engine.loaded.describe()
    images, decoded = run(engine, params)
    assert len(decoded) == params.steps
    assert {p.size for p in decoded} == {(128, 128)} and decoded[-1].mode == "RGB"
    # previews never change results
    assert [max_diff(a, b) for a, b in zip(images, plain_images, strict=True)] == [0]

    # At the last step sigma is 0: the preview is the decoder's picture of the final latents.
    embeds, _ = engine._encode(params)
    with torch.inference_mode():
        final = engine._denoise(
            params, embeds, _initial_latents(params, engine.pipeline), _Steps(None, None, 4)
        )
        expected = rgb_to_image(decoded_rgb(engine._decoder, final[:1]))
    assert max_diff(decoded[-1], expected) == 0
    assert max_diff(decoded[-1], latents_to_image(final[0]).resize((128, 128))) > 0

    engine.set_preview_decoder(None)  # the setting turned off: linear again, at once
    assert engine.preview_kind == "linear" and "TAESD3" not in engine.loaded.describe()
    _, again = run(engine, params)
    assert [max_diff(a, b) for a, b in zip(again, linear, strict=True)] == [0] * params.steps


def test_the_decoded_preview_is_half_the_size_at_most_512(engine, params, taesd3):
    engine.set_preview_decoder(taesd3)
    _, previews = run(engine, params.replace(width=768, height=384, steps=2))
    assert {p.size for p in previews} == {(384, 192)}
    _, previews = run(engine, params.replace(width=1280, height=640, steps=2))
    assert {p.size for p in previews} == {(512, 256)}  # half would be 640x320


def test_a_hires_job_previews_each_pass_through_the_decoder(engine, params, taesd3):
    engine.set_preview_decoder(taesd3)
    request = params.replace(steps=2, hires_scale=1.5, hires_steps=4, hires_strength=0.5)
    _, previews = run(engine, request)
    assert (128, 128) in {p.size for p in previews if p is not None}
    assert (192, 192) in {p.size for p in previews if p is not None}  # the hires pass's


def test_a_damaged_decoder_is_logged_and_the_previews_stay_linear(
    engine, params, taesd3_files, tmp_path, caplog
):
    damaged = tmp_path / "models" / "taesd3"
    damaged.mkdir(parents=True)
    (damaged / "config.json").write_bytes((taesd3_files / "config.json").read_bytes())
    (damaged / "diffusion_pytorch_model.safetensors").write_bytes(b"not safetensors at all")
    assert find_taesd3([tmp_path / "models"]) == damaged  # it looks whole from outside
    with caplog.at_level(logging.WARNING, logger="sd3desk.inference.engine"):
        engine.set_preview_decoder(damaged)
    assert engine.preview_kind == "linear" and engine.loaded.preview == "linear"
    assert any(str(damaged) in r.getMessage() for r in caplog.records)
    images, previews = run(engine, params)
    assert len(images) == 1 and {p.size for p in previews} == {(32, 32)}
    caplog.clear()
    engine.set_preview_decoder(damaged)  # the worker asks again before every job: tried once
    assert caplog.records == []


def test_a_decoder_failing_mid_job_falls_back_to_linear(
    engine, params, taesd3, monkeypatch, caplog
):
    engine.set_preview_decoder(taesd3)
    calls = {"n": 0}

    def broken(*args, **kwargs):
        calls["n"] += 1
        raise RuntimeError("CUDA error: an illegal memory access")

    monkeypatch.setattr(engine._decoder, "decode", broken)
    with caplog.at_level(logging.WARNING, logger="sd3desk.inference.engine"):
        images, previews = run(engine, params)
    assert len(images) == 1 and calls["n"] == 1
    assert {p.size for p in previews} == {(32, 32)}
    assert engine.preview_kind == "linear" and "illegal memory access" in caplog.text


def test_without_the_decoder_on_disk_nothing_is_found(own_cache, tmp_path):
    assert find_taesd3([tmp_path]) is None


def test_the_worker_looks_for_the_decoder_only_when_the_setting_is_on(
    qapp, own_cache, taesd3, tmp_path
):
    from sd3desk.runtime.worker import Worker, WorkerConfig

    config = WorkerConfig(out_dir=tmp_path, cache_dir=tmp_path, sources_dir=tmp_path)
    worker = Worker(0, config, lambda config: None)  # (never started: no thread, no engine)
    assert worker._preview_decoder() == taesd3
    worker.config = WorkerConfig(
        out_dir=tmp_path, cache_dir=tmp_path, sources_dir=tmp_path, preview_decoder=False
    )
    assert worker._preview_decoder() is None


def test_a_queued_job_previews_through_taesd3_and_the_status_says_so(
    qtbot, tmp_path, cache_dir, tiny_model_dir, taesd3
):
    from sd3desk.core.jobs import JobQueue, JobState
    from sd3desk.core.params import GenerationParams
    from sd3desk.core.settings import Device
    from sd3desk.core.store import Store
    from sd3desk.runtime.events import EngineStatus
    from sd3desk.runtime.runner import Runner
    from sd3desk.runtime.worker import Worker, WorkerConfig, default_engine_factory

    runner = Runner(JobQueue(Store(tmp_path / "sd3desk.db")))
    config = WorkerConfig(
        out_dir=tmp_path / "out",
        cache_dir=cache_dir,
        sources_dir=tmp_path / "sources",
        device=Device.cpu,
    )
    steps, states = [], []
    runner.step_progressed.connect(steps.append)
    runner.engine_state_changed.connect(states.append)
    runner.attach_workers([Worker(0, config, default_engine_factory)])
    try:
        request = GenerationParams(
            "a cat", seed=1, steps=3, guidance_scale=4.0, width=256, height=256
        ).replace(model=str(tiny_model_dir))
        job = runner.enqueue(request)
        qtbot.waitUntil(lambda: runner.job(job.id).state is JobState.finished, timeout=60_000)
    finally:
        runner.stop()
    assert {s.preview.size for s in steps if s.preview is not None} == {(128, 128)}
    ready = [s.text for s in states if s.status is EngineStatus.ready]
    assert "TAESD3 previews" in ready[-1] and "TAESD3" not in ready[0]  # loaded, then used


def test_changing_the_setting_reaches_the_workers_without_a_reload(qapp, tmp_path):
    import dataclasses

    from PySide6.QtCore import QThreadPool

    from sd3desk.core.settings import AppPaths, Settings
    from sd3desk.runtime.runtime import IN_MEMORY, build_runtime

    runtime = build_runtime(AppPaths.default(tmp_path), Settings(), database=IN_MEMORY)
    try:
        assert runtime.worker_config(0).preview_decoder is True
        off = dataclasses.replace(runtime.settings, preview_decoder=False)
        assert runtime.apply_settings(off) is False  # no reload
        assert runtime.worker_config(0).preview_decoder is False
    finally:
        runtime.stop()
        QThreadPool.globalInstance().waitForDone()  # the catalog's new search


def test_a_wide_preview_keeps_its_aspect(taesd3_files):
    from sd3desk.inference.preview import load_decoder

    decoder = load_decoder(taesd3_files, torch.device("cpu"), torch.float32)
    assert decoder.encoder is None  # only the decoder is kept
    rgb = decoded_rgb(decoder, torch.randn(1, 16, 24, 200))  # 1600x192 at 8x
    assert rgb.dtype == torch.uint8 and tuple(rgb.shape) == (64, 512, 3)  # 0.12 -> 0.125
