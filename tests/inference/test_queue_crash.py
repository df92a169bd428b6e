"""The queue survives the app being killed mid-step: every job still there, then all finish."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sd3desk.core.jobs import JobQueue, JobState
from sd3desk.core.metadata import read_metadata
from sd3desk.core.store import Store


def sd3desk(data_dir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "sd3desk", "--data-dir", str(data_dir), *args]


def test_sigkill_during_a_step_loses_nothing(tmp_path, tiny_model_dir):
    added = subprocess.run(
        sd3desk(
            tmp_path,
            "queue",
            "add",
            "--model",
            str(tiny_model_dir),
            "--prompt",
            "a cat",
            "--seed",
            "100",
            "--count",
            "4",
            "--steps",
            "40",
            "--width",
            "768",
            "--height",
            "768",
        ),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert added.stdout.split() == [
        "queued",
        "job",
        "1",
        "queued",
        "job",
        "2",
        "queued",
        "job",
        "3",
        "queued",
        "job",
        "4",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # 1. run, and kill -9 while the second job is denoising
    first = subprocess.Popen(
        sd3desk(tmp_path, "queue", "run", "--device", "cpu"),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert first.stdout is not None
    finished_before = [first.stdout.readline().strip()]
    time.sleep(0.5)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=60)
    queue = JobQueue(Store(tmp_path / "sd3desk.db"))
    jobs = {j.id: j for j in queue.jobs()}
    assert len(jobs) == 4
    assert jobs[1].state is JobState.finished and list(jobs[1].outputs) == finished_before
    assert [j.id for j in queue.queued()] == [2, 3, 4]  # the interrupted job first
    assert jobs[2].note.startswith("interrupted") and jobs[2].crashes == 1
    queue.store.close()
    # 2. start again: everything finishes, nothing stray or partial is left
    second = subprocess.run(
        sd3desk(tmp_path, "queue", "run", "--device", "cpu"),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert second.returncode == 0, second.stderr
    queue = JobQueue(Store(tmp_path / "sd3desk.db"))
    assert all(j.state is JobState.finished for j in queue.jobs())
    files = sorted(p for p in (tmp_path / "outputs").rglob("*") if p.is_file())
    assert [p.suffix for p in files] == [".png"] * 4
    assert sorted(read_metadata(p).params.seed for p in files) == [100, 101, 102, 103]
