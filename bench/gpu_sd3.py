"""GPU benchmark: SD3-Medium-sized random weights (real config numbers), bf16, 1024x1024.

For each memory plan: seconds per image and peak VRAM, Engine.generate vs a bare diffusers
pipe(...) call measured in the same run; plus the prompt-cache gain with real-size text encoders
and a device-consistency check of the tiny model (same seed on CPU and CUDA).

Needs a CUDA GPU with ~40 GB free (random fp32 init on the GPU, then bf16). Writes a JSON summary
to --json when given. Weights are random: the images are noise; only timings and memory count.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from common import bare_pipe_call, gpu_request

from sd3desk.core.params import GenerationParams, ModelFamily
from sd3desk.core.settings import Device
from sd3desk.inference.devices import Placement, ResolvedPlan, pick_device, place_pipeline
from sd3desk.inference.engine import Engine
from sd3desk.inference.models import ModelKind, ModelSource, bundled_config_dir

GIB = 2**30


def log(*args: object) -> None:
    print(*args, flush=True)


def build_random_sd3_medium(work: Path):
    """StableDiffusion3Pipeline with SD3 Medium's architecture and random bf16 weights, on CPU."""
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import (
        CLIPTextConfig,
        CLIPTextModelWithProjection,
        T5Config,
        T5EncoderModel,
    )

    from sd3desk.inference.loading import _clip_tokenizers
    from sd3desk.inference.testmodel import make_tokenizers

    root = bundled_config_dir(ModelFamily.sd3_medium)
    torch.manual_seed(0)

    def on_gpu(make):
        # Random init is fast on the GPU; the weights then go to the CPU in bf16 so every memory
        # plan starts from where a real load would leave them.
        with torch.device("cuda"):
            module = make()
        return module.to(torch.bfloat16).to("cpu").eval()

    transformer = on_gpu(
        lambda: SD3Transformer2DModel.from_config(
            SD3Transformer2DModel.load_config(root / "transformer")
        )
    )
    vae = on_gpu(lambda: AutoencoderKL.from_config(AutoencoderKL.load_config(root / "vae")))
    clip_l = on_gpu(
        lambda: CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(root / "text_encoder"))
    )
    clip_g = on_gpu(
        lambda: CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(root / "text_encoder_2"))
    )
    t5 = on_gpu(lambda: T5EncoderModel(T5Config.from_pretrained(root / "text_encoder_3")))
    tokenizers = _clip_tokenizers(root, ModelFamily.sd3_medium)
    # The real T5 tokenizer is not bundled; the test model's tiny one yields valid T5 ids.
    tokenizers["tokenizer_3"] = make_tokenizers(work)["tokenizer_3"]
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(root / "scheduler")
    return StableDiffusion3Pipeline(
        transformer=transformer,
        vae=vae,
        text_encoder=clip_l,
        text_encoder_2=clip_g,
        text_encoder_3=t5,
        scheduler=scheduler,
        **tokenizers,
    )


SMOKE = False  # --smoke: check this script's logic on the CPU with the tiny model


def sync() -> None:
    if not SMOKE:
        torch.cuda.synchronize()


def timed(fn) -> float:
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def measure_plan(engine: Engine, pipe, params: GenerationParams, repeats: int) -> dict:
    def bare() -> None:
        bare_pipe_call(pipe, params)

    def ours() -> None:
        engine._prompt_cache.clear()  # same work as the bare call: encode every time
        engine.generate(params, on_step=lambda info: None)

    warm = params.replace(steps=2)
    engine.generate(warm)
    pipe(prompt="warm-up", num_inference_steps=2, width=params.width, height=params.height)
    if not SMOKE:
        torch.cuda.reset_peak_memory_stats()
    times = {"bare": [], "engine": []}
    for _ in range(repeats):
        times["bare"].append(timed(bare))
        times["engine"].append(timed(ours))
    peak = 0.0 if SMOKE else torch.cuda.max_memory_allocated() / GIB
    cached = engine.generate(params.replace(seed=params.seed + 1))
    bare_s, engine_s = min(times["bare"]), min(times["engine"])
    return {
        "steps": params.steps,
        "bare_s_per_image": round(bare_s, 3),
        "engine_s_per_image": round(engine_s, 3),
        "ratio_engine_over_bare": round(engine_s / bare_s, 4),
        "s_per_step_engine": round(cached.timings["denoise_s"] / params.steps, 4),
        "peak_vram_gib": round(peak, 2),
        "engine_cached_rerun_s": round(cached.timings["total_s"], 3),
        "encode_s_miss_vs_hit": None,
    }


