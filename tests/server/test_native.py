"""sd3desk's own API at /api/v1: every endpoint against a running `sd3desk serve`."""

from __future__ import annotations

import json
import os
import threading

from conftest import wait_until

from sd3desk.core.metadata import read_metadata

SMALL = {"steps": 2, "width": 256, "height": 256}


def test_a_job_from_request_to_images_and_the_gallery(served):
    with served.client() as http:
        made = http.post("/api/v1/jobs", json={"prompt": "a blue door", "seed": 5, **SMALL})
        assert made.status_code == 201
        job = made.json()
        assert job["source"] == "api" and job["state"] in ("queued", "running")
        done = wait_until(
            lambda: (j := http.get(f"/api/v1/jobs/{job['id']}").json())["state"] == "finished" and j
        )
        assert done["params"]["seed"] == 5 and len(done["images"]) == 1
        png = http.get(done["images"][0]["url"])
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        # the gallery has it at once, searchable, with its thumbnail and parameters
        page = http.get("/api/v1/images", params={"q": "blue door"}).json()
        assert page["total"] >= 1
        image = page["images"][0]
        assert image["seed"] == 5 and image["prompt"] == "a blue door"
        assert http.get(image["url"]).content == png.content
        thumbnail = http.get(image["thumbnail_url"])
        assert thumbnail.status_code == 200 and thumbnail.content[:4] == b"RIFF"
        parameters = http.get(image["parameters_url"]).json()
        assert parameters["params"]["seed"] == 5 and "Seed: 5" in parameters["text"]
        assert any(j["id"] == job["id"] for j in http.get("/api/v1/jobs").json())


def test_field_errors_are_422_naming_the_field_and_nothing_is_queued(served):
    with served.client() as http:
        before = http.get("/api/v1/queue").json()
        for body, field in (
            ({"prompt": "x", "width": 1000}, "width"),
            ({"prompt": "x", "steps": 0}, "steps"),
            ({"prompt": "x", "seed": 2**40}, "seed"),
            ({"prompt": "x" * 20_001}, "prompt"),
            ({"prompt": "x", "model": "/etc/passwd"}, "model"),
        ):
            answer = http.post("/api/v1/jobs", json=body)
            assert answer.status_code == 422, (body, answer.text)
            assert answer.json()["detail"][0]["loc"][-1] == field
        assert http.post("/api/v1/jobs", json={"prompt": "x", "colour": 1}).status_code == 422
        assert http.post("/api/v1/jobs", content="not json").status_code == 422
        assert http.get("/api/v1/queue").json()["waiting"] == before["waiting"]


def test_pause_move_cancel_and_the_queue(served):
    with served.client() as http:
        http.post("/api/v1/queue/pause")
        try:
            ids = [
                http.post("/api/v1/jobs", json={"prompt": f"order {k}", **SMALL}).json()["id"]
                for k in range(3)
            ]
            waiting = http.get("/api/v1/queue").json()["waiting"]
            assert waiting[-3:] == ids
            moved = http.post(f"/api/v1/jobs/{ids[2]}/move", json={"index": 0}).json()
            assert moved["waiting"][0] == ids[2] and moved["paused"]
            assert http.get(f"/api/v1/jobs/{ids[2]}").json()["place"] == 1
            cancelled = http.post(f"/api/v1/jobs/{ids[1]}/cancel").json()
            assert cancelled["state"] == "cancelled"
            assert http.post(f"/api/v1/jobs/{ids[1]}/cancel").status_code == 409
            assert http.post(f"/api/v1/jobs/{ids[1]}/move", json={"index": 0}).status_code == 409
            assert http.get("/api/v1/jobs/999999").status_code == 404
            for job_id in (ids[0], ids[2]):
                http.post(f"/api/v1/jobs/{job_id}/cancel")
        finally:
            assert http.post("/api/v1/queue/resume").json()["paused"] is False


def test_the_event_stream_carries_steps_and_states(served):
    events: list[tuple[str, dict]] = []
    ready = threading.Event()

    def listen() -> None:
        with served.client() as http, http.stream("GET", "/api/v1/events") as stream:
            name = ""
            for line in stream.iter_lines():
                ready.set()
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    events.append((name, json.loads(line[6:])))
                    if name == "job" and events[-1][1]["state"] == "finished":
                        return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert ready.wait(30)
    with served.client() as http:
        job = http.post("/api/v1/jobs", json={"prompt": "streamed", **SMALL}).json()
    listener.join(120)
    mine = [(n, d) for n, d in events if d.get("id") == job["id"]]
    assert [d["step"] for n, d in mine if n == "step"] == [1, 2]
    assert [d["state"] for n, d in mine if n == "job"][-1] == "finished"
    assert any(n == "queue" for n, _ in events)


