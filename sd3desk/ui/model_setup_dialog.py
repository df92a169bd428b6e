"""Getting a model: ones already on disk, a local file or folder, a Hugging Face download, or
the tiny test model; and the preview decoder (TAESD3, ui/preview_decoder_box.py)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from sd3desk.core.downloads import (  # (huggingface_hub itself loads on first use)
    DEFAULT_REPO,
    format_bytes,
)
from sd3desk.core.errors import SD3DeskError
from sd3desk.core.settings import MemoryPlan
from sd3desk.runtime.background import Background, Report
from sd3desk.runtime.catalog import TEST_ENTRY, ModelCatalog, ModelEntry, check_model
from sd3desk.ui.memory_plan_box import MemoryPlanBox
from sd3desk.ui.preview_decoder_box import PreviewDecoderBox
from sd3desk.ui.theme import Tone, tone_style
from sd3desk.ui.widgets import named, wrapping_label

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Progress:
    """A download report: the plan first, then bytes done of total and the file being fetched."""

    plan: Any = None
    done: int = 0
    total: int = 0
    name: str = ""


@dataclass(frozen=True)
class _Failure:
    message: str
    advice: str
    cancelled: bool


class ModelSetupDialog(QDialog):
    """Offers every way to get a model; `model_chosen` carries the reference to select.

    The download runs on a Python thread through sd3desk.core.downloads; its reports come back
    through queued signals, and Cancel sets an Event the download checks between chunks.
    """

    model_chosen = Signal(str)

    def __init__(
        self,
        catalog: ModelCatalog,
        parent: QWidget | None = None,
        endpoint: str | None = None,
        cache_dir: Path | None = None,
        plan: MemoryPlan = MemoryPlan.auto,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Models")
        self.setObjectName("modelSetupDialog")
        self.catalog = catalog
        self.endpoint = endpoint  # None: huggingface_hub's own setting (HF_ENDPOINT)
        self.cache_dir = cache_dir  # None: the standard Hugging Face cache
        self._cancel: threading.Event | None = None
        # its own thread: a download takes minutes, must not hold up thumbnails or searches, and
        # closing the dialog only cancels it (the thread notices within a chunk and ends)
        self._download = Background(self, own_thread=True)
        self._download.progressed.connect(self._on_download_progressed)
        self._download.finished.connect(self._on_download_finished)
        self._download.failed.connect(self._on_download_failed)

        layout = QVBoxLayout(self)
        layout.addWidget(self._found_box())
        layout.addWidget(self._local_box())
        layout.addWidget(self._download_box())
        layout.addWidget(self._test_box())
        self.plan_box = MemoryPlanBox(plan)  # (the window saves a pick in the settings)
        layout.addWidget(self.plan_box)
        self.preview_box = PreviewDecoderBox(catalog, endpoint, cache_dir)
        layout.addWidget(self.preview_box)
        layout.addStretch(1)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self.resize(720, 640)
        catalog.found.connect(self._fill_found)
        self._fill_found(catalog.all_entries(), [])
        if not catalog.searched:
            catalog.refresh()

    # ------------------------------------------------------------------ 1. found on disk

    def _found_box(self) -> QGroupBox:
        box = QGroupBox("1. Models found on this computer")
        self.found = named(QListWidget(), "foundModelsList", "Models found")
        self.found.setMaximumHeight(130)
        self.found.itemDoubleClicked.connect(lambda _item: self._use_found())
        use = self.use_found = named(QPushButton("Use this model"), "useFoundButton")
        use.clicked.connect(self._use_found)
        self.found_note = wrapping_label("foundNote")
        column = QVBoxLayout(box)
        column.addWidget(self.found)
        row = QHBoxLayout()
        row.addWidget(self.found_note, 1)
        row.addWidget(use)
        column.addLayout(row)
        return box

    def _fill_found(self, entries: list[ModelEntry], problems: list[str]) -> None:
        self.found.clear()
        real = [e for e in entries if e.reference != TEST_ENTRY.reference]
        for entry in real:
            item = QListWidgetItem(f"{entry.label}\n{entry.detail}")
            item.setData(Qt.ItemDataRole.UserRole, entry.reference)
            self.found.addItem(item)
        self.use_found.setEnabled(bool(real))
        self.found.setVisible(bool(real))
        if real:
            self.found.setCurrentRow(0)
            self.found_note.setText("From the Hugging Face cache and your model folders.")
        else:
            self.found_note.setText(
                "None yet: nothing in the Hugging Face cache or your model folders "
                "(Settings → Model folders)."
            )
        if problems:
            self.found_note.setText(self.found_note.text() + " " + "; ".join(problems))

    def _use_found(self) -> None:
        item = self.found.currentItem()
        if item is not None:
            self._choose(item.data(Qt.ItemDataRole.UserRole))

    # ------------------------------------------------------------------ 2. a local file or folder

    def _local_box(self) -> QGroupBox:
        box = QGroupBox("2. A model file or folder you already have")
        pick_file = named(QPushButton("SD3 .safetensors or .gguf file…"), "pickFileButton")
        pick_file.clicked.connect(self._pick_file)
        pick_folder = named(QPushButton("Diffusers folder…"), "pickFolderButton")
        pick_folder.clicked.connect(self._pick_folder)
        self.local_error = wrapping_label("localError")
        self.local_error.setStyleSheet(tone_style(Tone.error))
        self.local_error.hide()
        column = QVBoxLayout(box)
        row = QHBoxLayout()
        row.addWidget(pick_file)
        row.addWidget(pick_folder)
        row.addStretch(1)
        column.addLayout(row)
        column.addWidget(self.local_error)
        return box

    def _pick_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "An SD3 checkpoint", "", "SD3 models (*.safetensors *.gguf)"
        )
        if path:
            self.use_local(path)

    def _pick_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "A diffusers SD3 folder")
        if path:
            self.use_local(path)

    def use_local(self, path: str) -> bool:
        """Check `path` is an SD3 model (headers only, no weights read) and choose it."""
        try:
            entry = check_model(path)
        except SD3DeskError as exc:
            self.local_error.setText(f"{exc.message}\n{exc.advice}".strip())
            self.local_error.show()
            return False
        self.local_error.hide()
        self._choose(entry.reference)
        return True

    # ------------------------------------------------------------------ 3. download

    def _download_box(self) -> QGroupBox:
        box = QGroupBox("3. Download from Hugging Face")
        self.repo = named(QLineEdit(DEFAULT_REPO), "repoEdit", "Repository")
        self.token = named(QLineEdit(), "tokenEdit", "Access token")
        self.token.setEchoMode(QLineEdit.EchoMode.Password)
        self.token.setPlaceholderText("hf_… (needed for gated models such as SD3)")
        self.with_t5 = QCheckBox("Include the T5 text encoder (~9.5 GB; better prompts)")
        self.with_t5.setObjectName("withT5Check")
        self.with_t5.setChecked(True)
        self.licence = wrapping_label("licenceLink")
        self.licence.setOpenExternalLinks(True)
        self.size_label = wrapping_label("downloadSize")
        self.download_progress = named(QProgressBar(), "downloadProgress")
        self.download_progress.setRange(0, 1000)
        self.download_progress.hide()
        self.download_error = wrapping_label("downloadError")
        self.download_error.setStyleSheet(tone_style(Tone.error))
        self.download_error.hide()
        self.check_button = named(QPushButton("Check size"), "checkDownloadButton")
        self.check_button.clicked.connect(lambda: self.start_download(plan_only=True))
        self.download_button = named(QPushButton("Download"), "downloadButton")
        self.download_button.clicked.connect(lambda: self.start_download(plan_only=False))
        self.cancel_download = named(QPushButton("Cancel"), "cancelDownloadButton")
        self.cancel_download.setEnabled(False)
        self.cancel_download.clicked.connect(self.cancel)
        self.repo.textChanged.connect(self._update_licence)
        self._update_licence()
        grid = QGridLayout(box)
        grid.addWidget(QLabel("Repository"), 0, 0)
        grid.addWidget(self.repo, 0, 1)
        grid.addWidget(QLabel("Token"), 1, 0)
        grid.addWidget(self.token, 1, 1)
        grid.addWidget(self.with_t5, 2, 1)
        grid.addWidget(self.licence, 3, 1)
        grid.addWidget(self.size_label, 4, 1)
        grid.addWidget(self.download_progress, 5, 1)
        grid.addWidget(self.download_error, 6, 1)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(self.check_button)
        row.addWidget(self.download_button)
        row.addWidget(self.cancel_download)
        grid.addLayout(row, 7, 1)
        return box

    def _update_licence(self) -> None:
        base = (self.endpoint or "https://huggingface.co").rstrip("/")
        url = f"{base}/{self.repo.text().strip()}"
        self.licence.setText(
            f'Gated models need their licence accepted first: <a href="{url}">{url}</a>; '
            f'create a read token at <a href="{base}/settings/tokens">{base}/settings/tokens</a>.'
        )

    def start_download(self, plan_only: bool = False) -> None:
        """Plan (sizes, free disk, token check) and, unless `plan_only`, download, off the GUI
        thread."""
        if self._download.busy:
            return
        repo, token = self.repo.text().strip(), self.token.text().strip() or None
        with_t5 = self.with_t5.isChecked()
        self.download_error.hide()
        self.size_label.setText("Asking Hugging Face for the file list…")
        cancel = self._cancel = threading.Event()
        where = {"cache_dir": self.cache_dir, "endpoint": self.endpoint}
        self._set_busy(True)
        self._download.submit(
            lambda report: _fetch(repo, token, with_t5, plan_only, cancel, report, where),
            reports=True,
        )

    def cancel(self) -> None:
        self.preview_box.cancel()
        if self._cancel is not None and self._download.busy:
            self._cancel.set()
            self.size_label.setText("Cancelling…")

    def _set_busy(self, busy: bool) -> None:
        for widget in (self.check_button, self.download_button, self.repo, self.token):
            widget.setEnabled(not busy)
        self.with_t5.setEnabled(not busy)
        self.cancel_download.setEnabled(busy)

    def _on_download_progressed(self, _key: object, progress: _Progress) -> None:
        if progress.plan is not None:
            self._show_plan(progress.plan)
            return
        self.download_progress.show()
        self.download_progress.setValue(round(1000 * progress.done / max(progress.total, 1)))
        self.download_progress.setFormat(
            f"{format_bytes(progress.done)} of {format_bytes(progress.total)} · {progress.name}"
        )

    def _show_plan(self, plan: Any) -> None:
        total, needed = format_bytes(plan.total_bytes), format_bytes(plan.needed_bytes)
        already, free = format_bytes(plan.already_bytes), format_bytes(plan.free_bytes)
        text = (
            f"{len(plan.files)} files, {total} in all; {needed} to fetch ({already} already "
            f"here); {free} free on disk."
        )
        if not plan.fits:
            text += " Not enough free space."
        self.size_label.setText(text)

    def _on_download_finished(self, _key: object, result: str | _Failure | None) -> None:
        self._set_busy(False)
        if isinstance(result, _Failure):
            self._show_failure(result)
        elif result is not None:  # None: a size check only
            self.download_progress.setValue(1000)
            self.size_label.setText(f"{result} is ready.")
            self.catalog.refresh()
            self._choose(result)

    def _on_download_failed(self, _key: object, exc: Exception) -> None:
        self._set_busy(False)  # _fetch never raises; this is a last resort
        self._show_failure(_Failure(f"The download failed: {exc}", "", False))

    def _show_failure(self, failure: _Failure) -> None:
        self.download_progress.hide()
        if failure.cancelled:
            self.size_label.setText(
                "Download cancelled. Finished files are kept; Download again to go on."
            )
            return
        self.size_label.clear()
        self.download_error.setText(f"{failure.message}\n{failure.advice}".strip())
        self.download_error.show()

    def busy(self) -> bool:
        return self._download.busy or self.preview_box.busy()

    # ------------------------------------------------------------------ 4. the test model

    def _test_box(self) -> QGroupBox:
        box = QGroupBox("4. Just trying the app?")
        button = named(QPushButton("Use the test model"), "useTestModelButton")
        button.clicked.connect(lambda: self._choose(TEST_ENTRY.reference))
        note = wrapping_label(
            "testModelNote",
            "A tiny model with random weights — it produces noise, not pictures, but runs every "
            "part of the app in seconds, even on a CPU.",
        )
        row = QHBoxLayout(box)
        row.addWidget(note, 1)
        row.addWidget(button)
        return box

    # ------------------------------------------------------------------ closing

    def _choose(self, reference: str) -> None:
        self.model_chosen.emit(reference)
        self.accept()

    def reject(self) -> None:
        self.cancel()
        super().reject()

    def done(self, result: int) -> None:
        if self._cancel is not None:
            self._cancel.set()
        self.preview_box.cancel()
        super().done(result)


def _fetch(
    repo: str,
    token: str | None,
    with_t5: bool,
    plan_only: bool,
    cancel: threading.Event,
    report: Report,
    where: dict[str, Any],
) -> str | _Failure | None:
    """On the download pool: the repo when downloaded, None after a size check only, or what
    went wrong. Never raises: the dialog shows words, the log has the details."""
    from sd3desk.core import downloads

    try:
        plan = downloads.plan_download(repo, token=token, with_t5=with_t5, **where)
        report(_Progress(plan=plan))
        if cancel.is_set():
            return _Failure("", "", True)
        if plan_only:
            return None
        folder = downloads.download(
            plan,
            token=token,
            on_progress=lambda done, total, name: report(_Progress(None, done, total, name)),
            cancel=cancel,
            **where,
        )
        return repo if folder else None
    except downloads.DownloadCancelled as exc:
        return _Failure(exc.message, exc.advice, True)
    except SD3DeskError as exc:
        return _Failure(exc.message, exc.advice, False)
    except Exception as exc:  # never a traceback in the dialog; the log has details
        log.exception("download failed")
        return _Failure(f"The download failed: {exc}", "details are in the log file", False)
