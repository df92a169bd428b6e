"""Painting an inpainting mask over the source picture: brush and eraser with a size, clear,
invert, the overlay's opacity, undo and redo. White in the mask is repainted, black is kept;
the mask has the source picture's own size."""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QImage, QKeySequence, QMouseEvent, QPainter, QPen, QShortcut
from PySide6.QtWidgets import (
    QButtonGroup,
    QHBoxLayout,
    QLabel,
    QSizePolicy,
    QSlider,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from sd3desk.ui.widgets import named, tool_button

UNDO_LIMIT = 50  # strokes remembered
OVERLAY_COLOUR = QColor(255, 40, 80)


class MaskCanvas(QWidget):
    """The picture scaled to fit, the mask over it in a colour; strokes paint the mask in the
    picture's own pixels. Left button: the current tool; right button: always the eraser."""

    changed = Signal()  # a stroke ended, or clear/invert/undo/redo

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMouseTracking(True)
        self.setCursor(Qt.CursorShape.CrossCursor)
        self.picture = QImage()
        self.marks = QImage()
        self.brush = 48  # diameter in the picture's pixels
        self.erasing = False
        self.opacity = 0.5
        self._undo: list[QImage] = []
        self._redo: list[QImage] = []
        self._last: QPointF | None = None
        self._stroke_erases = False
        self._overlay = QImage()

    def set_picture(self, picture: QImage, mask: QImage | None = None) -> None:
        self.picture = picture.convertToFormat(QImage.Format.Format_RGB32)
        if mask is None or mask.size() != picture.size():
            mask = QImage(picture.size(), QImage.Format.Format_Grayscale8)
            mask.fill(0)
        self.marks = mask.convertToFormat(QImage.Format.Format_Grayscale8)
        self._undo.clear()
        self._redo.clear()
        self._refresh()

    # ------------------------------------------------------------------ editing

    def clear(self) -> None:
        self._remember()
        self.marks.fill(0)
        self._refresh(changed=True)

    def invert(self) -> None:
        self._remember()
        self.marks.invertPixels()
        self._refresh(changed=True)

    def undo(self) -> None:
        if self._undo:
            self._redo.append(self.marks.copy())
            self.marks = self._undo.pop()
            self._refresh(changed=True)

    def redo(self) -> None:
        if self._redo:
            self._undo.append(self.marks.copy())
            self.marks = self._redo.pop()
            self._refresh(changed=True)

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    def is_empty(self) -> bool:
        """Nothing painted (an all-black mask repaints nothing)."""
        if self.marks.isNull():
            return True
        bits = self.marks.constBits()
        return not any(bytes(bits))

    def _remember(self) -> None:
        self._undo.append(self.marks.copy())
        del self._undo[:-UNDO_LIMIT]
        self._redo.clear()

    def _refresh(self, changed: bool = False) -> None:
        """Rebuild the coloured overlay from the mask (its alpha channel is the mask)."""
        if not self.marks.isNull():
            overlay = QImage(self.marks.size(), QImage.Format.Format_ARGB32_Premultiplied)
            overlay.fill(OVERLAY_COLOUR)
            overlay.setAlphaChannel(self.marks)
            self._overlay = overlay
        self.update()
        if changed:
            self.changed.emit()

    # ------------------------------------------------------------------ geometry

    def _target(self) -> QRectF:
        """Where the picture is drawn: fitted into the widget, centred."""
        if self.picture.isNull():
            return QRectF()
        size = QSize(self.picture.size()).scaled(self.size(), Qt.AspectRatioMode.KeepAspectRatio)
        left = (self.width() - size.width()) / 2
        top = (self.height() - size.height()) / 2
        return QRectF(left, top, size.width(), size.height())

    def to_picture(self, point: QPointF) -> QPointF:
        target = self._target()
        scale = self.picture.width() / max(target.width(), 1)
        return QPointF((point.x() - target.left()) * scale, (point.y() - target.top()) * scale)

    # ------------------------------------------------------------------ painting

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), self.palette().window())
        if self.picture.isNull():
            return
        target = self._target()
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        painter.drawImage(target, self.picture)
        painter.setOpacity(self.opacity)
        painter.drawImage(target, self._overlay)

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if self.picture.isNull() or event.button() not in (
            Qt.MouseButton.LeftButton,
            Qt.MouseButton.RightButton,
        ):
            return
        self._remember()
        self._stroke_erases = self.erasing or event.button() == Qt.MouseButton.RightButton
        self._last = self.to_picture(event.position())
        self._stroke(self._last, self._last)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if self._last is None:
            return
        point = self.to_picture(event.position())
        self._stroke(self._last, point)
        self._last = point

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if self._last is not None:
            self._last = None
            self.changed.emit()

    def _stroke(self, start: QPointF, end: QPointF) -> None:
        painter = QPainter(self.marks)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        colour = QColor(0, 0, 0) if self._stroke_erases else QColor(255, 255, 255)
        if start == end:  # a click: a dot (Qt draws no zero-length line)
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(colour)
            painter.drawEllipse(start, self.brush / 2, self.brush / 2)
        else:
            painter.setPen(QPen(colour, self.brush, Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap))
            painter.drawLine(start, end)
        painter.end()
        self._refresh()


