"""Output naming, atomic writes, settings and the model-hash cache."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os

import pytest
from PIL import Image

from sd3desk.core.atomic import atomic_write_bytes, write_new_file
from sd3desk.core.metadata import ImageMetadata, read_metadata
from sd3desk.core.modelhash import model_hash
from sd3desk.core.outputs import next_sequence, save_generated
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


def test_stale_temp_files_from_a_killed_process_are_swept(tmp_path):
    day = tmp_path / "2026-11-26"
    day.mkdir()
    old = day / ".00003-7.png.abc123.tmp"
    fresh = day / ".00004-7.png.def456.tmp"
    image = day / "00002-7.png"
    for path in (old, fresh, image):
        path.write_bytes(b"x")
    os.utime(old, (1, 1))
    from sd3desk.core.outputs import sweep_stale_temp_files

    assert sweep_stale_temp_files(tmp_path) == 1
    assert sorted(p.name for p in day.iterdir()) == sorted([fresh.name, image.name])
