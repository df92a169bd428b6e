"""GUI-thread responsiveness while the worker imports torch, loads a model and generates.

A 10 ms QTimer on the GUI thread records how late each tick fires; the figures are split by what
the worker was doing (from its EngineState reports). Targets: p99 <= 20 ms, max <= 100 ms.
Run it in a fresh process: the torch import is part of what is measured.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import lighthouse_requests, model_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    folder = str(model_dir("small"))  # built beforehand, in a child step, if missing
    assert "torch" not in sys.modules, "torch must not be imported before the run"

    from PySide6.QtCore import QCoreApplication, QElapsedTimer, Qt, QTimer

    from sd3desk.inference.worker import QueueRunner, Worker, WorkerConfig, default_engine_factory
    from sd3desk.jobs import JobQueue
    from sd3desk.settings import Device
    from sd3desk.store import Store

    app = QCoreApplication([])
    work = Path(tempfile.mkdtemp())
    queue = JobQueue(Store(":memory:"))
    for params in lighthouse_requests(folder, args.jobs, args.steps):
        queue.enqueue(params)
    config = WorkerConfig(out_dir=work / "out", cache_dir=work, device=Device.cpu)
    runner = QueueRunner(queue, [Worker(0, config, default_engine_factory)])
    phase = ["idle"]
    lateness: dict[str, list[float]] = {}
    runner.engine_state_changed.connect(lambda s: phase.__setitem__(0, s.state))
    clock = QElapsedTimer()
    timer = QTimer()
    timer.setTimerType(Qt.TimerType.PreciseTimer)
    last = [0.0]

    def tick() -> None:
        now = clock.nsecsElapsed() / 1e6
        if last[0]:
            lateness.setdefault(phase[0], []).append(max(0.0, now - last[0] - 10.0))
        last[0] = now

    timer.timeout.connect(tick)
    runner.idle.connect(lambda: QTimer.singleShot(200, app.quit))
    clock.start()
    timer.start(10)
    QTimer.singleShot(300, runner.start)  # 300 ms of idle baseline first
    start = time.perf_counter()
    app.exec()
    runner.stop()
    print(
        f"{args.jobs} jobs, small random SD3, 256x256, {args.steps} steps, cpu; "
        f"{time.perf_counter() - start:.1f} s in all"
    )
    every = [v for values in lateness.values() for v in values]
    for name, values in [*lateness.items(), ("all", every)]:
        ordered = sorted(values)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        print(
            f"{name:11s} ticks {len(values):5d} · lateness p50 {statistics.median(values):5.1f} ms"
            f" · p99 {p99:6.1f} ms · max {max(values):6.1f} ms"
        )
    print("targets: p99 <= 20 ms, max <= 100 ms")


if __name__ == "__main__":
    main()
