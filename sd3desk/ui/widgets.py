"""Small helpers every widget file uses: names for tests and screen readers, buddied labels."""

from __future__ import annotations

from typing import TypeVar

from PySide6.QtWidgets import QLabel, QToolButton, QWidget

W = TypeVar("W", bound=QWidget)


def named(widget: W, object_name: str, accessible_name: str = "") -> W:
    """`widget` with its object name (what tests and style sheets find it by) and the name a
    screen reader says."""
    widget.setObjectName(object_name)
    if accessible_name:
        widget.setAccessibleName(accessible_name)
    return widget


def wrapping_label(object_name: str, text: str = "") -> QLabel:
    """A label whose text wraps at its width (messages, notes, errors)."""
    shown = named(QLabel(text), object_name)
    shown.setWordWrap(True)
    return shown


def tool_button(text: str, object_name: str, accessible_name: str = "") -> QToolButton:
    button = named(QToolButton(), object_name, accessible_name)
    button.setText(text)
    return button


def label(text: str, buddy: QWidget) -> QLabel:
    """A label whose mnemonic (the letter after "&") focuses `buddy`."""
    shown = QLabel(text)
    shown.setBuddy(buddy)
    return shown
