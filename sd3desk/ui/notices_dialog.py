"""The dialog that lists this session's notices with their advice and details, and a "copy
diagnostics" button. Nothing here ever shows a traceback."""

from __future__ import annotations

import time
from collections.abc import Callable

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

from sd3desk.runtime.events import Notice
from sd3desk.runtime.notices import NoticeLog
from sd3desk.ui.widgets import named

NOTICE_ROLE = 256  # Qt.ItemDataRole.UserRole


class NoticesDialog(QDialog):
    """Every notice of this session, newest first, with its advice and details."""

    def __init__(
        self,
        notices: NoticeLog,
        diagnostics_text: Callable[[], str],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Notices")
        self.setObjectName("noticesDialog")
        self.resize(720, 420)
        self._diagnostics_text = diagnostics_text
        self.list = named(QListWidget(), "noticeList", "Notices")
        self.details = named(QTextBrowser(), "noticeDetails")
        for notice in reversed(notices.notices):
            stamp = time.strftime("%H:%M:%S", time.localtime(notice.time))
            item = QListWidgetItem(f"{stamp}  {notice.level.value}: {notice.message}")
            item.setData(NOTICE_ROLE, notice)
            self.list.addItem(item)
        self.list.currentItemChanged.connect(self._on_list_current_changed)
        splitter = QSplitter()
        splitter.addWidget(self.list)
        splitter.addWidget(self.details)
        splitter.setStretchFactor(0, 2)
        splitter.setStretchFactor(1, 3)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        copy = named(QPushButton("Copy diagnostics"), "copyDiagnosticsButton")
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
        notice: Notice = item.data(NOTICE_ROLE)
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
