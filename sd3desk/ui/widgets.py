"""Small helpers every widget file uses: names for tests and screen readers, buddied labels."""

from __future__ import annotations

from typing import TypeVar

from PySide6.QtWidgets import QLabel, QWidget

W = TypeVar("W", bound=QWidget)


def named(widget: W, object_name: str, accessible_name: str = "") -> W:
    """`widget` with its object name (what tests and style sheets find it by) and the name a
    screen reader says."""
    widget.setObjectName(object_name)
    if accessible_name:
        widget.setAccessibleName(accessible_name)
    return widget


def label(text: str, buddy: QWidget) -> QLabel:
    """A label whose mnemonic (the letter after "&") focuses `buddy`."""
    shown = QLabel(text)
    shown.setBuddy(buddy)
    return shown
