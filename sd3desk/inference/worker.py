"""QThread workers that each own an Engine, and the runner that feeds them from the JobQueue.

torch and diffusers are imported in the worker thread when its first job arrives, never on the
GUI thread. Workers report with signals carrying frozen dataclasses; only the runner (GUI thread)
changes the queue.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, QThread, Signal, Slot

from sd3desk.core.errors import (
    GenerationCancelled,
    InvalidParamsError,
    ModelError,
    OutOfMemoryError,
    SD3DeskError,
)
from sd3desk.core.jobs import DONE, Job, JobQueue, JobState, timing_key
from sd3desk.core.settings import Device, MemoryPlan

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)
LIVE_RATE_AFTER_STEPS = 2


@dataclass(frozen=True)
class JobStarted:
    job_id: int
    worker: int


@dataclass(frozen=True)
class StepProgress:
    job_id: int
    step: int
    total: int
    elapsed_s: float
    step_s: float
    preview: Image.Image | None


@dataclass(frozen=True)
class JobFinished:
    job_id: int
    outputs: tuple[str, ...]
    seconds_per_step: float
    timings: dict[str, float]


@dataclass(frozen=True)
class JobFailed:
    job_id: int
    kind: str  # "out_of_memory", "model", "invalid", "error"
    message: str
    advice: str


@dataclass(frozen=True)
class JobCancelled:
    job_id: int
    step: int


@dataclass(frozen=True)
class EngineState:
    """What a worker's engine is doing, for the status line."""

    worker: int
    state: str  # "starting", "loading", "ready", "generating", "failed"
    text: str
    stage: int = 0
    stages: int = 0
    notices: tuple[str, ...] = ()  # load notices when ready; prompt warnings when generating


@dataclass(frozen=True)
class WorkerConfig:
    """What a worker needs besides its jobs."""

    out_dir: Path
    cache_dir: Path
    device: Device = Device.auto
    memory_plan: MemoryPlan = MemoryPlan.auto
    model_dirs: tuple[Path, ...] = ()
    device_index: int = 0  # which CUDA device, when several workers share the queue
    use_t5: bool = True


EngineFactory = Callable[[WorkerConfig], Any]


def default_engine_factory(config: WorkerConfig) -> Any:
    """A real Engine, with torch imported here (the worker thread) and its device picked."""
    from sd3desk.inference.devices import import_ml_stack
    from sd3desk.inference.engine import Engine

    import_ml_stack()  # in ways that keep the GUI thread running meanwhile
    engine = Engine(
        config.device,
        cache_dir=config.cache_dir,
        model_dirs=config.model_dirs,
        device_index=config.device_index,
    )
    engine.device()  # imports torch now, while the status says "Starting the engine"
    return engine


