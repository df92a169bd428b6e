"""`sd3desk self-test`: proves an install works, offline, without weights or a GPU.

It starts Qt (offscreen when there is no display), builds the window, makes the tiny test model
in a temporary folder, loads it through the loaders users use (a diffusers folder and a single
file), generates through the real queue runner and worker, reads the images' parameters back,
and reports versions, the device found and timings as JSON. Frozen bundles run it too
(`sd3desk-cli self-test`, `sd3desk --self-test`), which is how each installer proves itself.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from sd3desk import __version__

# (label, distribution names to try, module): PySide6 is usually installed as
# PySide6-Essentials; a frozen bundle may lack a distribution's metadata, then the module tells.
PACKAGES = (
    ("torch", ("torch",), "torch"),
    ("diffusers", ("diffusers",), "diffusers"),
    ("transformers", ("transformers",), "transformers"),
    ("huggingface_hub", ("huggingface_hub",), "huggingface_hub"),
    ("PySide6", ("PySide6-Essentials", "PySide6"), "PySide6"),
    ("Pillow", ("Pillow", "pillow"), "PIL"),
)
PROMPT = "sd3desk self-test: a lighthouse at dusk"


class Check:
    """Runs named steps, timing each; a failing step is recorded and stops the run."""

    def __init__(self) -> None:
        self.steps: list[dict[str, Any]] = []

    def run(self, name: str, step: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        try:
            result = step()
        except Exception as exc:
            self.steps.append(
                {
                    "step": name,
                    "ok": False,
                    "seconds": round(time.perf_counter() - start, 3),
                    "error": f"{type(exc).__name__}: {exc}",
                    "traceback": traceback.format_exc(limit=8),
                }
            )
            raise _Stop from exc
        self.steps.append(
            {"step": name, "ok": True, "seconds": round(time.perf_counter() - start, 3)}
        )
        return result


class _Stop(Exception):
    pass


def versions() -> dict[str, str]:
    found = {"sd3desk": __version__, "python": platform.python_version()}
    for label, names, module in PACKAGES:
        found[label] = "missing"
        for name in names:
            try:
                found[label] = metadata.version(name)
                break
            except metadata.PackageNotFoundError:
                continue
        else:
            with contextlib.suppress(ImportError, AttributeError):
                found[label] = str(importlib.import_module(module).__version__)
    return found


def run_self_test(device: str = "auto", work: Path | None = None) -> dict[str, Any]:
    """Every check in order; the report's "ok" is True only when all passed."""
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # Linux without a display
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may go online
    check = Check()
    report: dict[str, Any] = {
        "ok": False,
        "versions": versions(),
        "platform": platform.platform(),
        "frozen": bool(getattr(sys, "frozen", False)),
        "device_requested": device,
        "steps": check.steps,
    }
    with tempfile.TemporaryDirectory(prefix="sd3desk-self-test-") as temp:
        root = Path(work) if work is not None else Path(temp)
        try:
            _run(check, report, device, root)
            report["ok"] = True
        except _Stop:
            pass
    return report


def _run(check: Check, report: dict[str, Any], device: str, root: Path) -> None:
    from sd3desk.core.settings import Device

    wanted = Device(device)
    # 1. Qt and the window (the platform plugin, widgets, the composition root)
    check.run("window", lambda: _build_window(root / "app-data", report))
    # 2. the ML stack and the device
    info = check.run("device", lambda: _device(wanted))
    report["device"] = info
    # 3. the tiny model as a diffusers folder and as a single file
    folder, single = check.run("test model", lambda: _write_models(root / "models"))
    # 4. one image from each through the real queue runner and worker, then their metadata
    outputs = check.run("generate", lambda: _generate(root, wanted, [folder, single]))
    report["images"] = outputs
    check.run("metadata", lambda: _check_metadata(outputs, [str(folder), str(single)]))


def _build_window(data_dir: Path, report: dict[str, Any]) -> None:
    from PySide6.QtWidgets import QApplication

    from sd3desk.qt_platform import unusable_reason

    # the system libraries Qt's platform plugin needs first: without them Qt aborts the process
    reason = unusable_reason()
    if reason:
        raise RuntimeError(reason)
    existing = QApplication.instance()
    app = existing if isinstance(existing, QApplication) else QApplication(["sd3desk-self-test"])
    report["qt_platform"] = app.platformName()
    from sd3desk.app import create_window

    window = create_window(["--data-dir", str(data_dir)])
    from PySide6.QtWidgets import QWidget

    names = ("promptEdit", "generateButton", "queueView", "previewView")
    missing = [n for n in names if window.findChild(QWidget, n) is None]
    window.session.shutdown()
    window.close()
    window.deleteLater()
    if missing:
        raise RuntimeError(f"the window lacks {missing}")


def _device(wanted: Any) -> dict[str, Any]:
    from sd3desk.inference.devices import backend_report, import_ml_stack

    import_ml_stack()
    return backend_report(wanted)


def _write_models(folder: Path) -> tuple[Path, Path]:
    from sd3desk.inference.testmodel import write_test_model, write_test_single_file

    folder.mkdir(parents=True, exist_ok=True)
    return (
        write_test_model(folder / "tiny-sd3"),
        write_test_single_file(folder / "tiny-sd3.safetensors"),
    )


def _generate(root: Path, device: Any, models: list[Path]) -> list[str]:
    from sd3desk.core.params import GenerationParams
    from sd3desk.core.settings import AppPaths, Settings
    from sd3desk.headless import run_queue
    from sd3desk.runtime.runtime import IN_MEMORY, build_runtime

    settings = Settings(device=device, output_dir=str(root / "outputs"))
    runtime = build_runtime(AppPaths.default(root / "run"), settings, database=IN_MEMORY)
    runtime.runner.enqueue_many(
        [
            GenerationParams(
                PROMPT, seed=7, steps=2, guidance_scale=4.0, width=256, height=256, model=str(model)
            )
            for model in models
        ]
    )
    with open(os.devnull, "w") as quiet:
        outcome = run_queue(runtime, stop_on_failure=True, out=quiet)
    if outcome.failures:
        failure = outcome.failures[0]
        raise RuntimeError(f"{failure.error_message} ({failure.error_advice})")
    if len(outcome.outputs) != len(models):
        raise RuntimeError(f"expected {len(models)} images, got {len(outcome.outputs)}")
    return outcome.outputs


def _check_metadata(outputs: list[str], models: list[str]) -> None:
    from sd3desk.core.metadata import read_metadata

    for path, model in zip(outputs, models, strict=True):
        params = read_metadata(path).params
        if (params.prompt, params.seed, params.model) != (PROMPT, 7, model):
            raise RuntimeError(f"{path} carries the wrong parameters: {params}")


def main(device: str = "auto", report_file: Path | None = None) -> int:
    """Print the report as JSON (and write it to `report_file`); 0 when every check passed."""
    report = run_self_test(device)
    text = json.dumps(report, indent=2)
    print(text, flush=True)
    if report_file is not None:
        Path(report_file).write_text(text + "\n", "utf-8")
    return 0 if report["ok"] else 1
