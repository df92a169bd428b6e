"""img2img through the Engine vs a bare diffusers StableDiffusion3Img2ImgPipeline call (issue 12).

1. Time: the same model, picture, prompt, seed, strength 0.6, in one process; the engine with its
   prompt cache cleared and a step callback that makes previews. Target: ratio <= 1.03.
2. Memory: resident memory (VmRSS, after giving freed heap back with malloc_trim) with the
   text-to-image pipeline loaded and used, then with the img2img and inpainting pipelines made
   from it (diffusers' from_pipe: "ready"), then after running both once (their activations,
   the VAE encoder's among them, which any img2img needs). Target: ready <= 1.05x.

"small" random model, 256x256 (or --size/--device for a GPU run with bigger weights).
"""

from __future__ import annotations

import argparse
import gc

import numpy as np
from common import interleaved_medians, model_dir
from PIL import Image

from sd3desk.core.params import GenerationParams
from sd3desk.core.settings import Device
from sd3desk.inference.engine import Engine
from sd3desk.inference.models import resolve_model


def resident_mb() -> float:
    import contextlib
    import ctypes

    gc.collect()
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # freed heap back to the system (glibc)
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="small")
    parser.add_argument("--side", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--strength", type=float, default=0.6)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    import torch
    from diffusers import StableDiffusion3Img2ImgPipeline

    engine = Engine(Device(args.device))
    engine.load(resolve_model(str(model_dir(args.size))))
    side = args.side
    y, x = np.mgrid[0:side, 0:side]
    picture = Image.fromarray(
        np.stack([x * 255 / side, y * 255 / side, 128 + 0 * x], axis=-1).astype("uint8")
    )
    text = GenerationParams(
        "a lighthouse on a cliff at dusk",
        negative_prompt="blurry",
        seed=7,
        steps=args.steps,
        guidance_scale=5.0,
        width=side,
        height=side,
    )
    job = text.replace(source_image="0" * 64, strength=args.strength)

    # memory first: text to image alone, then with the picture pipelines ready and used
    engine.generate(text)
    alone = resident_mb()
    engine._picture_pipe("img2img")
    engine._picture_pipe("inpaint")
    ready = resident_mb()
    engine.generate(job, source=picture)
    engine.generate(job.replace(mask_image="0" * 64), source=picture, mask=picture.convert("L"))
    used = resident_mb()

    bare_pipe = StableDiffusion3Img2ImgPipeline.from_pipe(
        engine.pipeline, dtype=engine.pipeline.transformer.dtype
    )
    bare_pipe.set_progress_bar_config(disable=True)
    previews = []

    def bare() -> None:
        bare_pipe(
            prompt=job.prompt,
            negative_prompt=job.negative_prompt,
            image=picture,
            strength=job.strength,
            num_inference_steps=job.steps,
            guidance_scale=job.guidance_scale,
            height=side,
            width=side,
            generator=torch.Generator("cpu").manual_seed(job.seed or 0),
        )

    def ours() -> None:
        engine._prompt_cache.clear()  # no cache advantage: the engine's own overhead
        engine.generate(job, on_step=lambda info: previews.append(info.preview), source=picture)

    times = interleaved_medians({"bare": bare, "engine": ours}, args.repeats)
    print(
        f"img2img ({args.size} model, {side}², {args.steps} steps x strength {args.strength}, "
        f"{args.device}, median of {args.repeats}): bare {times['bare']:.3f} s · engine "
        f"{times['engine']:.3f} s · ratio {times['engine'] / times['bare']:.3f}"
    )
    print(
        f"resident memory: text to image {alone:.0f} MB · img2img and inpainting ready "
        f"{ready:.0f} MB (ratio {ready / alone:.3f}) · after running both {used:.0f} MB "
        f"(ratio {used / alone:.3f})"
    )


if __name__ == "__main__":
    main()
