"""Engine.generate on the tiny model: determinism, batches, CFG, cancel, cache, previews, faults."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest
import torch
from PIL import Image

from sd3desk.core.errors import GenerationCancelled, InvalidParamsError, OutOfMemoryError
from sd3desk.core.params import GenerationParams
from tests.inference.conftest import max_diff


class ForwardCounter:
    """Counts forward calls of a module and records the batch size of each."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.batches: list[int] = []
        self.handle = module.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        tensor = args[0] if args else next(iter(kwargs.values()))
        self.batches.append(int(tensor.shape[0]))

    def __enter__(self) -> ForwardCounter:
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()


def test_same_seed_same_pixels(engine, params):
    a = engine.generate(params).images[0]
    b = engine.generate(params).images[0]
    assert a.size == (256, 256)
    assert max_diff(a, b) == 0


def test_same_seed_same_pixels_across_processes(engine, params, tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "sd3desk",
        "--data-dir",
        str(tmp_path),
        "generate",
        "--model",
        str(tiny_model_dir),
        "--prompt",
        params.prompt,
        "--seed",
        str(params.seed),
        "--steps",
        str(params.steps),
        "--guidance",
        str(params.guidance_scale),
        "--width",
        "256",
        "--height",
        "256",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=300)
    assert result.returncode == 0, result.stderr
    with Image.open(result.stdout.strip()) as other:
        assert max_diff(engine.generate(params).images[0], other) == 0


@pytest.mark.parametrize(
    "change",
    [{"seed": 2}, {"prompt": "a dog"}, {"negative_prompt": "red"}, {"guidance_scale": 9.0}],
)
def test_any_change_gives_a_different_image(engine, params, change):
    base = engine.generate(params).images[0]
    other = engine.generate(params.replace(**change)).images[0]
    assert max_diff(base, other) > 10


def test_guidance_at_most_one_skips_the_negative_branch(engine, params):
    no_cfg = params.replace(guidance_scale=1.0)
    with ForwardCounter(engine.pipeline.transformer) as counter:
        a = engine.generate(no_cfg).images[0]
    assert counter.batches == [1] * params.steps
    b = engine.generate(no_cfg.replace(negative_prompt="something else entirely")).images[0]
    assert max_diff(a, b) == 0
    with ForwardCounter(engine.pipeline.transformer) as counter:
        engine.generate(params)
    assert counter.batches == [2] * params.steps


def test_batch_image_k_equals_single_run_with_seed_plus_k(engine, params):
    batch = engine.generate(params.replace(batch_size=3))
    assert [p.seed for p in batch.params] == [1, 2, 3]
    assert all(p.batch_size == 1 for p in batch.params)
    for k in range(3):
        single = engine.generate(params.replace(seed=1 + k)).images[0]
        # Batched and single matrix products round differently in the last float bit; after
        # quantisation to 8 bits that is at most one level on a handful of pixels.
        assert max_diff(batch.images[k], single) <= 1


@pytest.mark.parametrize("stop_at", [1, 3])
def test_cancel_stops_within_one_step(engine, params, stop_at):
    cancel = threading.Event()
    seen = []

    def on_step(info):
        seen.append(info.step)
        if info.step == stop_at:
            cancel.set()

    with (
        ForwardCounter(engine.pipeline.transformer) as counter,
        ForwardCounter(engine.pipeline.vae.decoder) as decoder,
        pytest.raises(GenerationCancelled) as info,
    ):
        engine.generate(params.replace(steps=10), on_step=on_step, cancel=cancel)
    assert info.value.step == stop_at
    assert seen == list(range(1, stop_at + 1))
    assert len(counter.batches) == stop_at
    assert decoder.batches == []  # cancelling never decodes


def test_cancel_from_another_thread_mid_step(engine, params):
    cancel = threading.Event()
    steps = []

    def on_step(info):
        steps.append(info.step)
        if info.step == 2:
            threading.Timer(0.0, cancel.set).start()

    with pytest.raises(GenerationCancelled) as info:
        engine.generate(params.replace(steps=40), on_step=on_step, cancel=cancel)
    assert info.value.step <= 4  # set during step 3 at the latest; stops at that step's end


def test_cancel_before_start(engine, params):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(GenerationCancelled):
        engine.generate(params, cancel=cancel)


