"""The running job: a progress bar with speed and time left, and the preview growing into the
final image (shown with its parameters)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtGui import QImage
from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QVBoxLayout, QWidget

from sd3desk.core.words import duration
from sd3desk.ui.viewer import ImageViewer
from sd3desk.ui.widgets import named

if TYPE_CHECKING:
    from PIL import Image


def to_qimage(image: Image.Image) -> QImage:
    """A deep copy as a QImage (the PIL buffer may go away once this returns)."""
    rgb = image.convert("RGB")
    data = rgb.tobytes()
    return QImage(data, rgb.width, rgb.height, 3 * rgb.width, QImage.Format.Format_RGB888).copy()


class GenerationView(QWidget):
    """Progress of the running job above an ImageViewer (`previewView`)."""

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
        row = QHBoxLayout()
        row.addWidget(self.progress, 1)
        row.addWidget(self.job_label)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addWidget(self.viewer, 1)
        self._job_id: int | None = None

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
            self.viewer.show_qimage(to_qimage(preview), f"Job #{job_id}: step {step}/{total}")

    def job_ended(self, text: str) -> None:
        self._job_id = None
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat(text)
        self.job_label.clear()

    def show_image(self, path: Path | str) -> None:
        self.viewer.show_image(path)
