"""A real full disk: a tiny tmpfs (mounting needs root; skipped elsewhere) under the images
and under the data folder. Each ends in a message and an exit code, never a traceback or a
hang, with nothing half-written left behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sd3desk.core.errors import ExitCode


@pytest.fixture
def tiny_disk(tmp_path):
    """A 256 KB file system of its own."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if made.returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, leave: int = 0) -> None:
    """Fill the disk up to `leave` bytes."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize > leave:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)


def sd3desk(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sd3desk", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_images_on_a_full_disk(tiny_disk, tmp_path, tiny_model_dir):
    fill(tiny_disk, leave=16 * 1024)  # room for a little, not for an image
    done = sd3desk(
        "--data-dir", str(tmp_path / "data"), "generate", "--model", str(tiny_model_dir),
        "--prompt", "a fox", "--steps", "2", "--width", "256", "--height", "256",
        "--out", str(tiny_disk / "pictures"), "--device", "cpu",
    )  # fmt: skip
    assert done.returncode == ExitCode.error, done.stderr
    assert "No space left on" in done.stderr and "this image needs ~0.2 MB" in done.stderr
    assert "Traceback" not in done.stderr
    left = [p for p in (tiny_disk / "pictures").rglob("*") if p.is_file()]
    assert left == []  # no partial image, no temporary file


def test_a_data_folder_on_a_full_disk(tiny_disk, tiny_model_dir):
    fill(tiny_disk)
    added = sd3desk(
        "--data-dir", str(tiny_disk / "data"), "queue", "add", "--model", str(tiny_model_dir),
        "--prompt", "a fox",
    )  # fmt: skip
    assert added.returncode == ExitCode.error, added.stderr
    assert "full" in added.stderr and "Traceback" not in added.stderr
    assert not (tiny_disk / "data" / "sd3desk.db").exists()  # no empty queue left to puzzle over
    (tiny_disk / "filler").unlink()  # room again: the queue works, and nothing is said
    again = sd3desk(
        "--data-dir", str(tiny_disk / "data"), "queue", "add", "--model", str(tiny_model_dir),
        "--prompt", "a fox",
    )  # fmt: skip
    assert again.returncode == 0 and again.stderr == "", again.stderr