def test_prompt_cache_hit_skips_all_three_encoders(engine, params):
    fresh = params.replace(prompt="a cache test prompt")
    encoders = [
        engine.pipeline.text_encoder,
        engine.pipeline.text_encoder_2,
        engine.pipeline.text_encoder_3,
    ]
    counters = [ForwardCounter(m) for m in encoders]
    try:
        first = engine.generate(fresh)
        calls_first = [len(c.batches) for c in counters]
        second = engine.generate(fresh.replace(seed=99))
        calls_second = [len(c.batches) for c in counters]
    finally:
        for c in counters:
            c.handle.remove()
    assert not first.prompt_cache_hit and second.prompt_cache_hit
    assert all(n > 0 for n in calls_first)
    assert calls_second == calls_first  # no encoder ran for the re-run
    assert engine.generate(fresh.replace(negative_prompt="new")).prompt_cache_hit is False


def test_every_step_reports_progress_with_a_latent_size_preview(engine, params):
    infos = []
    engine.generate(params.replace(steps=5, width=512, height=256), on_step=infos.append)
    assert [i.step for i in infos] == [1, 2, 3, 4, 5]
    assert all(i.total == 5 for i in infos)
    assert all(i.preview.size == (64, 32) and i.preview.mode == "RGB" for i in infos)
    assert infos[-1].elapsed_s >= infos[0].elapsed_s >= 0


def test_preview_x0_prediction_matches_the_final_latent_at_the_last_step(engine, params):
    from sd3desk.inference.engine import _initial_latents, _Steps
    from sd3desk.inference.preview import latents_to_image

    previews = []
    engine.generate(params, on_step=lambda i: previews.append(i.preview))
    # At the last step sigma is 0, so the x0 estimate is the final latent itself.
    embeds, _ = engine._encode(params)
    with torch.inference_mode():
        final = engine._denoise(
            params, embeds, _initial_latents(params, engine.pipeline), _Steps(None, None, 4)
        )
    assert max_diff(previews[-1], latents_to_image(final[0])) == 0


def test_invalid_params_are_refused_with_fields(engine, params):
    with pytest.raises(InvalidParamsError, match="width"):
        engine.generate(params.replace(width=250))
    with pytest.raises(InvalidParamsError, match="seed"):
        engine.generate(params.replace(seed=None))


def test_out_of_memory_is_typed_with_advice_and_the_engine_recovers(engine, params, monkeypatch):
    def explode(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(engine.pipeline.transformer, "forward", explode)
    with pytest.raises(OutOfMemoryError) as info:
        engine.generate(params)
    assert "smaller size" in info.value.advice and "no-t5" in info.value.advice
    monkeypatch.undo()
    assert engine.generate(params).images[0].size == (256, 256)


def test_an_exception_mid_step_propagates_and_the_engine_lives_on(engine, params, monkeypatch):
    calls = {"n": 0}
    original = engine.pipeline.transformer.forward

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("a bad step")
        return original(*args, **kwargs)

    monkeypatch.setattr(engine.pipeline.transformer, "forward", flaky)
    with pytest.raises(RuntimeError, match="a bad step"):
        engine.generate(params)
    monkeypatch.undo()
    assert len(engine.generate(params).images) == 1


def test_prompt_length_per_encoder(engine):
    short = engine.prompt_length("a cat")
    assert short.clip_tokens == 4 and not short.clip_truncated
    long = engine.prompt_length("a cat " * 60, max_sequence_length=64)
    assert long.clip_truncated and long.t5_truncated


def test_loaded_model_identity(engine, tiny_model_dir):
    from sd3desk.core.modelhash import model_hash

    loaded = engine.loaded
    assert loaded.identity.family == "sd3desk-test"
    weights = sorted((tiny_model_dir / "transformer").glob("*.safetensors"))
    assert loaded.identity.hash == model_hash(weights)
    assert len(loaded.identity.hash) == 10
    assert "CPU" in loaded.describe()


def test_metadata_of_results_re_makes_the_image(engine, params, tmp_path):
    from sd3desk.core.metadata import ImageMetadata, read_metadata
    from sd3desk.core.outputs import save_generated

    result = engine.generate(params.replace(batch_size=2))
    path = save_generated(result.images[1], ImageMetadata(result.params[1], result.model), tmp_path)
    again = engine.generate(read_metadata(path).params)
    with Image.open(path) as saved:
        assert max_diff(saved, again.images[0]) <= 1
    assert isinstance(read_metadata(path).params, GenerationParams)
