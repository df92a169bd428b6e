"""GPU benchmark of the memory plans for small GPUs (issue 14): SD3-Medium-sized random weights
saved as a diffusers folder and as GGUF Q8_0/Q4_0 transformers, each plan loaded through
sd3desk's own loaders (Engine.load), 1024x1024, 28 steps.

Per plan: seconds per image (median of --repeats after a warm-up), peak VRAM while loading and
while generating (torch's allocator; the CUDA context adds ~0.5 GB on top), and the time ratio
to the 16-bit plan. Goal: SD3 Medium with T5 under 8 GB peak at <= 1.3x the 16-bit time.

Needs a CUDA GPU with ~40 GB free and ~30 GB of local disk. --smoke checks the script on the
CPU with the tiny model (the plans that run there). Random weights: the images are noise.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from common import gpu_request

from sd3desk.core.params import GenerationParams
from sd3desk.core.settings import Device, MemoryPlan
from sd3desk.inference.engine import Engine
from sd3desk.inference.models import resolve_model
from sd3desk.inference.testmodel import write_gguf

GIB = 2**30
# (row, model file, plan): the 16-bit baseline first
ROWS = [
    ("bf16 all on the GPU", "folder", MemoryPlan.gpu),
    ("T5 8-bit", "folder", MemoryPlan.t5_8bit),
    ("T5 NF4", "folder", MemoryPlan.t5_4bit),
    ("MMDiT fp8 + T5 NF4", "folder", MemoryPlan.fp8),
    ("MMDiT NF4 + T5 NF4", "folder", MemoryPlan.nf4),
    ("GGUF Q8_0 + T5 NF4", "q8", MemoryPlan.t5_4bit),
    ("GGUF Q4_0 + T5 NF4", "q4", MemoryPlan.t5_4bit),
    ("GGUF Q8_0, T5 16-bit", "q8", MemoryPlan.gpu),
]


def log(*args: object) -> None:
    print(*args, flush=True)


def sync(cuda: bool) -> None:
    if cuda:
        torch.cuda.synchronize()


def build(work: Path, smoke: bool) -> dict[str, Path]:
    """The random model as a diffusers folder, and its MMDiT as GGUF Q8_0 and Q4_0 files."""
    if smoke:
        from sd3desk.inference.testmodel import build_pipeline

        pipe = build_pipeline("tiny")
    else:
        from gpu_sd3 import build_random_sd3_medium

        pipe = build_random_sd3_medium(work)
    folder = work / "random-sd3-medium"
    pipe.save_pretrained(folder, safe_serialization=True)
    files = {"folder": folder}
    strings = {"sd3desk.test_size": "tiny"} if smoke else {}
    for name, quant in (("q8", "Q8_0"), ("q4", "Q4_0")):
        files[name] = write_gguf(pipe.transformer, work / f"mmdit-{quant}.gguf", quant, strings)
    return files


def measure(
    files: dict[str, Path], file: str, plan: MemoryPlan, params: GenerationParams, args
) -> dict:
    cuda = not args.smoke
    device = Device.cpu if args.smoke else Device.cuda
    engine = Engine(device, cache_dir=files["folder"].parent, model_dirs=(files["folder"],))
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    engine.load(resolve_model(str(files[file])), plan)
    load_s = time.perf_counter() - started
    load_peak = torch.cuda.max_memory_allocated() / GIB if cuda else 0.0
    resident = torch.cuda.memory_allocated() / GIB if cuda else 0.0
    engine.generate(params.replace(steps=2))  # warm-up (kernels, autotuning)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for k in range(args.repeats):
        engine._prompt_cache.clear()  # every image encodes its prompt, as a new prompt would
        sync(cuda)
        started = time.perf_counter()
        engine.generate(params.replace(seed=params.seed + k))
        sync(cuda)
        times.append(time.perf_counter() - started)
    loaded = engine.loaded_model()
    row = {
        "plan": loaded.plan.describe(),
        "s_per_image": round(statistics.median(times), 3),
        "load_s": round(load_s, 1),
        "weights_gib": round(resident, 2),
        "peak_load_gib": round(load_peak, 2),
        "peak_generate_gib": round(torch.cuda.max_memory_allocated() / GIB if cuda else 0.0, 2),
    }
    engine.unload()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rows", help="comma-separated row numbers to run (default: all)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny model: test the script")
    args = parser.parse_args()
    if args.smoke:
        args.size, args.steps, args.repeats = 256, 2, 1
    else:
        assert torch.cuda.is_available(), "needs a CUDA GPU (or --smoke)"
    work = Path(tempfile.mkdtemp(prefix="sd3desk-plans-"))
    started = time.perf_counter()
    files = build(work, args.smoke)
    gpu = "CPU (smoke)" if args.smoke else torch.cuda.get_device_name(0)
    ready = time.perf_counter() - started
    log(f"{gpu} · torch {torch.__version__} · model files ready in {ready:.0f} s")
    params = gpu_request(args.steps, args.size)
    wanted = {int(n) for n in args.rows.split(",")} if args.rows else set(range(len(ROWS)))
    results: dict = {"gpu": gpu, "torch": torch.__version__, "rows": {}}
    base = None
    for number, (name, file, plan) in enumerate(ROWS):
        if number not in wanted:
            continue
        try:
            row = measure(files, file, plan, params, args)
        except Exception as exc:  # keep the other rows' figures
            row = {"error": f"{type(exc).__name__}: {exc}".replace("\n", " ")[:300]}
        if "s_per_image" in row:
            base = base or row["s_per_image"]
            row["ratio_to_bf16"] = round(row["s_per_image"] / base, 3)
        results["rows"][name] = row
        log(f"{number} {name:22s} {json.dumps(row)}")
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
    log("\n| plan | s/image | x bf16 | weights GiB | peak load GiB | peak generate GiB |")
    log("| --- | --- | --- | --- | --- | --- |")
    for name, row in results["rows"].items():
        if "error" in row:
            log(f"| {name} | {row['error']} | | | | |")
        else:
            log(
                f"| {name} | {row['s_per_image']} | {row['ratio_to_bf16']} | "
                f"{row['weights_gib']} | {row['peak_load_gib']} | {row['peak_generate_gib']} |"
            )


if __name__ == "__main__":
    main()
