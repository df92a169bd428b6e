"""N jobs through AUTOMATIC1111's /sdapi/v1/txt2img (a client posting one request after another,
each waiting for its image) against the same N through the runner directly, same process, same
workers, "small" model. Target: ratio <= 1.05."""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

from common import free_port, lighthouse_requests, model_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    folder = str(model_dir("small"))

    import httpx
    from PySide6.QtCore import QCoreApplication, QEventLoop, QTimer

    from sd3desk.core.jobs import DONE
    from sd3desk.core.settings import AppPaths, Device, Settings
    from sd3desk.runtime.catalog import check_model
    from sd3desk.runtime.runtime import IN_MEMORY, build_runtime
    from sd3desk.server.config import ServeConfig
    from sd3desk.server.host import ServerHost

    app = QCoreApplication([])
    work = Path(tempfile.mkdtemp())
    settings = Settings(device=Device.cpu, output_dir=str(work / "out"))
    runtime = build_runtime(AppPaths.default(work), settings, database=IN_MEMORY)
    runtime.catalog.include(check_model(folder))
    runtime.start_workers()
    host = ServerHost(runtime, ServeConfig(port=free_port(), model=folder), web=False)
    url = host.start()
    requests = lighthouse_requests(folder, args.jobs, args.steps)
    runner = runtime.runner

    def spin_until(done) -> None:
        loop = QEventLoop()
        timer = QTimer(interval=5)
        timer.timeout.connect(lambda: loop.quit() if done() else None)
        timer.start()
        loop.exec()

    def direct() -> float:
        start = time.perf_counter()
        jobs = runner.enqueue_many(requests)
        spin_until(lambda: all(runner.job(j.id).state in DONE for j in jobs))
        return time.perf_counter() - start

    def over_http() -> float:
        finished = []

        def client() -> None:
            with httpx.Client(base_url=url, timeout=600) as http:
                for params in requests:
                    body = {
                        "prompt": params.prompt,
                        "seed": params.seed,
                        "steps": params.steps,
                        "cfg_scale": params.guidance_scale,
                        "width": params.width,
                        "height": params.height,
                    }
                    answer = http.post("/sdapi/v1/txt2img", json=body)
                    answer.raise_for_status()
                    assert len(answer.json()["images"]) == 1
            finished.append(True)

        start = time.perf_counter()
        thread = threading.Thread(target=client)
        thread.start()
        spin_until(lambda: not thread.is_alive())
        assert finished
        return time.perf_counter() - start

    direct()  # warm-up: the engine, the model, the first encodes
    times: dict[str, list[float]] = {"direct": [], "http": []}
    for _ in range(args.rounds):  # alternating, so drift hits both alike
        times["direct"].append(direct())
        times["http"].append(over_http())
    host.stop()
    runtime.stop()
    best = {k: min(v) for k, v in times.items()}
    print(f"{args.jobs} jobs, small random SD3, 256x256, {args.steps} steps, cpu")
    for name, values in times.items():
        print(f"  {name:7s} best {best[name]:.2f} s  median {statistics.median(values):.2f} s")
    print(f"ratio http/direct: {best['http'] / best['direct']:.3f}  (target <= 1.05)")
    app.quit()


if __name__ == "__main__":
    main()
