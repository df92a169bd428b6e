"""What a step preview costs: none vs the linear x0 preview vs TAESD3, as a share of the step.

Target (issue 15): TAESD3 previews at <= 2% of an SD3 step on a GPU. Two measures:

1. FLOPs, counted on the meta device (nothing computed): one TAESD3 preview (as sd3desk makes
   it, at half the image's size and at most 512 px, and a full-size decode for comparison)
   against one SD3 Medium MMDiT step (CFG: a batch of 2, 77 + 256 text tokens), per size.
2. Seconds on this machine: the "small" random SD3 (bench/common.py) on the CPU at 256x256,
   generating with no step callback, with linear previews, and with TAESD3 previews; the
   difference per step is the preview's cost. The preview functions alone are timed too.

No TAESD3 weights are downloaded: a random AutoencoderTiny with TAESD3's architecture stands in
(its cost does not depend on its weights).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from common import ROOT, interleaved_medians, model_dir

from sd3desk.core.params import GenerationParams
from sd3desk.core.settings import Device
from sd3desk.inference.engine import Engine
from sd3desk.inference.models import resolve_model
from sd3desk.inference.preview import decoded_rgb, latents_to_rgb, load_decoder

# madebyollin/taesd3's architecture (taesd.py's Decoder(latent_channels=16), which its diffusers
# config.json describes): AutoencoderTiny's defaults - four stages of 64 channels, encoder blocks
# 1, 3, 3, 3, decoder blocks 3, 3, 3, 1, ReLU, nearest 2x upsampling - with 16 latent channels;
# scale 1 and shift 0 (TAESD decodes the latents the model denoises as they are).
TAESD3_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "encoder_block_out_channels": (64, 64, 64, 64),
    "decoder_block_out_channels": (64, 64, 64, 64),
    "act_fn": "relu",
    "upsample_fn": "nearest",
    "latent_channels": 16,
    "upsampling_scaling_factor": 2,
    "num_encoder_blocks": (1, 3, 3, 3),
    "num_decoder_blocks": (3, 3, 3, 1),
    "scaling_factor": 1.0,
    "shift_factor": 0.0,
}
SD3_MEDIUM_MMDIT = ROOT / "sd3desk" / "resources" / "configs" / "sd3-medium" / "transformer"


def flops(fn: Any) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def flop_shares(sides: tuple[int, ...]) -> None:
    """TAESD3's FLOPs per preview against an SD3 Medium MMDiT step, per square size."""
    import torch
    from diffusers import AutoencoderTiny, SD3Transformer2DModel

    config = json.loads((SD3_MEDIUM_MMDIT / "config.json").read_text())
    with torch.device("meta"):
        decoder = AutoencoderTiny(**TAESD3_CONFIG)
        mmdit = SD3Transformer2DModel.from_config(config)
    params = sum(p.numel() for p in decoder.parameters())
    print(f"TAESD3 stand-in: {params:,} parameters ({params * 4 / 1e6:.1f} MB in float32)")
    print("size       MMDiT step   preview as made (share)     full-size decode (share)")
    for side in sides:
        with torch.device("meta"):
            latents = torch.empty(1, 16, side // 8, side // 8)
            batch = {
                "hidden_states": torch.empty(2, 16, side // 8, side // 8),
                "encoder_hidden_states": torch.empty(2, 77 + 256, config["joint_attention_dim"]),
                "pooled_projections": torch.empty(2, config["pooled_projection_dim"]),
                "timestep": torch.empty(2),
            }
        step = flops(lambda: mmdit(**batch))  # noqa: B023 - called at once
        made = flops(lambda: decoded_rgb(decoder, latents))  # noqa: B023
        full = flops(lambda: decoder.decode(latents))  # noqa: B023
        print(
            f"{side:4}x{side:<4}  {step / 1e12:5.1f} TFLOP  {made / 1e9:6.1f} GFLOP "
            f"({made / step:5.2%})      {full / 1e9:6.1f} GFLOP ({full / step:5.2%})"
        )


def write_standin(folder: Path) -> Path:
    import torch
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    AutoencoderTiny(**TAESD3_CONFIG).save_pretrained(folder)
    return folder


def median_s(fn: Any, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="small")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--side", type=int, default=256, help="the CPU run's width and height")
    args = parser.parse_args()

    import torch

    flop_shares((512, 768, 1024, 1536))

    engine = Engine(Device.cpu)
    engine.load(resolve_model(str(model_dir(args.size))))
    with tempfile.TemporaryDirectory() as tmp:
        decoder = load_decoder(write_standin(Path(tmp) / "taesd3"), torch.device("cpu"), None)
    params = GenerationParams(
        "a lighthouse on a cliff at dusk",
        seed=7,
        steps=args.steps,
        guidance_scale=5.0,
        width=args.side,
        height=args.side,
    )
    shown: list[Any] = []

    def run(with_decoder: Any, previews: bool) -> None:
        engine._decoder = with_decoder  # (set_preview_decoder would load it again each time)
        engine.generate(params, on_step=shown.append if previews else None)

    medians = interleaved_medians(
        {
            "none": lambda: run(None, previews=False),
            "linear": lambda: run(None, previews=True),
            "taesd3": lambda: run(decoder, previews=True),
        },
        args.repeats,
    )
    latents = torch.randn(1, 16, args.side // 8, args.side // 8)
    alone = {
        "linear": median_s(lambda: latents_to_rgb(latents[0]), 50),
        "taesd3": median_s(lambda: decoded_rgb(decoder, latents), 10),
    }
    step = medians["none"] / args.steps
    print(
        f"\n{args.size} random SD3 on the CPU, {args.side}x{args.side}, {args.steps} steps, "
        f"torch threads {torch.get_num_threads()}: {step * 1000:.0f} ms/step without previews"
    )
    print("preview   per step (job difference)   share   the preview function alone")
    for kind in ("linear", "taesd3"):
        extra = (medians[kind] - medians["none"]) / args.steps
        print(
            f"{kind:8}  {extra * 1000:8.1f} ms{'':17}{extra / step:7.1%}"
            f"   {alone[kind] * 1000:8.2f} ms ({alone[kind] / step:.1%})"
        )


if __name__ == "__main__":
    main()