def device_consistency(work: Path) -> dict:
    """The tiny model, same seed: CPU fp32 vs CUDA fp32 vs CUDA bf16 (max pixel difference)."""
    import numpy as np

    from sd3desk.inference.models import resolve_model
    from sd3desk.inference.testmodel import write_test_model

    folder = write_test_model(work / "tiny")
    params = GenerationParams("a cat", seed=5, steps=8, guidance_scale=5.0, width=512, height=512)
    images = {}
    for label, device in (("cpu", Device.cpu), ("cuda", Device.cuda)):
        engine = Engine(device, cache_dir=work)
        if device is Device.cuda:  # fp32 on both sides: only the hardware differs
            engine._device = dataclasses.replace(pick_device(Device.cuda), dtype="float32")
        engine.load(resolve_model(str(folder)))
        images[label] = np.asarray(engine.generate(params).images[0]).astype(int)
    bf16 = Engine(Device.cuda, cache_dir=work)
    bf16.load(resolve_model(str(folder)))
    images["cuda_bf16"] = np.asarray(bf16.generate(params).images[0]).astype(int)
    return {
        "cpu_vs_cuda_fp32_max_diff": int(np.abs(images["cpu"] - images["cuda"]).max()),
        "cpu_vs_cuda_fp32_mean_diff": float(np.abs(images["cpu"] - images["cuda"]).mean()),
        "cpu_vs_cuda_bf16_mean_diff": float(np.abs(images["cpu"] - images["cuda_bf16"]).mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--sequential-steps", type=int, default=4)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plans", default="gpu,no-t5,offload,sequential")
    parser.add_argument("--skip-consistency", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny model: test the script")
    args = parser.parse_args()
    global SMOKE
    SMOKE = args.smoke
    work = Path(tempfile.mkdtemp())
    if SMOKE:
        from sd3desk.inference.testmodel import build_pipeline

        results: dict = {"gpu": "none (smoke test)", "torch": torch.__version__}
        pipe, device, kind, args.size = (
            build_pipeline("tiny"),
            pick_device(Device.cpu),
            Device.cpu,
            256,
        )
    else:
        assert torch.cuda.is_available(), "needs a CUDA GPU"
        results = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}
        log(f"GPU: {results['gpu']} · torch {torch.__version__}")
        if not args.skip_consistency:
            results["device_consistency"] = device_consistency(work)
            log("tiny model, same seed:", results["device_consistency"])
        start = time.perf_counter()
        pipe = build_random_sd3_medium(work)
        results["build_s"] = round(time.perf_counter() - start, 1)
        log(f"built SD3 Medium-sized random pipeline in {results['build_s']} s")
        device, kind = pick_device(Device.cuda), Device.cuda
    source = ModelSource(ModelKind.folder, work, ModelFamily.sd3_medium, "random SD3 Medium", "")
    params = gpu_request(args.steps, args.size)
    plans = [
        ("gpu", Placement.device, True, params),
        ("no-t5", Placement.device, False, params),
        ("offload", Placement.offload, True, params),
        ("sequential", Placement.sequential, True, params.replace(steps=args.sequential_steps)),
    ]
    t5, t5_tokenizer = pipe.text_encoder_3, pipe.tokenizer_3
    results["plans"] = {}
    wanted = args.plans.split(",")
    plans = [p for p in plans if p[0] in wanted and not (SMOKE and p[1] is not Placement.device)]
    for name, placement, use_t5, plan_params in plans:
        pipe.remove_all_hooks()
        pipe.to("cpu")
        torch.cuda.empty_cache()
        pipe.text_encoder_3 = t5 if use_t5 else None
        pipe.tokenizer_3 = t5_tokenizer if use_t5 else None
        place_pipeline(pipe, placement, device)
        engine = Engine(kind, cache_dir=work)
        engine.attach(pipe, source, ResolvedPlan(placement, use_t5))
        try:
            repeats = 1 if name == "sequential" else args.repeats
            row = measure_plan(engine, pipe, plan_params, repeats)
            fresh = plan_params.replace(prompt="a fresh prompt", steps=1)
            miss = engine.generate(fresh).timings["encode_s"]
            hit = engine.generate(fresh.replace(seed=9)).timings["encode_s"]
            row["encode_s_miss_vs_hit"] = [round(miss, 4), round(hit, 5)]
        except Exception as exc:  # keep the other plans' figures
            row = {"error": f"{type(exc).__name__}: {exc}"}
        results["plans"][name] = row
        log(f"{name:10s} {json.dumps(row)}")
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
    log(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
