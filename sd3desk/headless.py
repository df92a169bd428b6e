"""Run queued jobs without a window: a QCoreApplication, the real queue runner and worker, and
progress on a terminal. Used by `sd3desk generate` and `sd3desk queue run`."""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
from dataclasses import dataclass, field
from typing import Any, TextIO

from sd3desk.core.jobs import JobQueue, JobState

MESSAGE_EXIT = {"invalid": 2, "model": 3}


@dataclass
class RunOutcome:
    """What a headless run did."""

    outputs: list[str] = field(default_factory=list)
    failures: list[Any] = field(default_factory=list)  # JobFailed events
    interrupted: bool = False

    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        if self.failures:
            return MESSAGE_EXIT.get(self.failures[0].kind, 1)
        return 0


class TerminalProgress:
    """Stage lines and a one-line step bar on a stream (redrawn in place on a terminal)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.prefix = ""
        self.model = ""

    def note(self, text: str) -> None:
        self.clear()
        print(text, file=self.stream, flush=True)

    def clear(self) -> None:
        if self.tty:
            print("\r\033[K", end="", file=self.stream, flush=True)

    def engine(self, state: Any) -> None:
        if state.state == "loading":
            self.note(f"[{state.stage}/{state.stages}] {state.text}")
        elif state.state == "ready" and state.text != self.model:  # once per model loaded
            self.model = state.text
            self.note("model: " + state.text.removeprefix("Ready: "))
            for notice in state.notices:
                self.note(f"note: {notice}")
        elif state.state == "generating":
            for notice in state.notices:
                self.note(f"warning: {notice}")

    def job(self, job: Any, position: int, total: int) -> None:
        seed = job.params.seed
        self.prefix = f"job {position}/{total} (seed {seed})" if total > 1 else f"seed {seed}"

    def step(self, info: Any) -> None:
        width = 24
        done = round(width * info.step / info.total)
        rate = info.elapsed_s / info.step
        left = rate * (info.total - info.step)
        line = (
            f"{self.prefix} [{'#' * done}{'.' * (width - done)}] {info.step}/{info.total} "
            f"· {rate:.2f} s/step · {left:.0f} s left"
        )
        if self.tty:
            print("\r" + line, end="", file=self.stream, flush=True)
        elif info.step == info.total:
            print(line, file=self.stream, flush=True)


def run_queue(
    queue: JobQueue,
    config: Any,
    *,
    workers: int = 1,
    stop_on_failure: bool,
    progress: TerminalProgress | None = None,
    engine_factory: Any = None,
    out: TextIO = sys.stdout,
) -> RunOutcome:
    """Drain `queue` with `workers` workers (one per CUDA device); print each image's path to
    `out` as it lands.

    Ctrl+C stops the running job within one step and puts it back at the front of the queue (an
    in-memory queue simply ends); a second Ctrl+C quits at once. Returns when nothing is left.
    """
    from PySide6.QtCore import QCoreApplication, QTimer

    from sd3desk.core.outputs import sweep_stale_temp_files
    from sd3desk.inference.worker import QueueRunner, Worker, default_engine_factory

    sweep_stale_temp_files(config.out_dir)
    app = QCoreApplication.instance() or QCoreApplication([])
    runner = QueueRunner(
        queue,
        [
            Worker(
                i,
                dataclasses.replace(config, device_index=i),
                engine_factory or default_engine_factory,
            )
            for i in range(workers)
        ],
    )
    outcome = RunOutcome()
    total = len(queue.queued())
    started: list[int] = []

    def on_job(job: Any) -> None:
        if job.state is JobState.running and job.id not in started:
            started.append(job.id)
            if progress:
                progress.job(job, len(started), total)
        elif job.state is JobState.finished:
            if progress:
                progress.clear()
            for path in job.outputs:
                print(path, file=out, flush=True)
            outcome.outputs += job.outputs

    def on_failed(event: Any) -> None:
        outcome.failures.append(event)
        if stop_on_failure:
            runner.halt()

    def on_interrupt(*_: Any) -> None:
        if outcome.interrupted:
            os._exit(130)  # second Ctrl+C; writes are atomic, so nothing is left half-written
        outcome.interrupted = True
        if progress:
            progress.note("stopping after this step… (Ctrl+C again to quit at once)")
        runner.halt()

    runner.job_changed.connect(on_job)
    runner.job_failed.connect(on_failed)
    runner.idle.connect(app.quit)
    if progress:
        runner.engine_state_changed.connect(progress.engine)
        runner.step_progressed.connect(progress.step)
    previous = signal.signal(signal.SIGINT, on_interrupt)
    ticker = QTimer()
    ticker.start(100)  # gives Python a chance to run the Ctrl+C handler during Qt's loop
    ticker.timeout.connect(lambda: None)
    try:
        QTimer.singleShot(0, runner.start)
        app.exec()
    finally:
        ticker.stop()
        signal.signal(signal.SIGINT, previous)
        runner.stop()
    return outcome
