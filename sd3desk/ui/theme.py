"""Light, dark or the desktop's colours, on Qt's Fusion style so both look the same everywhere."""

from __future__ import annotations

from enum import Enum

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication

from sd3desk.core.settings import Theme

_DARK = {
    QPalette.ColorRole.Window: "#2b2b2e",
    QPalette.ColorRole.WindowText: "#e6e6e6",
    QPalette.ColorRole.Base: "#1f1f22",
    QPalette.ColorRole.AlternateBase: "#29292d",
    QPalette.ColorRole.ToolTipBase: "#3a3a3f",
    QPalette.ColorRole.ToolTipText: "#f0f0f0",
    QPalette.ColorRole.PlaceholderText: "#8a8a8f",
    QPalette.ColorRole.Text: "#e6e6e6",
    QPalette.ColorRole.Button: "#35353a",
    QPalette.ColorRole.ButtonText: "#e6e6e6",
    QPalette.ColorRole.BrightText: "#ff6b6b",
    QPalette.ColorRole.Link: "#6aa9ff",
    QPalette.ColorRole.Highlight: "#3d7bd9",
    QPalette.ColorRole.HighlightedText: "#ffffff",
    QPalette.ColorRole.Mid: "#444449",
    QPalette.ColorRole.Dark: "#1a1a1d",
    QPalette.ColorRole.Light: "#4a4a50",
}


def apply_theme(app: QApplication, theme: Theme) -> None:
    """Set the palette for `theme`; `system` follows the desktop's light or dark scheme."""
    if app.style().name().lower() != "fusion":  # setting it again costs ~10 ms at startup
        app.setStyle("Fusion")
    hints = QGuiApplication.styleHints()
    scheme = {
        Theme.light: Qt.ColorScheme.Light,
        Theme.dark: Qt.ColorScheme.Dark,
        Theme.system: Qt.ColorScheme.Unknown,
    }[theme]
    hints.setColorScheme(scheme)
    dark = theme is Theme.dark or (
        theme is Theme.system and hints.colorScheme() == Qt.ColorScheme.Dark
    )
    palette = app.style().standardPalette()
    if dark:
        for role, colour in _DARK.items():
            palette.setColor(role, QColor(colour))
        disabled = QColor("#7a7a80")
        for role in (
            QPalette.ColorRole.Text,
            QPalette.ColorRole.ButtonText,
            QPalette.ColorRole.WindowText,
        ):
            palette.setColor(QPalette.ColorGroup.Disabled, role, disabled)
    app.setPalette(palette)


class Tone(Enum):
    """Colours with a meaning, the same in the light and dark palettes (both read on either)."""

    error = "#d9534f"
    warning = "#c08a00"
    muted = "#808080"


def tone_style(tone: Tone) -> str:
    """A style sheet that colours a widget's text in `tone`."""
    return f"color: {tone.value};"


def tone_html(tone: Tone, text: str, bold: bool = False) -> str:
    """`text` (already escaped) coloured in `tone`, for rich-text labels."""
    tag = "b" if bold else "span"
    return f"<{tag} style='color: {tone.value}'>{text}</{tag}>"
