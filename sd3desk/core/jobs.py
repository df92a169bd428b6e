"""Jobs and the persistent JobQueue: explicit state transitions, ordering, ETA. No Qt, no torch."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any

from sd3desk.core.params import SEED_MAX, GenerationParams
from sd3desk.core.store import Store


class JobState(Enum):
    """Where a job is in its life. Only the transitions in TRANSITIONS are allowed."""

    queued = "queued"
    running = "running"
    finished = "finished"
    failed = "failed"
    cancelled = "cancelled"


TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.queued: frozenset({JobState.running, JobState.cancelled}),
    # running -> queued: put back after the app stopped during the job
    JobState.running: frozenset(
        {JobState.finished, JobState.failed, JobState.cancelled, JobState.queued}
    ),
    JobState.finished: frozenset(),
    JobState.failed: frozenset(),
    JobState.cancelled: frozenset(),
}
DONE = frozenset({JobState.finished, JobState.failed, JobState.cancelled})
CRASH_LIMIT = 2  # a job running during this many app stops is failed, never retried again


class SeedPolicy(Enum):
    """How N variations of one request pick their seeds."""

    fixed = "fixed"  # all the same seed (useful after changing another setting)
    increment = "increment"  # seed, seed + 1, ...
    random = "random"  # a fresh random seed each


class TransitionError(ValueError):
    """A job was asked to move to a state its current state does not allow."""


@dataclass(frozen=True)
class Job:
    """One queued request and everything that happened to it."""

    id: int
    params: GenerationParams
    state: JobState
    created: float
    started: float | None = None
    ended: float | None = None
    crashes: int = 0  # app stops while this job was running
    note: str = ""  # e.g. "interrupted: the app stopped during this job"
    error_kind: str = ""
    error_message: str = ""
    error_advice: str = ""
    outputs: tuple[str, ...] = ()
    sort_key: float = 0.0


@dataclass(frozen=True)
class Eta:
    """Seconds until a job is done; `estimated` when no timing for its model and size exists yet."""

    seconds: float
    estimated: bool


_COLUMNS = (
    "id, sort_key, state, params, created, started, ended, crashes, note, "
    "error_kind, error_message, error_advice, outputs"
)
FIRST_USE_SECONDS_PER_MEGAPIXEL_STEP = 1.0  # a deliberately rough first guess, marked as such


def _job(row: tuple) -> Job:
    (
        id_,
        sort_key,
        state,
        params,
        created,
        started,
        ended,
        crashes,
        note,
        kind,
        message,
        advice,
        outputs,
    ) = row
    return Job(
        id=id_,
        params=GenerationParams.from_dict(json.loads(params)),
        state=JobState(state),
        created=created,
        started=started,
        ended=ended,
        crashes=crashes,
        note=note,
        error_kind=kind,
        error_message=message,
        error_advice=advice,
        outputs=tuple(json.loads(outputs)),
        sort_key=sort_key,
    )


def timing_key(params: GenerationParams) -> str:
    return f"{params.model}|{params.width}x{params.height}"


class JobQueue:
    """The queue of generation jobs, persisted in the Store.

    Thread rule: call it only from the thread that owns the Store (the GUI thread); workers
    report through signals and never touch it. Every method commits before it returns.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.db = store.db
        self.notices: list[str] = list(store.notices)
        self._recover()

    # ------------------------------------------------------------------ persistence helpers

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _recover(self) -> None:
        """Jobs the last process left running go back to the front, marked interrupted; one that
        was running during CRASH_LIMIT stops is failed so it can never crash-loop the app."""
        running = self._select("WHERE state = 'running' ORDER BY sort_key")
        if not running:
            return
        front = self._front_key()
        with self._transaction():
            for offset, job in enumerate(reversed(running)):
                crashes = job.crashes + 1
                if crashes >= CRASH_LIMIT:
                    self._update(
                        job,
                        JobState.failed,
                        crashes=crashes,
                        ended=self.store.clock(),
                        error_kind="crash",
                        error_message="the app stopped twice during this job",
                        error_advice="check its settings (size, batch) and re-queue it if wanted",
                    )
                    self.notices.append(f"Job {job.id} failed: the app stopped twice during it.")
                else:
                    self._update(
                        job,
                        JobState.queued,
                        crashes=crashes,
                        started=None,
                        sort_key=front - 1 - offset,
                        note="interrupted: the app stopped during this job",
                    )

    def _select(self, where: str, args: tuple = ()) -> list[Job]:
        rows = self.db.execute(f"SELECT {_COLUMNS} FROM jobs {where}", args).fetchall()
        return [_job(row) for row in rows]

    def _front_key(self) -> float:
        row = self.db.execute("SELECT MIN(sort_key) FROM jobs WHERE state = 'queued'").fetchone()
        return row[0] if row[0] is not None else 0.0

    def _back_key(self) -> float:
        row = self.db.execute("SELECT MAX(sort_key) FROM jobs").fetchone()
        return (row[0] if row[0] is not None else 0.0) + 1

    def _update(self, job: Job, state: JobState | None = None, **fields: Any) -> Job:
        if state is not None and state is not job.state:
            if state not in TRANSITIONS[job.state]:
                raise TransitionError(
                    f"job {job.id} cannot go from {job.state.value} to {state.value}"
                )
            fields["state"] = state
        if not fields:
            return job
        columns = {
            k: (v.value if isinstance(v, Enum) else json.dumps(list(v)) if k == "outputs" else v)
            for k, v in fields.items()
        }
        assignments = ", ".join(f"{k} = ?" for k in columns)
        self.db.execute(f"UPDATE jobs SET {assignments} WHERE id = ?", (*columns.values(), job.id))
        return dataclasses.replace(job, **fields)

    # ------------------------------------------------------------------ reading

    def get(self, job_id: int) -> Job:
        jobs = self._select("WHERE id = ?", (job_id,))
        if not jobs:
            raise KeyError(f"no job {job_id}")
        return jobs[0]

    def jobs(self) -> list[Job]:
        """All jobs: running first, then queued in order, then done ones newest first."""
        active = self._select(
            "WHERE state IN ('running', 'queued') ORDER BY state = 'queued', sort_key"
        )
        done = self._select("WHERE state NOT IN ('running', 'queued') ORDER BY ended DESC, id DESC")
        return active + done

    def queued(self) -> list[Job]:
        return self._select("WHERE state = 'queued' ORDER BY sort_key")

    def running(self) -> list[Job]:
        return self._select("WHERE state = 'running' ORDER BY started")

    def position(self, job_id: int) -> int | None:
        """1 for the next job to run; None when the job is not waiting."""
        ids = [j.id for j in self.queued()]
        return ids.index(job_id) + 1 if job_id in ids else None

    @property
    def paused(self) -> bool:
        return self.store.get_meta("paused") == "1"

    def next_job(self) -> Job | None:
        """The job a free worker should take, or None (empty or paused)."""
        if self.paused:
            return None
        jobs = self._select("WHERE state = 'queued' ORDER BY sort_key LIMIT 1")
        return jobs[0] if jobs else None

    # ------------------------------------------------------------------ adding

    def enqueue(self, params: GenerationParams, front: bool = False) -> Job:
        """Add a job (its seed made concrete now, so the saved image can be re-made)."""
        params = params.with_concrete_seed()
        key = self._front_key() - 1 if front else self._back_key()
        cursor = self.db.execute(
            "INSERT INTO jobs (sort_key, state, params, created) VALUES (?, 'queued', ?, ?)",
            (key, json.dumps(params.to_dict()), self.store.clock()),
        )
        return self.get(int(cursor.lastrowid or 0))

    def enqueue_variations(
        self, params: GenerationParams, count: int, policy: SeedPolicy = SeedPolicy.increment
    ) -> list[Job]:
        if not 1 <= count <= 1000:
            raise ValueError("count must be between 1 and 1000")
        import secrets  # here, not at the top: the window starts faster without it

        base = params.with_concrete_seed()
        assert base.seed is not None
        seeds = {
            SeedPolicy.fixed: lambda k: base.seed,
            SeedPolicy.increment: lambda k: (base.seed + k * base.batch_size) % (SEED_MAX + 1),
            SeedPolicy.random: lambda k: base.seed if k == 0 else secrets.randbelow(SEED_MAX + 1),
        }[policy]
        with self._transaction():
            return [self.enqueue(base.replace(seed=seeds(k))) for k in range(count)]

    def duplicate(self, job_id: int) -> Job:
        """Queue the same request again, right after the original when it is still waiting."""
        job = self.get(job_id)
        copy = self.enqueue(job.params)
        if job.state is JobState.queued:
            later = [j for j in self.queued() if j.sort_key > job.sort_key and j.id != copy.id]
            key = (job.sort_key + later[0].sort_key) / 2 if later else job.sort_key + 1
            copy = self._update(copy, sort_key=key)
        return copy

    # ------------------------------------------------------------------ ordering and control

    def move(self, job_id: int, where: str) -> None:
        """Move a queued job "up", "down" or to the "top"."""
        queued = self.queued()
        ids = [j.id for j in queued]
        if job_id not in ids:
            raise TransitionError(f"job {job_id} is not waiting, so it cannot be moved")
        i = ids.index(job_id)
        if where == "top":
            if i:
                self._update(queued[i], sort_key=queued[0].sort_key - 1)
            return
        j = {"up": i - 1, "down": i + 1}[where]
        if 0 <= j < len(queued):
            with self._transaction():
                self._update(queued[i], sort_key=queued[j].sort_key)
                self._update(queued[j], sort_key=queued[i].sort_key)

    def move_to(self, job_id: int, index: int) -> None:
        """Put a queued job at 0-based `index` among the waiting jobs (drag and drop)."""
        queued = [j for j in self.queued() if j.id != job_id]
        job = self.get(job_id)
        if job.state is not JobState.queued:
            raise TransitionError(f"job {job_id} is not waiting, so it cannot be moved")
        index = max(0, min(index, len(queued)))
        if not queued:
            return
        if index == 0:
            key = queued[0].sort_key - 1
        elif index == len(queued):
            key = queued[-1].sort_key + 1
        else:
            key = (queued[index - 1].sort_key + queued[index].sort_key) / 2
        self._update(job, sort_key=key)

    def place(self, job_ids: list[int], index: int) -> None:
        """Put waiting jobs, in the given order, at 0-based `index` among the other waiting jobs
        (dropping several dragged jobs). Jobs that are no longer waiting are left where they are."""
        queued = self.queued()
        waiting = {j.id for j in queued}
        moved = [i for i in dict.fromkeys(job_ids) if i in waiting]
        if not moved:
            return
        others = [j.id for j in queued if j.id not in moved]
        index = max(0, min(index, len(others)))
        order = others[:index] + moved + others[index:]
        keys = sorted(j.sort_key for j in queued)  # reuse the keys: the order moves, not the span
        by_id = {j.id: j for j in queued}
        with self._transaction():
            for job_id, key in zip(order, keys, strict=True):
                if by_id[job_id].sort_key != key:
                    self._update(by_id[job_id], sort_key=key)

    def set_paused(self, paused: bool) -> None:
        """Pause or resume; remembered across restarts (a paused queue stays paused)."""
        self.store.set_meta("paused", "1" if paused else "0")

    def cancel_queued(self, job_id: int) -> Job:
        return self._update(self.get(job_id), JobState.cancelled, ended=self.store.clock())

    def clear_finished(self) -> int:
        """Forget finished, failed and cancelled jobs (their images stay on disk)."""
        cursor = self.db.execute(
            "DELETE FROM jobs WHERE state IN ('finished', 'failed', 'cancelled')"
        )
        return cursor.rowcount

    # ------------------------------------------------------------------ worker reports

    def mark_running(self, job_id: int) -> Job:
        return self._update(self.get(job_id), JobState.running, started=self.store.clock())

    def mark_finished(self, job_id: int, outputs: list[str]) -> Job:
        return self._update(
            self.get(job_id), JobState.finished, ended=self.store.clock(), outputs=tuple(outputs)
        )

    def mark_failed(self, job_id: int, kind: str, message: str, advice: str = "") -> Job:
        return self._update(
            self.get(job_id),
            JobState.failed,
            ended=self.store.clock(),
            error_kind=kind,
            error_message=message,
            error_advice=advice,
        )

    def requeue_front(self, job_id: int, note: str) -> Job:
        """Put a running job back at the front (the runner was stopped, not the job)."""
        job = self.get(job_id)
        return self._update(
            job, JobState.queued, started=None, sort_key=self._front_key() - 1, note=note
        )

    def mark_cancelled(self, job_id: int) -> Job:
        return self._update(self.get(job_id), JobState.cancelled, ended=self.store.clock())

    # ------------------------------------------------------------------ timing and ETA

    def record_timing(self, params: GenerationParams, seconds_per_step: float) -> None:
        """Fold one measured job into the rolling seconds-per-step of its model and size."""
        key = timing_key(params)
        per_image = seconds_per_step / max(params.batch_size, 1)
        row = self.db.execute(
            "SELECT seconds_per_step, samples FROM timings WHERE key = ?", (key,)
        ).fetchone()
        value = per_image if row is None else 0.7 * row[0] + 0.3 * per_image
        self.db.execute(
            "INSERT INTO timings (key, seconds_per_step, samples) VALUES (?, ?, 1) "
            "ON CONFLICT(key) DO UPDATE SET seconds_per_step = ?, samples = samples + 1",
            (key, value, value),
        )

    def seconds_per_step(self, params: GenerationParams) -> tuple[float, bool]:
        """Measured seconds per step per image for this model and size; else a marked estimate
        scaled by pixel count from any measurement of the same model."""
        row = self.db.execute(
            "SELECT seconds_per_step FROM timings WHERE key = ?", (timing_key(params),)
        ).fetchone()
        if row:
            return row[0], False
        megapixels = params.width * params.height / 1e6
        rows = self.db.execute(
            "SELECT key, seconds_per_step FROM timings WHERE key LIKE ?", (f"{params.model}|%",)
        ).fetchall()
        for key, value in rows:
            width, height = (int(v) for v in key.rsplit("|", 1)[1].split("x"))
            return value * megapixels / (width * height / 1e6), True
        return FIRST_USE_SECONDS_PER_MEGAPIXEL_STEP * megapixels, True

    def eta(self, job_id: int, running_progress: dict[int, int] | None = None) -> Eta | None:
        """Time until `job_id` is done: the rest of the running jobs plus every job before it."""
        if self.get(job_id).state in DONE:
            return None
        return self.etas(running_progress).get(job_id)

    def etas(
        self,
        running_progress: dict[int, int] | None = None,
        live_rates: dict[str, float] | None = None,
    ) -> dict[int, Eta]:
        """The ETA of every running and waiting job, in one pass (for the queue panel).
        `live_rates` (seconds per step per image by `timing_key`, measured on the running job)
        take precedence over the stored timings: they are this run's, on this device."""
        running_progress = running_progress or {}
        out: dict[int, Eta] = {}
        total, estimated = 0.0, False
        rates = {key: (rate, False) for key, rate in (live_rates or {}).items()}
        for job in [*self.running(), *self.queued()]:
            key = timing_key(job.params)
            if key not in rates:
                rates[key] = self.seconds_per_step(job.params)
            per_step, guessed = rates[key]
            steps_left = job.params.steps - running_progress.get(job.id, 0)
            total += per_step * steps_left * job.params.batch_size
            estimated = estimated or guessed
            out[job.id] = Eta(total, estimated)
        return out
