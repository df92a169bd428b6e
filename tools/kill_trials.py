"""SIGKILL trials of `sd3desk queue run`: kill it at chosen moments, run it again until the queue
is empty, and count what a user would notice. Prints one line per trial and a total:

    jobs lost (not finished), images made twice, temporary files left, tracebacks printed

Moments: while the model loads (its first load stage printed), while a job generates (the job
marked generating), with an image written to its temporary file but not named yet, and with an
image saved but its job not yet marked finished (SD3DESK_KILL_AT, see sd3desk/core/failpoints.py),
each for a job chosen by the trial number. The tiny model, on the CPU, no downloads.

Usage: python tools/kill_trials.py [--trials 20] [--jobs 6]
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

MOMENTS = ("loading", "generating", "file-written", "image-saved")


def sd3desk(data: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "sd3desk", "--data-dir", str(data), *args]


def generating_job(data: Path) -> int | None:
    db = sqlite3.connect(data / "sd3desk.db", timeout=5)
    try:
        row = db.execute(
            "SELECT id FROM jobs WHERE generating = 1 AND state = 'running'"
        ).fetchone()
        return row[0] if row else None
    finally:
        db.close()


def trial(number: int, jobs: int, model: Path, root: Path) -> dict[str, int]:
    data = root / f"trial-{number}"
    subprocess.run(
        sd3desk(data, "queue", "add", "--model", str(model), "--prompt", f"trial {number}",
                "--seed", str(1000 * number), "--count", str(jobs), "--steps", "6",
                "--width", "256", "--height", "256"),
        check=True, capture_output=True,
    )  # fmt: skip
    moment = MOMENTS[number % len(MOMENTS)]
    nth = 1 + (number // len(MOMENTS)) % jobs  # which job (or image) the kill hits
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if moment in ("file-written", "image-saved"):
        env["SD3DESK_KILL_AT"] = f"{moment}:{nth}"
    run = subprocess.Popen(
        sd3desk(data, "queue", "run", "--device", "cpu"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert run.stderr is not None
    if moment == "loading":
        while not run.stderr.readline().startswith("[1/"):
            pass
        run.send_signal(signal.SIGKILL)
    elif moment == "generating":
        while (found := generating_job(data)) is None or found < nth:
            time.sleep(0.005)
        run.send_signal(signal.SIGKILL)
    _, first_err = run.communicate(timeout=600)
    was_killed = run.returncode == -signal.SIGKILL
    # run again until nothing is left (a second kill never comes)
    again = subprocess.run(
        sd3desk(data, "queue", "run", "--device", "cpu"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    db = sqlite3.connect(data / "sd3desk.db")
    states = Counter(state for (state,) in db.execute("SELECT state FROM jobs"))
    db.close()
    images = [p for p in (data / "outputs").rglob("*.png")]
    seeds = Counter(p.stem.split("-", 1)[1] for p in images)
    return {
        "killed": int(was_killed),
        "lost": jobs - states.get("finished", 0),
        "twice": sum(n - 1 for n in seeds.values() if n > 1),
        "temp files": len(list(data.rglob(".*.tmp"))),
        "tracebacks": (first_err + again.stderr).count("Traceback"),
        "moment": moment,  # type: ignore[dict-item]
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=6)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from sd3desk.inference.testmodel import write_test_model

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = write_test_model(root / "tiny-sd3")
        totals: Counter[str] = Counter()
        started = time.monotonic()
        for number in range(args.trials):
            found = trial(number, args.jobs, model, root)
            moment = found.pop("moment")
            totals.update(found)
            print(
                f"trial {number + 1:2d} ({moment:12s}): "
                + ", ".join(f"{k} {v}" for k, v in found.items()),
                flush=True,
            )
        print(
            f"{args.trials} trials × {args.jobs} jobs in {time.monotonic() - started:.0f} s: "
            + ", ".join(f"{k} {v}" for k, v in totals.items())
        )


if __name__ == "__main__":
    main()
