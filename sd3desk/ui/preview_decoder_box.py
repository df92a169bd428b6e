"""The Models dialog's preview section: whether TAESD3 (the tiny SD3 autoencoder that makes step
previews look like the image) is on disk, and its download into the Hugging Face cache."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from PySide6.QtWidgets import QGroupBox, QHBoxLayout, QProgressBar, QPushButton, QVBoxLayout

from sd3desk.core.downloads import PREVIEW_DECODER_FILES, PREVIEW_DECODER_REPO, format_bytes
from sd3desk.core.errors import SD3DeskError
from sd3desk.runtime.background import Background, Report
from sd3desk.runtime.catalog import ModelCatalog
from sd3desk.ui.theme import Tone, tone_style
from sd3desk.ui.widgets import named, wrapping_label

log = logging.getLogger(__name__)

ON_DISK = "Preview decoder: TAESD3 (on disk)"


class PreviewDecoderBox(QGroupBox):
    """Says whether TAESD3 is on disk (the catalog looks, off the GUI thread, where the workers
    will) and offers to download it when it is not.

    The download runs on a thread of its own through sd3desk.core.downloads, as a model's does;
    `cancel()` sets the Event it checks between chunks.
    """

    def __init__(
        self, catalog: ModelCatalog, endpoint: str | None = None, cache_dir: Path | None = None
    ) -> None:
        super().__init__("Previews")
        self.setObjectName("previewDecoderBox")
        self.catalog = catalog
        self.where = {"cache_dir": cache_dir, "endpoint": endpoint}
        self._cancel: threading.Event | None = None
        self._download = Background(self, own_thread=True)
        self._download.progressed.connect(self._on_progressed)
        self._download.finished.connect(self._on_finished)
        self._download.failed.connect(self._on_failed)
        self.note = wrapping_label("previewDecoderNote", "Looking for TAESD3…")
        self.button = named(
            QPushButton("Download the preview decoder (TAESD3, ~10 MB)"),
            "downloadPreviewDecoderButton",
        )
        self.button.setToolTip(
            f"{PREVIEW_DECODER_REPO} (MIT licence), into the Hugging Face cache; used offline "
            "from the next job on (File → Settings can turn it off)"
        )
        self.button.clicked.connect(self.start_download)
        self.button.hide()  # until the lookup says it is not on disk
        self.progress = named(QProgressBar(), "previewDecoderProgress")
        self.progress.setRange(0, 1000)
        self.progress.hide()
        self.error = wrapping_label("previewDecoderError")
        self.error.setStyleSheet(tone_style(Tone.error))
        self.error.hide()
        column = QVBoxLayout(self)
        row = QHBoxLayout()
        row.addWidget(self.note, 1)
        row.addWidget(self.button)
        column.addLayout(row)
        column.addWidget(self.progress)
        column.addWidget(self.error)
        catalog.preview_decoder_found.connect(self._show_found)
        catalog.look_for_preview_decoder()

    def busy(self) -> bool:
        return self._download.busy

    def cancel(self) -> None:
        if self._cancel is not None:
            self._cancel.set()

    def start_download(self) -> None:
        """Fetch TAESD3's two files (a public repo: no token) off the GUI thread."""
        if self.busy():
            return
        self.error.hide()
        self.button.setEnabled(False)
        self.note.setText("Asking Hugging Face for TAESD3…")
        cancel = self._cancel = threading.Event()
        where = self.where
        self._download.submit(lambda report: _fetch(cancel, report, where), reports=True)

    def _show_found(self, folder: Path | None) -> None:
        """What the catalog's lookup found: TAESD3's folder, or None."""
        if self.busy():
            return  # (a lookup from before this download began)
        self.button.setVisible(folder is None)
        self.button.setEnabled(True)
        self.note.setToolTip(str(folder or ""))
        self.note.setText(
            ON_DISK
            if folder is not None
            else "Previews are colour sketches of each step; the tiny SD3 autoencoder makes "
            "them look like the image."
        )

    def _on_progressed(self, _key: object, progress: tuple[int, int]) -> None:
        done, total = progress
        self.progress.show()
        self.progress.setValue(round(1000 * done / max(total, 1)))
        self.progress.setFormat(f"{format_bytes(done)} of {format_bytes(total)} · TAESD3")

    def _on_finished(self, _key: object, error: str) -> None:
        self.progress.hide()
        self.button.setEnabled(True)
        if error:
            self.error.setText(error)
            self.error.show()
            self.note.clear()
            return
        self.note.setText("TAESD3 downloaded; checking it…")
        self.catalog.look_for_preview_decoder()  # said as the workers will find it

    def _on_failed(self, key: object, exc: Exception) -> None:
        self._on_finished(key, f"The download failed: {exc}")  # (_fetch never raises)


def _fetch(cancel: threading.Event, report: Report, where: dict[str, Any]) -> str:
    """On the download thread: "" once TAESD3 is in the cache, else what went wrong, in words
    (never raises: the log has the details)."""
    from sd3desk.core import downloads

    try:
        plan = downloads.plan_files_download(PREVIEW_DECODER_REPO, PREVIEW_DECODER_FILES, **where)
        downloads.download(
            plan,
            on_progress=lambda done, total, _name: report((done, total)),
            cancel=cancel,
            **where,
        )
        return ""
    except downloads.DownloadCancelled:
        return "Download cancelled; finished files are kept."
    except SD3DeskError as exc:
        return f"{exc.message}\n{exc.advice}".strip()
    except Exception as exc:  # never a traceback in the dialog; the log has details
        log.exception("preview decoder download failed")
        return f"The download failed: {exc}\ndetails are in the log file"
