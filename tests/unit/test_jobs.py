"""JobQueue and Store: persistence, transitions, ordering, recovery after a crash, ETA."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from sd3desk.core.errors import StoreError
from sd3desk.core.jobs import CRASH_LIMIT, FailureKind, JobQueue, JobState, TransitionError
from sd3desk.core.params import GenerationParams
from sd3desk.core.store import SCHEMA_VERSION, Store

P = GenerationParams("a cat", seed=10, steps=20, width=512, height=512, model="m")


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "sd3desk.db"


def open_queue(path) -> JobQueue:
    return JobQueue(Store(path))


def ids(jobs) -> list[int]:
    return [j.id for j in jobs]


def test_enqueue_persists_before_returning_and_resolves_random_seeds(db_path):
    queue = open_queue(db_path)
    a = queue.enqueue(P)
    b = queue.enqueue(P.replace(seed=None))
    assert b.params.seed is not None
    # A second connection (another process after a crash) sees both at once.
    again = open_queue(db_path)
    assert [j.params for j in again.queued()] == [a.params, b.params]
    assert again.store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert again.store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_front_back_and_moves(db_path):
    queue = open_queue(db_path)
    a, b, c = (queue.enqueue(P) for _ in range(3))
    d = queue.enqueue(P, front=True)
    assert ids(queue.queued()) == [d.id, a.id, b.id, c.id]
    queue.place([c.id], 1)
    assert ids(queue.queued()) == [d.id, c.id, a.id, b.id]
    queue.place([b.id], 0)  # to the top
    assert ids(queue.queued()) == [b.id, d.id, c.id, a.id]
    queue.place([b.id], 3)
    assert ids(queue.queued()) == [d.id, c.id, a.id, b.id]
    assert queue.position(a.id) == 3
    assert ids(open_queue(db_path).queued()) == [d.id, c.id, a.id, b.id]
    e, f = queue.enqueue_many([P, P], front=True)  # several at the front keep their order
    assert ids(queue.queued())[:3] == [e.id, f.id, d.id]


def test_transitions_are_checked(db_path):
    queue = open_queue(db_path)
    job = queue.enqueue(P)
    queue.mark_running(job.id)
    queue.mark_finished(job.id, ["/out/1.png"])
    with pytest.raises(TransitionError):
        queue.mark_running(job.id)
    with pytest.raises(TransitionError):
        queue.mark_cancelled(job.id)
    assert queue.get(job.id).outputs == ("/out/1.png",)
    assert queue.get(job.id).state is JobState.finished


def test_cancel_duplicate_clear(db_path):
    queue = open_queue(db_path)
    a, b = queue.enqueue(P), queue.enqueue(P.replace(prompt="b"))
    copy = queue.duplicate(a.id)
    assert ids(queue.queued()) == [a.id, copy.id, b.id]
    assert copy.params == a.params
    queue.mark_cancelled(b.id)
    assert queue.get(b.id).state is JobState.cancelled
    queue.mark_running(a.id)
    queue.mark_failed(a.id, FailureKind.out_of_memory, "out of memory", "smaller size")
    assert queue.get(a.id).error_kind is FailureKind.out_of_memory
    assert queue.clear_finished() == 2
    assert ids(queue.jobs()) == [copy.id]


def test_pause_is_remembered(db_path):
    queue = open_queue(db_path)
    queue.enqueue(P)
    queue.set_paused(True)
    assert queue.next_job() is None
    again = open_queue(db_path)
    assert again.paused and again.next_job() is None
    again.set_paused(False)
    assert again.next_job() is not None


def test_a_crash_puts_the_running_job_back_in_front_and_twice_fails_it(db_path):
    queue = open_queue(db_path)
    a, b, c = (queue.enqueue(P) for _ in range(3))
    queue.mark_running(b.id)
    queue.mark_generating(b.id)
    # The process dies here. The next start:
    after = open_queue(db_path)
    assert ids(after.queued()) == [b.id, a.id, c.id]
    assert after.get(b.id).note.startswith("interrupted") and after.get(b.id).crashes == 1
    assert not after.get(b.id).generating
    after.mark_running(b.id)
    after.mark_generating(b.id)
    again = open_queue(db_path)  # second stop during the same job
    assert again.get(b.id).state is JobState.failed
    assert again.get(b.id).crashes == CRASH_LIMIT
    assert "stopped twice" in again.get(b.id).error_message
    assert ids(again.queued()) == [a.id, c.id]
    assert [(j.id, j.error_kind) for j in again.recovered] == [(b.id, FailureKind.crash)]
    assert ids(after.recovered) == [b.id] and after.recovered[0].state is JobState.queued


def test_crashes_while_the_model_loads_count_against_the_model_not_the_job(db_path):
    queue = open_queue(db_path)
    job = queue.enqueue(P)
    for times in range(1, CRASH_LIMIT + 1):
        queue.mark_running(job.id)
        queue.loading("big-model")  # the process dies while the model loads:
        queue = open_queue(db_path)
        assert queue.get(job.id).state is JobState.queued and queue.get(job.id).crashes == 0
        assert "while its model loaded" in queue.get(job.id).note
        assert queue.load_crash is not None and queue.load_crash.model == "big-model"
        assert queue.load_crash.times == times == queue.load_crashes("big-model")
        # the second time, the queue is paused: otherwise every start would crash the same way
        assert queue.paused is queue.load_crash.paused is (times >= CRASH_LIMIT)
    # a load that works starts the count over
    queue.loading("big-model")
    queue.loaded("big-model", ok=True)
    assert open_queue(db_path).load_crash is None and queue.load_crashes("big-model") == 0


def test_a_job_whose_images_were_saved_before_the_crash_is_finished_not_run_again(
    db_path, tmp_path
):
    from PIL import Image

    from sd3desk.core.metadata import ImageMetadata
    from sd3desk.core.outputs import save_generated

    queue = open_queue(db_path)
    done, half = queue.enqueue(P.replace(batch_size=2)), queue.enqueue(P.replace(batch_size=2))
    names = {
        j.id: [str(tmp_path / "out" / f"{j.id}-{k}.png") for k in range(2)] for j in (done, half)
    }
    for job, saved in ((done, 2), (half, 1)):
        job = queue.mark_running(job.id, names[job.id])
        queue.mark_generating(job.id)
        for k in range(saved):
            meta = ImageMetadata(P.for_image(k), job=queue.job_ref(job, k))
            save_generated(Image.new("RGB", (8, 8)), meta, tmp_path, planned=Path(names[job.id][k]))
    # the process dies before it marks either job finished
    after = open_queue(db_path)
    finished = after.get(done.id)
    assert finished.state is JobState.finished and list(finished.outputs) == names[done.id]
    assert finished.crashes == 0 and "saved" in finished.note
    # the other saved one of its two images: it runs again, keeping the names it had
    again = after.get(half.id)
    assert again.state is JobState.queued and list(again.planned) == names[half.id]
    assert list(after.mark_running(half.id, ["elsewhere.png"]).planned) == names[half.id]
    # the same job id in another queue (another data folder, or a queue started afresh) with
    # the same names: those images are not its own
    other = open_queue(tmp_path / "other.db")
    twin = other.enqueue(P.replace(batch_size=2))
    assert twin.id == done.id and other.uid != after.uid
    other.mark_running(twin.id, names[done.id])
    other.mark_generating(twin.id)
    assert open_queue(tmp_path / "other.db").get(twin.id).state is JobState.queued


def test_a_corrupt_database_is_moved_aside_not_deleted(db_path):
    db_path.write_bytes(b"this is not sqlite" * 100)
    queue = open_queue(db_path)
    assert queue.store.notices and "moved to" in queue.store.notices[0]
    aside = [p for p in db_path.parent.iterdir() if ".unreadable-" in p.name]
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"this is not sqlite")
    assert queue.enqueue(P).id == 1


def test_a_database_locked_by_another_program_is_left_alone(db_path, monkeypatch):
    queue = open_queue(db_path)
    queue.enqueue(P)
    queue.store.db.close()
    other = sqlite3.connect(db_path)  # another process, holding the file for itself
    other.execute("PRAGMA locking_mode=EXCLUSIVE")
    other.execute("BEGIN EXCLUSIVE")
    monkeypatch.setattr(Store, "BUSY_TIMEOUT_S", 0.1)
    with pytest.raises(StoreError, match="locked by another program"):
        open_queue(db_path)
    other.rollback()
    other.close()
    assert not [p for p in db_path.parent.iterdir() if ".unreadable-" in p.name]
    assert [j.params.prompt for j in open_queue(db_path).queued()] == [P.prompt]  # intact


def test_a_database_cut_to_zero_bytes_is_said(db_path):
    first = open_queue(db_path)
    assert first.store.notices == []  # a new one: nothing to say
    first.store.db.close()
    db_path.write_bytes(b"")
    for suffix in ("-wal", "-shm"):
        db_path.with_name(db_path.name + suffix).unlink(missing_ok=True)
    queue = open_queue(db_path)
    assert len(queue.store.notices) == 1 and "was empty (0 bytes" in queue.store.notices[0]
    assert queue.enqueue(P).id == 1


def test_a_newer_schema_is_not_touched(db_path):
    db = sqlite3.connect(db_path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    db.close()
    queue = open_queue(db_path)
    assert "newer" in queue.store.notices[0]


def test_eta_uses_measured_speed_and_marks_first_use_estimates(db_path):
    queue = open_queue(db_path)
    a = queue.enqueue(P)
    b = queue.enqueue(P.replace(batch_size=2))
    first = queue.etas()[b.id]
    assert first.estimated
    queue.record_timing(P, 0.5)
    eta = queue.etas()[b.id]
    assert not eta.estimated
    assert eta.seconds == pytest.approx(0.5 * 20 + 0.5 * 20 * 2)
    queue.mark_running(a.id)
    assert queue.etas({a.id: 10})[b.id].seconds == pytest.approx(0.5 * 10 + 0.5 * 40)
    bigger = queue.enqueue(P.replace(width=1024, height=1024))
    assert queue.etas()[bigger.id].estimated  # scaled from the 512² measurement, and says so


def test_live_rates_of_the_running_job_replace_guesses_and_old_timings(db_path):
    from sd3desk.core.jobs import timing_key

    queue = open_queue(db_path)
    a = queue.enqueue(P)
    b = queue.enqueue(P.replace(batch_size=2))
    queue.mark_running(a.id)
    assert queue.etas({a.id: 5})[b.id].estimated  # nothing measured yet
    queue.record_timing(P, 9.0)  # an old, slower measurement
    etas = queue.etas({a.id: 5}, {timing_key(P): 0.25})
    assert not etas[b.id].estimated
    assert etas[a.id].seconds == pytest.approx(0.25 * 15)
    assert etas[b.id].seconds == pytest.approx(0.25 * 15 + 0.25 * 20 * 2)


def test_place_moves_several_jobs_in_order_and_skips_running_ones(db_path):
    queue = open_queue(db_path)
    a, b, c, d, e = (queue.enqueue(P.replace(prompt=name)) for name in "abcde")
    queue.place([a.id, b.id], 2)  # dragged A and B to before E (two others above: C, D)
    assert ids(queue.queued()) == [c.id, d.id, a.id, b.id, e.id]
    queue.place([a.id, c.id], 99)  # to the end
    assert ids(queue.queued()) == [d.id, b.id, e.id, a.id, c.id]
    queue.mark_running(d.id)  # it started while being dragged: it stays running
    queue.place([d.id, e.id], 0)
    assert ids(queue.queued()) == [e.id, b.id, a.id, c.id]
    assert queue.get(d.id).state is JobState.running


def test_a_thousand_jobs_restore_in_order(db_path):
    queue = open_queue(db_path)
    made = queue.enqueue_many([P.replace(seed=P.seed + k) for k in range(1000)])
    restored = open_queue(db_path).queued()
    assert ids(restored) == ids(made)
    assert restored[-1].params.seed == P.seed + 999
