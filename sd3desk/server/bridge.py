"""Carries the runtime's events to the server's threads: who waits for which job, the newest step
of each running job (with its preview), and the event streams of connected clients."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Sequence
from concurrent.futures import Future, InvalidStateError
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from fastapi.concurrency import run_in_threadpool
from PySide6.QtCore import QObject, Slot

from sd3desk.core.jobs import DONE, Job
from sd3desk.runtime.events import EngineState, JobChanged, QueueChanged, StepProgress
from sd3desk.runtime.runtime import Runtime

STREAM_BACKLOG = 500  # events a slow client may fall behind by before it misses some


@dataclass(frozen=True)
class StreamEvent:
    """One message of the event stream: its name and a JSON-ready body."""

    name: str
    data: dict[str, Any]


class RuntimeBridge(QObject):
    """Listens to the runner on the runtime's thread; everything else is for server threads.

    Thread rule: made on the runtime's thread (its slots run there). `wait_for`, `latest_step`,
    `subscribe` and `unsubscribe` may be called from any thread.
    """

    def __init__(self, runtime: Runtime) -> None:
        super().__init__()
        self.runtime = runtime
        self._lock = threading.Lock()
        self._waiters: dict[int, list[Future]] = {}
        self._steps: dict[int, StepProgress] = {}
        self._streams: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = []
        self._closed = False
        self.engine: EngineState | None = None
        runner = runtime.runner
        runner.job_changed.connect(self._on_runner_job_changed)
        runner.step_progressed.connect(self._on_runner_step_progressed)
        runner.engine_state_changed.connect(self._on_runner_engine_state_changed)
        runner.queue_changed.connect(self._on_runner_queue_changed)

    # ------------------------------------------------------------------ any thread

    def wait_for(self, job_ids: Sequence[int], timeout: float | None = None) -> list[Job]:
        """Block until every job is finished, failed or cancelled; returns them in order.
        Raises TimeoutError. (Not on the runtime's thread: its events would never arrive.)"""
        futures = self._watch(job_ids)
        try:
            self._check(futures)
            return [future.result(timeout=timeout) for _, future in futures]
        except FutureTimeout:
            raise TimeoutError("the jobs did not finish in time") from None
        finally:
            self._unwatch(futures)

    async def wait_async(self, job_ids: Sequence[int]) -> list[Job]:
        """`wait_for` for a coroutine: the wait holds no thread, so any number of requests can
        wait for their jobs while the server's threads answer everything else."""
        futures = self._watch(job_ids)
        try:
            await run_in_threadpool(self._check, futures)  # (it may ask the runtime's thread)
            return [await asyncio.wrap_future(future) for _, future in futures]
        finally:
            self._unwatch(futures)

    def _watch(self, job_ids: Sequence[int]) -> list[tuple[int, Future]]:
        futures = []
        with self._lock:
            for job_id in job_ids:
                future: Future = Future()
                self._waiters.setdefault(job_id, []).append(future)
                futures.append((job_id, future))
        return futures

    def _check(self, futures: list[tuple[int, Future]]) -> None:
        """A job may have ended before its waiter was in place: ask the runner once."""
        for job_id, _future in futures:
            job = self.runtime.runner.job(job_id)
            if job is None or job.state in DONE:
                self._resolve(job_id, job)

    def _unwatch(self, futures: list[tuple[int, Future]]) -> None:
        with self._lock:
            for job_id, future in futures:
                waiting = self._waiters.get(job_id, [])
                if future in waiting:
                    waiting.remove(future)
                if not waiting:
                    self._waiters.pop(job_id, None)

    def latest_step(self, job_id: int) -> StepProgress | None:
        return self._steps.get(job_id)

    def subscribe(self) -> asyncio.Queue:
        """An event queue for the calling asyncio loop (an event-stream client)."""
        queue: asyncio.Queue = asyncio.Queue(STREAM_BACKLOG)
        with self._lock:
            if self._closed:
                queue.put_nowait(None)  # the server is stopping: the stream ends at once
            else:
                self._streams.append((asyncio.get_running_loop(), queue))
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        with self._lock:
            self._streams = [(loop, q) for loop, q in self._streams if q is not queue]

    def close(self) -> None:
        """End every event stream: the server is stopping."""
        with self._lock:
            self._closed = True
            streams, self._streams = self._streams, []
        for loop, queue in streams:
            with contextlib.suppress(RuntimeError):  # (that client's loop has closed)
                loop.call_soon_threadsafe(_end, queue)

    # ------------------------------------------------------------------ runtime thread

    def _resolve(self, job_id: int, job: Job | None) -> None:
        with self._lock:
            futures = self._waiters.pop(job_id, [])
        for future in futures:
            # (a waiter cancelled meanwhile on the server's loop: nothing to tell it)
            with contextlib.suppress(InvalidStateError):
                if job is None:
                    future.set_exception(KeyError(f"no job {job_id}"))
                else:
                    future.set_result(job)

    def _publish(self, event: StreamEvent) -> None:
        with self._lock:
            streams = list(self._streams)
        for loop, queue in streams:
            try:
                loop.call_soon_threadsafe(_offer, queue, event)
            except RuntimeError:  # that client's loop has closed
                self.unsubscribe(queue)

    @Slot(object)
    def _on_runner_job_changed(self, event: JobChanged) -> None:
        job = event.job
        if job.state in DONE:
            self._steps.pop(job.id, None)
            self._resolve(job.id, job)
        self._publish(StreamEvent("job", {"id": job.id, "state": job.state.value}))

    @Slot(object)
    def _on_runner_step_progressed(self, event: StepProgress) -> None:
        self._steps[event.job_id] = event
        data = {"id": event.job_id, "step": event.step, "total": event.total}
        self._publish(StreamEvent("step", data))

    @Slot(object)
    def _on_runner_engine_state_changed(self, state: EngineState) -> None:
        self.engine = state
        data = {"status": state.status.value, "text": state.text, "model": state.model}
        self._publish(StreamEvent("engine", data))

    @Slot(object)
    def _on_runner_queue_changed(self, event: QueueChanged) -> None:
        snapshot = event.snapshot
        data = {
            "paused": snapshot.paused,
            "running": [j.id for j in snapshot.running],
            "waiting": [j.id for j in snapshot.waiting],
        }
        self._publish(StreamEvent("queue", data))


def _offer(queue: asyncio.Queue, event: StreamEvent) -> None:
    """On the client's loop: a client too slow to read misses events rather than stall all."""
    if not queue.full():
        queue.put_nowait(event)


def _end(queue: asyncio.Queue) -> None:
    """On the client's loop: None tells its stream to end (room is made for it)."""
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(None)
