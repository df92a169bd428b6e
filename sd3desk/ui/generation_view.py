"""The running job: a progress bar with speed and time left, and the preview growing into the
final image (shown with its parameters)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import Signal
from PySide6.QtGui import QImage
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from sd3desk.core.words import duration
from sd3desk.ui.mask_editor import MaskEditor
from sd3desk.ui.viewer import ImageViewer
from sd3desk.ui.widgets import named, tool_button

if TYPE_CHECKING:
    from PIL import Image


def to_qimage(image: Image.Image) -> QImage:
    """A deep copy as a QImage (the PIL buffer may go away once this returns)."""
    rgb = image.convert("RGB")
    data = rgb.tobytes()
    return QImage(data, rgb.width, rgb.height, 3 * rgb.width, QImage.Format.Format_RGB888).copy()


def to_pil(image: QImage) -> Image.Image:
    """A QImage as a PIL image: grayscale stays "L" (a mask), anything else becomes RGB."""
    from PIL import Image

    if image.format() == QImage.Format.Format_Grayscale8:
        mode, converted = "L", image
    else:
        mode = "RGB"
        converted = image.convertToFormat(QImage.Format.Format_RGB888)
    width, height = converted.width(), converted.height()
    data = bytes(converted.constBits())
    return Image.frombuffer(mode, (width, height), data, "raw", mode, converted.bytesPerLine(), 1)


class GenerationView(QWidget):
    """Progress of the running job above an ImageViewer (`previewView`), or the mask editor
    while a mask is painted."""

    source_requested = Signal(str)  # "Use as source" on the image shown

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.progress = named(QProgressBar(), "progressBar", "Progress")
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setTextVisible(True)
        self.progress.setFormat("Idle")
        self.job_label = named(QLabel(), "jobLabel")
        self.viewer = ImageViewer()
        self.viewer.setObjectName("previewView")
        self.viewer.setAccessibleName("Preview")
        self.viewer.set_placeholder(
            "Type a prompt and press Generate (Ctrl+Enter).\n"
            "The preview and then the finished image appear here."
        )
        self.use_source = tool_button("Use as source", "useAsSourceButton")
        self.use_source.setToolTip("Start the next job from this image (image to image)")
        self.use_source.setEnabled(False)
        self.use_source.clicked.connect(lambda: self.source_requested.emit(self._shown))
        self.mask_editor = named(MaskEditor(), "maskEditor")
        self.mask_editor.done.connect(self.show_preview)
        self.pages = named(QStackedWidget(), "centrePages")
        self.pages.addWidget(self.viewer)
        self.pages.addWidget(self.mask_editor)
        row = QHBoxLayout()
        row.addWidget(self.progress, 1)
        row.addWidget(self.job_label)
        row.addWidget(self.use_source)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addWidget(self.pages, 1)
        self._job_id: int | None = None
        self._shown = ""  # the finished image shown, if any

    def paint_mask(self) -> None:
        """Show the mask editor (over the picture the window gave it)."""
        self.pages.setCurrentWidget(self.mask_editor)
        self.mask_editor.canvas.setFocus()

    def show_preview(self) -> None:
        self.pages.setCurrentWidget(self.viewer)

    def job_started(self, job_id: int, steps: int, text: str) -> None:
        self._job_id = job_id
        self.progress.setRange(0, steps)
        self.progress.setValue(0)
        self.progress.setFormat(f"Job #{job_id}: starting…")
        self.job_label.setText(text)

    def set_waiting(self, text: str) -> None:
        """Before the first step: loading the model, or waiting in the queue."""
        if self.progress.value() == 0:
            self.progress.setFormat(text)

    def step(self, job_id: int, step: int, total: int, elapsed_s: float, preview) -> None:
        if job_id != self._job_id:
            self.job_started(job_id, total, "")
        rate = elapsed_s / max(step, 1)
        self.progress.setRange(0, total)
        self.progress.setValue(step)
        left = duration(rate * (total - step))
        self.progress.setFormat(f"step {step}/{total} · {rate:.2f} s/step · {left} left")
        if preview is not None:
            self._shown = ""
            self.use_source.setEnabled(False)
            self.viewer.show_qimage(to_qimage(preview), f"Job #{job_id}: step {step}/{total}")

    def job_ended(self, text: str) -> None:
        self._job_id = None
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat(text)
        self.job_label.clear()

    def show_image(self, path: Path | str) -> None:
        self._shown = str(path)
        self.use_source.setEnabled(True)
        self.viewer.show_image(path)
