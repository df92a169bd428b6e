"""The AUTOMATIC1111-compatible API, driven by webuiapi (the A1111 client on PyPI)."""

from __future__ import annotations

import base64
import io
import threading

import webuiapi
from conftest import wait_until
from PIL import Image

from sd3desk.core.metadata import parse_a1111


def api(served) -> webuiapi.WebUIApi:
    return webuiapi.WebUIApi(host="127.0.0.1", port=served.port)


def test_txt2img_batch_of_two_with_seeds_and_parameters(served):
    client = api(served)
    result = client.txt2img(
        prompt="a cat on a fence", seed=41, steps=3, width=256, height=256, batch_size=2
    )
    assert len(result.images) == 2
    assert result.info["all_seeds"] == [41, 42] and result.info["seed"] == 41
    assert len(result.info["infotexts"]) == 2
    for image, seed in zip(result.images, (41, 42), strict=True):
        assert image.size == (256, 256)
        parsed = parse_a1111(image.info["parameters"])  # the PNG's own chunk, intact
        assert parsed.params.seed == seed and parsed.params.prompt == "a cat on a fence"
    assert result.parameters["prompt"] == "a cat on a fence"


def test_model_names_options_and_lists(served):
    client = api(served)
    names = client.util_get_model_names()
    assert names == ["Test model (random weights: noise)"]
    assert client.util_get_current_model() == names[0]
    assert [s["name"] for s in client.get_samplers()] == ["Euler"]
    assert client.get_sd_vae() == [] and client.get_scripts() == {"txt2img": [], "img2img": []}
    client.set_options({"sd_model_checkpoint": names[0], "unknown_option": 3})
    refused = client.session.post(
        f"{client.baseurl}/options", json={"sd_model_checkpoint": "/etc/passwd"}
    )
    assert refused.status_code == 422 and "sd_model_checkpoint" in refused.text


def test_other_samplers_run_euler_and_say_so(served):
    result = api(served).txt2img(
        prompt="a teapot", seed=3, steps=2, width=256, height=256, sampler_name="DPM++ 2M"
    )
    assert any("DPM++ 2M" in note for note in result.info["comments"])
    assert "Sampler: Euler" in result.images[0].info["parameters"]


def test_interrupt_stops_the_running_request(served):
    client = api(served)
    results = []
    worker = threading.Thread(
        target=lambda: results.append(
            client.txt2img(prompt="a long one", seed=1, steps=150, width=512, height=512)
        )
    )
    worker.start()
    wait_until(lambda: client.get_progress()["state"]["sampling_step"] >= 1, timeout=120)
    progress = client.get_progress()
    assert progress["state"]["sampling_steps"] == 150 and 0 < progress["progress"] < 1
    assert progress["current_image"]  # the live preview
    Image.open(io.BytesIO(base64.b64decode(progress["current_image"])))
    client.interrupt()
    worker.join(120)
    assert results and results[0].images == []
    assert any("interrupted" in note for note in results[0].info["comments"])
    wait_until(lambda: client.get_progress()["state"]["job_count"] == 0)


def test_png_info_reads_our_files(served):
    client = api(served)
    made = client.txt2img(prompt="a lamp", seed=9, steps=2, width=256, height=256)
    info = client.png_info(made.images[0])
    assert "a lamp" in info.info and "Seed: 9" in info.info


def test_missing_endpoints_answer_json_not_traces(served):
    with served.client() as http:
        missing = http.get("/sdapi/v1/loras-of-the-future")
        assert missing.status_code == 404 and "does not offer" in missing.json()["detail"]
        later = http.post("/sdapi/v1/extra-single-image", json={})
        assert later.status_code == 501 and "upscalers" in later.json()["detail"]
        no_picture = http.post("/sdapi/v1/img2img", json={"init_images": []})
        assert no_picture.status_code == 422 and "init_images" in no_picture.text
        bad = http.post("/sdapi/v1/txt2img", json={"prompt": "x", "steps": 100000})
        assert bad.status_code == 422
        assert bad.json()["detail"][0]["loc"] == ["body", "steps"]


def test_img2img_and_inpainting_through_webuiapi(served):
    """webuiapi's img2img with its own defaults (inpaint_full_res=True, padding 0, resize 0):
    the picture's pixels outside the mask come back as they went, the fields are written."""
    from PIL import Image, ImageDraw

    client = api(served)
    picture = Image.new("RGB", (256, 256), (30, 90, 160))
    ImageDraw.Draw(picture).ellipse((60, 60, 200, 200), fill=(240, 200, 40))
    varied = client.img2img(
        images=[picture],
        prompt="a sun",
        seed=3,
        steps=4,
        width=256,
        height=256,
        denoising_strength=0.5,
    )
    (image,) = varied.images
    parsed = parse_a1111(image.info["parameters"])
    assert parsed.params.strength == 0.5 and image.size == (256, 256)
    assert any("crop and resize" in note for note in varied.info["comments"])  # resize_mode 0
    mask = Image.new("L", (256, 256), 0)
    mask.paste(255, (96, 96, 160, 160))
    repainted = client.img2img(
        images=[picture],
        mask_image=mask,
        prompt="a moon",
        seed=3,
        steps=4,
        width=256,
        height=256,
        denoising_strength=1.0,
        mask_blur=0,
    )
    (result,) = repainted.images
    import numpy as np

    kept = np.asarray(mask) == 0
    assert (np.asarray(result.convert("RGB"))[kept] == np.asarray(picture)[kept]).all()
    text = result.info["parameters"]
    assert "Mask blur: 0" in text and "Inpaint area: Only masked" in text


def test_txt2img_with_hires_fix(served):
    client = api(served)
    result = client.txt2img(
        prompt="a tower",
        seed=5,
        steps=4,
        width=256,
        height=256,
        enable_hr=True,
        hr_scale=1.5,
        denoising_strength=0.4,
        hr_second_pass_steps=4,
        hr_upscaler="Lanczos",
    )
    (image,) = result.images
    assert image.size == (384, 384)
    text = image.info["parameters"]
    assert "Hires upscale: 1.5" in text and "Denoising strength: 0.4" in text


def test_loras_by_prompt_tag_as_a1111_clients_send_them(served, served_loras):
    client = api(served)
    names = [lora["name"] for lora in client.get_loras()]
    assert names == ["style"]  # the SDXL one is not offered
    assert client.session.post(f"{client.baseurl}/refresh-loras").status_code == 200
    plain = client.txt2img(prompt="a lake", seed=9, steps=3, width=256, height=256).image
    styled = client.txt2img(
        prompt="a lake <lora:style:0.8>", seed=9, steps=3, width=256, height=256
    ).image
    import numpy as np

    assert np.abs(np.asarray(styled, np.int16) - np.asarray(plain, np.int16)).max() > 0
    parsed = parse_a1111(styled.info["parameters"])
    (lora,) = parsed.params.loras
    assert (parsed.params.prompt, lora.name, lora.weight) == ("a lake", "style", 0.8)
    assert 'Lora hashes: "style: ' in styled.info["parameters"]
    refused = client.session.post(
        f"{client.baseurl}/txt2img",
        json={"prompt": "a lake <lora:sdxl:1>", "steps": 3, "width": 256, "height": 256},
    )
    assert refused.status_code == 422 and "SDXL" in refused.text
    missing = client.session.post(
        f"{client.baseurl}/txt2img", json={"prompt": "x <lora:nowhere:1>", "steps": 3}
    )
    assert missing.status_code == 422 and "not in your LoRA folders" in missing.text
