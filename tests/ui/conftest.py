"""Fixtures of the window tests."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QWheelEvent

from sd3desk.app import create_window


@pytest.fixture
def open_window(qtbot):
    """Build windows like `sd3desk` does (without the event loop); shut each down after."""
    windows = []

    def make(*argv: str, started: bool = True):
        window = create_window(list(argv))
        qtbot.addWidget(window)
        window.show()
        windows.append(window)
        if started:
            qtbot.waitUntil(lambda: window.gallery_panel is not None, timeout=10_000)
        return window

    yield make
    for window in windows:
        window.session.shutdown()
        window.close()


def wheel_down(position: QPointF) -> QWheelEvent:
    """One notch of the mouse wheel, down, over `position` (global coordinates)."""
    return QWheelEvent(
        QPointF(5, 5),
        position,
        QPoint(0, 0),
        QPoint(0, -120),
        Qt.MouseButton.NoButton,
        Qt.KeyboardModifier.NoModifier,
        Qt.ScrollPhase.NoScrollPhase,
        False,
    )
