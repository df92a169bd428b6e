"""One image at "fit" or a chosen zoom, with its parameters beside it."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QImage, QKeySequence, QPixmap
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSplitter,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

ZOOM_STEPS = (0.125, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0)


class ImageViewer(QWidget):
    """Shows one image; `zoom` is None for "fit to the window"."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.zoom: float | None = None
        self._image = QImage()
        self._reason = ""  # why the image shown has no pixels (too large, damaged)
        self._upscale = False
        self._placeholder = ""
        self.picture = QLabel(alignment=Qt.AlignmentFlag.AlignCenter)
        self.picture.setObjectName("viewerImage")
        # (not `self.scroll`: that is QWidget.scroll, a method)
        self.scroll_area = QScrollArea(alignment=Qt.AlignmentFlag.AlignCenter)
        self.scroll_area.setWidget(self.picture)
        self.params = QTextBrowser()
        self.params.setObjectName("viewerParams")
        self.params.setAccessibleName("Image parameters")
        self.params.hide()  # until there is an image to describe
        buttons = QHBoxLayout()
        for text, tip, shortcut, slot in (
            ("Fit", "Fit the image to the window", "Ctrl+0", self.fit),
            ("100%", "Actual pixels", "Ctrl+1", lambda: self.set_zoom(1.0)),
            ("−", "Zoom out", QKeySequence.StandardKey.ZoomOut, lambda: self.step_zoom(-1)),
            ("+", "Zoom in", QKeySequence.StandardKey.ZoomIn, lambda: self.step_zoom(1)),
        ):
            button = QPushButton(text)
            button.setToolTip(tip)
            button.setMaximumWidth(64)
            button.setShortcut(QKeySequence(shortcut))
            button.clicked.connect(slot)
            buttons.addWidget(button)
        buttons.addStretch(1)
        left = QWidget()
        column = QVBoxLayout(left)
        column.setContentsMargins(0, 0, 0, 0)
        column.addLayout(buttons)
        column.addWidget(self.scroll_area, 1)
        # the parameters under the image: the image keeps the full width at any window size
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(left)
        splitter.addWidget(self.params)
        splitter.setStretchFactor(0, 4)
        splitter.setStretchFactor(1, 1)
        splitter.setCollapsible(0, False)
        self.params.setMinimumHeight(60)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(splitter)

    def show_image(self, path: Path | str) -> None:
        # (imported here: the first frame shows no image, and need not wait for the readers)
        from sd3desk.core.errors import MetadataError
        from sd3desk.core.metadata import a1111_text, read_metadata

        self._image, self._reason = _read_image(Path(path))
        self._upscale = False
        try:
            meta = read_metadata(path)
            text = a1111_text(meta)
            if meta.unmapped:
                text += "\n\nNot used by SD3: " + ", ".join(f"{k}: {v}" for k, v in meta.unmapped)
        except MetadataError as exc:
            text = exc.message
        self.params.setPlainText(f"{Path(path).name}\n\n{text}")
        self.params.show()
        self._render()

    def show_qimage(self, image: QImage, text: str) -> None:
        """An image not on disk yet (a live preview), scaled like any other."""
        self._image, self._reason = image, ""
        self._upscale = True  # a small preview fills the space the final image will take
        self.params.setPlainText(text)
        self.params.show()
        self._render()

    def set_placeholder(self, text: str) -> None:
        """What to show while there is no image (an empty viewer says what will appear)."""
        self._placeholder = text
        self._render()

    def fit(self) -> None:
        self.zoom = None
        self._render()

    def set_zoom(self, zoom: float) -> None:
        self.zoom = max(ZOOM_STEPS[0], min(ZOOM_STEPS[-1], zoom))
        self._render()

    def step_zoom(self, direction: int) -> None:
        current = self.zoom if self.zoom is not None else self._fit_factor()
        bigger = [z for z in ZOOM_STEPS if z > current + 1e-6]
        smaller = [z for z in ZOOM_STEPS if z < current - 1e-6]
        self.set_zoom(
            (bigger[0] if bigger else current)
            if direction > 0
            else (smaller[-1] if smaller else current)
        )

    def _fit_factor(self) -> float:
        if self._image.isNull():
            return 1.0
        area = self.scroll_area.viewport().size()
        factor = min(area.width() / self._image.width(), area.height() / self._image.height())
        return factor if self._upscale else min(factor, 1.0)

    def _render(self) -> None:
        if self._image.isNull():
            self.picture.setText(self._reason or self._placeholder)
            self.picture.adjustSize()
            return
        factor = self._fit_factor() if self.zoom is None else self.zoom
        size = self._image.size() * factor
        self.picture.setPixmap(
            QPixmap.fromImage(self._image).scaled(
                size, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation
            )
        )
        self.picture.resize(self.picture.pixmap().size())

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        if self.zoom is None:
            self._render()


VIEW_BYTES_MAX = 256 * 2**20  # Qt's own limit for decoding one image (allocation limit)


def _read_image(path: Path) -> tuple[QImage, str]:
    """The image at `path`, or a null image and why: its size is read from the header first,
    so an image past Qt's decoding limit (a "decompression bomb") is never decoded."""
    from PySide6.QtGui import QImageReader

    reader = QImageReader(str(path))
    size = reader.size()
    if size.isValid() and size.width() * size.height() * 4 > VIEW_BYTES_MAX:
        return QImage(), f"{path.name} is {size.width()}x{size.height()} pixels: too large to show"
    image = reader.read()
    return (
        image,
        "" if not image.isNull() else f"{path.name} cannot be shown: {reader.errorString()}",
    )
