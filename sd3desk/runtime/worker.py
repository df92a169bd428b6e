"""The QThread worker: owns one Engine on one device and runs one job at a time.

torch and diffusers are imported in the worker's thread when its engine is first needed, never
on the GUI thread. The worker never touches the JobQueue: it reports with signals carrying frozen
dataclasses, and the runner applies them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QDeadlineTimer, QObject, QThread, Signal, Slot

from sd3desk.core import failpoints
from sd3desk.core.errors import (
    GenerationCancelled,
    InvalidParamsError,
    LoraError,
    ModelError,
    OutOfMemoryError,
    SD3DeskError,
    StorageError,
)
from sd3desk.core.jobs import FailureKind, Job
from sd3desk.core.metadata import JobRef
from sd3desk.core.settings import Device, MemoryPlan, Speed, hash_cache_file, test_model_dir
from sd3desk.runtime.events import EngineState, EngineStatus, StepProgress

if TYPE_CHECKING:
    from sd3desk.core.params import PromptLength
    from sd3desk.inference.engine import Engine

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Assignment:
    """A job handed to a worker, with the id of the queue it belongs to (written into its
    images, see `JobRef`)."""

    job: Job
    queue: str

    def ref(self, image: int) -> JobRef:
        return JobRef(self.queue, self.job.id, image)


# What a worker reports to the runner (front doors hear the runner's events instead).
@dataclass(frozen=True)
class JobStarted:
    job_id: int
    worker: int


@dataclass(frozen=True)
class JobFinished:
    job_id: int
    outputs: tuple[str, ...]
    seconds_per_step: float
    timings: Mapping[str, float]


@dataclass(frozen=True)
class JobFailed:
    job_id: int
    kind: FailureKind
    message: str
    advice: str


@dataclass(frozen=True)
class JobCancelled:
    job_id: int
    step: int


@dataclass(frozen=True)
class WorkerConfig:
    """What a worker needs besides its jobs."""

    out_dir: Path
    cache_dir: Path
    sources_dir: Path  # the SourceStore of the pictures jobs start from
    device: Device = Device.auto
    memory_plan: MemoryPlan = MemoryPlan.auto
    model_dirs: tuple[Path, ...] = ()
    device_index: int = 0  # which CUDA device, when several workers share the queue
    use_t5: bool = True
    lora_dirs: tuple[Path, ...] = ()  # where the LoRAs jobs name are found (by hash)
    speed: Speed = Speed.off  # fast mode (inference/speed.py)
    preview_decoder: bool = True  # TAESD3 previews when it is on disk (no reload to change)


EngineFactory = Callable[[WorkerConfig], "Engine"]


_OUTLIVING: list[Worker] = []  # workers whose thread was still busy when they were stopped


def default_engine_factory(config: WorkerConfig) -> Engine:
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
    # imports torch now, while the status says "Starting the engine"
    if engine.device().kind == "cpu":
        _yield_cpu_to_the_gui()  # before the first parallel region starts torch's threads
    return engine


class Worker(QObject):
    """Runs one job at a time on one device.

    Thread rule: lives in its own QThread (moved there on creation). Jobs, preloads and new
    settings arrive as queued signals (`submitted`, `preload()`, `reconfigure()`); it never
    touches the JobQueue, only emits reports. `cancel()` and `prompt_length()` may be called
    from any thread.
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
        self._engine: Engine | None = None
        self._wanted_model = ""  # the latest preload asked for
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

    def preload(self, reference: str) -> None:
        """Load `reference` as soon as the worker is free; a newer preload supersedes it."""
        self._wanted_model = reference
        self.preload_requested.emit(reference)

    def reconfigure(self, config: WorkerConfig) -> None:
        """New settings, applied before the next job (a reload when they change the model)."""
        self.reconfigure_requested.emit(config)

    def stop(self, wait_s: float | None = None) -> bool:
        """Cancel, then end the thread once its current call returns; False when that took
        longer than `wait_s` (an import or a model load cannot be cut short mid-call)."""
        self.cancel(None)
        self.thread_.quit()
        if wait_s is None:
            return self.thread_.wait()
        if self.thread_.wait(QDeadlineTimer(int(wait_s * 1000))):
            return True
        # Qt aborts the process if a running QThread is destroyed: keep this worker for the
        # life of the process (its thread ends once the call returns, its loop told to quit)
        _OUTLIVING.append(self)
        return False

    def cancel(self, job_id: int | None) -> None:
        """Stop the running job (any job when `job_id` is None) within one step. A job handed
        over but not started yet (the worker is still loading) is cancelled before it starts."""
        with self._lock:
            if self._current and (job_id is None or self._current[0] == job_id):
                self._current[1].set()
            elif job_id is not None:
                self._cancel_before_start.add(job_id)

    def _state(self, status: EngineStatus, text: str, **fields: Any) -> None:
        self.engine_state_changed.emit(EngineState(self.index, status, text, **fields))

    def prompt_length(self, prompt: str, max_sequence_length: int) -> PromptLength | None:
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
        elif (old.memory_plan, old.use_t5, old.speed) != (
            config.memory_plan,
            config.use_t5,
            config.speed,
        ):
            self._engine.unload()  # the next job loads its model with the new plan

    @Slot(str)
    def _preload(self, reference: str) -> None:
        """Load a model while the user is still typing; a job for it then starts at once."""
        if reference != self._wanted_model:  # the user picked another one since
            return
        try:
            engine = self._ensure_model(reference)
            self._warm_up(engine)
        except Exception as exc:
            failure = _failure(0, exc)
            self._state(EngineStatus.failed, failure.message, advice=failure.advice)

    def _warm_up(self, engine: Engine) -> None:
        """Fast mode: compile now, at the model's usual size, while the user is still typing
        (from the disk cache after the first time: seconds)."""
        from sd3desk.core.params import FAMILY_DEFAULTS

        loaded = engine.loaded_model()
        side = FAMILY_DEFAULTS[loaded.source.family].size
        picked_another = self._wanted_model not in ("", loaded.source.reference)
        if picked_another or not engine.needs_warm_up(side, side):
            return
        self._state(EngineStatus.loading, "Compiling for fast mode…", model=loaded.source.reference)
        seconds = engine.warm_up(side, side)
        self._ready(notices=(f"fast mode ready: compiled in {seconds:.0f} s",))

    def _ensure_model(self, reference: str) -> Engine:
        from sd3desk.inference.models import resolve_model

        # 1. the engine, created here so torch is imported on this thread, not the GUI's
        if self._engine is None:
            self._state(EngineStatus.starting, "Starting the engine…")
            self._engine = self._engine_factory(self.config)
        engine = self._engine
        # 2. the model, loaded once and kept until a job needs another one
        loaded = engine.loaded
        if loaded is None or loaded.source.reference != reference:
            source = resolve_model(reference, test_model_dir=test_model_dir(self.config.cache_dir))
            failpoints.reached("model-load")
            engine.load(
                source,
                self.config.memory_plan,
                on_stage=lambda s: self._state(
                    EngineStatus.loading,
                    s.text + "…",
                    stage=s.index,
                    stages=s.total,
                    model=reference,
                ),
                use_t5=self.config.use_t5,
                speed=self.config.speed,
            )
            self._ready(notices=engine.loaded_model().notices)
        return engine

    def _ready(self, notices: tuple[str, ...] = ()) -> None:
        assert self._engine is not None
        loaded = self._engine.loaded_model()
        self._state(
            EngineStatus.ready, loaded.describe(), notices=notices, model=loaded.source.reference
        )

    @Slot(object)
    def _run(self, assignment: Assignment) -> None:
        job = assignment.job
        cancel = threading.Event()
        with self._lock:
            if job.id in self._cancel_before_start:
                self._cancel_before_start.discard(job.id)
                self.job_cancelled.emit(JobCancelled(job.id, 0))
                return
            self._current = (job.id, cancel)
        self.job_started.emit(JobStarted(job.id, self.index))
        try:
            self.job_finished.emit(self._generate(assignment, cancel))
        except GenerationCancelled as exc:
            self.job_cancelled.emit(JobCancelled(job.id, exc.step))
        except Exception as exc:
            failure = _failure(job.id, exc)
            self.job_failed.emit(failure)
            if isinstance(exc, ModelError) and not isinstance(exc, LoraError):
                self._state(EngineStatus.failed, exc.message, advice=failure.advice, job_id=job.id)
        finally:
            with self._lock:
                self._current = None

    def _generate(self, assignment: Assignment, cancel: threading.Event) -> JobFinished:
        job = assignment.job
        # 1-2. the engine and the job's model
        engine = self._ensure_model(job.params.model)
        if cancel.is_set():
            raise GenerationCancelled(0)
        # 3. generate, reporting every step (previews through TAESD3 when it is there: looked
        # up per job, so one downloaded meanwhile is used from the next job on)
        engine.set_preview_decoder(self._preview_decoder())
        warnings = engine.prompt_length(
            job.params.prompt, job.params.max_sequence_length
        ).warnings()
        if job.params.negative_prompt and not job.params.uses_cfg:
            warnings.append("guidance <= 1 turns CFG off, so the negative prompt has no effect")
        self._state(
            EngineStatus.generating,
            f"Generating job {job.id}",
            notices=tuple(warnings),
            job_id=job.id,
        )

        def on_step(info: Any) -> None:
            self.step_progressed.emit(
                StepProgress(
                    job.id, info.step, info.total, info.elapsed_s, info.step_s, info.preview
                )
            )

        source, mask = self._pictures(job.params)
        result = engine.generate(
            job.params,
            on_step=on_step,
            cancel=cancel,
            source=source,
            mask=mask,
            loras=self._lora_files(job.params),
        )
        # 4. save each image atomically with its own parameters inside, under its planned name
        outputs = self._save(assignment, result)
        self._ready(notices=result.notices)
        per_step = result.timings.get("denoise_s", 0.0) / max(job.params.steps, 1)
        return JobFinished(job.id, outputs, per_step, dict(result.timings))

    def _preview_decoder(self) -> Path | None:
        """TAESD3's folder when the setting is on and it is on disk (a few stats and a small
        JSON file: well under a millisecond)."""
        if not self.config.preview_decoder:
            return None
        from sd3desk.inference.discovery import find_taesd3

        return find_taesd3(self.config.model_dirs)

    def _pictures(self, params: Any) -> tuple[Any, Any]:
        """The source picture and mask a job names, from the data folder's store; a picture
        deleted since it was queued fails the job with its field named."""
        if not params.source_image:
            return None, None
        from sd3desk.core.sources import SourceStore

        return SourceStore(self.config.sources_dir).pictures(params)

    def _lora_files(self, params: Any) -> list[tuple[Any, Path]]:
        """The file of each LoRA a job names, found by its hash in the LoRA folders (or where
        it was hashed before); a LoRA gone since fails the job and says which."""
        if not params.loras:
            return []
        from sd3desk.core.loras import LoraLibrary

        library = LoraLibrary(self.config.lora_dirs, hash_cache_file(self.config.cache_dir))
        return [(ref, library.find(ref)) for ref in params.loras]

    def _save(self, assignment: Assignment, result: Any) -> tuple[str, ...]:
        """Each image atomically, with its parameters and its job inside, as planned (an image
        an interrupted run of this job saved already is kept); a full or read-only disk is a
        StorageError that says where and how much."""
        from sd3desk.core.metadata import ImageMetadata
        from sd3desk.core.outputs import save_generated

        planned = assignment.job.planned
        outputs: list[str] = []
        for k, (image, params) in enumerate(zip(result.images, result.params, strict=True)):
            meta = ImageMetadata(
                params, result.model, job=assignment.ref(k), made_with=result.made_with
            )
            target = Path(planned[k]) if k < len(planned) else None
            try:
                outputs.append(
                    str(save_generated(image, meta, self.config.out_dir, planned=target))
                )
            except OSError as exc:
                folder = target.parent if target else self.config.out_dir
                raise _storage_error(exc, folder, params, len(result.images) - k) from exc
            failpoints.reached("image-saved")
        return tuple(outputs)


