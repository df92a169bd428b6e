"""Switching LoRAs between jobs vs reloading the model (issue 14, item 5).

sd3desk keeps the base model loaded and switches LoRA adapters per job (diffusers + PEFT). The
baseline is what a tool without that does: load the model again (from a warm page cache) and
apply the LoRA to the fresh model. Measured in one process, alternating, median of N:

- reload: `Engine.unload()` + `Engine.load()` of the model, then the LoRA applied;
- first use: a LoRA never seen by this engine (read, converted from kohya's layout, injected);
- switch: between two LoRAs the engine has loaded already (adapter weights only);
- off: back to the bare model.

Target: first use <= 0.1x the reload. "small" random model on the CPU (or --size/--device).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from common import model_dir

from sd3desk.core.loras import LoraLibrary
from sd3desk.core.settings import Device
from sd3desk.inference import testlora
from sd3desk.inference.engine import Engine
from sd3desk.inference.models import resolve_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="small")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rank", type=int, default=16)
    args = parser.parse_args()

    source = resolve_model(str(model_dir(args.size)))
    engine = Engine(Device(args.device))
    engine.load(source)
    pipe = engine.pipeline
    folder = Path(tempfile.mkdtemp(prefix="lora-bench-"))
    try:
        library = LoraLibrary([folder], folder / "hashes.json")
        names = [f"lora{k}" for k in range(2 * args.repeats + 2)]
        for k, name in enumerate(names):  # kohya's layout: the conversion is part of first use
            state = testlora.random_lora(pipe, seed=k, rank=args.rank)
            testlora.save(testlora.to_kohya(state, pipe), folder / f"{name}.safetensors")
        files = {name: folder / f"{name}.safetensors" for name in names}
        refs = {name: library.ref(path) for name, path in files.items()}
        size = sum(p.stat().st_size for p in files.values()) / len(files) / 1e6

        def apply(*chosen: str) -> float:
            assert engine._loras is not None  # (the engine's LoRA set: what generate() calls)
            started = time.perf_counter()
            engine._loras.apply([(refs[n], files[n]) for n in chosen])
            return time.perf_counter() - started

        reload, first, switch, off = [], [], [], []
        fresh = iter(names[2:])
        apply(names[0])  # two LoRAs loaded once, to switch between
        apply(names[1])
        for _ in range(args.repeats):
            started = time.perf_counter()
            engine.unload()
            engine.load(source)
            reload.append(time.perf_counter() - started + apply(next(fresh)))
            apply(names[0])
            apply(names[1])
            first.append(apply(next(fresh)))
            switch.append(apply(names[0]))
            off.append(apply())
        median = statistics.median
        print(
            f"lora_switch ({args.size} model, {args.device}, LoRA rank {args.rank}, "
            f"{size:.1f} MB each, median of {args.repeats})"
        )
        print(f"  reload model + LoRA {median(reload) * 1000:8.1f} ms")
        print(f"  first use of a LoRA {median(first) * 1000:8.1f} ms")
        print(f"  switch (loaded)     {median(switch) * 1000:8.1f} ms")
        print(f"  LoRAs off           {median(off) * 1000:8.1f} ms")
        print(
            f"  ratio first use / reload {median(first) / median(reload):.3f}, "
            f"switch / reload {median(switch) / median(reload):.4f} (target <= 0.1)"
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
