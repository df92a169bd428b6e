"""The runner: the only writer of the JobQueue. It hands waiting jobs to idle workers, applies
their reports, and announces every change as a typed event carrying the changed data."""

from __future__ import annotations

import dataclasses
import functools
import logging
import sqlite3
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from PySide6.QtCore import QCoreApplication, QObject, Qt, QTimer, Signal, Slot

from sd3desk.core.errors import StoreError
from sd3desk.core.jobs import CRASH_LIMIT, DONE, FailureKind, Job, JobQueue, JobState, timing_key
from sd3desk.core.params import GenerationParams, PromptLength, check
from sd3desk.core.store import written_not
from sd3desk.runtime.events import (
    EngineState,
    EngineStatus,
    JobChanged,
    QueueChanged,
    QueueSnapshot,
    StepProgress,
)

if TYPE_CHECKING:  # the worker module loads when workers start, after the first frame
    from concurrent.futures import Future

    from sd3desk.core.outputs import OutputPlan
    from sd3desk.runtime.worker import JobCancelled, JobFailed, JobFinished, JobStarted, Worker

log = logging.getLogger(__name__)
COMMAND_TIMEOUT_S = 30.0  # how long a caller on another thread waits for a command
OUTSIDE_CHECK_MS = 1000  # how often the runner looks for jobs another process added
DONE_KEPT = 200  # finished jobs kept in the snapshot; the rest stay in the database
LIVE_RATE_AFTER_STEPS = 2
STOPPED_NOTE = "interrupted: the run was stopped"

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class _Call:
    future: Future
    function: Callable[[], Any]