def _storage_error(exc: OSError, folder: Path, params: Any, images: int) -> SD3DeskError:
    """Words for a failed image write; errors other than a full or read-only disk pass on."""
    import errno
    import shutil

    advice = "Free some space or choose another output folder in Settings, then resume the queue."
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        try:
            free = f"{_megabytes(shutil.disk_usage(_existing(folder)).free)} free"
        except OSError:
            free = "free space unknown"
        # an upper bound: PNG of 8-bit RGB never needs much more than the raw pixels
        needed = _megabytes(params.width * params.height * 3 * images)
        noun = "this image needs" if images == 1 else f"these {images} images need"
        return StorageError(f"No space left on {folder} ({free}; {noun} ~{needed})", advice)
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        reason = "read-only" if exc.errno == errno.EROFS else "not writable"
        return StorageError(f"The output folder {folder} is {reason} ({exc.strerror})", advice)
    return SD3DeskError(f"the image could not be saved in {folder}: {exc.strerror or exc}", advice)


def _megabytes(size: float) -> str:
    return f"{size / 1e6:.1f} MB" if size < 10e6 else f"{size / 1e6:.0f} MB"


def _existing(folder: Path) -> Path:
    """`folder` or the nearest folder above it that exists (the day folder may not yet)."""
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    return folder


