"""Fixtures for engine tests: one loaded tiny engine per session, image helpers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sd3desk.core.params import GenerationParams


@pytest.fixture(scope="session")
def engine(tiny_model_dir: Path, cache_dir: Path):
    """An Engine with the tiny folder model loaded on the CPU."""
    from sd3desk.core.settings import Device
    from sd3desk.inference.engine import Engine
    from sd3desk.inference.models import resolve_model

    engine = Engine(Device.cpu, cache_dir=cache_dir)
    engine.load(resolve_model(str(tiny_model_dir)))
    return engine


@pytest.fixture
def params() -> GenerationParams:
    return GenerationParams(
        prompt="a cat", seed=1, steps=4, guidance_scale=5.0, width=256, height=256
    )


def pixels(image) -> np.ndarray:
    return np.asarray(image).astype(np.int16)


def max_diff(a, b) -> int:
    return int(np.abs(pixels(a) - pixels(b)).max())


def sd3desk(data: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`sd3desk --data-dir DATA ARGS…` in a subprocess, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "sd3desk", "--data-dir", str(data), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        env={**os.environ, "QT_QPA_PLATFORM": "offscreen", **(env or {})},
    )