def test_files_are_served_from_the_output_folder_only(served, tmp_path):
    with served.client() as http:
        job = http.post("/api/v1/jobs", json={"prompt": "inside", **SMALL}).json()
        done = wait_until(
            lambda: (j := http.get(f"/api/v1/jobs/{job['id']}").json())["state"] == "finished" and j
        )
        path = done["images"][0]["path"]
        assert read_metadata(served.data / "outputs" / path).params.prompt == "inside"
        outside = tmp_path / "secret.png"
        outside.write_bytes((served.data / "outputs" / path).read_bytes())
        (served.data / "outputs" / "link.png").symlink_to(outside)
        os.mkfifo(served.data / "outputs" / "fifo.png")
        for attempt in (
            "../sd3desk.db",
            "..%2Fsd3desk.db",
            "%2e%2e/settings.json",
            str(outside),
            "/etc/passwd",
            "link.png",  # a link out of the folder
            "fifo.png",  # not a regular file: never opened
            path.replace(".png", ".txt"),
        ):
            answer = http.get(f"/api/v1/files/{attempt}")
            assert answer.status_code == 404, (attempt, answer.status_code)
        assert http.get("/api/v1/images/999999").status_code == 404
        for beyond in ("0", "-1", "99999999999999999999"):  # not row ids: refused as such
            assert http.get(f"/api/v1/images/{beyond}").status_code == 422


def test_models_and_the_schema(served):
    with served.client() as http:
        models = http.get("/api/v1/models").json()
        assert [m["reference"] for m in models] == ["test"] and models[0]["default"]
        schema = http.get("/openapi.json").json()
        assert "/api/v1/jobs" in schema["paths"] and "/sdapi/v1/txt2img" in schema["paths"]
        assert http.get("/docs").status_code == 200


def test_a_job_from_a_picture_over_the_native_api(served):
    """source_image in base64, then the same picture by the sha256 the job's params name."""
    import base64
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (256, 256), (200, 60, 60)).save(buffer, format="PNG")
    picture = base64.b64encode(buffer.getvalue()).decode()
    with served.client() as http:
        body = {"prompt": "a red wall", "seed": 2, "steps": 4, "width": 256, "height": 256}
        made = http.post("/api/v1/jobs", json={**body, "source_image": picture, "strength": 0.4})
        assert made.status_code == 201, made.text
        params = made.json()["params"]
        assert params["strength"] == 0.4 and len(params["source_image"]) == 64
        again = http.post("/api/v1/jobs", json={**body, "source_image": params["source_image"]})
        assert (
            again.status_code == 201
            and again.json()["params"]["source_image"] == params["source_image"]
        )
        bad = http.post("/api/v1/jobs", json={**body, "source_image": "not a picture!"})
        assert bad.status_code == 422 and "source_image" in bad.text
        small = io.BytesIO()
        Image.new("L", (128, 128), 255).save(small, format="PNG")
        mask = base64.b64encode(small.getvalue()).decode()
        wrong_mask = http.post(
            "/api/v1/jobs", json={**body, "source_image": picture, "mask_image": mask}
        )
        assert wrong_mask.status_code == 422 and "mask_image" in wrong_mask.text


def test_loras_are_listed_and_applied_by_name(served, served_loras):
    with served.client() as http:
        listed = {x["name"]: x for x in http.get("/api/v1/loras").json()}
        assert listed["style"]["usable"] and not listed["sdxl"]["usable"]
        assert listed["sdxl"]["kind"] == "SDXL"
        body = {"prompt": "a lamp", "seed": 2, **SMALL, "loras": [{"name": "style", "weight": 0.5}]}
        job = http.post("/api/v1/jobs", json=body).json()
        (lora,) = job["params"]["loras"]
        assert lora["name"] == "style" and len(lora["hash"]) == 64 and lora["weight"] == 0.5
        done = wait_until(
            lambda: (j := http.get(f"/api/v1/jobs/{job['id']}").json())["state"] == "finished" and j
        )
        png = http.get(done["images"][0]["url"]).content
        path = served.data / "made-with-lora.png"
        path.write_bytes(png)
        assert read_metadata(path).params.loras[0].hash == lora["hash"]
        refused = http.post("/api/v1/jobs", json={**body, "loras": [{"name": "sdxl", "weight": 1}]})
        assert refused.status_code == 422 and "loras" in refused.text
