"""Restoring a queue of 1,000 jobs at start (open, recover, the runner's snapshot) vs a bare
SQLite read of the same rows. Target: <= 0.2 s."""

from __future__ import annotations

import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import common  # noqa: F401 - puts the project on sys.path

from sd3desk.core.jobs import JobQueue
from sd3desk.core.params import GenerationParams
from sd3desk.core.store import Store
from sd3desk.runtime.runner import Runner


def main() -> None:
    path = Path(tempfile.mkdtemp()) / "sd3desk.db"
    queue = JobQueue(Store(path))
    base = GenerationParams("a lighthouse at dusk, " * 8, seed=1, model="m")
    queue.enqueue_many([base.replace(seed=1 + k) for k in range(1000)])
    queue.mark_running(queue.queued()[500].id)  # one job left running, as after a crash
    queue.store.close()
    restore, bare = [], []
    for _ in range(5):
        start = time.perf_counter()
        store = Store(path)
        snapshot = Runner(JobQueue(store)).snapshot()  # what every front door starts with
        restore.append(time.perf_counter() - start)
        store.close()
        assert len(snapshot.jobs) == 1000
        start = time.perf_counter()
        with sqlite3.connect(path) as db:
            rows = db.execute("SELECT * FROM jobs ORDER BY sort_key").fetchall()
        bare.append(time.perf_counter() - start)
        assert len(rows) == 1000
    r, b = statistics.median(restore), statistics.median(bare)
    print(f"restore 1000 jobs (open, recover, snapshot): {r * 1000:.1f} ms  (target <= 200 ms)")
    print(f"bare SQLite read of the same rows:           {b * 1000:.1f} ms  (ratio {r / b:.1f}x)")


if __name__ == "__main__":
    main()
