"""The form's "start from a picture" well: the source picture as the job will use it (fitted to
the form's size and cropped around the centre), with Open…, Paste, Paint mask and Clear; an
image file dropped on it becomes the source."""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import QFrame, QGridLayout, QLabel, QPushButton, QWidget

from sd3desk.ui.widgets import named

THUMBNAIL = QSize(112, 112)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def fitted(picture: QImage, width: int, height: int) -> QImage:
    """`picture` scaled to cover width x height, cropped around the centre (core/sources.fit,
    in Qt, for showing)."""
    scaled = picture.scaled(
        width,
        height,
        Qt.AspectRatioMode.KeepAspectRatioByExpanding,
        Qt.TransformationMode.SmoothTransformation,
    )
    left, top = (scaled.width() - width) // 2, (scaled.height() - height) // 2
    return scaled.copy(left, top, width, height)


class SourceWell(QFrame):
    """Shows and offers the source picture; the window stores the pictures and sets them here.

    `digest` is the stored picture's SHA-256 ("" for none: the job starts from noise)."""

    open_requested = Signal()
    paste_requested = Signal()
    mask_requested = Signal()
    cleared = Signal()
    file_dropped = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("sourceWell")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setAcceptDrops(True)
        self.digest = ""
        self.picture = QImage()
        self.name = ""
        self._size = (1024, 1024)
        self._masked = False
        self.thumbnail = named(QLabel(), "sourceThumbnail", "Source picture")
        self.thumbnail.setFixedSize(THUMBNAIL)
        self.thumbnail.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.caption = named(QLabel(), "sourceCaption")
        self.caption.setWordWrap(True)
        self.open_button = self._button("Open…", "sourceOpenButton", "Start from a picture file")
        self.paste_button = self._button("Paste", "sourcePasteButton", "Start from the clipboard")
        self.mask_button = self._button(
            "Paint mask", "sourceMaskButton", "Paint the part to repaint (inpainting)"
        )
        self.clear_button = self._button("Clear", "sourceClearButton", "Start from noise again")
        self.open_button.clicked.connect(self.open_requested)
        self.paste_button.clicked.connect(self.paste_requested)
        self.mask_button.clicked.connect(self.mask_requested)
        self.clear_button.clicked.connect(self.cleared)
        grid = QGridLayout(self)
        grid.setContentsMargins(6, 6, 6, 6)
        grid.addWidget(self.thumbnail, 0, 0, 3, 1)
        grid.addWidget(self.caption, 0, 1, 1, 2)
        grid.addWidget(self.open_button, 1, 1)
        grid.addWidget(self.paste_button, 1, 2)
        grid.addWidget(self.mask_button, 2, 1)
        grid.addWidget(self.clear_button, 2, 2)
        grid.setColumnStretch(1, 1)
        grid.setColumnStretch(2, 1)
        self._render()

    @staticmethod
    def _button(text: str, name: str, tip: str) -> QPushButton:
        button = named(QPushButton(text), name)
        button.setToolTip(tip)
        return button

    def set_source(self, digest: str, picture: QImage, name: str) -> None:
        self.digest, self.picture, self.name = digest, picture, name
        self._masked = False
        self._render()

    def clear(self) -> None:
        self.set_source("", QImage(), "")

    def set_size(self, width: int, height: int) -> None:
        """The request's size: the thumbnail shows the crop the job will use."""
        self._size = (width, height)
        self._render()

    @property
    def masked(self) -> bool:
        return self._masked

    def set_masked(self, masked: bool) -> None:
        self._masked = masked
        self._render()

    def _render(self) -> None:
        has = bool(self.digest) and not self.picture.isNull()
        for button in (self.mask_button, self.clear_button):
            button.setEnabled(has)
        if not has:
            self.thumbnail.setPixmap(QPixmap())
            self.thumbnail.setText("From noise")
            self.caption.setText(
                "Start from a picture: drop one here, open or paste it, or use one from the "
                "gallery."
            )
            return
        width, height = self._size
        shown = fitted(self.picture, width, height).scaled(
            THUMBNAIL,
            Qt.AspectRatioMode.KeepAspectRatio,
            Qt.TransformationMode.SmoothTransformation,
        )
        self.thumbnail.setPixmap(QPixmap.fromImage(shown))
        source = f"{self.picture.width()}×{self.picture.height()}"
        crop = "" if self.picture.size() == QSize(width, height) else f", used at {width}×{height}"
        mode = "inpainting the painted area" if self._masked else "image to image"
        self.caption.setText(f"{self.name or 'Pasted picture'} ({source}{crop}): {mode}")
        self.mask_button.setText("Edit mask" if self._masked else "Paint mask")

    # ------------------------------------------------------------------ drag and drop

    def dragEnterEvent(self, event) -> None:
        if any(
            u.isLocalFile() and u.toLocalFile().lower().endswith(IMAGE_SUFFIXES)
            for u in event.mimeData().urls()
        ):
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        for url in event.mimeData().urls():
            if url.isLocalFile() and url.toLocalFile().lower().endswith(IMAGE_SUFFIXES):
                self.file_dropped.emit(url.toLocalFile())
                event.acceptProposedAction()
                return