class Worker(QObject):
    """Runs one job at a time on one device.

    Thread rule: lives in its own QThread (`start()` moves it there). Jobs arrive through
    `submitted` (a queued connection); it never touches the JobQueue, only emits events.
    `cancel()` may be called from any thread.
    """

    submitted = Signal(object)
    preload_requested = Signal(str)  # a model reference to load before any job needs it
    reconfigure_requested = Signal(object)  # a new WorkerConfig (the user changed settings)
    job_started = Signal(object)
    step_progressed = Signal(object)
    job_finished = Signal(object)
    job_failed = Signal(object)
    job_cancelled = Signal(object)
    engine_state_changed = Signal(object)

    def __init__(self, index: int, config: WorkerConfig, engine_factory: EngineFactory) -> None:
        super().__init__()
        self.index = index
        self.config = config
        self._engine_factory = engine_factory
        self._engine: Any = None
        self.wanted_model = ""  # the latest preload asked for (written by the runner)
        self._lock = threading.Lock()
        self._current: tuple[int, threading.Event] | None = None
        # Cancels for jobs not started yet (queued behind a preload or another job here).
        self._cancel_before_start: set[int] = set()
        self.thread_ = QThread()
        self.thread_.setObjectName(f"sd3desk-worker-{index}")
        self.moveToThread(self.thread_)
        self.submitted.connect(self._run)
        self.preload_requested.connect(self._preload)
        self.reconfigure_requested.connect(self._reconfigure)

    def start(self) -> None:
        self.thread_.start()

    def stop(self) -> None:
        self.cancel(None)
        self.thread_.quit()
        self.thread_.wait()

    def cancel(self, job_id: int | None) -> None:
        """Stop the running job (any job when `job_id` is None) within one step. A job handed
        over but not started yet (the worker is still loading) is cancelled before it starts."""
        with self._lock:
            if self._current and (job_id is None or self._current[0] == job_id):
                self._current[1].set()
            elif job_id is not None:
                self._cancel_before_start.add(job_id)

    def _state(
        self, state: str, text: str, stage: int = 0, stages: int = 0, notices: Any = ()
    ) -> None:
        self.engine_state_changed.emit(
            EngineState(self.index, state, text, stage, stages, tuple(notices))
        )

    def prompt_length(self, prompt: str, max_sequence_length: int) -> Any:
        """Token counts per encoder with the loaded model's tokenizers; None before a model is
        loaded. Any thread: the engine takes turns with its own prompt encoding."""
        engine = self._engine
        if engine is None or engine.loaded is None:
            return None
        try:
            return engine.prompt_length(prompt, max_sequence_length)
        except Exception:  # the model was swapped out meanwhile; the next edit asks again
            log.debug("prompt length failed", exc_info=True)
            return None

    @Slot(object)
    def _reconfigure(self, config: WorkerConfig) -> None:
        """New settings: a device change needs a new engine; a plan or T5 change a reload."""
        old, self.config = self.config, config
        if self._engine is None:
            return
        if old.device != config.device or old.model_dirs != config.model_dirs:
            self._engine.unload()
            self._engine = None
        elif (old.memory_plan, old.use_t5) != (config.memory_plan, config.use_t5):
            self._engine.unload()  # the next job loads its model with the new plan

    @Slot(str)
    def _preload(self, reference: str) -> None:
        """Load a model while the user is still typing; a job for it then starts at once."""
        if reference != self.wanted_model:  # the user picked another one since
            return
        try:
            self._ensure_model(reference)
        except Exception as exc:
            failure = _failure(0, exc)
            self._state("failed", failure.message, notices=[failure.advice])

    def _ensure_model(self, reference: str) -> Any:
        from sd3desk.inference.models import resolve_model

        # 1. the engine, created here so torch is imported on this thread, not the GUI's
        if self._engine is None:
            self._state("starting", "Starting the engine…")
            self._engine = self._engine_factory(self.config)
        engine = self._engine
        # 2. the model, loaded once and kept until a job needs another one
        loaded = engine.loaded
        if loaded is None or loaded.source.reference != reference:
            source = resolve_model(reference, test_model_dir=self.config.cache_dir / "test-model")
            engine.load(
                source,
                self.config.memory_plan,
                on_stage=lambda s: self._state("loading", s.text + "…", s.index, s.total),
                use_t5=self.config.use_t5,
            )
            self._state(
                "ready", f"Ready: {engine.loaded.describe()}", notices=engine.loaded.notices
            )
        return engine

    @Slot(object)
    def _run(self, job: Job) -> None:
        cancel = threading.Event()
        with self._lock:
            if job.id in self._cancel_before_start:
                self._cancel_before_start.discard(job.id)
                self.job_cancelled.emit(JobCancelled(job.id, 0))
                return
            self._current = (job.id, cancel)
        self.job_started.emit(JobStarted(job.id, self.index))
        try:
            self.job_finished.emit(self._generate(job, cancel))
        except GenerationCancelled as exc:
            self.job_cancelled.emit(JobCancelled(job.id, exc.step))
        except Exception as exc:
            self.job_failed.emit(_failure(job.id, exc))
            if isinstance(exc, ModelError):
                self._state("failed", exc.message)
        finally:
            with self._lock:
                self._current = None

    def _generate(self, job: Job, cancel: threading.Event) -> JobFinished:
        from sd3desk.core.metadata import ImageMetadata
        from sd3desk.core.outputs import save_generated

        # 1-2. the engine and the job's model
        engine = self._ensure_model(job.params.model)
        if cancel.is_set():
            raise GenerationCancelled(0)
        # 3. generate, reporting every step
        warnings = engine.prompt_length(
            job.params.prompt, job.params.max_sequence_length
        ).warnings()
        if job.params.negative_prompt and not job.params.uses_cfg:
            warnings.append("guidance <= 1 turns CFG off, so the negative prompt has no effect")
        self._state("generating", f"Generating job {job.id}", notices=warnings)

        def on_step(info: Any) -> None:
            self.step_progressed.emit(
                StepProgress(
                    job.id, info.step, info.total, info.elapsed_s, info.step_s, info.preview
                )
            )

        result = engine.generate(job.params, on_step=on_step, cancel=cancel)
        # 4. save each image atomically with its own parameters inside
        outputs = tuple(
            str(save_generated(image, ImageMetadata(params, result.model), self.config.out_dir))
            for image, params in zip(result.images, result.params, strict=True)
        )
        self._state("ready", f"Ready: {engine.loaded.describe()}")
        per_step = result.timings.get("denoise_s", 0.0) / max(job.params.steps, 1)
        return JobFinished(job.id, outputs, per_step, dict(result.timings))


