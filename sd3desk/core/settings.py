"""User settings (a versioned JSON file) and the folders sd3desk keeps its files in."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import platformdirs

from sd3desk.core.atomic import atomic_write_bytes

log = logging.getLogger(__name__)

APP_NAME = "sd3desk"
SETTINGS_VERSION = 1


class Device(Enum):
    """Where generation runs; `auto` prefers CUDA, then Apple MPS, then the CPU."""

    auto = "auto"
    cuda = "cuda"
    mps = "mps"
    cpu = "cpu"


class MemoryPlan(Enum):
    """How the model is spread over GPU and CPU memory, and which parts are quantized."""

    auto = "auto"  # the fastest plan that fits the free memory
    gpu = "gpu"  # everything on the device in 16-bit: fastest
    t5_8bit = "t5-8bit"  # everything on the device, T5 in 8-bit (bitsandbytes)
    t5_4bit = "t5-4bit"  # everything on the device, T5 in 4-bit NF4 (bitsandbytes)
    fp8 = "fp8"  # MMDiT in fp8 weight-only (torchao), T5 in 4-bit NF4
    nf4 = "4bit"  # MMDiT and T5 in 4-bit NF4 (bitsandbytes): the least memory on the device
    offload = "offload"  # one component on the GPU at a time
    sequential = "sequential"  # layer by layer: slowest, least VRAM
    no_t5 = "no-t5"  # everything on the device without the T5 encoder (CLIP prompts only)


# How each plan reads in Settings and in --help; the GB are SD3 Medium's, with T5
PLAN_LABELS = {
    MemoryPlan.auto: "Automatic: the fastest plan that fits the free memory",
    MemoryPlan.gpu: "Everything on the GPU in 16-bit (fastest, ~17 GB)",
    MemoryPlan.t5_8bit: "T5 in 8-bit, everything on the GPU (~12 GB)",
    MemoryPlan.t5_4bit: "T5 in 4-bit, everything on the GPU (~10 GB)",
    MemoryPlan.fp8: "MMDiT in fp8, T5 in 4-bit (RTX 40xx / H100; ~8 GB)",
    MemoryPlan.nf4: "MMDiT and T5 in 4-bit (~7 GB)",
    MemoryPlan.offload: "Offload: one part on the GPU at a time (~10 GB, slow)",
    MemoryPlan.sequential: "Sequential: layer by layer (slowest, ~3 GB)",
    MemoryPlan.no_t5: "Everything on the GPU without T5 (~8 GB; CLIP prompts only)",
}


class Speed(Enum):
    """Fast mode: how much the engine does to run faster than bare diffusers (CUDA first)."""

    off = "off"  # eager PyTorch, as diffusers runs it
    fast = "fast"  # the MMDiT's blocks compiled (torch.compile), fused QKV, channels-last VAE
    fastest = "fastest"  # fast, with fp8 activations and weights in the MMDiT (torchao)


SPEED_LABELS = {
    Speed.off: "Off: as diffusers runs it",
    Speed.fast: "Fast: the MMDiT compiled (a warm-up after loading)",
    Speed.fastest: "Fastest: compiled, with fp8 matmuls (RTX 40xx, L4, H100)",
}
# The pixel differences are bench/fast_mode.py's (CPU) and bench/gpu_fast.py's (GPU) figures
SPEED_NOTE = (
    "Fast compiles the MMDiT's blocks with torch.compile (once per model; cached on disk, so "
    "later starts take seconds), fuses its q/k/v projections and stores the VAE channels-last. "
    "Images differ from 'Off' only by rounding: on the CPU at most 1/255 in a few pixels. "
    "Fastest adds fp8 activations and weights (GPUs of compute capability 8.9+): images "
    "differ a little more. Every image records the mode it was made in."
)


class Theme(Enum):
    """The window's colours; `system` follows the desktop."""

    system = "system"
    light = "light"
    dark = "dark"


@dataclass(frozen=True)
class AppPaths:
    """Where sd3desk keeps data; all under one folder when `--data-dir` is given (tests)."""

    data: Path
    config: Path
    cache: Path
    logs: Path
    outputs: Path

    @classmethod
    def default(cls, base: Path | None = None) -> AppPaths:
        if base is not None:
            base = Path(base)
            return cls(base, base, base / "cache", base / "logs", base / "outputs")
        return cls(
            data=Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)),
            config=Path(platformdirs.user_config_dir(APP_NAME, appauthor=False)),
            cache=Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False)),
            logs=Path(platformdirs.user_log_dir(APP_NAME, appauthor=False)),
            outputs=Path(platformdirs.user_pictures_dir()) / APP_NAME,
        )

    @property
    def settings_file(self) -> Path:
        return self.config / "settings.json"

    @property
    def form_file(self) -> Path:
        """The prompt form as last typed, saved as the user types (survives a crash)."""
        return self.config / "form.json"

    @property
    def window_file(self) -> Path:
        """Window geometry and dock layout (QSettings, ini format)."""
        return self.config / "window.ini"

    @property
    def database(self) -> Path:
        return self.data / "sd3desk.db"

    @property
    def sources(self) -> Path:
        """The pictures jobs start from, by content (core/sources.py)."""
        return self.data / "sources"

    @property
    def loras(self) -> Path:
        """The LoRA folder sd3desk offers first (others are added in Settings)."""
        return self.data / "loras"

    @property
    def log_file(self) -> Path:
        """The rotating log (what "copy diagnostics" quotes)."""
        return self.logs / "sd3desk.log"

    @property
    def hash_cache(self) -> Path:
        return hash_cache_file(self.cache)

    @property
    def test_model(self) -> Path:
        return test_model_dir(self.cache)


