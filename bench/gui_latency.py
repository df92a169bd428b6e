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
    parser.add_argument(
        "--window",
        action="store_true",
        help="measure the real main window (form, preview, queue panel, gallery) instead of a "
        "bare runner; needs a display (xvfb-run) or QT_QPA_PLATFORM=offscreen",
    )
    args = parser.parse_args()
    folder = str(model_dir("small"))  # built beforehand, in a child step, if missing
    assert "torch" not in sys.modules, "torch must not be imported before the run"

    from PySide6.QtCore import QCoreApplication, QElapsedTimer, Qt, QTimer

    from sd3desk.core.jobs import JobQueue, JobState
    from sd3desk.core.settings import Device
    from sd3desk.core.store import Store
    from sd3desk.runtime.runner import Runner
    from sd3desk.runtime.worker import Worker, WorkerConfig, default_engine_factory

    work = Path(tempfile.mkdtemp())
    requests = lighthouse_requests(folder, args.jobs, args.steps)
    if args.window:
        import json

        from sd3desk.app import create_window

        (work / "settings.json").write_text(json.dumps({"device": "cpu"}))
        window = create_window(["--data-dir", str(work), "--model", folder])
        window.show()
        app = QCoreApplication.instance()
        runner = window.runner
        done = [0]

        def on_job(event) -> None:
            if event.job.state is JobState.finished:
                done[0] += 1
                if done[0] == args.jobs:
                    QTimer.singleShot(200, app.quit)

        runner.job_changed.connect(on_job)

        def start_jobs() -> None:  # through the form, as a user would
            panel = window.prompt_panel
            for params in requests:
                panel.set_params(params)
                window.generate()

    else:
        app = QCoreApplication([])
        runner = Runner(JobQueue(Store(":memory:")))
        runner.enqueue_many(requests)
        config = WorkerConfig(
            out_dir=work / "out", cache_dir=work, sources_dir=work / "sources", device=Device.cpu
        )
        runner.idle.connect(lambda: QTimer.singleShot(200, app.quit))

        def start_jobs() -> None:
            runner.attach_workers([Worker(0, config, default_engine_factory)])

    runner.engine_state_changed.connect(lambda s: phase.__setitem__(0, s.status.value))
    phase = ["idle"]
    lateness: dict[str, list[float]] = {}
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
    clock.start()
    timer.start(10)
    QTimer.singleShot(300, start_jobs)  # 300 ms of idle baseline first (the window: its start)
    start = time.perf_counter()
    app.exec()
    if args.window:
        window.session.shutdown()
    else:
        runner.stop()
    print(
        f"{'main window' if args.window else 'bare runner'}: "
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
