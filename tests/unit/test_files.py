"""Output naming, atomic writes, settings and the model-hash cache."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from sd3desk.core.atomic import atomic_write, atomic_write_bytes, sweep_temp_files, write_new_file
from sd3desk.core.metadata import ImageMetadata, JobRef, read_metadata
from sd3desk.core.modelhash import model_hash
from sd3desk.core.outputs import OutputPlan, next_sequence, save_generated, saved_by
from sd3desk.core.params import GenerationParams
from sd3desk.core.settings import (
    AppPaths,
    Device,
    MemoryPlan,
    Settings,
    load_settings,
    save_settings,
)

NOW = dt.datetime(2026, 11, 26, 12, 0)


def test_outputs_go_to_a_day_folder_with_sequence_and_seed(tmp_path):
    meta = ImageMetadata(GenerationParams("a cat", seed=77))
    image = Image.new("RGB", (16, 16))
    first = save_generated(image, meta, tmp_path, NOW)
    second = save_generated(image, meta, tmp_path, NOW)
    assert first == tmp_path / "2026-11-26" / "00000-77.png"
    assert second.name == "00001-77.png"
    assert read_metadata(second).params.seed == 77
    assert oct(first.stat().st_mode & 0o777) == oct(0o644)
    assert sorted(p.name for p in first.parent.iterdir()) == ["00000-77.png", "00001-77.png"]


def test_names_never_collide_with_a_file_that_appeared_meanwhile(tmp_path):
    (tmp_path / "00000-1.png").write_bytes(b"someone else's")
    path = write_new_file(tmp_path, lambda n: f"{n:05d}-1.png", lambda h: h.write(b"ours"), start=0)
    assert path.name == "00001-1.png"
    assert (tmp_path / "00000-1.png").read_bytes() == b"someone else's"
    assert next_sequence(tmp_path) == 2
    assert next_sequence(tmp_path / "missing") == 0


def test_a_failed_write_leaves_nothing_behind(tmp_path):
    def explode(handle):
        handle.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_new_file(tmp_path, lambda n: f"{n}.png", explode)
    with pytest.raises(RuntimeError):
        from sd3desk.core.atomic import atomic_write

        atomic_write(tmp_path / "settings.json", explode)
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_replaces_whole_file(tmp_path):
    target = tmp_path / "f.json"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_settings_round_trip_and_tolerance(tmp_path, caplog):
    caplog.set_level("INFO", logger="sd3desk.core.settings")
    path = tmp_path / "settings.json"
    assert load_settings(path) == Settings()
    settings = Settings(
        model_dirs=("/models",), device=Device.cpu, memory_plan=MemoryPlan.no_t5, gpu_workers=2
    )
    save_settings(settings, path)
    assert json.loads(path.read_text())["memory_plan"] == "no-t5"
    assert load_settings(path) == settings
    path.write_text(
        json.dumps({"device": "tpu", "colour": "blue", "output_dir": "/out", "gpu_workers": 0})
    )
    loaded = load_settings(path)
    assert loaded.device is Device.auto and loaded.output_dir == "/out"
    assert loaded.gpu_workers == 1
    assert "colour" in caplog.text
    path.write_text("{broken")
    assert load_settings(path) == Settings()


def test_data_dir_keeps_everything_under_one_folder(tmp_path):
    paths = AppPaths.default(tmp_path)
    for folder in (paths.data, paths.config, paths.cache, paths.logs, paths.outputs):
        assert folder.is_relative_to(tmp_path)


def test_model_hash_is_sha256_prefix_and_cached(tmp_path):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"weights" * 1000)
    cache = tmp_path / "hashes.json"
    expected = hashlib.sha256(weights.read_bytes()).hexdigest()[:10]
    assert model_hash([weights], cache) == expected
    entry = next(iter(json.loads(cache.read_text()).values()))
    entry["sha256"] = "f" * 64  # the cache is trusted while size and mtime match...
    cache.write_text(json.dumps({str(weights.resolve()): entry}))
    assert model_hash([weights], cache) == "f" * 10
    weights.write_bytes(b"changed")  # ...and ignored once the file changes
    os.utime(weights, ns=(1, 1))
    assert model_hash([weights], cache) == hashlib.sha256(b"changed").hexdigest()[:10]


def test_model_hash_reuses_hugging_face_blob_names(tmp_path):
    blob = tmp_path / "blobs" / ("ab" * 32)
    blob.parent.mkdir()
    blob.write_bytes(b"not hashed")
    link = tmp_path / "model.safetensors"
    link.symlink_to(blob)
    assert model_hash([link]) == "ab" * 5


def test_temp_files_of_dead_processes_are_swept_and_writes_in_progress_kept(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead_pid = int(dead.stdout)  # a process that has ended
    alive = os.getppid()
    day = tmp_path / "2026-11-26"
    day.mkdir()
    by_the_dead = day / f".00003-7.png.{dead_pid}-abc123.tmp"
    in_progress = day / f".00004-7.png.{alive}-def456.tmp"
    ours = day / f".00005-7.png.{os.getpid()}-ghi789.tmp"
    old_style_old = day / ".00006-7.png.abc123.tmp"  # (before writers named themselves)
    old_style_new = day / ".00007-7.png.def456.tmp"
    old_but_alive = tmp_path / f".settings.json.{alive}-zzz.tmp"  # a reused process id
    image = day / "00002-7.png"
    for path in (
        by_the_dead,
        in_progress,
        ours,
        old_style_old,
        old_style_new,
        old_but_alive,
        image,
    ):
        path.write_bytes(b"x")
    for path in (old_style_old, old_but_alive):
        os.utime(path, (1, 1))
    fifo = day / f".00008-7.png.{dead_pid}-fifo.tmp"
    os.mkfifo(fifo)  # not a regular file: left alone, never opened

    assert sweep_temp_files([tmp_path, day]) == 3
    assert sorted(p.name for p in day.iterdir()) == sorted(
        p.name for p in (in_progress, ours, old_style_new, image, fifo)
    )
    assert not old_but_alive.exists()


def test_a_temporary_file_names_its_writer(tmp_path):
    names = []

    def write(handle):
        names.extend(p.name for p in tmp_path.iterdir())
        handle.write(b"data")

    atomic_write(tmp_path / "settings.json", write)
    assert names == [names[0]] and names[0].startswith(f".settings.json.{os.getpid()}-")
    assert [p.name for p in tmp_path.iterdir()] == ["settings.json"]


def test_planned_names_follow_the_folder_and_never_repeat_before_a_write(tmp_path):
    day = tmp_path / "2026-11-26"
    day.mkdir()
    (day / "00041-9.png").write_bytes(b"")  # written by an earlier run or another program
    plan = OutputPlan(tmp_path, clock=lambda: NOW)
    first = plan.names([7, 8])
    second = plan.names([5])  # planned before either image of the first job exists
    assert [Path(p).name for p in (*first, *second)] == [
        "00042-7.png",
        "00043-8.png",
        "00044-5.png",
    ]
    assert all(Path(p).parent == day for p in (*first, *second))


def test_a_planned_image_saved_before_a_crash_is_kept_and_a_foreign_one_never_overwritten(
    tmp_path,
):
    image = Image.new("RGB", (8, 8), "red")
    params = GenerationParams("a fox", seed=7, steps=2, width=8, height=8)
    planned = tmp_path / "2026-11-26" / "00042-7.png"
    ref = JobRef("queue-a", 42, 0)
    saved = save_generated(image, ImageMetadata(params, job=ref), tmp_path, planned=planned)
    assert saved == planned and saved_by(planned, ref) and read_metadata(planned).job == ref
    stamp = planned.stat().st_mtime_ns
    # the same job again (it was interrupted after saving): the file is kept as it is
    again = save_generated(image, ImageMetadata(params, job=ref), tmp_path, planned=planned)
    assert again == planned and planned.stat().st_mtime_ns == stamp
    # another queue's job 42 (ids of two queues) or a file of another program: a new name
    other = JobRef("queue-b", 42, 0)
    assert not saved_by(planned, other)
    moved = save_generated(image, ImageMetadata(params, job=other), tmp_path, planned=planned)
    assert moved != planned and moved.parent == planned.parent and saved_by(moved, other)
    assert saved_by(planned, ref)  # untouched