def env_model_dirs(name: str = "SD3DESK_MODEL_DIRS") -> list[Path]:
    """Extra model folders from SD3DESK_MODEL_DIRS (or LoRA folders from SD3DESK_LORA_DIRS;
    os.pathsep-separated)."""
    value = os.environ.get(name, "")
    return [Path(p) for p in value.split(os.pathsep) if p]


def lora_dirs(paths: AppPaths, settings: Settings) -> tuple[Path, ...]:
    """Where LoRAs are looked for: the data folder's, the user's, then SD3DESK_LORA_DIRS."""
    found = [paths.loras, *(Path(d) for d in settings.lora_dirs)]
    return tuple(dict.fromkeys([*found, *env_model_dirs("SD3DESK_LORA_DIRS")]))


# Inside a cache folder (AppPaths.cache, or one the engine is given): the same names everywhere.
def hash_cache_file(cache: Path) -> Path:
    """Model hashes by path, size and mtime (hashing a 10 GB file takes a while)."""
    return cache / "model-hashes.json"


def test_model_dir(cache: Path) -> Path:
    """Where the tiny random test model ("test") is built on first use."""
    return cache / "test-model"


@dataclass(frozen=True)
class Settings:
    """Everything the user sets once. Enums are stored by value; unknown keys are ignored."""

    version: int = SETTINGS_VERSION
    output_dir: str = ""  # "" means AppPaths.outputs
    model_dirs: tuple[str, ...] = ()
    gallery_dirs: tuple[str, ...] = ()  # shown in the gallery besides the output folder
    lora_dirs: tuple[str, ...] = ()  # LoRA folders besides the data folder's own
    # the user's word on a model's family where its name misleads (Turbo or not), by reference
    model_families: dict[str, str] = field(default_factory=dict)
    device: Device = Device.auto
    memory_plan: MemoryPlan = MemoryPlan.auto
    last_model: str = ""
    # Workers sharing the queue, one per CUDA device (cuda:0, cuda:1, ...); 1 = off.
    gpu_workers: int = 1
    use_t5: bool = True  # off: prompts go through the two CLIP encoders only (saves ~9 GB)
    # use TAESD3 for previews when it is on disk (else, or off: the linear x0 preview)
    preview_decoder: bool = True
    theme: Theme = Theme.system
    speed: Speed = Speed.off
    # Serving the queue over HTTP from the window (File → Settings → Serve on this computer).
    serve: bool = False
    serve_host: str = "127.0.0.1"  # anything but loopback needs a token
    serve_port: int = 7860
    serve_token: str = ""  # "" on loopback: none; elsewhere one is made and kept in the config
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def to_json(self) -> str:
        data = {
            "version": self.version,
            "output_dir": self.output_dir,
            "model_dirs": list(self.model_dirs),
            "gallery_dirs": list(self.gallery_dirs),
            "lora_dirs": list(self.lora_dirs),
            "model_families": dict(self.model_families),
            "device": self.device.value,
            "memory_plan": self.memory_plan.value,
            "last_model": self.last_model,
            "gpu_workers": self.gpu_workers,
            "use_t5": self.use_t5,
            "preview_decoder": self.preview_decoder,
            "theme": self.theme.value,
            "speed": self.speed.value,
            "serve": self.serve,
            "serve_host": self.serve_host,
            "serve_port": self.serve_port,
            "serve_token": self.serve_token,
        }
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Settings:
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key not in known:
                log.info("settings: ignoring unknown key %r", key)
                continue
            try:
                values[key] = _parse_setting(key, value)
            except (TypeError, ValueError):
                log.warning("settings: ignoring bad value %r for %r", value, key)
        values["version"] = SETTINGS_VERSION
        return cls(**values)


def _parse_setting(key: str, value: Any) -> Any:
    if key == "device":
        return Device(value)
    if key == "memory_plan":
        return MemoryPlan(value)
    if key == "theme":
        return Theme(value)
    if key == "speed":
        return Speed(value)
    if key in ("use_t5", "preview_decoder", "serve"):
        if not isinstance(value, bool):
            raise TypeError(key)
        return value
    if key == "serve_port":
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
            raise ValueError(key)
        return value
    if key == "model_families":
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise TypeError(key)
        return dict(value)
    if key in ("model_dirs", "gallery_dirs", "lora_dirs"):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise TypeError(key)
        return tuple(value)
    if key in ("version", "gpu_workers"):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(key)
        return value
    if not isinstance(value, str):
        raise TypeError(key)
    return value


def load_settings(path: Path) -> Settings:
    """Settings from `path`; defaults when it is missing or unreadable (logged, never fatal)."""
    try:
        data = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return Settings()
    except (OSError, ValueError) as exc:
        log.warning("settings: cannot read %s (%s); using defaults", path, exc)
        return Settings()
    if not isinstance(data, dict):
        log.warning("settings: %s does not hold a JSON object; using defaults", path)
        return Settings()
    return Settings.from_dict(data)


def save_settings(settings: Settings, path: Path) -> None:
    atomic_write_bytes(path, settings.to_json().encode("utf-8"))
