"""The web page's `infer` API, called with gradio_client exactly as scripts call the SD3 space."""

from __future__ import annotations

import threading

from conftest import wait_until
from gradio_client import Client
from PIL import Image


def test_infer_as_on_the_sd3_space_returns_the_png_and_its_seed(served):
    client = Client(served.url, verbose=False)
    assert "/infer" in client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    image, seed = client.predict(
        prompt="a harbour at night",
        negative_prompt="blurry",
        seed=1234,
        randomize_seed=False,
        width=256,
        height=256,
        guidance_scale=5.0,
        num_inference_steps=3,
        api_name="/infer",
    )
    assert seed == 1234
    with Image.open(image) as png:  # the PNG as written, its metadata intact (not a WebP)
        assert png.format == "PNG" and png.size == (256, 256)
        assert "sd3desk" in png.text and "Seed: 1234" in png.text["parameters"]


def test_a_request_behind_another_says_it_waits_in_sd3desks_queue(served):
    client = Client(served.url, verbose=False)
    args = {"negative_prompt": "", "randomize_seed": True, "guidance_scale": 4.0}
    first = client.submit(
        prompt="first", seed=0, width=512, height=512, num_inference_steps=150, **args,
        api_name="/infer",
    )  # fmt: skip
    with served.client() as http:  # the first runs before the second is sent
        wait_until(lambda: http.get("/api/v1/queue").json()["running"], timeout=120)
    second = client.submit(
        prompt="second", seed=0, width=512, height=512, num_inference_steps=30, **args,
        api_name="/infer",
    )  # fmt: skip
    said: set[str] = set()

    def watch() -> None:
        while not second.done():
            status = second.status()
            said.update(unit.desc for unit in status.progress_data or () if unit.desc)

    watcher = threading.Thread(target=watch)
    watcher.start()
    image, _seed = second.result(timeout=300)
    watcher.join()
    assert first.result(timeout=300)[0]
    assert any("waiting in sd3desk's queue" in text for text in said), said
    assert any("step" in text for text in said)
    assert Image.open(image).text["parameters"].startswith("second")
