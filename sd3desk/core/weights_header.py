"""The JSON header of a .safetensors file (tensor names, dtypes, shapes), read without torch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sd3desk.core.errors import ModelError
from sd3desk.core.files import NotRegularFileError, open_regular

MAX_HEADER_BYTES = 100 * 1024 * 1024


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a .safetensors file (tensor names, dtypes, shapes), no tensor data."""
    try:
        with open_regular(path) as handle:
            raw_length = handle.read(8)
            length = int.from_bytes(raw_length, "little") if len(raw_length) == 8 else 0
            if not 2 <= length <= MAX_HEADER_BYTES:
                raise ModelError(
                    f"{path.name} is not a valid .safetensors file (bad header length)",
                    "the download may be incomplete; download the file again",
                    path=str(path),
                )
            header = json.loads(handle.read(length))
    except NotRegularFileError as exc:
        raise ModelError(f"{exc.strerror}, not a weights file", path=str(path)) from exc
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc.strerror or exc}", path=str(path)) from exc
    except (ValueError, RecursionError) as exc:
        raise ModelError(
            f"{path.name} is damaged: its header is not valid JSON",
            "download the file again",
            path=str(path),
        ) from exc
    if not isinstance(header, dict):
        raise ModelError(f"{path.name} is damaged: its header is not a table", path=str(path))
    return header
