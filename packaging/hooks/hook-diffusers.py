"""PyInstaller hook for diffusers (the contrib hooks have none).

diffusers resolves its classes lazily (`_LazyModule`), so static analysis sees none of the SD3
modules; and at import it checks its dependencies' versions through their distribution
metadata, which a bundle lacks unless it is copied in.
"""

import contextlib

from PyInstaller.utils.hooks import collect_submodules, copy_metadata, get_module_attribute

# Everything but the Flax/ONNX variants and the training/CLI helpers nobody runs in the app.
_SKIP = ("flax", "onnx", "commands", "experimental", "training_utils")
hiddenimports = collect_submodules(
    "diffusers", filter=lambda name: not any(part in name for part in _SKIP)
)

datas = copy_metadata("diffusers")
try:
    _deps = get_module_attribute("diffusers.dependency_versions_table", "deps")
except Exception:  # an older or newer layout: the version check then finds what it finds
    _deps = {}
for _name in _deps:
    # not installed in the build environment: diffusers does not need it
    with contextlib.suppress(Exception):
        datas += copy_metadata(_name)
