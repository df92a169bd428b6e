"""Engine.generate vs a bare diffusers pipe(...) call on the same model, same params, same process.

Target: ratio <= 1.03. Uses the "small" random model at 256x256 (a step takes ~0.1-0.5 s here).
The engine runs with its prompt cache cleared and a step callback that builds previews, so it
does all the work the bare call does plus its own.
"""

from __future__ import annotations

import argparse

from common import bare_pipe_call, interleaved_medians, model_dir

from sd3desk.core.params import GenerationParams
from sd3desk.core.settings import Device
from sd3desk.inference.engine import Engine
from sd3desk.inference.models import resolve_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="small")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    import torch

    engine = Engine(Device(args.device))
    engine.load(resolve_model(str(model_dir(args.size))))
    pipe = engine.pipeline
    params = GenerationParams(
        "a lighthouse on a cliff at dusk",
        negative_prompt="blurry",
        seed=7,
        steps=args.steps,
        guidance_scale=5.0,
        width=256,
        height=256,
    )
    previews = []

    def bare() -> None:
        bare_pipe_call(pipe, params)

    def ours() -> None:
        engine._prompt_cache.clear()  # no cache advantage: measure the engine's own overhead
        engine.generate(params, on_step=lambda info: previews.append(info.preview))

    medians = interleaved_medians({"bare": bare, "engine": ours}, args.repeats)
    print(
        f"model: {args.size} random SD3, {params.width}x{params.height}, {params.steps} steps, "
        f"{args.device}, torch threads {torch.get_num_threads()}"
    )
    per_step = medians["bare"] / params.steps
    print(f"bare pipe(...):     {medians['bare']:.3f} s  ({per_step:.3f} s/step)")
    print(f"Engine.generate:    {medians['engine']:.3f} s  (previews made: {len(previews)})")
    print(f"ratio engine/bare:  {medians['engine'] / medians['bare']:.3f}  (target <= 1.03)")


if __name__ == "__main__":
    main()