def _failure(job_id: int, exc: Exception) -> JobFailed:
    """Words for the user; the traceback goes to the log only."""
    if isinstance(exc, OutOfMemoryError):
        return JobFailed(job_id, "out_of_memory", exc.message, exc.advice)
    if isinstance(exc, ModelError):
        return JobFailed(job_id, "model", exc.message, exc.advice)
    if isinstance(exc, InvalidParamsError):
        return JobFailed(job_id, "invalid", exc.message, "fix the settings and queue it again")
    if isinstance(exc, SD3DeskError):
        return JobFailed(job_id, "error", exc.message, exc.advice)
    log.exception("job %s failed", job_id, exc_info=exc)
    return JobFailed(job_id, "error", f"the job failed: {exc}", "details are in the log file")


class QueueRunner(QObject):
    """Feeds idle workers from the JobQueue and applies their reports to it.

    Thread rule: GUI thread only. It owns the queue; workers' signals arrive here as queued
    connections. `job_changed` carries the updated Job after every change.
    """

    job_changed = Signal(object)
    step_progressed = Signal(object)
    engine_state_changed = Signal(object)
    job_failed = Signal(object)
    idle = Signal()  # nothing running and nothing the workers may take

    def __init__(self, queue: JobQueue, workers: list[Worker]) -> None:
        super().__init__()
        self.queue = queue
        self.workers = workers
        self._busy: dict[int, int] = {}  # worker index -> job id
        self._progress: dict[int, int] = {}  # job id -> steps done
        self._stop_after_current = False
        self._halted = False
        self._requeue: set[int] = set()
        self._live_rates: dict[str, float] = {}  # timing_key -> s/step/image, this session
        # job id -> (when its first step ended, its timing key, its batch size)
        self._first_step: dict[int, tuple[float, str, int]] = {}
        for worker in workers:
            worker.job_started.connect(self._on_worker_job_started)
            worker.step_progressed.connect(self._on_worker_step_progressed)
            worker.job_finished.connect(self._on_worker_job_finished)
            worker.job_failed.connect(self._on_worker_job_failed)
            worker.job_cancelled.connect(self._on_worker_job_cancelled)
            worker.engine_state_changed.connect(self.engine_state_changed)

    # ------------------------------------------------------------------ control (GUI thread)

    def start(self) -> None:
        for worker in self.workers:
            worker.start()
        self.dispatch()

    def stop(self) -> None:
        """Stop the workers, then settle every job they held: their last reports are applied
        (they arrive as queued calls, which no event loop may deliver any more at quit), and a
        job that never got to report goes back to the front of the queue."""
        from PySide6.QtCore import QCoreApplication

        self._halted = True  # the reports applied below must not hand out new jobs
        for worker in self.workers:
            worker.stop()
        QCoreApplication.sendPostedEvents(self)
        for job_id in list(self._busy.values()):
            job = self.queue.get(job_id)
            if job.state is JobState.running:
                self.queue.requeue_front(job_id, "interrupted: the run was stopped")
        self._busy.clear()

    def enqueue(self, params: Any, front: bool = False) -> Job:
        job = self.queue.enqueue(params, front)
        self.job_changed.emit(job)
        self.dispatch()
        return job

    def cancel(self, job_id: int) -> None:
        """A waiting job is cancelled at once; a running one stops within one step."""
        job = self.queue.get(job_id)
        if job.state is JobState.queued:
            self.job_changed.emit(self.queue.cancel_queued(job_id))
        elif job.state is JobState.running:
            for worker in self.workers:
                worker.cancel(job_id)

    def set_paused(self, paused: bool) -> None:
        self.queue.set_paused(paused)
        self._stop_after_current = False
        self.dispatch()

    def stop_after_current(self) -> None:
        self._stop_after_current = True

    def halt(self) -> None:
        """Stop dispatching and stop running jobs within a step, putting them back at the front
        of the queue (this session ends; the jobs do not). Not remembered, unlike pause."""
        self._halted = True
        for worker_index, job_id in self._busy.items():
            self._requeue.add(job_id)
            self.workers[worker_index].cancel(job_id)
        if not self._busy:
            self.idle.emit()

    def preload(self, reference: str) -> None:
        """Load a model on the first worker now, so the first job starts without waiting for it.
        Skipped while jobs run (they load what they need)."""
        if reference and self.workers and not self._busy:
            self.workers[0].wanted_model = reference  # a preload superseded meanwhile is skipped
            self.workers[0].preload_requested.emit(reference)

    def prompt_length(self, prompt: str, max_sequence_length: int) -> Any:
        """Token counts with the first worker's loaded tokenizers (None before a model loads).
        Any thread."""
        return self.workers[0].prompt_length(prompt, max_sequence_length) if self.workers else None

    @property
    def running_progress(self) -> dict[int, int]:
        return dict(self._progress)

    @property
    def live_rates(self) -> dict[str, float]:
        """Seconds per step per image measured on running jobs this session, by timing key."""
        return dict(self._live_rates)

    def progress(self, job_id: int) -> int:
        return self._progress.get(job_id, 0)

    def eta(self, job_id: int) -> Any:
        return self.queue.etas(dict(self._progress), self.live_rates).get(job_id)

    def dispatch(self) -> None:
        """Give each idle worker the next waiting job."""
        for worker in self.workers if not self._halted else ():
            if worker.index in self._busy:
                continue
            job = self.queue.next_job()
            if job is None:
                break
            job = self.queue.mark_running(job.id)
            self._busy[worker.index] = job.id
            self.job_changed.emit(job)
            worker.submitted.emit(job)
        if not self._busy:
            self.idle.emit()

    # ------------------------------------------------------------------ worker reports

    def _ended(self, job_id: int, job: Job) -> None:
        self._busy = {w: j for w, j in self._busy.items() if j != job_id}
        self._progress.pop(job_id, None)
        self._first_step.pop(job_id, None)
        self.job_changed.emit(job)
        if self._stop_after_current and not self._busy:
            self._stop_after_current = False
            self.queue.set_paused(True)
        self.dispatch()

    @Slot(object)
    def _on_worker_job_started(self, event: JobStarted) -> None:
        self._progress[event.job_id] = 0

    @Slot(object)
    def _on_worker_step_progressed(self, event: StepProgress) -> None:
        self._progress[event.job_id] = event.step
        if event.step == 1:  # the job's timing key is read once, not on every step
            params = self.queue.get(event.job_id).params
            self._first_step[event.job_id] = (
                event.elapsed_s,
                timing_key(params),
                max(params.batch_size, 1),
            )
        elif event.step >= LIVE_RATE_AFTER_STEPS and event.job_id in self._first_step:
            # from the second step on, leaving out the first (it carries warm-up work)
            first_s, key, batch = self._first_step[event.job_id]
            self._live_rates[key] = (event.elapsed_s - first_s) / (event.step - 1) / batch
        self.step_progressed.emit(event)

    @Slot(object)
    def _on_worker_job_finished(self, event: JobFinished) -> None:
        job = self.queue.mark_finished(event.job_id, list(event.outputs))
        if event.seconds_per_step > 0:
            self.queue.record_timing(job.params, event.seconds_per_step)
        self._ended(event.job_id, job)

    @Slot(object)
    def _on_worker_job_failed(self, event: JobFailed) -> None:
        job = self.queue.mark_failed(event.job_id, event.kind, event.message, event.advice)
        self.job_failed.emit(event)
        self._ended(event.job_id, job)

    @Slot(object)
    def _on_worker_job_cancelled(self, event: JobCancelled) -> None:
        job = self.queue.get(event.job_id)
        if event.job_id in self._requeue:
            self._requeue.discard(event.job_id)
            job = self.queue.requeue_front(event.job_id, "interrupted: the run was stopped")
        elif job.state not in DONE:
            job = self.queue.mark_cancelled(event.job_id)
        self._ended(event.job_id, job)
