"""`sd3desk batch` against `sd3desk generate`, and 2 processes against 1 (issue 16).

1. Per-job overhead: the same N images (one prompt, seeds 0..N-1) made by `batch FILE --seeds N
   --seed-start 0` and by `generate --count N --seed 0`, for a small and a large N; the slope
   (seconds per extra job) of each command, so process start and model load cancel out.
   Target: batch/generate <= 1.05.
2. Scaling: the same batch under `torchrun --nproc_per_node=2` (one thread each, as torchrun
   sets) against one process (all cores). On a 2-core machine this is below 2x.

All runs are subprocesses on the "small" random model at 256x256, interleaved, medians.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import model_dir

PROMPT = "a lighthouse on a cliff at dusk"


def timed(command: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, **(env or {})}, check=False
    )
    took = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:6])}… failed:\n{done.stderr[-2000:]}")
    return took


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="small")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--few", type=int, default=2)
    parser.add_argument("--many", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model = str(model_dir(args.size))
    work = Path(tempfile.mkdtemp(prefix="sd3desk-bench-batch-"))
    batch_file = work / "prompt.txt"
    batch_file.write_text(PROMPT + "\n")
    common = ["--model", model, "--steps", str(args.steps), "--width", "256", "--height", "256"]
    run = 0

    def sd3desk(*command: str) -> list[str]:
        nonlocal run
        run += 1  # a fresh data and output folder each run: nothing to resume
        folder = work / f"run{run}"
        return [sys.executable, "-m", "sd3desk", "--data-dir", str(folder), *command]

    def batch(n: int) -> float:
        extra = ["--seeds", str(n), "--seed-start", "0", "--out", str(work / f"out{run + 1}")]
        return timed(sd3desk("batch", str(batch_file), *common, *extra))

    def generate(n: int) -> float:
        extra = ["--prompt", PROMPT, "--seed", "0", "--count", str(n)]
        return timed(sd3desk("generate", *common, *extra, "--out", str(work / f"out{run + 1}")))

    def torchrun(n: int) -> float:
        command = sd3desk("batch", str(batch_file), *common, "--seeds", str(n), "--seed-start", "0")
        command[1:3] = [
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            f"--master_port={free_port()}",
            "-m",
            "sd3desk",
        ]
        return timed([*command, "--out", str(work / f"out{run + 1}")], {"OMP_NUM_THREADS": "1"})

    try:
        times: dict[str, list[float]] = {}
        for _ in range(args.repeats):
            for name, fn, n in (
                ("generate few", generate, args.few),
                ("batch few", batch, args.few),
                ("generate many", generate, args.many),
                ("batch many", batch, args.many),
                ("2 processes", torchrun, args.many),
            ):
                times.setdefault(name, []).append(fn(n))
        median = {name: statistics.median(values) for name, values in times.items()}
        extra = args.many - args.few
        per_job = {
            cmd: (median[f"{cmd} many"] - median[f"{cmd} few"]) / extra
            for cmd in ("generate", "batch")
        }
        print(
            f"per job ({args.size} model, 256², {args.steps} steps; {args.few} vs {args.many} "
            f"jobs, median of {args.repeats}): generate {per_job['generate']:.3f} s · batch "
            f"{per_job['batch']:.3f} s · ratio {per_job['batch'] / per_job['generate']:.3f}"
        )
        print(
            f"whole commands, {args.many} jobs: generate {median['generate many']:.2f} s · "
            f"batch {median['batch many']:.2f} s"
        )
        print(
            f"{args.many} jobs: 1 process {median['batch many']:.2f} s · 2 processes (torchrun, "
            f"1 thread each) {median['2 processes']:.2f} s · speed-up "
            f"{median['batch many'] / median['2 processes']:.2f}x on {os.cpu_count()} cores"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
