"""20 jobs through the queue runner + QThread worker vs 20 direct Engine.generate calls.

Same model ("small", 256x256), same requests, same process; the direct loop also saves each PNG,
so the ratio is the cost of the queue, the thread hop and the signals. Target: <= 1.05.

All torch work runs off the main thread, as in the app: each OpenMP team belongs to the thread
that started it, and a second live team (say, the main thread's) makes libgomp throttle its
spin-waiting on a 2-core machine, which cost the worker ~20% in an earlier version of this script.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

from common import lighthouse_requests, model_dir

from sd3desk.core.settings import Device


def in_thread(fn):
    """Run `fn` in a fresh thread that ends afterwards (taking its OpenMP team with it)."""
    result = []
    thread = threading.Thread(target=lambda: result.append(fn()))
    thread.start()
    thread.join()
    return result[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()

    from PySide6.QtCore import QCoreApplication

    from sd3desk.core.jobs import JobQueue
    from sd3desk.core.metadata import ImageMetadata
    from sd3desk.core.outputs import save_generated
    from sd3desk.core.store import Store
    from sd3desk.inference.engine import Engine
    from sd3desk.inference.models import resolve_model
    from sd3desk.runtime.runner import Runner
    from sd3desk.runtime.worker import Worker, WorkerConfig

    app = QCoreApplication([])
    work = Path(tempfile.mkdtemp())
    model = str(model_dir("small"))
    engine = Engine(Device.cpu, cache_dir=work)
    in_thread(lambda: engine.load(resolve_model(model)))
    requests = lighthouse_requests(model, args.jobs, args.steps)
    in_thread(lambda: engine.generate(requests[0]))  # warm-up for both

    def direct() -> float:
        start = time.perf_counter()
        for params in requests:
            result = engine.generate(params, on_step=lambda info: None)
            save_generated(
                result.images[0], ImageMetadata(result.params[0], result.model), work / "direct"
            )
        return time.perf_counter() - start

    def queued() -> float:
        runner = Runner(JobQueue(Store(":memory:")))
        config = WorkerConfig(
            out_dir=work / "queued", cache_dir=work, sources_dir=work / "sources", device=Device.cpu
        )
        runner.enqueue_many(requests)
        runner.idle.connect(app.quit)
        start = time.perf_counter()
        runner.attach_workers([Worker(0, config, lambda _config: engine)])
        app.exec()
        elapsed = time.perf_counter() - start
        runner.stop()
        assert len(list((work / "queued").rglob("*.png"))) >= args.jobs
        return elapsed

    times = {"direct": [], "queued": []}
    for _ in range(3):  # alternate, keep the best of each
        times["direct"].append(in_thread(direct))
        times["queued"].append(queued())
    best = {k: min(v) for k, v in times.items()}
    print(f"{args.jobs} jobs, small random SD3, 256x256, {args.steps} steps, cpu")
    print(f"direct Engine.generate + save: {best['direct']:.2f} s")
    print(f"runner + QThread worker:       {best['queued']:.2f} s")
    print(f"ratio queued/direct: {best['queued'] / best['direct']:.3f}  (target <= 1.05)")


if __name__ == "__main__":
    main()
