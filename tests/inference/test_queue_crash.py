"""Kill `queue run` at the moments that matter, each caught by its event (a load stage printed,
a job marked generating, a file written, an image saved), then run again: nothing is lost,
nothing is made twice, no temporary file stays, and a second process never runs the queue."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from sd3desk.core.errors import ExitCode
from sd3desk.core.jobs import JobQueue, JobState
from sd3desk.core.metadata import read_metadata
from sd3desk.core.store import Store

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def sd3desk(data_dir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "sd3desk", "--data-dir", str(data_dir), *args]


def add(data_dir: Path, model: Path, *args: str) -> None:
    subprocess.run(
        sd3desk(data_dir, "queue", "add", "--model", str(model), "--prompt", "a cat", *args),
        check=True,
        capture_output=True,
        timeout=120,
    )


def run(data_dir: Path, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        sd3desk(data_dir, "queue", "run", "--device", "cpu"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**ENV, **env},
    )


def wait_for(condition, what: str, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.01)


def jobs(data_dir: Path) -> dict:
    """The queue as a second process sees it, without recovering anything (not the owner)."""
    queue = JobQueue(Store(data_dir / "sd3desk.db"), recover=False)
    try:
        return {job.id: job for job in queue.jobs()}
    finally:
        queue.store.close()


def generating(data_dir: Path, job_id: int) -> bool:
    db = sqlite3.connect(data_dir / "sd3desk.db", timeout=5)
    try:
        row = db.execute("SELECT generating, state FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return tuple(row) == (1, "running")
    finally:
        db.close()


def temp_files(data_dir: Path) -> list[Path]:
    return [p for p in data_dir.rglob(".*.tmp")]


def killed(process: subprocess.Popen) -> None:
    process.wait(timeout=120)
    assert process.returncode == -signal.SIGKILL


def test_kills_at_every_moment_lose_nothing_and_make_nothing_twice(tmp_path, tiny_model_dir):
    fast = ("--steps", "4", "--width", "256", "--height", "256")
    add(tmp_path, tiny_model_dir, "--seed", "100", *fast)  # job 1
    add(tmp_path, tiny_model_dir, "--seed", "200", "--steps", "30", "--width", "512")  # job 2
    add(tmp_path, tiny_model_dir, "--seed", "300", "--count", "3", *fast)  # jobs 3-5

    # 1. killed while the model loads (its first stage printed): the job is not to blame
    first = run(tmp_path)
    assert first.stderr is not None
    wait_for(lambda: first.stderr.readline().startswith("[1/"), "the first load stage")  # type: ignore[union-attr]
    first.send_signal(signal.SIGKILL)
    killed(first)
    after = jobs(tmp_path)
    assert after[1].state is JobState.running and not after[1].generating  # (as it was left)

    # 2. killed with the first image written to its temporary file, not yet named
    killed(run(tmp_path, SD3DESK_KILL_AT="file-written"))
    assert len(temp_files(tmp_path)) == 1  # the leftover the next start sweeps
    after = jobs(tmp_path)
    assert after[1].crashes == 0 and "while its model loaded" in after[1].note  # run 1's kill
    assert after[1].generating  # run 2's kill came while it generated

    # 3. killed with the image saved under its name, before the job was marked finished
    killed(run(tmp_path, SD3DESK_KILL_AT="image-saved"))
    saved = [p for p in (tmp_path / "outputs").rglob("*.png")]
    assert len(saved) == 1 and read_metadata(saved[0]).params.seed == 100

    # 4. killed while job 2 generates (job 1's image is taken as it is, not made again)
    fourth = run(tmp_path)
    wait_for(lambda: generating(tmp_path, 2), "job 2 to generate")
    fourth.send_signal(signal.SIGKILL)
    killed(fourth)
    after = jobs(tmp_path)
    assert after[1].state is JobState.finished and "saved" in after[1].note
    assert [str(p) for p in saved] == list(after[1].outputs)

    # 5. the last run finishes everything
    last = run(tmp_path)
    out, err = last.communicate(timeout=300)
    assert last.returncode == 0, err
    assert "Traceback" not in err
    final = jobs(tmp_path)
    assert all(job.state is JobState.finished for job in final.values()), final
    assert {job_id: job.crashes for job_id, job in final.items()} == {1: 1, 2: 1, 3: 0, 4: 0, 5: 0}
    files = sorted((tmp_path / "outputs").rglob("*"))
    images = [p for p in files if p.is_file()]
    seeds = sorted(read_metadata(p).params.seed for p in images)
    assert seeds == [100, 200, 300, 301, 302]  # each image once
    assert sorted(str(p) for p in images) == sorted(o for j in final.values() for o in j.outputs)
    assert temp_files(tmp_path) == []
    assert len(out.split()) == 4  # the images this run made (job 1's came from run 3)


def test_a_second_process_never_runs_the_queue_but_may_add_and_list(tmp_path, tiny_model_dir):
    # a job far longer than the checks below; Ctrl+C ends it when they are done
    add(tmp_path, tiny_model_dir, "--seed", "1", "--steps", "150", "--width", "768", "--batch", "4")
    owner = run(tmp_path)
    wait_for(lambda: generating(tmp_path, 1), "the job to generate")
    # another `queue run` is refused and names the owner
    second = subprocess.run(
        sd3desk(tmp_path, "queue", "run", "--device", "cpu"),
        capture_output=True,
        text=True,
        timeout=120,
        env=ENV,
    )
    assert second.returncode == ExitCode.busy, second.stderr
    assert f"run by sd3desk queue run (process {owner.pid}" in second.stderr
    assert "Traceback" not in second.stderr
    # listing neither waits nor puts the running job back; adding joins the owner's queue
    listed = subprocess.run(
        sd3desk(tmp_path, "queue", "list"), capture_output=True, text=True, timeout=60, env=ENV
    )
    assert listed.returncode == 0 and " running " in listed.stdout, listed.stderr
    add(tmp_path, tiny_model_dir, "--seed", "2", "--steps", "2", "--width", "256")
    assert jobs(tmp_path)[1].state is JobState.running and generating(tmp_path, 1)
    assert owner.poll() is None  # all of that happened while the owner ran its job
    owner.send_signal(signal.SIGINT)  # the long job goes back to the front, untouched
    owner.communicate(timeout=120)
    assert owner.returncode == ExitCode.interrupted
    after = jobs(tmp_path)
    assert [after[i].state for i in (1, 2)] == [JobState.queued] * 2
    assert after[1].crashes == 0 and after[1].outputs == ()
    assert list((tmp_path / "outputs").rglob("*.png")) == []
