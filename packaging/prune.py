"""What the bundle leaves out: modules nobody runs in sd3desk, and files of the ML stack a user
never needs (headers, static libraries, build files, test data). Kept what `import torch` and
the SD3 pipeline need; `sd3desk-cli self-test` on the built bundle proves it."""

from __future__ import annotations

import re

# Imported by optional code paths of the ML stack, never by sd3desk's (pandas is not here: the
# web page's Gradio imports it).
EXCLUDED_MODULES = [
    "tkinter",
    "matplotlib",
    "IPython",
    "jupyter_client",
    "notebook",
    "pytest",
    "_pytest",
    "scipy",
    "sklearn",
    "torch.utils.tensorboard",
    "tensorboard",
    "torchvision",
    "torchaudio",
    "onnx",
    "onnxruntime",
    "flax",
    "jax",
    "tensorflow",
    "sd3desk.tests",
]

# Paths inside the bundle (forward slashes) that are dropped.
_DROP = [
    r"^torch/include/",  # C++ headers (~60 MB): for building extensions
    r"^torch/share/cmake/",
    r"^torch/lib/.*\.a$",  # static libraries
    r"^torch/lib/.*\.lib$",
    r"^torch/test/",
    r"^torch/testing/_internal/data/",
    r"^torch/bin/(protoc|test_)",
    r"^caffe2/",
    r"(^|/)tests?/.*\.(onnx|pt|pkl|npz|bin)$",  # test fixtures shipped inside packages
    r"^PySide6/(Qt/)?(qml|translations)/",  # Qt Quick and Qt's own translations: unused
    r"^PySide6/(Qt/)?lib/libQt6(Quick|Qml|WebEngine|Pdf|Designer|3D|Multimedia)",
    r"^PySide6/(Qt/)?plugins/(qmltooling|multimedia|sceneparsers|renderers|geometryloaders)/",
    # ffmpeg compiled to WebAssembly (32 MB), which Gradio's frontend loads to trim audio and
    # video: the page has neither (proved with the frozen page in Chromium, bench/README.md)
    r"^gradio/templates/frontend/static/ffmpeg/",
]
_DROP_RE = re.compile("|".join(_DROP))


def keep(dest: str) -> bool:
    """Whether a file at bundle path `dest` stays in the bundle."""
    return not _DROP_RE.search(dest.replace("\\", "/"))
