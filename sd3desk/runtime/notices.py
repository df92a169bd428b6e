"""The one channel for what the user should know: errors, warnings and information, each with
advice, written to the log file too. Nothing here ever carries a traceback to the user."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from sd3desk import __version__
from sd3desk.runtime.events import Level, Notice

log = logging.getLogger("sd3desk.notices")
KEPT = 200
_LOG_LEVELS = {Level.info: logging.INFO, Level.warning: logging.WARNING, Level.error: logging.ERROR}


class NoticeLog(QObject):
    """Keeps the latest KEPT notices; `added` announces each.

    Thread rule: post from the runtime's thread (the GUI thread in the window).
    """

    added = Signal(object)  # Notice

    def __init__(self) -> None:
        super().__init__()
        self.notices: list[Notice] = []

    def post(self, level: Level, message: str, advice: str = "", details: str = "") -> Notice:
        notice = Notice(level, message, advice, details, time.time())
        self.notices = [*self.notices[-(KEPT - 1) :], notice]
        log.log(_LOG_LEVELS[level], "%s%s", notice.text(), f"\n{details}" if details else "")
        self.added.emit(notice)
        return notice

    def info(self, message: str, advice: str = "") -> Notice:
        return self.post(Level.info, message, advice)

    def warning(self, message: str, advice: str = "") -> Notice:
        return self.post(Level.warning, message, advice)

    def error(self, message: str, advice: str = "", details: str = "") -> Notice:
        return self.post(Level.error, message, advice, details)


def diagnostics(extra: dict[str, str], log_file: Path | None) -> str:
    """Versions, platform and the end of the log: what a bug report needs. No ML import."""
    import platform

    import PySide6

    lines = [
        f"sd3desk {__version__}",
        f"Python {sys.version.split()[0]} on {platform.platform()}",
        f"PySide6 {PySide6.__version__}",
    ]
    torch = sys.modules.get("torch")  # only when the engine already imported it
    if torch is not None:
        lines.append(f"torch {torch.__version__}")
    lines += [f"{key}: {value}" for key, value in extra.items()]
    if log_file is not None and log_file.exists():
        tail = log_file.read_text("utf-8", errors="replace").splitlines()[-40:]
        lines += ["", f"last lines of {log_file}:", *tail]
    return "\n".join(lines)