def command(method: Callable[P, R]) -> Callable[P, R]:
    """A runner command callable from any thread: it runs at once on the runner's thread, and
    from any other thread it is queued onto that thread while the caller waits for its result
    (or its exception). When the runner's thread has not taken the call within
    COMMAND_TIMEOUT_S (its event loop is not running), the call is withdrawn and TimeoutError
    raised: a caller that retries never makes the change twice."""

    @functools.wraps(method)
    def typed(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except sqlite3.Error as exc:  # (a full disk, say): words, not a database error
            raise written_not(exc) from exc

    @functools.wraps(method)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        runner = args[0]
        assert isinstance(runner, Runner)
        if threading.get_ident() == runner._owner:
            return typed(*args, **kwargs)
        from concurrent import futures  # (not at the top: startup does not need it)

        future: Future = futures.Future()
        runner._invoke.emit(_Call(future, functools.partial(typed, *args, **kwargs)))
        try:
            return future.result(timeout=COMMAND_TIMEOUT_S)
        except futures.TimeoutError:  # (not the builtin one before Python 3.11)
            if future.cancel():  # not started: it never will be
                raise TimeoutError(
                    f"the runner did not take {method.__name__} within {COMMAND_TIMEOUT_S} s"
                ) from None
            return future.result()  # started meanwhile: commands are short, its result comes

    return call


def guarded(slot: Callable[..., None]) -> Callable[..., None]:
    """A runner slot whose database writes may fail (a full disk): the runner then stops
    handing out jobs and says why (`broken`), instead of raising into Qt's event loop and
    leaving the queue half-updated. What was committed stays; the next start recovers."""

    @functools.wraps(slot)
    def run(self: Runner, *args: Any) -> None:
        if self._broken is not None:
            return
        try:
            slot(self, *args)
        except sqlite3.Error as exc:
            self._break(written_not(exc))

    return run


class Runner(QObject):
    """Owns the JobQueue: the only code that changes it.

    It keeps the queue's active part in memory (running jobs, waiting jobs in order, the newest
    done ones), so every event carries the data and `snapshot()` answers without a query.
    Commands work before any worker exists: a job is stored at once and handed out when workers
    are attached.

    Thread rule: it lives on the thread that made it (the GUI thread in the window, the main
    thread headless), and its signals are emitted there. Commands (`enqueue`, `cancel`, `place`,
    ...) may be called from any thread (see `command`); `snapshot()` and `prompt_length()` are
    safe from any thread without waiting.
    """

    job_changed = Signal(object)  # JobChanged
    queue_changed = Signal(object)  # QueueChanged
    step_progressed = Signal(object)  # StepProgress
    engine_state_changed = Signal(object)  # EngineState, from any worker
    idle = Signal()  # workers attached, nothing running and nothing they may take
    broken = Signal(object)  # StoreError: the queue cannot be written; nothing runs any more
    _invoke = Signal(object)  # a _Call from another thread

    def __init__(
        self, queue: JobQueue, outputs: OutputPlan | None = None, done_kept: int = DONE_KEPT
    ) -> None:
        super().__init__()
        self._queue = queue
        self._outputs = outputs  # names each job's images when it is handed out
        self._owner = threading.get_ident()
        self._invoke.connect(self._on_invoke, Qt.ConnectionType.QueuedConnection)
        self.workers: list[Worker] = []
        self._busy: dict[int, int] = {}  # worker index -> job id
        self._progress: dict[int, int] = {}  # job id -> steps done
        self._stop_after_current = False
        self._halted = False
        self._requeue: set[int] = set()  # running jobs to put back in front when they stop
        self._live_rates: dict[str, float] = {}  # timing_key -> s/step/image, this session
        # job id -> (when its first step ended, its timing key, its batch size)
        self._first_step: dict[int, tuple[float, str, int]] = {}
        self._wanted_model = ""  # the last preload asked for, also before workers exist
        self._loading = ""  # the model a worker is loading now (stored: a crash then is its)
        self._broken: StoreError | None = None
        # 1. the queue's active part, read once; from now on only this runner changes it
        self._running: dict[int, Job] = {job.id: job for job in queue.running()}
        self._waiting: list[Job] = queue.queued()
        self._done: deque[Job] = deque(queue.recent_done(done_kept), maxlen=done_kept)
        self._paused = queue.paused
        self._timings = queue.timings()
        self._snapshot = self._make_snapshot()
        # 2. what other processes change (`sd3desk queue add`, `queue pause`), seen within a second
        self._data_version = queue.data_version()
        self._outside = QTimer(self, interval=OUTSIDE_CHECK_MS)
        self._outside.timeout.connect(self._on_outside_timeout)  # started with the workers

    # ------------------------------------------------------------------ any thread, no waiting

    def snapshot(self) -> QueueSnapshot:
        """The queue as it stands (an immutable object, replaced on every change)."""
        return self._snapshot

    def prompt_length(self, prompt: str, max_sequence_length: int) -> PromptLength | None:
        """Token counts with the first worker's loaded tokenizers (None before a model loads)."""
        workers = self.workers
        return workers[0].prompt_length(prompt, max_sequence_length) if workers else None

    # ------------------------------------------------------------------ commands (any thread)

    def job(self, job_id: int) -> Job | None:
        """The job as it stands now, also one done long ago (None when there is no such job).
        Any thread: an active or recent job comes from the snapshot, without waiting."""
        found = self._snapshot.find(job_id)
        if found is not None or not 0 < job_id < 2**63:  # (SQLite's row ids)
            return found
        return self._stored_job(job_id)

    @command
    def _stored_job(self, job_id: int) -> Job | None:
        try:
            return self._queue.get(job_id)
        except KeyError:
            return None

    @command
    def history(self, limit: int = -1) -> list[Job]:
        """Finished, failed and cancelled jobs, newest first (-1: all of them)."""
        return self._queue.recent_done(limit)

    @command
    def enqueue(
        self, params: GenerationParams, front: bool = False, source: str = "", client: str = ""
    ) -> Job:
        """Store a job (its seed made concrete) and hand it out when a worker is free.
        `source` names the front door, `client` the network address of a remote caller."""
        return self.enqueue_many([params], front, source, client)[0]

    @command
    def enqueue_many(
        self,
        requests: Sequence[GenerationParams],
        front: bool = False,
        source: str = "",
        client: str = "",
    ) -> list[Job]:
        """Store several jobs in one transaction, in order; raises InvalidParamsError (naming
        every bad field) before storing any."""
        for params in requests:
            check(params)
        jobs = self._queue.enqueue_many(list(requests), front, source, client)
        self._waiting = jobs + self._waiting if front else self._waiting + jobs
        for job in jobs:
            self._announce(job, None)
        self._dispatch()
        return jobs

    @command
    def cancel(self, job_id: int) -> None:
        """A waiting job is cancelled at once; a running one stops within one step, with
        nothing written. Unknown or finished jobs are left alone."""
        if any(job.id == job_id for job in self._waiting):
            cancelled = self._queue.mark_cancelled(job_id)  # the database first, then the mirror
            self._waiting = [job for job in self._waiting if job.id != job_id]
            self._announce(cancelled, JobState.queued)
        elif job_id in self._running:
            for worker in self.workers:
                worker.cancel(job_id)

    @command
    def cancel_running(self) -> None:
        for job_id in list(self._running):
            self.cancel(job_id)

    @command
    def place(self, job_ids: Sequence[int], index: int) -> None:
        """Put waiting jobs, in the given order, at 0-based `index` among the other waiting
        jobs (drag and drop, "move to top"); jobs no longer waiting stay where they are."""
        self._queue.place(list(job_ids), index)
        self._waiting = self._queue.queued()
        self._publish()

    @command
    def duplicate(self, job_id: int) -> Job:
        """Queue the same request again, right after the original while it still waits."""
        copy = self._queue.duplicate(job_id)
        self._waiting = self._queue.queued()
        self._announce(copy, None)
        self._dispatch()
        return copy

    @command
    def set_paused(self, paused: bool) -> None:
        """Pause or resume; remembered across restarts. Resuming clears "stop after current"."""
        self._queue.set_paused(paused)
        self._paused = paused
        self._stop_after_current = False
        self._publish()
        self._dispatch()

    @command
    def stop_after_current(self) -> None:
        """Let the running jobs finish, then pause."""
        self._stop_after_current = True
        if not self._busy:
            self.set_paused(True)

    @command
    def clear_finished(self) -> int:
        """Forget finished, failed and cancelled jobs (their images stay on disk)."""
        count = self._queue.clear_finished()
        self._done.clear()
        self._publish()
        return count

    @command
    def halt(self) -> None:
        """Stop dispatching and stop running jobs within a step, putting them back at the front
        (this session ends; the jobs do not). Not remembered, unlike pause."""
        self._halted = True
        for worker_index, job_id in self._busy.items():
            self._requeue.add(job_id)
            self.workers[worker_index].cancel(job_id)
        if not self._busy:
            self.idle.emit()

    @command
    def preload(self, reference: str) -> None:
        """Load a model on the first worker now, so the first job starts without waiting for
        it; before workers exist, as soon as they do. Skipped while jobs run (they load what
        they need)."""
        self._wanted_model = reference
        if self._queue.load_crashes(reference) >= CRASH_LIMIT:
            # loading it stopped the app before: only a job the user resumes loads it again
            log.warning("not preloading %s: the app stopped while loading it", reference)
            return
        if reference and self.workers and not self._busy:
            self.workers[0].preload(reference)

    # ------------------------------------------------------------------ the runner's thread only

    def attach_workers(self, workers: Sequence[Worker]) -> None:
        """Start `workers` and give them the waiting jobs (and the model asked for meanwhile)."""
        self.workers = list(workers)
        for worker in self.workers:
            worker.job_started.connect(self._on_worker_job_started)
            worker.step_progressed.connect(self._on_worker_step_progressed)
            worker.job_finished.connect(self._on_worker_job_finished)
            worker.job_failed.connect(self._on_worker_job_failed)
            worker.job_cancelled.connect(self._on_worker_job_cancelled)
            worker.engine_state_changed.connect(self._on_worker_engine_state_changed)
            worker.start()
        self._outside.start()
        if self._wanted_model and not self.next_job():
            self.preload(self._wanted_model)
        self._dispatch()

    def stop(self, wait_s: float | None = None) -> bool:
        """Stop the workers, then settle every job they held: their last reports are applied
        (they arrive as queued calls, which no event loop may deliver any more at quit), and a
        job that never got to report goes back to the front of the queue.

        With `wait_s`, a worker busy in a call that cannot be cut short (importing torch,
        loading weights) is given that long; False when one is still busy then (its job is
        back in the queue all the same, so the caller may end the process)."""
        self._halted = True  # the reports applied below must not hand out new jobs
        stopped = True
        for worker in self.workers:
            stopped = worker.stop(wait_s) and stopped
        QCoreApplication.sendPostedEvents(self)
        try:
            for job_id in list(self._busy.values()):
                if job_id in self._running and self._broken is None:
                    self._put_back(job_id)
            if self._broken is None:
                self._load_ended(ok=False)  # a load cut short by quitting is no crash
        except sqlite3.Error as exc:  # they stay running in the database: the next start
            log.warning("could not put the running jobs back: %s", exc)  # recovers them
        self._busy.clear()
        return stopped

    def next_job(self) -> Job | None:
        """The job a free worker would take now, or None (none waiting, or paused)."""
        return self._waiting[0] if self._waiting and not self._paused else None

    # ------------------------------------------------------------------ internals

    @Slot(object)
    def _on_invoke(self, call: _Call) -> None:
        if not call.future.set_running_or_notify_cancel():
            return  # the caller gave up waiting before it started
        try:
            call.future.set_result(call.function())
        except BaseException as exc:  # the caller gets it, whatever it is
            call.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise

    @Slot()
    @guarded
    def _on_outside_timeout(self) -> None:
        """Another process committed: take the waiting jobs and the pause state it left (jobs
        this runner runs stay its own)."""
        version = self._queue.data_version()
        if version == self._data_version:
            return
        self._data_version = version
        waiting = [job for job in self._queue.queued() if job.id not in self._running]
        paused = self._queue.paused
        if [j.id for j in waiting] != [j.id for j in self._waiting] or paused != self._paused:
            self._waiting, self._paused = waiting, paused
            self._publish()
            self._dispatch()

    def _make_snapshot(self) -> QueueSnapshot:
        return QueueSnapshot(
            running=tuple(self._running.values()),
            waiting=tuple(self._waiting),
            done=tuple(self._done),
            paused=self._paused,
            progress=MappingProxyType(dict(self._progress)),
            live_rates=MappingProxyType(dict(self._live_rates)),
            timings=MappingProxyType(dict(self._timings)),
        )

    def _publish(self) -> None:
        self._snapshot = self._make_snapshot()
        self.queue_changed.emit(QueueChanged(self._snapshot))

    def _announce(self, job: Job, previous: JobState | None) -> None:
        """Put `job` where its state says in the mirror, then tell everyone."""
        self._running.pop(job.id, None)
        if job.state is JobState.running:
            self._running[job.id] = job
        elif job.state in DONE:
            self._done.appendleft(job)
        self._publish()
        self.job_changed.emit(JobChanged(job, previous))

    @guarded
    def _dispatch(self) -> None:
        """Give each idle worker the next waiting job."""
        for worker in self.workers if not self._halted else ():
            if worker.index in self._busy:
                continue
            job = self.next_job()
            if job is None:
                break
            from sd3desk.runtime.worker import Assignment  # (loaded with the workers)

            job = self._queue.mark_running(job.id, self._plan(job))  # the database first
            self._waiting.pop(0)
            self._busy[worker.index] = job.id
            self._announce(job, JobState.queued)
            worker.submitted.emit(Assignment(job, self._queue.uid))
        if self.workers and not self._busy:
            self.idle.emit()

    def _break(self, error: StoreError) -> None:
        """The database cannot be written: stop the running jobs (what they saved is found
        again at the next start) and hand out nothing more."""
        log.error("the queue database cannot be written: %s", error.message)
        self._broken = error
        self._halted = True
        self._outside.stop()
        for worker in self.workers:
            worker.cancel(None)
        self.broken.emit(error)

    def _plan(self, job: Job) -> tuple[str, ...]:
        """Where the job's images will land (a job put back keeps the names it had)."""
        if self._outputs is None or job.planned:
            return job.planned
        params = job.params
        return self._outputs.names([params.for_image(k).seed for k in range(params.batch_size)])

    def _load_ended(self, ok: bool) -> None:
        if self._loading:
            self._queue.loaded(self._loading, ok)
            self._loading = ""

    def _put_back(self, job_id: int) -> None:
        job = self._queue.requeue_front(job_id, STOPPED_NOTE)
        self._waiting.insert(0, job)
        self._announce(job, JobState.running)

    def _ended(self, job_id: int, job: Job | None) -> None:
        self._busy = {w: j for w, j in self._busy.items() if j != job_id}
        self._progress.pop(job_id, None)
        self._first_step.pop(job_id, None)
        if job is not None:
            self._announce(job, JobState.running)
        if self._stop_after_current and not self._busy:
            self._stop_after_current = False
            self._queue.set_paused(True)
            self._paused = True
            self._publish()
        self._dispatch()

    @Slot(object)
    @guarded
    def _on_worker_engine_state_changed(self, state: EngineState) -> None:
        """Keep in the database what a crash now would be blamed on: a model while it loads,
        the job once it generates."""
        if state.status is EngineStatus.loading and state.model and state.model != self._loading:
            self._loading = state.model
            self._queue.loading(state.model)
        elif state.status in (EngineStatus.ready, EngineStatus.failed):
            self._load_ended(ok=state.status is EngineStatus.ready)
        elif state.status is EngineStatus.generating and state.job_id in self._running:
            self._load_ended(ok=True)
            self._running[state.job_id] = self._queue.mark_generating(state.job_id)
        self.engine_state_changed.emit(state)

    @Slot(object)
    @guarded
    def _on_worker_job_started(self, event: JobStarted) -> None:
        self._progress[event.job_id] = 0

    @Slot(object)
    def _on_worker_step_progressed(self, event: StepProgress) -> None:
        self._progress[event.job_id] = event.step
        job = self._running.get(event.job_id)
        if event.step == 1 and job is not None:
            batch = max(job.params.batch_size, 1)
            self._first_step[event.job_id] = (event.elapsed_s, timing_key(job.params), batch)
        elif event.step >= LIVE_RATE_AFTER_STEPS and event.job_id in self._first_step:
            # from the second step on, leaving out the first (it carries warm-up work)
            first_s, key, batch = self._first_step[event.job_id]
            self._live_rates[key] = (event.elapsed_s - first_s) / (event.step - 1) / batch
        # progress changes the ETAs only: a new snapshot, no QueueChanged per step
        self._snapshot = dataclasses.replace(
            self._snapshot,
            progress=MappingProxyType(dict(self._progress)),
            live_rates=MappingProxyType(dict(self._live_rates)),
        )
        self.step_progressed.emit(event)

    @Slot(object)
    @guarded
    def _on_worker_job_finished(self, event: JobFinished) -> None:
        job = self._queue.mark_finished(event.job_id, list(event.outputs))
        if event.seconds_per_step > 0:
            value = self._queue.record_timing(job.params, event.seconds_per_step)
            self._timings[timing_key(job.params)] = value
        self._ended(event.job_id, job)

    @Slot(object)
    @guarded
    def _on_worker_job_failed(self, event: JobFailed) -> None:
        self._load_ended(ok=False)  # a load that raised (no crash)
        job = self._queue.mark_failed(event.job_id, event.kind, event.message, event.advice)
        if event.kind is FailureKind.storage:
            # the next jobs would fail the same way: they wait until the user resumes
            self._queue.set_paused(True)
            self._paused = True
        self._ended(event.job_id, job)

    @Slot(object)
    @guarded
    def _on_worker_job_cancelled(self, event: JobCancelled) -> None:
        if event.job_id in self._requeue:
            self._requeue.discard(event.job_id)
            self._put_back(event.job_id)
            self._ended(event.job_id, None)
        elif event.job_id in self._running:
            self._ended(event.job_id, self._queue.mark_cancelled(event.job_id))
        else:
            self._ended(event.job_id, None)
