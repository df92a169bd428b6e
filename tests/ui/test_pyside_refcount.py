"""Guards against the PySide6 regression that made scrolling the gallery crash Python.

PySide6 6.12.0 dropped a reference to None for every None a Python model returned to an item
view in icon mode (and for QModelIndex.data calls), so after a few thousand cells Python freed
None and aborted. pyproject.toml keeps PySide6 below 6.12 until this test passes on a release.
"""

from __future__ import annotations

import sys
import time

from PySide6.QtCore import QAbstractListModel, QModelIndex, QSize, Qt
from PySide6.QtWidgets import QApplication, QListView


class _Empty(QAbstractListModel):
    def rowCount(self, parent=QModelIndex()):  # noqa: B008 - Qt's own default
        return 0 if parent.isValid() else 3000

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if role == Qt.ItemDataRole.ToolTipRole and index.row() < 0:
            return "never"
        return None


def test_item_views_keep_references_to_none(qtbot):
    model = _Empty()
    view = QListView()
    qtbot.addWidget(view)
    view.setModel(model)
    view.setViewMode(QListView.ViewMode.IconMode)
    view.setUniformItemSizes(True)
    view.setIconSize(QSize(192, 192))
    view.setGridSize(QSize(206, 206))
    view.resize(1280, 800)
    view.show()
    app = QApplication.instance()
    base = sys.getrefcount(None)
    lowest = 0
    bar = view.verticalScrollBar()
    for _ in range(6):  # the loss shows once the data() calls are hot: a few pages of scrolling
        bar.setValue(bar.value() + bar.pageStep())
        deadline = time.perf_counter() + 0.01
        while time.perf_counter() < deadline:
            app.processEvents()
        lowest = min(lowest, sys.getrefcount(None) - base)
    assert lowest > -100, "this PySide6 release loses references to None; keep the version cap"
