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
from PIL import Image

from sd3desk.core.metadata import read_metadata


def sd3desk(data: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sd3desk", "--data-dir", str(data), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


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
