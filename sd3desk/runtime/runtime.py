"""The Runtime: the one object every front door builds (window, CLI, self-test) and talks to.

It owns the Store, the JobQueue (through the Runner, its only writer), the workers, the model
catalog and the notices, and turns what happens to jobs and engines into notices, so no front
door translates failures itself.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from sd3desk.core.errors import SD3DeskError
from sd3desk.core.gallery import GalleryIndex
from sd3desk.core.jobs import JobQueue, JobState
from sd3desk.core.settings import AppPaths, Settings, env_model_dirs
from sd3desk.core.store import Store
from sd3desk.runtime.catalog import ModelCatalog
from sd3desk.runtime.events import EngineState, EngineStatus, JobChanged
from sd3desk.runtime.notices import NoticeLog
from sd3desk.runtime.runner import Runner

if TYPE_CHECKING:  # the worker module is imported when workers start, after the first frame
    from sd3desk.runtime.worker import EngineFactory, WorkerConfig

log = logging.getLogger(__name__)
IN_MEMORY = ":memory:"  # a queue that lives only as long as the process (`sd3desk generate`)


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
    ) -> None:
        # 1. folders and the database (crash recovery runs as the queue opens)
        self.paths = paths
        self.settings = settings
        # The output folder is fixed for the runtime's life (a change applies at the next start).
        self.out_dir = Path(settings.output_dir or paths.outputs)
        for folder in (paths.data, paths.config, paths.cache):
            folder.mkdir(parents=True, exist_ok=True)
        self.store = Store(database if database is not None else paths.database)
        queue = JobQueue(self.store)
        # 2. the notices: what opening the database and the queue found
        self.notices = NoticeLog()
        for text in self.store.notices:
            self.notices.warning(text)
        for job in queue.recovered:
            if job.state is JobState.failed:
                self.notices.error(f"Job #{job.id} failed: {job.error_message}", job.error_advice)
            else:
                self.notices.info(f"Job #{job.id} was interrupted; it runs again first")
        # 3. the runner (commands work from now on), the model catalog
        self.runner = Runner(queue)
        self.catalog = ModelCatalog(self.model_dirs())
        # 4. the gallery index: every finished image is in it at once, whichever door asked
        self.gallery = GalleryIndex(self.store, self.out_dir)
        self._engine_factory = engine_factory
        self.runner.job_changed.connect(self._on_runner_job_changed)
        self.runner.engine_state_changed.connect(self._on_runner_engine_state_changed)
        self._stopped = False

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
            device_index=index,
            use_t5=s.use_t5,
        )

    # ------------------------------------------------------------------ life

    def start_workers(self) -> None:
        """Make the workers (idle threads until a job or a preload arrives) and let them take
        the waiting jobs. Leftovers of a crash are swept from the output folder first."""
        from sd3desk.core.outputs import sweep_stale_temp_files
        from sd3desk.runtime.worker import Worker, default_engine_factory

        if self.runner.workers or self._stopped:
            return
        try:
            sweep_stale_temp_files(self.out_dir)
        except OSError as exc:
            self.notices.warning(f"The output folder cannot be read ({exc})", str(self.out_dir))
        factory = self._engine_factory or default_engine_factory
        count = max(1, self.settings.gpu_workers)
        self.runner.attach_workers(
            [Worker(i, self.worker_config(i), factory) for i in range(count)]
        )

    def stop(self) -> None:
        """Running jobs go back to the front of the queue; workers stop within a step."""
        if self._stopped:
            return
        self._stopped = True
        self.runner.halt()
        self.runner.stop()

    def apply_settings(self, settings: Settings) -> bool:
        """Take new settings; returns whether the loaded model must be reloaded for them (the
        device, memory plan, T5 or model folders changed). The output folder and the number of
        workers apply at the next start."""
        old, self.settings = self.settings, settings
        engine_fields = ("device", "memory_plan", "use_t5", "model_dirs")
        changed = any(getattr(old, f) != getattr(settings, f) for f in engine_fields)
        if changed:
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
) -> Runtime:
    """The runtime for `paths` and `settings`: the data folder's queue, or a queue in memory
    with `database=IN_MEMORY`. Workers start with `start_workers()`."""
    return Runtime(paths, settings, database=database, engine_factory=engine_factory)
