"""The rotating log file every front door writes details to (what "copy diagnostics" quotes)."""

from __future__ import annotations

import logging
from pathlib import Path

LOG_BYTES, LOG_FILES = 1_000_000, 3
_OURS = "_sd3desk_handler"  # marks the handlers set up here, so a second call replaces them


def setup_logging(path: Path, verbose: bool) -> Path:
    """Log INFO and above to the rotating file `path` (and to stderr when `verbose`); raises
    OSError when its folder cannot be written."""
    import logging.handlers  # here: the window starts faster without it

    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _OURS, False):
            root.removeHandler(handler)
            handler.close()
    handler = logging.handlers.RotatingFileHandler(
        path, maxBytes=LOG_BYTES, backupCount=LOG_FILES, encoding="utf-8"
    )
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handlers: list[logging.Handler] = [handler]
    if verbose:
        handlers.append(logging.StreamHandler())
    for each in handlers:
        setattr(each, _OURS, True)
        root.addHandler(each)
    root.setLevel(logging.INFO)
    return path
