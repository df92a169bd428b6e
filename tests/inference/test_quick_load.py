"""Loading straight onto the device (from_pretrained's device_map, the path a GPU takes: here
the device is the CPU) makes the same model, and a load says what it read and how fast."""

from __future__ import annotations

import re

from conftest import max_diff

from sd3desk.core.params import GenerationParams
from sd3desk.core.settings import Device
from sd3desk.inference import loading
from sd3desk.inference.models import loaded_weights, resolve_model

REQUEST = GenerationParams("a red cat", seed=2, steps=3, guidance_scale=5.0, width=256, height=256)


def test_weights_read_onto_the_device_make_the_same_images(engine, tiny_model_dir, cache_dir):
    from sd3desk.inference.devices import Placement as P
    from sd3desk.inference.devices import ResolvedPlan, pick_device
    from sd3desk.inference.engine import Engine

    storage = loading.Storage(device="cpu", direct=True)
    source = resolve_model(str(tiny_model_dir))
    pipe, use_t5, notices = loading.load_pipeline(
        source, dtype="float32", use_t5=True, cache_dir=cache_dir, storage=storage
    )
    direct = Engine(Device.cpu, cache_dir=cache_dir)
    direct._device = pick_device(Device.cpu)
    direct.attach(pipe, source, ResolvedPlan(P.device, use_t5), notices)
    assert max_diff(direct.generate(REQUEST).images[0], engine.generate(REQUEST).images[0]) == 0


def test_a_load_reports_the_bytes_it_read_and_the_rate(tiny_model_dir, cache_dir):
    storage = loading.Storage()
    _, _, notices = loading.load_pipeline(
        resolve_model(str(tiny_model_dir)),
        dtype="float32",
        use_t5=True,
        cache_dir=cache_dir,
        storage=storage,
    )
    read = {part: size for part, size, _ in storage.read}
    parts = ("transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3")
    for part in parts:
        assert read[part] == sum(w.stat().st_size for w in loaded_weights(tiny_model_dir / part))
    (said,) = [n for n in notices if n.startswith("read ")]
    assert re.fullmatch(r"read [\d.]+ [MG]B in [\d.]+ s \([\d.]+ [MG]B/s\)", said), said
