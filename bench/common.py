"""Shared helpers for the benchmarks: cached random models, robust timing."""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CACHE = ROOT / ".cache" / "bench"


def model_dir(size: str) -> Path:
    """The random test model of `size` as a diffusers folder, built once into .cache/bench."""
    from sd3desk.inference.testmodel import write_test_model

    folder = CACHE / f"{size}-sd3"
    if not (folder / "model_index.json").exists():
        write_test_model(folder, size)
    return folder


def single_file(size: str) -> Path:
    from sd3desk.inference.testmodel import write_test_single_file

    path = CACHE / f"{size}-sd3.safetensors"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        write_test_single_file(path, size)
    return path


def free_port() -> int:
    """A TCP port nobody listens on now (for a server the benchmark starts)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def lighthouse_requests(model: str, count: int, steps: int) -> list[Any]:
    """`count` 256x256 requests for `model` with seeds 0..count-1 (the queue benchmarks' load)."""
    from sd3desk.core.params import GenerationParams

    return [
        GenerationParams(
            "a lighthouse at dusk",
            seed=k,
            steps=steps,
            guidance_scale=5.0,
            width=256,
            height=256,
            model=model,
        )
        for k in range(count)
    ]


def gpu_request(steps: int, size: int) -> Any:
    """The GPU benchmarks' request: SD3 Medium's guidance, a negative prompt (CFG on)."""
    from sd3desk.core.params import GenerationParams

    return GenerationParams(
        "a lighthouse on a cliff at dusk, oil painting",
        negative_prompt="blurry",
        seed=1,
        steps=steps,
        guidance_scale=7.0,
        width=size,
        height=size,
    )


def bare_pipe_call(pipe: Any, params: Any) -> Any:
    """The plain diffusers call the engine is compared with: same request, same CPU-seeded noise."""
    import torch

    return pipe(
        prompt=params.prompt,
        negative_prompt=params.negative_prompt,
        num_inference_steps=params.steps,
        guidance_scale=params.guidance_scale,
        width=params.width,
        height=params.height,
        max_sequence_length=params.max_sequence_length,
        generator=torch.Generator("cpu").manual_seed(params.seed),
    )


def interleaved_medians(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each callable, run in turns so drift on a shared machine hits all alike."""
    for fn in runs.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}
