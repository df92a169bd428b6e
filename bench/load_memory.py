"""Memory added by loading a model vs the size of its weights (target: <= 1.2x, no double copies).

Each measurement runs in a fresh child process: import the ML stack, load through the Engine, touch
every weight (mmap-backed weights only become resident when used), and report
- anonymous memory: peak while loading (sampled every 5 ms) and after - what can never be reclaimed;
- file-backed pages: safetensors files mapped by the loader, clean page cache the kernel drops
  under pressure;
- VmHWM, the kernel's peak RSS, which counts both kinds.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from common import model_dir, single_file

MB = 2**20


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def child(reference: str) -> None:
    import gc
    import tempfile

    import diffusers  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401

    from sd3desk.core.settings import Device
    from sd3desk.inference.engine import Engine
    from sd3desk.inference.models import resolve_model

    source = resolve_model(reference)
    engine = Engine(Device.cpu, cache_dir=Path(tempfile.mkdtemp()))
    engine.device()
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    base_rss, base_anon = _status("VmRSS"), _status("RssAnon")
    peak = [base_anon]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _status("RssAnon"))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    engine.load(source)
    for name in ("transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3"):
        for tensor in getattr(engine.pipeline, name).state_dict().values():
            float(tensor.sum())
    gc.collect()
    done.set()
    sampler.join()
    result = {
        "weights": source.size_bytes(),
        "anon_peak": peak[0] - base_anon,
        "anon_after": _status("RssAnon") - base_anon,
        "file_after": _status("RssFile"),
        "hwm": _status("VmHWM") - base_rss,
    }
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="medium")
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    print(f"random '{args.size}' SD3, fp32 on the CPU")
    for label, reference in (
        ("diffusers folder", model_dir(args.size)),
        ("single file", single_file(args.size)),
    ):
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(reference)],
            capture_output=True,
            text=True,
            check=True,
        )
        m = json.loads(out.stdout.strip().splitlines()[-1])
        w = m["weights"]
        print(
            f"{label:16s} weights {w / MB:6.0f} MB | anonymous peak {m['anon_peak'] / MB:6.0f} MB "
            f"({m['anon_peak'] / w:.2f}x, target <= 1.2x), after {m['anon_after'] / w:.2f}x | "
            f"file-backed after {m['file_after'] / MB:5.0f} MB | VmHWM {m['hwm'] / w:.2f}x"
        )


if __name__ == "__main__":
    main()
