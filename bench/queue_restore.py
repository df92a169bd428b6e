"""Restoring a queue of 1,000 jobs at start (open, recover, list) vs a bare SQLite read of the
same rows. Target: <= 0.2 s."""

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


def main() -> None:
    path = Path(tempfile.mkdtemp()) / "sd3desk.db"
    queue = JobQueue(Store(path))
    queue.enqueue_variations(
        GenerationParams("a lighthouse at dusk, " * 8, seed=1, model="m"), 1000
    )
    queue.mark_running(queue.queued()[500].id)  # one job left running, as after a crash
    queue.store.close()
    restore, bare = [], []
    for _ in range(5):
        start = time.perf_counter()
        restored = JobQueue(Store(path))
        jobs = restored.jobs()
        restore.append(time.perf_counter() - start)
        restored.store.close()
        assert len(jobs) == 1000
        start = time.perf_counter()
        with sqlite3.connect(path) as db:
            rows = db.execute("SELECT * FROM jobs ORDER BY sort_key").fetchall()
        bare.append(time.perf_counter() - start)
        assert len(rows) == 1000
    r, b = statistics.median(restore), statistics.median(bare)
    print(f"restore 1000 jobs (open, recover, parse, order): {r * 1000:.1f} ms  (target <= 200 ms)")
    print(
        f"bare SQLite read of the same rows:              {b * 1000:.1f} ms  (ratio {r / b:.1f}x)"
    )


if __name__ == "__main__":
    main()
