"""Switching between two models (issue 15, item 2): with the one switched away from kept in RAM
(pinned, from a GPU) vs read again from disk (warm page cache), median of N switches back.

"medium" random test models on the CPU by default (--device cuda, --size for a GPU run)."""

from __future__ import annotations

import argparse
import shutil
import statistics
import time

from common import CACHE, model_dir

from sd3desk.core.settings import Device
from sd3desk.inference import engine as engine_module
from sd3desk.inference.engine import Engine
from sd3desk.inference.models import resolve_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="medium")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    first = model_dir(args.size)
    second = CACHE / f"{args.size}-sd3-copy"
    if not second.exists():
        shutil.copytree(first, second)
    sources = [resolve_model(str(first)), resolve_model(str(second))]
    engine = Engine(Device(args.device))
    engine.load(sources[0])
    engine.load(sources[1])

    def switch_back() -> float:
        started = time.perf_counter()
        engine.load(sources[0])
        seconds = time.perf_counter() - started
        engine.load(sources[1])
        return seconds

    parked = [switch_back() for _ in range(args.repeats)]
    room = engine_module.available_ram
    engine_module.available_ram = lambda: 0  # nothing kept: every switch reads from disk
    try:
        read = [switch_back() for _ in range(args.repeats)]
    finally:
        engine_module.available_ram = room
    median = statistics.median
    print(f"model_switch ({args.size} test model, {args.device}, median of {args.repeats})")
    print(f"  switch back, kept in RAM {median(parked) * 1000:8.1f} ms")
    print(f"  switch back, read again  {median(read) * 1000:8.1f} ms")
    print(f"  ratio {median(parked) / median(read):.3f}")


if __name__ == "__main__":
    main()
