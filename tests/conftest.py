"""Shared fixtures: offscreen Qt, an isolated Hugging Face cache, the tiny test model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The fake Hugging Face Hub's `hub` fixture, for the download and the model-dialog tests alike.
from fakehub import hub  # noqa: F401

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(autouse=True)
def _isolated_hub_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """No test may see the developer's real Hugging Face cache or model folders."""
    cache = tmp_path_factory.getbasetemp() / "empty-hf-cache"
    cache.mkdir(exist_ok=True)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("SD3DESK_MODEL_DIRS", raising=False)
    monkeypatch.delenv("SD3DESK_LORA_DIRS", raising=False)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random SD3 as a diffusers folder (built once per test session)."""
    from sd3desk.inference.testmodel import write_test_model

    return write_test_model(tmp_path_factory.mktemp("models") / "tiny-sd3")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache folder (model hashes, the built test model) for the whole session."""
    return tmp_path_factory.mktemp("sd3desk-cache")


@pytest.fixture
def own_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache of this test's own (the session's is shared by every test)."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache
