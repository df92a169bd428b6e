"""Prompt-embedding cache: a re-run with a new seed vs the first run of a prompt."""

from __future__ import annotations

import argparse
import itertools

from common import interleaved_medians, model_dir

from sd3desk.core.params import GenerationParams
from sd3desk.core.settings import Device
from sd3desk.inference.engine import Engine
from sd3desk.inference.models import resolve_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="small")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    engine = Engine(Device.cpu)
    engine.load(resolve_model(str(model_dir(args.size))))
    params = GenerationParams(
        "a lighthouse on a cliff at dusk",
        negative_prompt="blurry",
        steps=args.steps,
        guidance_scale=5.0,
        width=256,
        height=256,
    )
    seeds = itertools.count(1)

    def first_run() -> None:
        engine._prompt_cache.clear()
        assert not engine.generate(params.replace(seed=next(seeds))).prompt_cache_hit

    def rerun_new_seed() -> None:
        assert engine.generate(params.replace(seed=next(seeds))).prompt_cache_hit

    medians = interleaved_medians({"first": first_run, "rerun": rerun_new_seed}, args.repeats)
    engine._prompt_cache.clear()
    miss = engine.generate(params.replace(seed=1)).timings["encode_s"]
    hit = engine.generate(params.replace(seed=2)).timings["encode_s"]
    print(f"model: {args.size} random SD3, 256x256, {args.steps} steps, cpu")
    print(f"first run of a prompt:   {medians['first']:.3f} s")
    print(f"re-run with a new seed:  {medians['rerun']:.3f} s")
    print(f"ratio rerun/first:       {medians['rerun'] / medians['first']:.3f}")
    print(f"prompt encoding: {miss * 1000:.1f} ms on a miss, {hit * 1000:.2f} ms on a hit")


if __name__ == "__main__":
    main()