# under contention a nice-10 thread gets ~1/10 of what a nice-0 one does (weights 110:1024)
WORKER_NICENESS = 10


def _yield_cpu_to_the_gui() -> None:
    """Linux, generating on the CPU: lower this thread's priority before torch makes its
    compute threads here (they inherit it). The denoiser takes every core; at a lower priority
    the GUI thread and the server's thread still get the CPU the moment they need it, and
    generation loses nothing while nothing else wants the cores. (A GPU worker keeps its
    priority: it must feed the GPU. Elsewhere setpriority is per process, not per thread.)"""
    import os
    import sys

    if not sys.platform.startswith("linux"):
        return
    thread = threading.get_native_id()
    try:
        # relative to the main thread's (the process was maybe started with `nice`), and
        # idempotent: a second engine on this thread changes nothing
        wanted = min(19, os.getpriority(os.PRIO_PROCESS, os.getpid()) + WORKER_NICENESS)
        if os.getpriority(os.PRIO_PROCESS, thread) < wanted:
            os.setpriority(os.PRIO_PROCESS, thread, wanted)
    except OSError:
        log.debug("could not lower the worker's priority", exc_info=True)


def _failure(job_id: int, exc: Exception) -> JobFailed:
    """Words for the user; the traceback goes to the log only."""
    if isinstance(exc, OutOfMemoryError):
        return JobFailed(job_id, FailureKind.out_of_memory, exc.message, exc.advice)
    if isinstance(exc, LoraError):  # the job's LoRA, not the model: it stays loaded
        return JobFailed(job_id, FailureKind.invalid, exc.message, exc.advice)
    if isinstance(exc, ModelError):
        return JobFailed(job_id, FailureKind.model, exc.message, exc.advice)
    if isinstance(exc, StorageError):
        return JobFailed(job_id, FailureKind.storage, exc.message, exc.advice)
    if isinstance(exc, InvalidParamsError):
        advice = "fix the settings and queue it again"
        return JobFailed(job_id, FailureKind.invalid, exc.message, advice)
    if isinstance(exc, SD3DeskError):
        return JobFailed(job_id, FailureKind.error, exc.message, exc.advice)
    log.exception("job %s failed", job_id, exc_info=exc)
    advice = "details are in the log file"
    return JobFailed(job_id, FailureKind.error, f"the job failed: {exc}", advice)
