"""Jobs from three clients survive `kill -9` of the server: after a restart every one of them
finishes, once, and a client asking by job id gets its images."""

from __future__ import annotations

import signal
import sqlite3
import time
from contextlib import closing

import httpx
from conftest import start_server, stop_server, wait_until, watch_steps

from sd3desk.core.metadata import read_metadata


def test_sigkill_mid_step_with_three_clients_loses_and_repeats_nothing(tmp_path):
    data = tmp_path / "data"
    server = start_server(data, "--no-web")
    stepping = watch_steps(server)
    ids: dict[int, int] = {}  # job id -> seed
    for client in range(3):
        with httpx.Client(base_url=server.url, timeout=60) as http:
            for k in range(2):
                seed = 100 + 10 * client + k
                body = {"prompt": f"client {client} job {k}", "seed": seed, "steps": 12}
                body |= {"width": 256, "height": 256}
                made = http.post("/api/v1/jobs", json=body)
                assert made.status_code == 201
                ids[made.json()["id"]] = seed
    assert stepping.wait(120)  # the first job is denoising: now
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(30)

    again = start_server(data, "--no-web", port=server.port)
    try:
        with again.client() as http:

            def all_finished():
                jobs = [http.get(f"/api/v1/jobs/{job_id}").json() for job_id in ids]
                return jobs if all(j["state"] == "finished" for j in jobs) else None

            jobs = wait_until(all_finished, timeout=300, every=0.5)
            for job in jobs:
                assert job["params"]["seed"] == ids[job["id"]] and len(job["images"]) == 1
                assert http.get(job["images"][0]["url"]).status_code == 200
            interrupted = [j for j in jobs if "interrupted" in j["note"]]
            assert len(interrupted) <= 1  # the one that was denoising went first again
    finally:
        stop_server(again)
    files = sorted(p for p in (data / "outputs").rglob("*") if p.is_file())
    assert [p.suffix for p in files] == [".png"] * len(ids)  # no temp file, no extra image
    assert sorted(read_metadata(p).params.seed for p in files) == sorted(ids.values())


def test_ctrl_c_stops_within_a_step_and_puts_the_running_job_back_at_the_front(tmp_path):
    data = tmp_path / "data"
    server = start_server(data, "--no-web")
    stepping = watch_steps(server)  # its stream still open when Ctrl+C comes
    with server.client() as http:
        body = {"steps": 150, "width": 1024, "height": 1024}  # a while on the CPU
        first = http.post("/api/v1/jobs", json={"prompt": "long one", **body}).json()["id"]
        second = http.post("/api/v1/jobs", json={"prompt": "next one", **body}).json()["id"]
    assert stepping.wait(120)  # the first job is denoising: now
    asked = time.monotonic()
    assert stop_server(server) == 130  # Ctrl+C, as a user stops it
    # the open event stream is cut off, not waited for (it held the server for 10 s)
    assert time.monotonic() - asked < 5
    # the stored queue as the next start finds it, read before any crash recovery could run
    with closing(sqlite3.connect(data / "sd3desk.db")) as db:
        rows = db.execute(
            "SELECT id, state FROM jobs WHERE state IN ('queued', 'running') ORDER BY sort_key"
        ).fetchall()
    assert rows == [(first, "queued"), (second, "queued")]
    outputs = data / "outputs"
    assert not outputs.exists() or not [p for p in outputs.rglob("*") if p.is_file()]
