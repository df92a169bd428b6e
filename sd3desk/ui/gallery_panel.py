"""The gallery: search, filters and a virtualised grid of thumbnails with actions per image."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QSize, Qt, QUrl, Signal
from PySide6.QtGui import QAction, QDesktopServices, QGuiApplication, QImage, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLineEdit,
    QListView,
    QMenu,
    QVBoxLayout,
    QWidget,
)

from sd3desk.core.gallery import ImageRow, export_image
from sd3desk.core.metadata import ImageMetadata, ModelIdentity, a1111_text
from sd3desk.core.params import SEED_MAX
from sd3desk.ui.form_fields import TITLES
from sd3desk.ui.gallery_model import ROW_ROLE, GalleryModel
from sd3desk.ui.thumbnail_delegate import ThumbnailDelegate
from sd3desk.ui.thumbnails import SIZE

if TYPE_CHECKING:
    from sd3desk.runtime.gallery_scanner import GalleryScanner

ALL_MODELS = "All models"
# Fields no other tool writes (SD3 specifics of ours): not named when a file lacks them
_QUIETLY_KEPT = ("shift", "max_sequence_length")


def kept_fields(meta: ImageMetadata) -> tuple[str, ...]:
    """The form fields loading `meta` leaves as they are: those the file did not state, and a
    seed beyond sd3desk's range (another tool's 64-bit seed)."""
    seed = meta.params.seed
    return (*meta.missing, "seed") if seed is not None and seed > SEED_MAX else meta.missing


def loading_notes(meta: ImageMetadata) -> list[str]:
    """What to tell the user when `meta` goes into the form."""
    notes = []
    missing = [TITLES[n].rstrip(":").lower() for n in meta.missing if n not in _QUIETLY_KEPT]
    if missing:
        notes.append(f"Not in the file, so the form keeps its own: {', '.join(missing)}")
    if meta.params.seed is not None and meta.params.seed > SEED_MAX:
        notes.append(_beyond(meta.params.seed))
    if meta.unmapped:
        listed = ", ".join(f"{key}: {value}" for key, value in meta.unmapped)
        notes.append(f"Not used by SD3, so not loaded: {listed}")
    return notes + list(meta.notes)


def _beyond(seed: int) -> str:
    return f"The seed {seed} is beyond sd3desk's seeds (0 to {SEED_MAX}): the form keeps its own"


class GalleryPanel(QWidget):
    """Browse, search and act on generated images. Holds no business logic beyond calling the
    injected GalleryModel/GalleryIndex; requests for the queue or the form go out as signals.
    """

    rerun_requested = Signal(object)  # GenerationParams (same seed, or seed None for a new one)
    settings_requested = Signal(object)  # ImageMetadata to load into the form
    seed_requested = Signal(object)  # int: seeds reach 2^32 - 1, beyond Qt's int
    image_opened = Signal(object)  # ImageRow
    source_requested = Signal(str)  # an image's path: start the next job from it
    notice = Signal(str)

    def __init__(self, model: GalleryModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = model
        self.scanner: GalleryScanner | None = None  # (set by watch)
        self.search = QLineEdit(placeholderText="Search prompts…", clearButtonEnabled=True)
        self.search.setObjectName("gallerySearch")
        self.search.setAccessibleName("Search prompts")
        self.model_filter = QComboBox()
        self.model_filter.setObjectName("galleryModelFilter")
        self.model_filter.setAccessibleName("Model filter")
        self.favourites = QCheckBox("★ only")
        self.favourites.setObjectName("galleryFavourites")
        self.mode_filter = QComboBox()
        self.mode_filter.setObjectName("galleryModeFilter")
        self.mode_filter.setAccessibleName("Made by")
        for text, mode in (
            ("Any way", None),
            ("From noise", "txt2img"),
            ("From a picture", "img2img"),
            ("Inpainted", "inpaint"),
            ("Hires fix", "hires"),
        ):
            self.mode_filter.addItem(text, mode)
        self.view = QListView()
        self.view.setObjectName("galleryView")
        self.view.setAccessibleName("Generated images")
        self.view.setModel(model)
        self.view.setViewMode(QListView.ViewMode.IconMode)
        self.view.setIconSize(QSize(SIZE, SIZE))
        self.view.setGridSize(QSize(SIZE + 14, SIZE + 14))
        self.view.setItemDelegate(ThumbnailDelegate(SIZE + 14, self.view))
        self.view.setUniformItemSizes(True)
        self.view.setResizeMode(QListView.ResizeMode.Adjust)
        self.view.setMovement(QListView.Movement.Static)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.view.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        filters = QHBoxLayout()
        filters.addWidget(self.search, 1)
        filters.addWidget(self.model_filter)
        filters.addWidget(self.mode_filter)
        filters.addWidget(self.favourites)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(filters)
        layout.addWidget(self.view, 1)
        self.actions_ = self._make_actions()
        self.search.textChanged.connect(self._on_filters_changed)
        self.model_filter.currentTextChanged.connect(self._on_filters_changed)
        self.favourites.toggled.connect(self._on_filters_changed)
        self.mode_filter.currentIndexChanged.connect(self._on_filters_changed)
        self.view.customContextMenuRequested.connect(self._on_view_context_menu)
        self.view.activated.connect(lambda index: self._open(self._row(index.row())))
        self.reload_models()
        self.setAcceptDrops(True)

    # ------------------------------------------------------------------ keeping in step with files

    def watch(self, scanner: GalleryScanner) -> None:
        """Rescan with `scanner` (a GalleryScanner) now and whenever the app becomes active
        again, so files added or removed outside sd3desk show up; refresh when one finishes."""
        from PySide6.QtGui import QGuiApplication

        self.scanner = scanner
        scanner.finished.connect(self._on_scanner_finished)
        scanner.failed.connect(self.notice)
        app = QGuiApplication.instance()
        if isinstance(app, QGuiApplication):
            app.applicationStateChanged.connect(self._on_app_state_changed)
        scanner.start()

    def _on_app_state_changed(self, state) -> None:
        if state == Qt.ApplicationState.ApplicationActive and self.scanner is not None:
            self.scanner.start()

    def _on_scanner_finished(self, result) -> None:
        if result.added or result.updated or result.removed:
            self.model.refresh()
            self.reload_models()

    def image_added(self, path: str, indexed: bool = False) -> None:
        """A job just wrote `path`: index it (unless the runtime already did) and show it at
        once, without a rescan."""
        if not indexed:
            self.model.gallery.add(path)
        self.model.refresh()
        self.reload_models()

    # ------------------------------------------------------------------ import by drag and drop

    def dragEnterEvent(self, event) -> None:
        if any(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        for url in event.mimeData().urls():
            if url.isLocalFile():
                self.import_file(url.toLocalFile())
                event.acceptProposedAction()
                return

    def import_file(self, path: str) -> None:
        """Read an image's parameters (ours, A1111/Forge, ComfyUI) and offer them to the form;
        fields with no SD3 meaning are listed, hostile files give a message."""
        from sd3desk.core.errors import MetadataError
        from sd3desk.core.metadata import read_metadata

        try:
            meta = read_metadata(path)
        except MetadataError as exc:
            self.notice.emit(exc.message)
            return
        self._load(meta)

    def _load(self, meta: ImageMetadata) -> None:
        """Offer `meta` to the form, saying what it lacks and what SD3 has no use for."""
        for text in loading_notes(meta):
            self.notice.emit(text)
        self.settings_requested.emit(meta)

    # ------------------------------------------------------------------ set-up

    def _make_actions(self) -> dict[str, QAction]:
        specs = [
            ("rerun", "Re-run exactly", None, self.rerun_exactly),
            ("rerun_seed", "Re-run with a new seed", None, self.rerun_new_seed),
            ("settings", "Load settings into the form", None, self.load_settings),
            ("source", "Use as source (image to image)", None, self.use_as_source),
            ("seed", "Use this seed", None, self.use_seed),
            ("copy_image", "Copy image", QKeySequence.StandardKey.Copy, self.copy_image),
            ("copy_params", "Copy parameters", "Ctrl+Shift+C", self.copy_parameters),
            ("open_folder", "Open containing folder", None, self.open_folder),
            ("export", "Export as…", "Ctrl+E", self.export),
            ("favourite", "Favourite", "F", self.toggle_favourite),
            ("delete", "Move to trash", QKeySequence.StandardKey.Delete, self.move_to_trash),
        ]
        actions = {}
        for key, text, shortcut, slot in specs:
            action = QAction(text, self)
            if shortcut is not None:
                action.setShortcut(QKeySequence(shortcut))
            action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            action.triggered.connect(slot)
            self.view.addAction(action)
            actions[key] = action
        return actions

    def reload_models(self) -> None:
        current = self.model_filter.currentText()
        self.model_filter.blockSignals(True)
        self.model_filter.clear()
        self.model_filter.addItems([ALL_MODELS, *self.model.gallery.models()])
        self.model_filter.setCurrentText(current or ALL_MODELS)
        self.model_filter.blockSignals(False)

    def _on_filters_changed(self) -> None:
        model = self.model_filter.currentText()
        self.model.set_query(
            self.search.text(),
            model=None if model in ("", ALL_MODELS) else model,
            favourites=self.favourites.isChecked(),
            mode=self.mode_filter.currentData(),
        )

    def _on_view_context_menu(self, position) -> None:
        menu = QMenu(self)
        for key, action in self.actions_.items():
            menu.addAction(action)
            if key in ("seed", "copy_params", "export"):
                menu.addSeparator()
        menu.exec(self.view.viewport().mapToGlobal(position))

    # ------------------------------------------------------------------ selection

    def _row(self, row: int) -> ImageRow | None:
        return self.model.data(self.model.index(row), ROW_ROLE)

    def selected(self) -> list[ImageRow]:
        rows = sorted(i.row() for i in self.view.selectionModel().selectedIndexes())
        return [r for r in (self._row(n) for n in rows) if r is not None]

    def _current(self) -> ImageRow | None:
        chosen = self.selected()
        if not chosen:
            self.notice.emit("Select an image first.")
            return None
        return chosen[0]

    def _with_params(self) -> tuple[ImageRow, ImageMetadata] | None:
        row = self._current()
        if row is None:
            return None
        params = row.params()
        if params is None:
            self.notice.emit(f"{Path(row.path).name} carries no generation parameters.")
            return None
        return row, ImageMetadata(params, ModelIdentity(row.model_name, row.model_hash))

    # ------------------------------------------------------------------ actions

    def _open(self, row: ImageRow | None) -> None:
        if row is not None:
            self.image_opened.emit(row)

    def rerun_exactly(self) -> None:
        if found := self._with_params():
            self.rerun_requested.emit(found[1].params)

    def rerun_new_seed(self) -> None:
        if found := self._with_params():
            self.rerun_requested.emit(found[1].params.replace(seed=None))

    def load_settings(self) -> None:
        if found := self._with_params():
            self._load(found[1])

    def use_seed(self) -> None:
        if not (found := self._with_params()) or found[1].params.seed is None:
            return
        seed = found[1].params.seed
        if seed > SEED_MAX:
            self.notice.emit(_beyond(seed))
        else:
            self.seed_requested.emit(seed)

    def copy_image(self) -> None:
        if row := self._current():
            QGuiApplication.clipboard().setImage(QImage(row.path))

    def copy_parameters(self) -> None:
        if found := self._with_params():
            QGuiApplication.clipboard().setText(a1111_text(found[1]))

    def use_as_source(self) -> None:
        if row := self._current():
            self.source_requested.emit(row.path)

    def open_folder(self) -> None:
        if row := self._current():
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(Path(row.path).parent)))

    def export(self, target: str | None = None) -> None:
        row = self._current()
        if row is None:
            return
        if not target:
            suggested = str(Path(row.path).with_suffix(".jpg"))
            target, _ = QFileDialog.getSaveFileName(
                self, "Export image", suggested, "Images (*.png *.jpg *.jpeg *.webp)"
            )
        if target:
            try:
                export_image(row.path, target)
            except (OSError, ValueError) as exc:
                self.notice.emit(f"Could not export: {exc}")

    def toggle_favourite(self) -> None:
        rows = self.selected()
        if not rows:
            return
        value = not all(r.favourite for r in rows)
        for row in rows:
            self.model.gallery.set_favourite(row.id, value)
        self.model.refresh()

    def move_to_trash(self) -> None:
        """Selected files go to the system trash (never deleted outright), then out of the index."""
        from PySide6.QtCore import QFile

        moved, failed = [], []
        for row in self.selected():
            (moved if QFile.moveToTrash(row.path) else failed).append(row.path)
        self.model.gallery.forget(moved)
        for path in moved:
            self.model.thumbnails.forget(path)
        self.model.refresh()
        if failed:
            self.notice.emit(f"{len(failed)} file(s) could not be moved to the trash.")
