"""Load on the window's server: 10 clients x 5 requests at once to /api/v1/jobs on the test model.
Counts the images that arrive (all 50, none lost), the time each POST takes to queue its job, and
how late a 10 ms timer on the GUI thread fires meanwhile (the window serving).
Targets: p99 time-to-queued <= 50 ms, GUI-thread p99 lateness <= 20 ms.
Needs a display (xvfb-run) or QT_QPA_PLATFORM=offscreen."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import free_port


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def clients(url: str, count: int, requests: int, paused: bool) -> None:
    """`count` clients at once, each queueing `requests` jobs, then fetching their images;
    prints what it saw as JSON."""
    import httpx

    queued_ms: list[float] = []
    images: list[int] = []
    lock = threading.Lock()
    gate = threading.Barrier(count)

    def client(index: int) -> None:
        with httpx.Client(base_url=url, timeout=600) as http:
            # connected first, as real clients are (Open WebUI and webuiapi ask for the model
            # list before they generate): the POSTs measure queueing, not TCP handshakes
            http.get("/api/v1/models").raise_for_status()
            gate.wait()  # all at once
            mine = []
            for k in range(requests):
                body = {"prompt": f"client {index} request {k}", "steps": 2}
                body |= {"width": 256, "height": 256}
                start = time.perf_counter()
                answer = http.post("/api/v1/jobs", json=body)
                elapsed = (time.perf_counter() - start) * 1000
                answer.raise_for_status()
                mine.append(answer.json()["id"])
                with lock:
                    queued_ms.append(elapsed)
            for job_id in mine if not paused else ():
                while (job := http.get(f"/api/v1/jobs/{job_id}").json())["state"] != "finished":
                    assert job["state"] in ("queued", "running"), job
                    time.sleep(0.25)
                for image in job["images"]:
                    if http.get(image["url"]).status_code == 200:
                        with lock:
                            images.append(job_id)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(json.dumps({"queued_ms": queued_ms, "images": images}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--requests", type=int, default=5)
    parser.add_argument("--client-of", help=argparse.SUPPRESS)
    parser.add_argument(
        "--paused",
        action="store_true",
        help="queue only (the jobs wait): time to queued without generation competing for the CPU",
    )
    args = parser.parse_args()
    if args.client_of:
        clients(args.client_of, args.clients, args.requests, args.paused)
        return

    from PySide6.QtCore import QCoreApplication, QElapsedTimer, Qt, QTimer

    from sd3desk.app import create_window

    work = Path(tempfile.mkdtemp())
    port = free_port()
    settings = {"device": "cpu", "serve": True, "serve_port": port}
    (work / "settings.json").write_text(json.dumps(settings))
    window = create_window(["--data-dir", str(work), "--model", "test"])
    window.show()
    app = QCoreApplication.instance()
    assert app is not None
    url = f"http://127.0.0.1:{port}"
    phase = ["window starting"]
    lateness: dict[str, list[float]] = {}
    clock, last = QElapsedTimer(), [0.0]

    def tick() -> None:
        now = clock.nsecsElapsed() / 1e6
        if last[0]:
            lateness.setdefault(phase[0], []).append(max(0.0, now - last[0] - 10.0))
        last[0] = now

    timer = QTimer()
    timer.setTimerType(Qt.TimerType.PreciseTimer)
    timer.timeout.connect(tick)
    clock.start()
    timer.start(10)
    load: list[subprocess.Popen] = []

    def start_clients() -> None:
        """The clients run in another process, as real ones do (not sharing this one's GIL)."""
        command = [sys.executable, __file__, "--client-of", url]
        command += ["--clients", str(args.clients), "--requests", str(args.requests)]
        command += ["--paused"] if args.paused else []
        load.append(subprocess.Popen(command, stdout=subprocess.PIPE, text=True))

    served = [False]

    def on_status(text: str, served_url: str, _token: str) -> None:
        served[0] = served[0] or bool(served_url)

    def begin_load() -> None:
        # once serving and the engine is ready (the model preloaded): the load, not the start
        ready = window.engine_label.text().startswith("Ready")
        if served[0] and ready and phase[0] != "load":
            phase[0] = "load"
            if args.paused:
                window.runner.set_paused(True)
            start_clients()

    def watch() -> None:
        if phase[0] == "load" and load and load[0].poll() is not None:
            app.quit()

    serving_started = [False]

    def find_serving() -> None:  # the window's server object appears after the first frame
        from sd3desk.server.window import WindowServing

        if not serving_started[0] and (serving := window.findChild(WindowServing)) is not None:
            serving_started[0] = True  # found: stop searching the window's children
            phase[0] = "server and engine starting"
            serving.status_changed.connect(on_status)
        begin_load()
        watch()

    poll = QTimer()
    poll.timeout.connect(find_serving)
    poll.start(50)
    started = time.perf_counter()
    app.exec()
    window.session.shutdown()
    assert load and load[0].stdout is not None
    report = json.loads(load[0].stdout.read())
    queued_ms, images = report["queued_ms"], report["images"]
    total = args.clients * args.requests
    print(
        f"window serving: {args.clients} clients x {args.requests} requests, test model, "
        f"256x256, 2 steps, cpu; {time.perf_counter() - started:.1f} s in all"
    )
    if not args.paused:
        print(f"images arrived: {len(images)} of {total} (lost {total - len(set(images))})")
    print(
        f"time to queued: p50 {statistics.median(queued_ms):.1f} ms · "
        f"p99 {percentile(queued_ms, 0.99):.1f} ms · max {max(queued_ms):.1f} ms "
        "(target p99 <= 50)"
    )
    for name, values in lateness.items():
        print(
            f"GUI lateness, {name:15s}: p99 {percentile(values, 0.99):5.1f} ms · "
            f"max {max(values):5.1f} ms ({len(values)} ticks)"
        )
    print("target: GUI p99 <= 20 ms under load")


if __name__ == "__main__":
    main()
