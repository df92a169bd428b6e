"""`sd3desk batch` end to end in subprocesses (issue 16, item 2): the images of a batch file with
a manifest, the same pixels as `sd3desk generate` makes for the same job, and a run killed
between saving an image and writing it down resumes with no job made twice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sd3desk.core.metadata import read_metadata
from tests.inference.conftest import sd3desk


def manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def test_a_batch_makes_its_images_once_and_resumes_after_a_kill(tmp_path):
    batch = tmp_path / "prompts.txt"
    batch.write_text("# three prompts, two seeds each\na fox\na lighthouse\na {red|blue} boat\n")
    out = tmp_path / "out"
    args = (
        "batch",
        str(batch),
        "--model",
        "test",
        "--steps",
        "2",
        "--seeds",
        "2",
        "--out",
        str(out),
    )
    dry = sd3desk(tmp_path, *args, "--dry-run")
    assert dry.returncode == 0 and dry.stdout.startswith("8 jobs from prompts.txt"), dry.stderr
    # killed as the third image is saved: before its manifest line is written
    killed = sd3desk(tmp_path, *args, env={"SD3DESK_KILL_AT": "image-saved:3"})
    assert killed.returncode == -9, killed.stderr
    assert len(manifest(out)) == 2
    resumed = sd3desk(tmp_path, *args)
    assert resumed.returncode == 0, resumed.stderr
    assert "8 jobs, 3 done before, 5 to make" in resumed.stderr  # the third was adopted
    entries = manifest(out)
    assert sorted(e["index"] for e in entries) == list(range(8))
    images = sorted(out.rglob("*.png"))
    assert len(images) == 8 and len({e["file"] for e in entries}) == 8
    again = sd3desk(tmp_path, *args)
    assert "8 jobs, 8 done before, 0 to make" in again.stderr
    assert sorted(out.rglob("*.png")) == images
    # job 5 made by `generate` from its own parameters: the same pixels
    entry = next(e for e in entries if e["index"] == 5)
    params = read_metadata(entry["file"]).params
    made = sd3desk(
        tmp_path,
        "generate",
        "--model",
        "test",
        "--prompt",
        params.prompt,
        "--seed",
        str(params.seed),
        "--steps",
        "2",
        "--out",
        str(tmp_path / "single"),
    )
    assert made.returncode == 0, made.stderr
    single = Path(made.stdout.split()[-1])
    assert np.array_equal(np.asarray(Image.open(single)), np.asarray(Image.open(entry["file"])))


def test_two_processes_under_torchrun_share_a_batch_with_no_job_twice(tmp_path, tiny_model_dir):
    """`torchrun --nproc_per_node=2` (gloo on the CPU): each process takes every second job,
    both write into one folder without a name colliding, the first merges the manifest; the
    images are those one process makes of the same batch."""
    import socket

    batch = tmp_path / "prompts.txt"
    batch.write_text("".join(f"prompt number {n}\n" for n in range(5)))
    with socket.socket() as probe:  # a free port for the process group
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    common = ("batch", str(batch), "--model", str(tiny_model_dir), "--steps", "2")
    shared = tmp_path / "shared"
    launched = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            f"--master_port={port}",
            "-m",
            "sd3desk",
            "--data-dir",
            str(tmp_path),
            *common,
            "--out",
            str(shared),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert "process 1 of 2" in launched.stderr and "process 2 of 2" in launched.stderr
    assert "batch: 5 of 5 jobs done" in launched.stderr
    entries = manifest(shared)
    assert [e["index"] for e in entries] == [0, 1, 2, 3, 4]
    assert not list(shared.glob("manifest.part-*"))
    assert len(list(shared.rglob("*.png"))) == 5
    # (one thread, as torchrun gives each process: CPU sums in another order with more threads)
    alone = sd3desk(
        tmp_path, *common, "--out", str(tmp_path / "alone"), env={"OMP_NUM_THREADS": "1"}
    )
    assert alone.returncode == 0, alone.stderr
    for entry, single in zip(entries, manifest(tmp_path / "alone"), strict=True):
        assert entry["key"] == single["key"]
        same = np.asarray(Image.open(entry["file"])), np.asarray(Image.open(single["file"]))
        assert np.array_equal(*same)


def test_two_machines_each_with_its_own_data_folder_share_a_batch(tmp_path):
    """The README's two-machine recipe on one host: two `torchrun --nnodes=2` launches, each
    with its own data folder (so each builds the test model: before the process group, since
    under one transformers writes weights on rank 0 only), one shared output folder."""
    import socket

    batch = tmp_path / "prompts.txt"
    batch.write_text("a fox\na lighthouse\na {red|blue} boat\n")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    launches = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes=2",
                f"--node_rank={rank}",
                "--nproc_per_node=1",
                "--master_addr=127.0.0.1",
                f"--master_port={port}",
                "-m",
                "sd3desk",
                "--data-dir",
                str(tmp_path / f"machine{rank}"),
                "batch",
                str(batch),
                "--model",
                "test",
                "--steps",
                "2",
                "--out",
                str(tmp_path / "shared"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        for rank in (0, 1)
    ]
    errors = [launch.communicate(timeout=600)[1] for launch in launches]
    assert [launch.returncode for launch in launches] == [0, 0], errors[1][-3000:]
    assert "batch: 4 of 4 jobs done" in errors[0]
    assert [e["index"] for e in manifest(tmp_path / "shared")] == [0, 1, 2, 3]


def slurm_is_up() -> bool:
    import shutil

    if not shutil.which("srun"):
        return False
    found = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    return found.returncode == 0 and any(
        state in found.stdout for state in ("idle", "mix", "alloc")
    )


@pytest.mark.skipif(not slurm_is_up(), reason="no Slurm here (tools/local_slurm.sh starts one)")
def test_the_readme_slurm_recipe_under_srun(tmp_path):
    """The README's Slurm recipe, as written but for one node of this machine without GPUs:
    `srun` starts the tasks, each takes its rank from SLURM_PROCID/SLURM_NTASKS, the first
    merges the manifest; run again, it finds every job done."""
    import socket

    batch = tmp_path / "prompts.txt"
    batch.write_text("a fox in snow\na lighthouse\n# a comment\na {red|blue} boat\n")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = tmp_path / "shared" / "run1"
    script = (
        'MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1) '
        f"MASTER_PORT={port} sd3desk --data-dir {tmp_path / 'data'} batch {batch} "
        f"--model test --steps 2 --out {out}"
    )
    command = ["srun", "--nodes=1", "--ntasks-per-node=2", "bash", "-c", script]
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    env = {**os.environ, "PATH": path, "OMP_NUM_THREADS": "1"}
    first = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "process 1 of 2" in first.stderr and "process 2 of 2" in first.stderr
    assert "batch: 4 of 4 jobs done" in first.stderr
    assert [e["index"] for e in manifest(out)] == [0, 1, 2, 3]
    assert len(list(out.rglob("*.png"))) == 4
    again = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert again.returncode == 0 and "4 done before, 0 to make" in again.stderr
