"""Jobs and the persistent JobQueue: explicit state transitions, ordering, ETA. No Qt, no torch."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from sd3desk.core.metadata import JobRef
from sd3desk.core.outputs import saved_by
from sd3desk.core.params import GenerationParams
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


class FailureKind(Enum):
    """Why a job failed; front doors choose exit codes and advice by it, never by its text."""

    out_of_memory = "out_of_memory"
    model = "model"  # the model cannot be found, read or loaded
    invalid = "invalid"  # the request does not fit the model (e.g. its size limit)
    crash = "crash"  # the app stopped during this job too often
    storage = "storage"  # its images could not be written (full disk, read-only folder)
    error = "error"  # anything else (details in the log)


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
    error_kind: FailureKind | None = None
    error_message: str = ""
    error_advice: str = ""
    outputs: tuple[str, ...] = ()
    sort_key: float = 0.0
    source: str = ""  # the front door it came through: "window", "cli", "web", "a1111", "api"
    client: str = ""  # for jobs from the network: the address that sent it
    planned: tuple[str, ...] = ()  # where its images land, decided when it is handed out
    generating: bool = False  # its model was loaded and denoising began (crashes count then)


@dataclass(frozen=True)
class LoadCrash:
    """The app died while loading `model`, the `times`-th time in a row."""

    model: str
    times: int

    @property
    def paused(self) -> bool:
        """The queue was paused for it (CRASH_LIMIT reached)."""
        return self.times >= CRASH_LIMIT


@dataclass(frozen=True)
class Eta:
    """Seconds until a job is done; `estimated` when no timing for its model and size exists yet."""

    seconds: float
    estimated: bool


_COLUMNS = (
    "id, sort_key, state, params, created, started, ended, crashes, note, "
    "error_kind, error_message, error_advice, outputs, source, client, planned, generating"
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
        source,
        client,
        planned,
        generating,
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
        error_kind=FailureKind(kind) if kind else None,
        error_message=message,
        error_advice=advice,
        outputs=tuple(json.loads(outputs)),
        sort_key=sort_key,
        source=source,
        client=client,
        planned=tuple(json.loads(planned)),
        generating=bool(generating),
    )


def timing_key(params: GenerationParams) -> str:
    return f"{params.model}|{params.width}x{params.height}"


class JobQueue:
    """The queue of generation jobs, persisted in the Store.

    Thread rule: call it only from the thread that owns the Store (the GUI thread); workers
    report through signals and never touch it. Every method commits before it returns.
    """

    def __init__(self, store: Store, *, recover: bool = True) -> None:
        self.store = store
        self.db = store.db
        self._uid = ""
        # What the last process left behind; only the queue's owner looks (`recover`):
        # - the jobs it left running, as recovery left them: finished (their images had been
        #   saved), queued again (interrupted) or failed (FailureKind.crash);
        # - the model it was loading when it died, if it was.
        self.load_crash: LoadCrash | None = None
        self.recovered: list[Job] = []
        if recover:
            self.load_crash = self._recover_load()
            self.recovered = self._recover()

    @property
    def uid(self) -> str:
        """This queue's own id, written into every image it makes (see `JobRef`)."""
        if not self._uid:
            self._uid = self.store.get_meta("queue_uid")
            if not self._uid:
                import uuid

                self._uid = uuid.uuid4().hex
                self.store.set_meta("queue_uid", self._uid)
        return self._uid

    def job_ref(self, job: Job, image: int) -> JobRef:
        return JobRef(self.uid, job.id, image)

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

    def _recover(self) -> list[Job]:
        """Jobs the last process left running. One whose images were all saved is finished
        with them (they are never made twice). One that was stopped while denoising goes back
        to the front, marked interrupted, or is failed when that happened CRASH_LIMIT times,
        so it can never crash-loop the app. One that never got past loading its model goes
        back to the front as it was (the crash counts against the model, `_recover_load`)."""
        running = self._select("WHERE state = 'running' ORDER BY sort_key")
        recovered: list[Job] = []
        if not running:
            return recovered
        front = self._front_key()
        with self._transaction():
            for offset, job in enumerate(reversed(running)):
                refs = [self.job_ref(job, k) for k in range(len(job.planned))]
                saved = [saved_by(Path(p), ref) for p, ref in zip(job.planned, refs, strict=True)]
                if job.planned and all(saved):
                    job = self._update(
                        job,
                        JobState.finished,
                        ended=self.store.clock(),
                        outputs=job.planned,
                        note="finished: its images were saved just before the app stopped",
                    )
                elif job.generating and job.crashes + 1 >= CRASH_LIMIT:
                    job = self._update(
                        job,
                        JobState.failed,
                        crashes=job.crashes + 1,
                        ended=self.store.clock(),
                        error_kind=FailureKind.crash,
                        error_message="the app stopped twice during this job",
                        error_advice="check its settings (size, batch) and re-queue it if wanted",
                    )
                else:
                    job = self._update(
                        job,
                        JobState.queued,
                        crashes=job.crashes + job.generating,
                        started=None,
                        generating=False,
                        sort_key=front - 1 - offset,
                        note="interrupted: the app stopped during this job"
                        if job.generating
                        else "interrupted: the app stopped while its model loaded",
                    )
                recovered.append(job)
        return recovered[::-1]

    def _recover_load(self) -> LoadCrash | None:
        """The model the last process died loading, counted; the queue is paused once one has
        done that CRASH_LIMIT times in a row, so starting the app cannot crash-loop it."""
        model = self.store.get_meta("loading")
        if not model:
            return None
        counts = self._load_crashes()
        counts[model] = counts.get(model, 0) + 1
        with self._transaction():
            self.store.set_meta("load_crashes", json.dumps(counts))
            self.store.set_meta("loading", "")
            if counts[model] >= CRASH_LIMIT:
                self.set_paused(True)
        return LoadCrash(model, counts[model])

    def _load_crashes(self) -> dict[str, int]:
        try:
            found = json.loads(self.store.get_meta("load_crashes") or "{}")
        except ValueError:
            return {}
        return {str(k): int(v) for k, v in found.items()} if isinstance(found, dict) else {}

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
        columns = {k: _column(k, v) for k, v in fields.items()}
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

    def data_version(self) -> int:
        """Changes whenever another connection (another process) commits to the database."""
        return int(self.db.execute("PRAGMA data_version").fetchone()[0])

    def recent_done(self, limit: int = -1) -> list[Job]:
        """The newest `limit` finished, failed and cancelled jobs (-1: all), newest first."""
        return self._select(
            "WHERE state NOT IN ('running', 'queued') ORDER BY ended DESC, id DESC LIMIT ?",
            (limit,),
        )

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

    def enqueue(
        self, params: GenerationParams, front: bool = False, source: str = "", client: str = ""
    ) -> Job:
        """Add a job (its seed made concrete now, so the saved image can be re-made)."""
        params = params.with_concrete_seed()
        key = self._front_key() - 1 if front else self._back_key()
        cursor = self.db.execute(
            "INSERT INTO jobs (sort_key, state, params, created, source, client) "
            "VALUES (?, 'queued', ?, ?, ?, ?)",
            (key, json.dumps(params.to_dict()), self.store.clock(), source, client),
        )
        return self.get(int(cursor.lastrowid or 0))

    def enqueue_many(
        self,
        requests: list[GenerationParams],
        front: bool = False,
        source: str = "",
        client: str = "",
    ) -> list[Job]:
        """Add several jobs in one transaction, in the given order (at the front: still in
        that order, before every waiting job)."""
        with self._transaction():
            if not front:
                return [self.enqueue(p, False, source, client) for p in requests]
            return [self.enqueue(p, True, source, client) for p in reversed(requests)][::-1]

    def duplicate(self, job_id: int) -> Job:
        """Queue the same request again, right after the original when it is still waiting."""
        job = self.get(job_id)
        copy = self.enqueue(job.params, source=job.source, client=job.client)
        if job.state is JobState.queued:
            later = [j for j in self.queued() if j.sort_key > job.sort_key and j.id != copy.id]
            key = (job.sort_key + later[0].sort_key) / 2 if later else job.sort_key + 1
            copy = self._update(copy, sort_key=key)
        return copy

    # ------------------------------------------------------------------ ordering and control

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

    def clear_finished(self) -> int:
        """Forget finished, failed and cancelled jobs (their images stay on disk)."""
        cursor = self.db.execute(
            "DELETE FROM jobs WHERE state IN ('finished', 'failed', 'cancelled')"
        )
        return cursor.rowcount

    # ------------------------------------------------------------------ worker reports

    def mark_running(self, job_id: int, planned: Sequence[str] = ()) -> Job:
        """Hand a job out. `planned` are its images' paths; a job that has some already (it was
        interrupted) keeps them, so what it saved before is found again."""
        job = self.get(job_id)
        fields: dict[str, Any] = {"started": self.store.clock()}
        if planned and not job.planned:
            fields["planned"] = tuple(planned)
        return self._update(job, JobState.running, **fields)

    def mark_generating(self, job_id: int) -> Job:
        """The job's model is loaded and denoising begins: from now on a crash is the job's."""
        return self._update(self.get(job_id), generating=True)

    def mark_finished(self, job_id: int, outputs: list[str]) -> Job:
        return self._update(
            self.get(job_id), JobState.finished, ended=self.store.clock(), outputs=tuple(outputs)
        )

    def mark_failed(self, job_id: int, kind: FailureKind, message: str, advice: str = "") -> Job:
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
            job,
            JobState.queued,
            started=None,
            generating=False,
            sort_key=self._front_key() - 1,
            note=note,
        )

    def mark_cancelled(self, job_id: int) -> Job:
        """A waiting job cancelled by the user, or a running one that stopped on a cancel."""
        return self._update(self.get(job_id), JobState.cancelled, ended=self.store.clock())

    # ------------------------------------------------------------------ model loads

    def loading(self, model: str) -> None:
        """A worker starts loading `model`: if the process dies now, it is the model's doing."""
        self.store.set_meta("loading", model)

    def loaded(self, model: str, ok: bool) -> None:
        """The load ended, loaded (`ok`: the model's crash count starts over) or refused."""
        self.store.set_meta("loading", "")
        counts = self._load_crashes()
        if ok and counts.pop(model, None) is not None:
            self.store.set_meta("load_crashes", json.dumps(counts))

    def load_crashes(self, model: str) -> int:
        """How often in a row the app died while loading `model`."""
        return self._load_crashes().get(model, 0)

    # ------------------------------------------------------------------ timing and ETA

    def record_timing(self, params: GenerationParams, seconds_per_step: float) -> float:
        """Fold one measured job into the rolling seconds-per-step per image of its model and
        size; returns the new value."""
        key = timing_key(params)
        per_image = seconds_per_step / max(params.batch_size, 1)
        row = self.db.execute(
            "SELECT seconds_per_step FROM timings WHERE key = ?", (key,)
        ).fetchone()
        value = per_image if row is None else 0.7 * row[0] + 0.3 * per_image
        self.db.execute(
            "INSERT INTO timings (key, seconds_per_step, samples) VALUES (?, ?, 1) "
            "ON CONFLICT(key) DO UPDATE SET seconds_per_step = ?, samples = samples + 1",
            (key, value, value),
        )
        return value

    def timings(self) -> dict[str, float]:
        """Every stored seconds-per-step per image, by `timing_key` (a small table)."""
        return dict(self.db.execute("SELECT key, seconds_per_step FROM timings").fetchall())

    def etas(
        self,
        running_progress: dict[int, int] | None = None,
        live_rates: dict[str, float] | None = None,
    ) -> dict[int, Eta]:
        """The ETA of every running and waiting job (see `estimate_etas`)."""
        jobs = [*self.running(), *self.queued()]
        return estimate_etas(jobs, running_progress or {}, live_rates or {}, self.timings())


