"""Core, the runtime and the front doors never import the ML stack when imported (the window
must open before it loads; the worker imports it on its own thread)."""

from __future__ import annotations

import subprocess
import sys

TORCH_FREE = [
    "sd3desk.core.params",
    "sd3desk.core.metadata",
    "sd3desk.core.settings",
    "sd3desk.core.outputs",
    "sd3desk.core.modelhash",
    "sd3desk.cli",
    "sd3desk.inference.models",
    "sd3desk.inference.discovery",
    "sd3desk.core.jobs",
    "sd3desk.core.gallery",
    "sd3desk.ui.gallery_panel",
    "sd3desk.runtime.runtime",
    "sd3desk.runtime.runner",
    "sd3desk.runtime.worker",
    "sd3desk.runtime.catalog",
    "sd3desk.headless",
    "sd3desk.app",
    "sd3desk.selftest",
]


def test_core_and_cli_import_without_torch():
    code = (
        f"import sys; [__import__(m) for m in {TORCH_FREE!r}]; "
        "from sd3desk.cli import build_parser; build_parser(); "
        "heavy = [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules]; "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_help_is_fast_and_torch_free():
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "sd3desk", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0
    assert "generate" in result.stdout
    assert " torch" not in result.stderr


def test_devices_logic_imports_without_torch():
    code = (
        "import sys; import sd3desk.inference.devices, sd3desk.inference.models; "
        "sys.exit(1 if 'torch' in sys.modules else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