class MaskEditor(QWidget):
    """The canvas with its tools above it; `done` when the user goes back to the preview."""

    done = Signal()
    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.canvas = named(MaskCanvas(), "maskCanvas", "Mask painting")
        self.brush_tool = self._tool("Brush", "maskBrushButton", "Paint where to repaint (B)")
        self.eraser_tool = self._tool(
            "Eraser", "maskEraserButton", "Erase the mask (E; or drag with the right button)"
        )
        self.brush_tool.setChecked(True)
        tools = QButtonGroup(self)
        tools.addButton(self.brush_tool)
        tools.addButton(self.eraser_tool)
        self.brush_size = self._slider("maskBrushSize", "Brush size", 4, 400, self.canvas.brush)
        self.brush_size.setToolTip("Brush size in the picture's pixels ([ and ] change it)")
        self.opacity = self._slider("maskOpacity", "Overlay opacity", 10, 100, 50)
        self.opacity.setToolTip("How strongly the mask shows over the picture")
        self.undo_button = self._button("Undo", "maskUndoButton", "Undo the last stroke (Ctrl+Z)")
        self.redo_button = self._button("Redo", "maskRedoButton", "Redo (Ctrl+Shift+Z)")
        self.clear_button = self._button("Clear", "maskClearButton", "Remove the whole mask")
        self.invert_button = self._button("Invert", "maskInvertButton", "Repaint everything else")
        self.done_button = self._button("Done", "maskDoneButton", "Back to the preview")
        tools_row = QHBoxLayout()
        tools_row.setContentsMargins(0, 0, 0, 0)
        for widget in (
            self.brush_tool,
            self.eraser_tool,
            self.undo_button,
            self.redo_button,
            self.clear_button,
            self.invert_button,
        ):
            tools_row.addWidget(widget)
        tools_row.addStretch(1)
        tools_row.addWidget(self.done_button)
        sliders = QHBoxLayout()
        sliders.setContentsMargins(0, 0, 0, 0)
        sliders.addWidget(QLabel("Size"))
        sliders.addWidget(self.brush_size, 1)
        sliders.addWidget(QLabel("Opacity"))
        sliders.addWidget(self.opacity, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(tools_row)
        layout.addLayout(sliders)
        layout.addWidget(self.canvas, 1)
        hint = named(
            QLabel(
                "The coloured part is repainted, the rest kept. Drag to paint; right-drag erases."
            ),
            "maskHint",
        )
        hint.setWordWrap(True)
        layout.addWidget(hint)

        self.eraser_tool.toggled.connect(self._on_tool_toggled)
        self.brush_size.valueChanged.connect(self._on_size_changed)
        self.opacity.valueChanged.connect(self._on_opacity_changed)
        self.undo_button.clicked.connect(self.canvas.undo)
        self.redo_button.clicked.connect(self.canvas.redo)
        self.clear_button.clicked.connect(self.canvas.clear)
        self.invert_button.clicked.connect(self.canvas.invert)
        self.done_button.clicked.connect(self.done)
        self.canvas.changed.connect(self._on_canvas_changed)
        for keys, slot in (
            (QKeySequence.StandardKey.Undo, self.canvas.undo),
            (QKeySequence.StandardKey.Redo, self.canvas.redo),
            ("B", lambda: self.brush_tool.setChecked(True)),
            ("E", lambda: self.eraser_tool.setChecked(True)),
            ("[", lambda: self.brush_size.setValue(int(self.brush_size.value() / 1.25))),
            ("]", lambda: self.brush_size.setValue(int(self.brush_size.value() * 1.25) + 1)),
        ):
            shortcut = QShortcut(QKeySequence(keys), self)
            shortcut.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            shortcut.activated.connect(slot)
        self._on_canvas_changed()

    @staticmethod
    def _button(text: str, name: str, tip: str) -> QToolButton:
        button = tool_button(text, name, text)
        button.setToolTip(tip)
        return button

    def _tool(self, text: str, name: str, tip: str) -> QToolButton:
        button = self._button(text, name, tip)
        button.setCheckable(True)
        return button

    @staticmethod
    def _slider(name: str, title: str, low: int, high: int, value: int) -> QSlider:
        slider = named(QSlider(Qt.Orientation.Horizontal), name, title)
        slider.setRange(low, high)
        slider.setValue(value)
        slider.setMinimumWidth(80)
        return slider

    def set_picture(self, picture: QImage, mask: QImage | None = None) -> None:
        self.canvas.set_picture(picture, mask)
        self._on_canvas_changed()

    def _on_tool_toggled(self, erasing: bool) -> None:
        self.canvas.erasing = erasing

    def _on_size_changed(self, value: int) -> None:
        self.canvas.brush = value

    def _on_opacity_changed(self, value: int) -> None:
        self.canvas.opacity = value / 100
        self.canvas.update()

    def _on_canvas_changed(self) -> None:
        self.undo_button.setEnabled(self.canvas.can_undo)
        self.redo_button.setEnabled(self.canvas.can_redo)
        self.changed.emit()
