"""Fast mode on a GPU in one run (issue 15): SD3-Medium-sized random weights saved as a diffusers
folder, then each measurement in a fresh process (so a compile cache is really cold or warm):

- bare: `StableDiffusion3Pipeline.from_pretrained(folder).to("cuda")` (the load baseline);
- eager / fast / fastest: `Engine.load` to ready, the warm-up (fast: the compile, cold; then
  again in a new process with the on-disk cache warm), seconds per image at 1024², 28 steps
  (median of --repeats after the warm-up), peak VRAM, the mean and largest pixel difference
  from eager's image of the same seed, and the preview's cost per step.

Targets: fast <= 1/1.3 of eager's time, fastest <= 1/1.6 (Hopper); fast within 2/255 mean of
eager; warm start (load + warm-up, cache on disk) <= 1.2x eager's load; eager's load <= 0.8x
bare. Needs ~40 GB of GPU memory, ~20 GB of disk; --smoke runs the same on the CPU with the
tiny model (fastest is skipped there). Random weights: the images are noise.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

GIB = 2**30


def log(*args: object) -> None:
    print(*args, flush=True)


# ---------------------------------------------------------------------- in a child process


def child(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch
    from common import gpu_request

    from sd3desk.core.params import GenerationParams
    from sd3desk.core.settings import Device, MemoryPlan, Speed
    from sd3desk.inference.devices import import_ml_stack

    cuda = not args.smoke
    device = "cuda" if cuda else "cpu"
    import_ml_stack()  # (the app imports torch and diffusers while its window opens)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    if args.child == "bare":
        from diffusers import StableDiffusion3Pipeline

        dtype = torch.bfloat16 if cuda else torch.float32
        sync()
        started = time.perf_counter()
        StableDiffusion3Pipeline.from_pretrained(args.folder, torch_dtype=dtype).to(device)
        sync()
        return {"ready_s": round(time.perf_counter() - started, 2)}

    from sd3desk.core.modelhash import model_hash
    from sd3desk.core.settings import hash_cache_file
    from sd3desk.inference.engine import Engine
    from sd3desk.inference.models import resolve_model

    engine = Engine(Device.cuda if cuda else Device.cpu, cache_dir=Path(args.cache))
    source = resolve_model(args.folder)
    model_hash(source.hash_files(), hash_cache_file(Path(args.cache)))  # (once per model file)
    started = time.perf_counter()
    engine.load(source, MemoryPlan.gpu, speed=Speed(args.child))
    sync()
    ready = time.perf_counter() - started
    started = time.perf_counter()
    if Speed(args.child) is Speed.off:  # eager warms its kernels too, for a fair start
        engine.generate(
            GenerationParams("warm-up", seed=0, steps=2, width=args.size, height=args.size)
        )
    else:
        engine.warm_up(args.size, args.size)
    sync()
    warm = time.perf_counter() - started
    request = gpu_request(args.steps, args.size)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    image = np.asarray(engine.generate(request).images[0])
    np.save(args.image, image)
    times, previews = [], []
    for k in range(args.repeats):  # new seeds, the prompt cached: as a user's next images
        for with_preview, into in ((False, times), (True, previews)):
            sync()
            started = time.perf_counter()
            engine.generate(
                request.replace(seed=10 + k),
                on_step=(lambda info: None) if with_preview else None,
            )
            sync()
            into.append(time.perf_counter() - started)
    per_image = statistics.median(times)
    return {
        "ready_s": round(ready, 2),
        "warm_up_s": round(warm, 2),
        "s_per_image": round(per_image, 3),
        "preview_ms_per_step": round(
            (statistics.median(previews) - per_image) / args.steps * 1e3, 2
        ),
        "step_ms": round(per_image / args.steps * 1e3, 1),
        "peak_vram_gib": round(torch.cuda.max_memory_allocated() / GIB, 2) if cuda else 0.0,
        "made_with": dict(engine.loaded_model().made_with()),
    }


# ---------------------------------------------------------------------- the run


def run_child(name: str, folder: Path, cache: Path, image: Path, args) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        name,
        "--folder",
        str(folder),
        "--cache",
        str(cache),
        "--image",
        str(image),
        "--steps",
        str(args.steps),
        "--size",
        str(args.size),
        "--repeats",
        str(args.repeats),
        *(["--smoke"] if args.smoke else []),
    ]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode or not lines:
        return {"error": (done.stderr.strip().splitlines() or ["?"])[-1][:300]}
    row = json.loads(lines[-1])
    row["process_s"] = round(time.perf_counter() - started, 1)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny model: test the script")
    parser.add_argument(
        "--cpu", choices=("tiny", "small"), help="on the CPU with this test model (as --smoke)"
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    parser.add_argument("--image", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cpu:
        args.smoke = True
    elif args.smoke and not args.child:
        args.size, args.steps, args.repeats, args.cpu = 256, 4, 2, "tiny"
    if args.child:
        print(json.dumps(child(args)), flush=True)
        return

    import numpy as np
    import torch

    work = Path(tempfile.mkdtemp(prefix="sd3desk-fast-"))
    started = time.perf_counter()
    if args.smoke:
        from sd3desk.inference.testmodel import write_test_model

        folder = write_test_model(work / "model", args.cpu)
        gpu, capability = f"CPU, {args.cpu} test model", (0, 0)
    else:
        from gpu_sd3 import build_random_sd3_medium

        build_random_sd3_medium(work).save_pretrained(work / "model", safe_serialization=True)
        folder = work / "model"
        gpu, capability = torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0)
    log(
        f"{gpu} · torch {torch.__version__} · model folder in {time.perf_counter() - started:.0f} s"
    )
    runs = [("bare", "bare", "none"), ("eager", "off", "eager"), ("fast cold", "fast", "fast")]
    runs.append(("fast warm", "fast", "fast"))  # the same cache folder, now filled
    if capability >= (8, 9):
        runs += [("fastest cold", "fastest", "fastest"), ("fastest warm", "fastest", "fastest")]
    results: dict = {"gpu": gpu, "torch": torch.__version__, "rows": {}}
    for label, name, cache in runs:
        image = work / f"{label.replace(' ', '-')}.npy"
        row = run_child(name, folder, work / f"cache-{cache}", image, args)
        if image.exists() and label != "eager":
            eager = np.load(work / "eager.npy").astype(np.int16)
            diff = np.abs(np.load(image).astype(np.int16) - eager)
            row["pixel_diff_mean"], row["pixel_diff_max"] = (
                round(float(diff.mean()), 3),
                int(diff.max()),
            )
        results["rows"][label] = row
        log(f"{label:13s} {json.dumps(row)}")
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
    rows = results["rows"]
    eager = rows.get("eager", {})
    log("\n| run | ready s | warm-up s | s/image | x eager | peak VRAM GiB | pixel diff mean/max |")
    log("| --- | --- | --- | --- | --- | --- | --- |")
    for label, row in rows.items():
        if "error" in row:
            log(f"| {label} | {row['error']} | | | | | |")
            continue
        speedup = (
            f"{eager['s_per_image'] / row['s_per_image']:.2f}x faster"
            if "s_per_image" in row and "s_per_image" in eager
            else ""
        )
        diff = (
            f"{row['pixel_diff_mean']}/{row['pixel_diff_max']}" if "pixel_diff_mean" in row else ""
        )
        log(
            f"| {label} | {row['ready_s']} | {row.get('warm_up_s', '')} | "
            f"{row.get('s_per_image', '')} | {speedup} | {row.get('peak_vram_gib', '')} | {diff} |"
        )
    if "ready_s" in eager and "ready_s" in rows.get("bare", {}):
        log(
            f"load to ready: engine {eager['ready_s']} s vs bare {rows['bare']['ready_s']} s = "
            f"{eager['ready_s'] / rows['bare']['ready_s']:.2f}x (target <= 0.8)"
        )
    warm = rows.get("fast warm", {})
    if "ready_s" in warm and "ready_s" in eager:
        start = warm["ready_s"] + warm["warm_up_s"]
        log(
            f"warm start: fast ready + warm-up {start:.1f} s vs eager load {eager['ready_s']} s = "
            f"{start / eager['ready_s']:.2f}x (target <= 1.2)"
        )
    if "preview_ms_per_step" in eager:
        log(
            f"preview: {eager['preview_ms_per_step']} ms per step of {eager['step_ms']} ms "
            f"({eager['preview_ms_per_step'] / eager['step_ms'] * 100:.1f} %)"
        )


if __name__ == "__main__":
    main()