def _column(name: str, value: Any) -> Any:
    """A Job field as stored in its SQLite column."""
    if name in ("outputs", "planned"):
        return json.dumps(list(value))
    if isinstance(value, Enum):
        return value.value
    return "" if value is None and name == "error_kind" else value


def seconds_per_step(params: GenerationParams, timings: Mapping[str, float]) -> tuple[float, bool]:
    """Measured seconds per step per image for this model and size, and whether it is only an
    estimate: scaled by pixel count from another size of the same model, or a first-use guess."""
    key = timing_key(params)
    if key in timings:
        return timings[key], False
    megapixels = params.width * params.height / 1e6
    prefix = f"{params.model}|"
    for other, value in timings.items():
        if other.startswith(prefix):
            width, height = (int(v) for v in other[len(prefix) :].split("x"))
            return value * megapixels / (width * height / 1e6), True
    return FIRST_USE_SECONDS_PER_MEGAPIXEL_STEP * megapixels, True


def estimate_etas(
    jobs: Iterable[Job],
    running_progress: Mapping[int, int],
    live_rates: Mapping[str, float],
    timings: Mapping[str, float],
) -> dict[int, Eta]:
    """Seconds until each job is done, for `jobs` in the order they run (running first):
    the rest of every job before it plus its own steps. `live_rates` (seconds per step per
    image by `timing_key`, measured on a running job this session) take precedence over the
    stored `timings`: they are this run's, on this device."""
    out: dict[int, Eta] = {}
    total, estimated = 0.0, False
    rates = {key: (rate, False) for key, rate in live_rates.items()}
    for job in jobs:
        key = timing_key(job.params)
        if key not in rates:
            rates[key] = seconds_per_step(job.params, timings)
        per_step, guessed = rates[key]
        steps_left = job.params.steps - running_progress.get(job.id, 0)
        total += per_step * steps_left * job.params.batch_size
        estimated = estimated or guessed
        out[job.id] = Eta(total, estimated)
    return out
