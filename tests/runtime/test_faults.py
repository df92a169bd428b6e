"""Faults around the queue, on the real runtime and the tiny model: a second owner, a full or
read-only disk for the images, a database that can no longer be written, an unusable data
folder. Each ends in words (and a paused or stopped queue), never a traceback, a hang or a
lost job."""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from sd3desk.core import atomic
from sd3desk.core.errors import ExitCode, FolderBusyError, StoreError
from sd3desk.core.jobs import FailureKind, JobQueue, JobState
from sd3desk.core.params import GenerationParams
from sd3desk.core.settings import AppPaths, Device, Settings
from sd3desk.core.store import Store
from sd3desk.runtime.runtime import Runtime, build_runtime

TIMEOUT = 60_000


@pytest.fixture
def runtimes(tmp_path):
    made: list[Runtime] = []

    def make(owner: str = "the window", **settings) -> Runtime:
        settings = Settings(device=Device.cpu, **settings)
        made.append(build_runtime(AppPaths.default(tmp_path / "data"), settings, owner=owner))
        return made[-1]

    yield make
    for runtime in made:
        runtime.stop()


def request(model: Path, **changes) -> GenerationParams:
    base = GenerationParams("a fox", seed=5, steps=2, width=256, height=256, model=str(model))
    return base.replace(**changes)


def settled(runtime: Runtime, *job_ids: int) -> bool:
    return (
        all(
            (job := runtime.runner.job(j)) is not None and job.state is not JobState.running
            for j in job_ids
        )
        and not runtime.runner.snapshot().running
    )


def test_one_process_runs_a_data_folder_others_only_add(runtimes, tmp_path, tiny_model_dir):
    owner = runtimes("the window")
    job = owner.runner.enqueue(request(tiny_model_dir))
    owner.runner._queue.mark_running(job.id)  # as if a worker had it
    with pytest.raises(FolderBusyError, match=rf"run by the window \(process {os.getpid()}, since"):
        runtimes("sd3desk serve")
    guest = runtimes(owner="")  # `queue add` / `queue list`: no lock, no recovery
    assert guest.lock is None and guest.runner.job(job.id).state is JobState.running
    added = guest.runner.enqueue(request(tiny_model_dir, seed=6))
    assert added.state is JobState.queued
    with pytest.raises(RuntimeError, match="only adds jobs"):
        guest.start_workers()
    owner.stop()  # the folder is free again: the next owner recovers what was running
    after = runtimes("sd3desk queue run")
    assert [j.id for j in after.runner.snapshot().waiting] == [job.id, added.id]


@pytest.mark.parametrize(
    ("code", "words"),
    [(errno.ENOSPC, "No space left on"), (errno.EROFS, "is read-only")],
)
def test_a_full_or_read_only_disk_fails_the_job_in_words_and_pauses_the_queue(
    qtbot, runtimes, tmp_path, tiny_model_dir, monkeypatch, code, words
):
    def no_room(handle):  # the disk refuses the image's bytes as they are flushed
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(atomic, "_flush", no_room)
    runtime = runtimes(output_dir=str(tmp_path / "pictures"))
    first = runtime.runner.enqueue(request(tiny_model_dir))
    second = runtime.runner.enqueue(request(tiny_model_dir, seed=6))
    runtime.start_workers()
    qtbot.waitUntil(lambda: settled(runtime, first.id), timeout=TIMEOUT)
    failed = runtime.runner.job(first.id)
    assert failed is not None and failed.state is JobState.failed
    assert failed.error_kind is FailureKind.storage and words in failed.error_message
    assert str(tmp_path / "pictures") in failed.error_message
    if code == errno.ENOSPC:
        assert "MB free; this image needs ~0.2 MB" in failed.error_message
    assert "resume the queue" in failed.error_advice
    # the next job waits (not failed one after another), nothing partial is left
    snapshot = runtime.runner.snapshot()
    assert snapshot.paused and [j.id for j in snapshot.waiting] == [second.id]
    assert [p for p in (tmp_path / "pictures").rglob("*") if p.is_file()] == []
    assert any(words in n.message for n in runtime.notices.notices)
    # room again: resuming runs the waiting job
    monkeypatch.undo()
    runtime.runner.set_paused(False)
    qtbot.waitUntil(lambda: settled(runtime, second.id), timeout=TIMEOUT)
    assert runtime.runner.job(second.id).state is JobState.finished


def test_a_database_that_can_no_longer_be_written_stops_the_runner_and_loses_nothing(
    qtbot, runtimes, tmp_path, tiny_model_dir, monkeypatch
):
    def disk_full(self, job_id, outputs):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(JobQueue, "mark_finished", disk_full)
    runtime = runtimes()
    job = runtime.runner.enqueue(request(tiny_model_dir))
    waiting = runtime.runner.enqueue(request(tiny_model_dir, seed=6))
    broken = []
    runtime.runner.broken.connect(broken.append)
    runtime.start_workers()
    qtbot.waitUntil(lambda: bool(broken), timeout=TIMEOUT)
    assert isinstance(broken[0], StoreError) and "the disk is full" in broken[0].message
    assert any("the disk is full" in n.message for n in runtime.notices.notices)
    qtbot.wait(300)  # (the runner hands out nothing more)
    images = sorted((tmp_path / "data" / "outputs").rglob("*.png"))
    assert len(images) == 1
    runtime.stop()
    monkeypatch.undo()
    # the next start finds the job's image and keeps it; the other job is still waiting
    after = runtimes("sd3desk queue run")
    done = after.runner.job(job.id)
    assert done is not None and done.state is JobState.finished
    assert list(done.outputs) == [str(p) for p in images]
    assert [j.id for j in after.runner.snapshot().waiting] == [waiting.id]


def test_a_data_folder_that_cannot_be_made_is_said_at_start(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("in the way")  # (a read-only disk says the same; chmod binds no root)
    with pytest.raises(StoreError, match="cannot be written") as caught:
        build_runtime(AppPaths.default(blocker / "data"), Settings(), owner="the window")
    assert "--data-dir" in caught.value.advice
    listed = subprocess.run(
        [sys.executable, "-m", "sd3desk", "--data-dir", str(blocker / "data"), "queue", "list"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == ExitCode.error
    assert "cannot be written" in listed.stderr and "Traceback" not in listed.stderr


def test_listing_never_waits_for_the_owner_and_adding_waits_a_second_at_most(
    tmp_path, tiny_model_dir
):
    import time

    path = tmp_path / "sd3desk.db"
    queue = JobQueue(Store(path))
    queue.enqueue(request(tiny_model_dir))
    queue.store.close()
    owner = sqlite3.connect(path)
    owner.execute("BEGIN EXCLUSIVE")  # the owner in the middle of a long write
    try:
        started = time.monotonic()
        guest = build_runtime(AppPaths.default(tmp_path), Settings(), database=path)
        assert len(guest.runner.snapshot().waiting) == 1  # read at once (WAL: readers pass)
        assert time.monotonic() - started < 1.0
        with pytest.raises(StoreError, match="busy"):
            guest.runner.enqueue(request(tiny_model_dir))
        assert time.monotonic() - started < 3.0
    finally:
        owner.rollback()
        owner.close()
