"""PyInstaller hook for sd3desk: its bundled configs, tokenizer and icons, its version."""

from PyInstaller.utils.hooks import collect_data_files, collect_submodules, copy_metadata

datas = collect_data_files("sd3desk", includes=["resources/**/*"]) + copy_metadata("sd3desk")
# Imported inside functions (so the window starts fast): invisible to static analysis.
hiddenimports = collect_submodules("sd3desk")
