"""Finding TAESD3 on disk (the revision refs/main names, a taesd3 model folder) and its setting,
without torch: discovery only looks at files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tinytaesd import REPO_FOLDER, cache_taesd3

from sd3desk.core.settings import Settings, load_settings, save_settings
from sd3desk.inference.discovery import find_taesd3

CONFIG = {"_class_name": "AutoencoderTiny", "latent_channels": 16, "scaling_factor": 1.0}


def decoder_files(folder: Path, config: dict | None = None, weights: bool = True) -> Path:
    """A folder laid out as TAESD3's (the bytes of its weights do not matter here)."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config or CONFIG))
    if weights:
        (folder / "diffusion_pytorch_model.safetensors").write_bytes(b"\0" * 64)
    return folder


@pytest.fixture
def cache(own_hub_cache: Path) -> Path:
    return own_hub_cache


def test_the_cached_snapshot_refs_main_names_is_found(cache, tmp_path):
    whole = decoder_files(tmp_path / "whole")
    current = cache_taesd3(cache, whole, revision="b" * 40)
    # an older download cut short, cached beside it, is not picked even though it sorts first
    cache_taesd3(cache, decoder_files(tmp_path / "cut", weights=False), "a" * 40, main=False)
    assert find_taesd3() == current
    (cache / REPO_FOLDER / "refs" / "main").write_text("a" * 40)
    assert find_taesd3() is None  # the revision loading would use is incomplete


def test_a_snapshot_without_refs_main_is_not_used(cache, tmp_path):
    cache_taesd3(cache, decoder_files(tmp_path / "whole"), main=False)
    assert find_taesd3() is None


def test_a_taesd3_folder_in_the_model_folders_is_found(cache, tmp_path):
    models = tmp_path / "models"
    folder = decoder_files(models / "taesd3")
    assert find_taesd3([models]) == folder
    assert find_taesd3([folder]) == folder  # the folder itself given as a model folder
    assert find_taesd3([tmp_path / "elsewhere"]) is None
    # the cache comes first: what the Models dialog downloaded
    cached = cache_taesd3(cache, decoder_files(tmp_path / "whole"))
    assert find_taesd3([models]) == cached


@pytest.mark.parametrize(
    "config",
    [
        {**CONFIG, "latent_channels": 4},  # an SD1/SDXL TAESD: cannot decode SD3 latents
        {**CONFIG, "_class_name": "AutoencoderKL"},
    ],
)
def test_another_autoencoder_named_taesd3_is_refused(cache, tmp_path, config):
    decoder_files(tmp_path / "models" / "taesd3", config)
    assert find_taesd3([tmp_path / "models"]) is None


def test_an_unreadable_config_is_refused(cache, tmp_path):
    folder = decoder_files(tmp_path / "models" / "taesd3")
    (folder / "config.json").write_bytes(b"\xff not json")
    assert find_taesd3([tmp_path / "models"]) is None


def test_the_setting_is_saved_and_read_back(tmp_path):
    path = tmp_path / "settings.json"
    assert Settings().preview_decoder is True  # on: used whenever it is on disk
    save_settings(Settings(preview_decoder=False), path)
    assert json.loads(path.read_text())["preview_decoder"] is False
    assert load_settings(path).preview_decoder is False
    path.write_text(json.dumps({"preview_decoder": "yes"}))
    assert load_settings(path).preview_decoder is True  # a bad value is ignored
