"""Run queued jobs without a window: the runtime's runner and workers under a QCoreApplication,
with progress on a terminal. Used by `sd3desk generate` and `sd3desk queue run`."""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass, field
from typing import Any, TextIO

from sd3desk.core.errors import ExitCode
from sd3desk.core.jobs import FailureKind, Job, JobState
from sd3desk.runtime.events import (
    EngineState,
    EngineStatus,
    JobChanged,
    Level,
    Notice,
    StepProgress,
)
from sd3desk.runtime.runtime import Runtime

FAILURE_EXIT = {FailureKind.invalid: ExitCode.usage, FailureKind.model: ExitCode.model}


@dataclass
class RunOutcome:
    """What a headless run did."""

    outputs: list[str] = field(default_factory=list)
    failures: list[Job] = field(default_factory=list)  # failed jobs, in the order they failed
    interrupted: bool = False
    broken: bool = False  # the queue database could not be written (the notice says why)

    def exit_code(self) -> ExitCode:
        if self.interrupted:
            return ExitCode.interrupted
        if self.broken:
            return ExitCode.error
        if self.failures:
            kind = self.failures[0].error_kind
            return FAILURE_EXIT.get(kind, ExitCode.error) if kind else ExitCode.error
        return ExitCode.ok


class TerminalProgress:
    """Stage lines, notices and a one-line step bar on a stream (redrawn in place on a tty)."""

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

    def engine(self, state: EngineState) -> None:
        if state.status is EngineStatus.loading:
            self.note(f"[{state.stage}/{state.stages}] {state.text}")
        elif state.status is EngineStatus.ready and state.model != self.model:  # once per model
            self.model = state.model
            self.note(f"model: {state.text}")

    def notice(self, notice: Notice) -> None:
        prefix = {Level.info: "note", Level.warning: "warning", Level.error: "error"}
        self.note(f"{prefix[notice.level]}: {notice.message}")
        if notice.advice:
            self.note(f"  {notice.advice}")

    def job(self, job: Job, position: int, total: int) -> None:
        seed = job.params.seed
        self.prefix = f"job {position}/{total} (seed {seed})" if total > 1 else f"seed {seed}"

    def step(self, info: StepProgress) -> None:
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
    runtime: Runtime,
    *,
    stop_on_failure: bool,
    progress: TerminalProgress | None = None,
    out: TextIO = sys.stdout,
) -> RunOutcome:
    """Start the runtime's workers and drain its queue; print each image's path to `out` as it
    lands. Notices (failures included, with advice) go to `progress`.

    Ctrl+C stops the running job within one step and puts it back at the front of the queue (an
    in-memory queue simply ends); a second Ctrl+C quits at once. Returns when nothing is left;
    the runtime is stopped then.
    """
    from PySide6.QtCore import QCoreApplication, QTimer

    app = QCoreApplication.instance() or QCoreApplication([])
    runner = runtime.runner
    outcome = RunOutcome()
    total = len(runner.snapshot().waiting)
    started: list[int] = []

    def on_job_changed(event: JobChanged) -> None:
        job = event.job
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
        elif job.state is JobState.failed:
            outcome.failures.append(job)
            if stop_on_failure:
                runner.halt()

    def on_interrupt(*_: Any) -> None:
        if outcome.interrupted:
            os._exit(ExitCode.interrupted)  # second Ctrl+C; writes are atomic: nothing partial
        outcome.interrupted = True
        if progress:
            progress.note("stopping after this step… (Ctrl+C again to quit at once)")
        runner.halt()

    def on_broken(_error: Any) -> None:  # the notice (with the reason) is printed already
        outcome.broken = True
        app.quit()

    runner.job_changed.connect(on_job_changed)
    runner.broken.connect(on_broken)
    runner.idle.connect(app.quit)
    if progress:
        runtime.notices.added.connect(progress.notice)
        runner.engine_state_changed.connect(progress.engine)
        runner.step_progressed.connect(progress.step)
    previous = signal.signal(signal.SIGINT, on_interrupt)
    ticker = QTimer()
    ticker.start(100)  # gives Python a chance to run the Ctrl+C handler during Qt's loop
    ticker.timeout.connect(lambda: None)
    try:
        QTimer.singleShot(0, runtime.start_workers)
        app.exec()
    finally:
        ticker.stop()
        signal.signal(signal.SIGINT, previous)
        runtime.stop()
    return outcome


def serve(
    runtime: Runtime,
    config: Any,
    *,
    progress: TerminalProgress,
    web: bool = True,
    out: TextIO = sys.stdout,
) -> ExitCode:
    """Serve `runtime`'s queue over HTTP until Ctrl+C: workers, the model search, then the
    server (see sd3desk.server). Ctrl+C stops the running job within a step and puts it back at
    the front; the queue keeps every job for the next start. Returns the exit code."""
    from PySide6.QtCore import QCoreApplication, QEventLoop, QTimer

    from sd3desk.runtime.catalog import check_model
    from sd3desk.server.config import token_file, with_token
    from sd3desk.server.host import ServerHost

    app = QCoreApplication.instance() or QCoreApplication([])
    runner = runtime.runner
    runtime.notices.added.connect(progress.notice)
    runner.engine_state_changed.connect(progress.engine)
    for notice in runtime.notices.notices:
        progress.notice(notice)
    # 1. the model list first: requests choose from it; --model joins it
    if config.model and runtime.catalog.entry(config.model) is None:
        runtime.catalog.include(check_model(config.model))
    found = QEventLoop()
    runtime.catalog.found.connect(found.quit)
    runtime.catalog.refresh()
    QTimer.singleShot(30_000, found.quit)
    found.exec()
    runtime.start_workers()
    # 2. the token it needs, then the server
    config, made = with_token(config, runtime.paths.config)
    host = ServerHost(runtime, config, web=web)
    url = host.start()
    print(f"sd3desk is serving at {url}", file=out, flush=True)
    if made:
        progress.note(f"token (kept in {token_file(runtime.paths.config)}): {config.token}")
    if config.token:
        progress.note(f"open {url}?token=… in a browser; APIs send Authorization: Bearer …")
    interrupted = [False]

    def on_interrupt(*_: Any) -> None:
        if interrupted[0]:
            os._exit(ExitCode.interrupted)
        interrupted[0] = True
        progress.note("stopping after this step… (Ctrl+C again to quit at once)")
        runner.idle.connect(app.quit)
        runner.halt()

    previous = signal.signal(signal.SIGINT, on_interrupt)
    ticker = QTimer()
    ticker.start(100)  # gives Python a chance to run the Ctrl+C handler during Qt's loop
    ticker.timeout.connect(lambda: None)
    try:
        app.exec()
    finally:
        ticker.stop()
        signal.signal(signal.SIGINT, previous)
        host.stop()
        runtime.stop()
    return ExitCode.interrupted if interrupted[0] else ExitCode.ok
