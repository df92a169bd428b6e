"""The Runtime: the one object every front door builds (window, CLI, self-test) and talks to.

It owns the Store, the JobQueue (through the Runner, its only writer), the workers, the model
catalog and the notices, and turns what happens to jobs and engines into notices, so no front
door translates failures itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from sd3desk.core.atomic import sweep_temp_files
from sd3desk.core.errors import SD3DeskError
from sd3desk.core.gallery import GalleryIndex
from sd3desk.core.jobs import JobQueue, JobState, LoadCrash
from sd3desk.core.loras import LoraLibrary
from sd3desk.core.outputs import OutputPlan
from sd3desk.core.owner import FolderLock
from sd3desk.core.settings import AppPaths, Settings, env_model_dirs, lora_dirs
from sd3desk.core.sources import SourceStore
from sd3desk.core.store import Store, unwritable_folder
from sd3desk.runtime.background import Background
from sd3desk.runtime.catalog import ModelCatalog
from sd3desk.runtime.events import EngineState, EngineStatus, JobChanged
from sd3desk.runtime.notices import NoticeLog
from sd3desk.runtime.runner import Runner

if TYPE_CHECKING:  # the worker module is imported when workers start, after the first frame
    from sd3desk.runtime.worker import EngineFactory, WorkerConfig

log = logging.getLogger(__name__)
IN_MEMORY = ":memory:"  # a queue that lives only as long as the process (`sd3desk generate`)
GUEST_BUSY_TIMEOUT_S = 1.0  # how long a process that only reads or adds waits for the owner


class Runtime:
    """Everything behind a front door.

    Thread rule: build, start and stop it on one thread (the runtime's: the GUI thread in the
    window, the main thread headless), where its Qt objects live and its signals arrive. Only
    the Runner's commands may be called from other threads.
    """

    def __init__(
        self,
        paths: AppPaths,
        settings: Settings,
        *,
        database: Path | str | None = None,
        engine_factory: EngineFactory | None = None,
        owner: str = "",
    ) -> None:
        # 1. folders, the data folder's lock when this process runs the queue, the database
        # (crash recovery runs as the owner opens the queue)
        self.paths = paths
        self.settings = settings
        # The output folder is fixed for the runtime's life (a change applies at the next start).
        self.out_dir = Path(settings.output_dir or paths.outputs)
        private = database is not None and str(database) == IN_MEMORY
        self.lock: FolderLock | None = None
        try:
            for folder in (paths.data, paths.config, paths.cache):
                folder.mkdir(parents=True, exist_ok=True)
            if owner and not private:
                self.lock = FolderLock(paths.data)
                self.lock.acquire(owner)  # FolderBusyError names the process that has it
        except OSError as exc:
            raise unwritable_folder(Path(exc.filename or paths.data), exc) from exc
        self.runs_jobs = bool(owner) or private  # a private queue is its process's own
        try:
            self.store = Store(
                database if database is not None else paths.database,
                busy_timeout_s=None if owner else GUEST_BUSY_TIMEOUT_S,
            )
        except BaseException:
            self._release()
            raise
        queue = JobQueue(self.store, recover=bool(owner))
        # 2. the notices: what opening the database and the queue found
        self.notices = NoticeLog()
        for text in self.store.notices:
            self.notices.warning(text)
        if queue.load_crash is not None:
            self._notice_load_crash(queue.load_crash)
        for job in queue.recovered:
            if job.state is JobState.failed:
                self.notices.error(f"Job #{job.id} failed: {job.error_message}", job.error_advice)
            elif job.state is JobState.queued:
                self.notices.info(f"Job #{job.id} was interrupted; it runs again first")
        # 3. the runner (commands work from now on), the model catalog
        self.runner = Runner(queue, OutputPlan(self.out_dir))
        self.catalog = ModelCatalog(self.model_dirs())
        # 4. the gallery index: every finished image is in it at once, whichever door asked
        self.gallery = GalleryIndex(self.store, self.out_dir, settings.gallery_dirs)
        self.sources = SourceStore(paths.sources)  # the pictures jobs start from
        self.loras = LoraLibrary(lora_dirs(paths, settings), paths.hash_cache)
        self._engine_factory = engine_factory
        self._background = Background()
        self.runner.job_changed.connect(self._on_runner_job_changed)
        self.runner.broken.connect(lambda error: self.notices.error(error.message, error.advice))
        self.runner.engine_state_changed.connect(self._on_runner_engine_state_changed)
        self._stopped = False
        self.first_device = 0  # CUDA device of worker 0 (a batch process: its local rank)

    def _notice_load_crash(self, crash: LoadCrash) -> None:
        if crash.paused:
            self.notices.error(
                f"sd3desk stopped {crash.times} times in a row while loading {crash.model}, so "
                "the queue is paused (otherwise every start would stop the same way).",
                "Choose a lighter memory plan in Settings (offload, or no-t5) or another model, "
                "then resume the queue.",
            )
        else:
            self.notices.warning(
                f"sd3desk stopped while loading {crash.model} (out of memory?); its jobs wait "
                "in the queue as they were."
            )

    def _release(self) -> None:
        if self.lock is not None:
            self.lock.release()

    def model_dirs(self) -> tuple[Path, ...]:
        """The user's model folders, then SD3DESK_MODEL_DIRS."""
        return tuple(Path(d) for d in self.settings.model_dirs) + tuple(env_model_dirs())

    def worker_config(self, index: int) -> WorkerConfig:
        from sd3desk.runtime.worker import WorkerConfig

        s = self.settings
        return WorkerConfig(
            out_dir=self.out_dir,
            cache_dir=self.paths.cache,
            device=s.device,
            memory_plan=s.memory_plan,
            model_dirs=self.model_dirs(),
            device_index=self.first_device + index,
            use_t5=s.use_t5,
            sources_dir=self.paths.sources,
            lora_dirs=self.loras.folders,
            speed=s.speed,
            preview_decoder=s.preview_decoder,
        )

    # ------------------------------------------------------------------ life

    def start_workers(self) -> None:
        """Make the workers (idle threads until a job or a preload arrives) and let them take
        the waiting jobs. Temporary files a killed process left are swept meanwhile."""
        from sd3desk.runtime.worker import Worker, default_engine_factory

        if self.runner.workers or self._stopped:
            return
        if not self.runs_jobs:
            raise RuntimeError("this runtime only adds jobs; build it with owner=... to run them")
        self._background.submit(self._sweep, "sweep")
        factory = self._engine_factory or default_engine_factory
        count = max(1, self.settings.gpu_workers)
        self.runner.attach_workers(
            [Worker(i, self.worker_config(i), factory) for i in range(count)]
        )

    def _sweep(self) -> int:
        """Remove dead processes' temporary files from every folder the queue writes to."""
        folders = [self.out_dir, self.paths.data, self.paths.config, self.paths.cache]
        for parent in (self.out_dir, self.paths.cache):
            with contextlib.suppress(OSError), os.scandir(parent) as entries:
                folders += [Path(e.path) for e in entries if e.is_dir(follow_symlinks=False)]
        removed = sweep_temp_files(dict.fromkeys(folders))
        if removed:
            log.info("removed %d temporary files left by a stopped process", removed)
        return removed

    def stop(self, wait_s: float | None = None) -> bool:
        """Running jobs go back to the front of the queue; workers stop within a step. The
        data folder is free for another process afterwards. False when a worker was still
        busy after `wait_s` (see Runner.stop): only ending the process stops it then."""
        if self._stopped:
            return True
        self._stopped = True
        self.runner.halt()
        stopped = self.runner.stop(wait_s)
        self._release()
        return stopped

    def apply_settings(self, settings: Settings) -> bool:
        """Take new settings; returns whether the loaded model must be reloaded for them (the
        device, memory plan, T5 or model folders changed). The output folder and the number of
        workers apply at the next start."""
        old, self.settings = self.settings, settings
        self.gallery.extra = [Path(f) for f in settings.gallery_dirs]
        self.loras.folders = lora_dirs(self.paths, settings)
        engine_fields = ("device", "memory_plan", "use_t5", "model_dirs", "speed")
        changed = any(getattr(old, f) != getattr(settings, f) for f in engine_fields)
        # (new LoRA folders or another preview decoder: the workers take them without a reload)
        quiet = ("lora_dirs", "preview_decoder")
        if changed or any(getattr(old, f) != getattr(settings, f) for f in quiet):
            for worker in self.runner.workers:
                worker.reconfigure(self.worker_config(worker.index))
            self.catalog.model_dirs = self.model_dirs()
            self.catalog.refresh()
        return changed

    # ------------------------------------------------------------------ notices from events

    def _on_runner_job_changed(self, event: JobChanged) -> None:
        job = event.job
        if job.state is JobState.finished:
            for path in job.outputs:
                try:
                    self.gallery.add(path)
                except (OSError, SD3DeskError) as exc:  # a rescan picks it up later
                    log.warning("could not index %s: %s", path, exc)
        elif job.state is JobState.failed:
            self.notices.error(f"Job #{job.id} failed: {job.error_message}", job.error_advice)

    def _on_runner_engine_state_changed(self, state: EngineState) -> None:
        if state.status is EngineStatus.ready:
            for text in state.notices:
                self.notices.info(text)
        elif state.status is EngineStatus.generating:
            for text in state.notices:
                self.notices.warning(text)
        elif state.status is EngineStatus.failed and state.job_id is None:
            # a failed preload; a job's failure already made its notice
            self.notices.error(state.text, state.advice)


def build_runtime(
    paths: AppPaths,
    settings: Settings,
    *,
    database: Path | str | None = None,
    engine_factory: EngineFactory | None = None,
    owner: str = "",
) -> Runtime:
    """The runtime for `paths` and `settings`: the data folder's queue, or a queue in memory
    with `database=IN_MEMORY`.

    `owner` names the process that will run the queue ("the sd3desk window", "sd3desk queue
    run"): it takes the data folder's lock (FolderBusyError names the process holding it) and
    recovers what a crash left. Without it the runtime only reads the queue and adds to it,
    beside an owner, and waits at most a second for it; workers start with `start_workers()`."""
    return Runtime(paths, settings, database=database, engine_factory=engine_factory, owner=owner)
