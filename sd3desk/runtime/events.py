"""What front doors hear from the runtime: frozen dataclasses with Enum fields. No front door
parses display text or compares strings to decide anything; it reads these fields."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import TYPE_CHECKING

from sd3desk.core.jobs import Eta, Job, JobState, estimate_etas

if TYPE_CHECKING:
    from PIL import Image


def _empty() -> Mapping:
    return MappingProxyType({})


class EngineStatus(Enum):
    """What a worker's engine is doing."""

    starting = "starting"  # importing the ML stack, picking the device
    loading = "loading"  # reading a model (stage n of m)
    ready = "ready"  # a model is loaded and nothing runs
    generating = "generating"
    failed = "failed"  # the last load failed (the engine itself lives on)


class Level(Enum):
    """How serious a notice is."""

    info = "info"
    warning = "warning"
    error = "error"


# ---------------------------------------------------------------------- announced by the runner


@dataclass(frozen=True)
class JobChanged:
    """A job was added or changed: the whole Job after the change, and its state before (None
    for a new job). A running job put back in the queue (the run was stopped) comes as
    `previous=running`, `job.state=queued`."""

    job: Job
    previous: JobState | None = None


@dataclass(frozen=True)
class StepProgress:
    """One denoising step of a running job, with the newest preview (None before one is ready)."""

    job_id: int
    step: int
    total: int
    elapsed_s: float  # since denoising began
    step_s: float  # this step alone
    preview: Image.Image | None = None


@dataclass(frozen=True)
class EngineState:
    """What one worker's engine is doing, for status lines. `text` describes it (the stage, the
    loaded model, or the failure); `job_id` names the job a failure belongs to (None for a
    preload), so a front door never needs to compare texts."""

    worker: int
    status: EngineStatus
    text: str
    stage: int = 0
    stages: int = 0
    notices: tuple[str, ...] = ()  # load notices when ready; prompt warnings when generating
    advice: str = ""  # when failed
    job_id: int | None = None
    model: str = ""  # the reference of the model being loaded or loaded (loading, ready)


@dataclass(frozen=True)
class QueueSnapshot:
    """The queue as it stands: running jobs, waiting jobs in order, the newest done jobs, the
    steps done per running job and the speeds the ETAs come from. Immutable, so any thread may
    read the runner's current one (`Runner.snapshot()`) without a lock or a database query."""

    running: tuple[Job, ...] = ()
    waiting: tuple[Job, ...] = ()
    done: tuple[Job, ...] = ()  # newest first
    paused: bool = False
    progress: Mapping[int, int] = field(default_factory=_empty)  # job id -> steps done
    live_rates: Mapping[str, float] = field(default_factory=_empty)  # measured this session
    timings: Mapping[str, float] = field(default_factory=_empty)  # stored from earlier runs

    @property
    def jobs(self) -> tuple[Job, ...]:
        """Running, then waiting in order, then done (newest first): the queue panel's rows."""
        return self.running + self.waiting + self.done

    @functools.cached_property
    def places(self) -> dict[int, int]:
        """Waiting job id -> its place (1 runs next)."""
        return {job.id: place for place, job in enumerate(self.waiting, start=1)}

    @functools.cached_property
    def etas(self) -> dict[int, Eta]:
        """Every running and waiting job's ETA (computed once per snapshot)."""
        return estimate_etas(
            self.running + self.waiting, self.progress, self.live_rates, self.timings
        )

    @functools.cached_property
    def _by_id(self) -> dict[int, Job]:
        return {job.id: job for job in self.jobs}

    def find(self, job_id: int) -> Job | None:
        return self._by_id.get(job_id)

    @property
    def busy(self) -> bool:
        return bool(self.running)


@dataclass(frozen=True)
class QueueChanged:
    """The queue's order, contents or pause state changed; `snapshot` is the new state."""

    snapshot: QueueSnapshot


@dataclass(frozen=True)
class Notice:
    """Something the user should know: what happened, what to do, and details for a report."""

    level: Level
    message: str
    advice: str = ""
    details: str = ""
    time: float = 0.0

    def text(self) -> str:
        return f"{self.message} — {self.advice}" if self.advice else self.message
