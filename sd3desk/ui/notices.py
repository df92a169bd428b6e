"""One channel for errors, warnings and information, each with advice, and the dialog that
lists them with a "copy diagnostics" button. Nothing here ever shows a traceback."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSplitter,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from sd3desk import __version__

log = logging.getLogger("sd3desk.notices")
KEPT = 200


class Level(Enum):
    """How serious a notice is."""

    info = "info"
    warning = "warning"
    error = "error"


@dataclass(frozen=True)
class Notice:
    """Something the user should know: what happened, what to do, and details for a report."""

    level: Level
    message: str
    advice: str = ""
    details: str = ""
    time: float = 0.0

    def text(self) -> str:
        return f"{self.message} — {self.advice}" if self.advice else self.message


class NoticeLog(QObject):
    """Keeps the latest notices and writes each to the log file. GUI thread only."""

    added = Signal(object)  # Notice

    def __init__(self) -> None:
        super().__init__()
        self.notices: list[Notice] = []

    def post(self, level: Level, message: str, advice: str = "", details: str = "") -> Notice:
        notice = Notice(level, message, advice, details, time.time())
        self.notices = [*self.notices[-(KEPT - 1) :], notice]
        log.log(
            {Level.info: logging.INFO, Level.warning: logging.WARNING}.get(level, logging.ERROR),
            "%s%s",
            notice.text(),
            f"\n{details}" if details else "",
        )
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


class NoticesDialog(QDialog):
    """Every notice of this session, newest first, with its advice and details."""

    def __init__(self, notices: NoticeLog, diagnostics_text, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Notices")
        self.setObjectName("noticesDialog")
        self.resize(720, 420)
        self._diagnostics_text = diagnostics_text
        self.list = QListWidget(objectName="noticeList", accessibleName="Notices")
        self.details = QTextBrowser(objectName="noticeDetails")
        for notice in reversed(notices.notices):
            stamp = time.strftime("%H:%M:%S", time.localtime(notice.time))
            item = QListWidgetItem(f"{stamp}  {notice.level.value}: {notice.message}")
            item.setData(256, notice)
            self.list.addItem(item)
        self.list.currentItemChanged.connect(self._on_list_current_changed)
        splitter = QSplitter()
        splitter.addWidget(self.list)
        splitter.addWidget(self.details)
        splitter.setStretchFactor(0, 2)
        splitter.setStretchFactor(1, 3)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        copy = QPushButton("Copy diagnostics", objectName="copyDiagnosticsButton")
        copy.setToolTip("Copy versions, settings and the end of the log for a bug report")
        copy.clicked.connect(self.copy_diagnostics)
        buttons.addButton(copy, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(splitter, 1)
        layout.addWidget(buttons)
        if self.list.count():
            self.list.setCurrentRow(0)

    def _on_list_current_changed(self, item: QListWidgetItem | None) -> None:
        if item is None:
            return
        notice: Notice = item.data(256)
        parts = [f"<p><b>{_escape(notice.message)}</b></p>"]
        if notice.advice:
            parts.append(f"<p>What to do: {_escape(notice.advice)}</p>")
        if notice.details:
            parts.append(f"<pre>{_escape(notice.details)}</pre>")
        self.details.setHtml("".join(parts))

    def copy_diagnostics(self) -> None:
        QGuiApplication.clipboard().setText(self._diagnostics_text())


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
