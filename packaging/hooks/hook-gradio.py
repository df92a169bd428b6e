"""PyInstaller hook for Gradio (the web page at /): its front end (templates), the version and
JSON files it reads when imported, and its modules also as source, since it reads components'
source with `inspect` when it builds a page."""

from PyInstaller.utils.hooks import collect_data_files, collect_submodules, copy_metadata

datas = collect_data_files("gradio") + copy_metadata("gradio")
for package in ("gradio_client", "safehttpx", "groovy"):
    datas += collect_data_files(package) + copy_metadata(package)
hiddenimports = collect_submodules("gradio.components") + collect_submodules("gradio.layouts")
module_collection_mode = {"gradio": "pyz+py"}
