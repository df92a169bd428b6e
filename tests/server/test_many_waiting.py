"""Many clients waiting at once hold no server thread: with 45 AUTOMATIC1111 `txt2img` calls and
45 Gradio `infer` calls waiting on a paused queue, every one of them is in sd3desk's queue (none
held back in Gradio's) and the rest of the server still answers."""

from __future__ import annotations

import threading

import webuiapi
from conftest import start_server, stop_server, wait_until
from gradio_client import Client

WAITING = 45  # more than the 40 threads Starlette and Gradio share by default


def test_ninety_waiting_requests_are_all_queued_and_the_server_still_answers(tmp_path):
    server = start_server(tmp_path / "data")
    try:
        with server.client(timeout=10) as http:  # a starved server times out here
            assert http.post("/api/v1/queue/pause").json()["paused"]
            a1111 = webuiapi.WebUIApi(host="127.0.0.1", port=server.port)
            calls = [
                threading.Thread(
                    target=a1111.txt2img,
                    kwargs={"prompt": f"a1111 {k}", "steps": 2, "width": 256, "height": 256},
                    daemon=True,
                )
                for k in range(WAITING)
            ]
            for call in calls:
                call.start()
            gradio = Client(server.url, verbose=False, max_workers=2 * WAITING)
            infers = [
                gradio.submit(
                    f"gradio {k}", "", 0, True, 256, 256, 4.0, 2, api_name="/infer"
                )
                for k in range(WAITING)
            ]  # fmt: skip

            def waiting() -> list[int]:
                order = http.get("/api/v1/queue").json()["waiting"]
                return order if len(order) == 2 * WAITING else []

            ids = wait_until(waiting, timeout=120, every=0.2)
            assert http.get("/").status_code == 200  # the page
            assert http.get("/sdapi/v1/progress").json()["state"]["job_count"] == 2 * WAITING
            for job_id in ids:
                assert http.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 200
        for call in calls:
            call.join(60)
            assert not call.is_alive()
        wait_until(lambda: all(job.done() for job in infers), timeout=60)
    finally:
        stop_server(server)
