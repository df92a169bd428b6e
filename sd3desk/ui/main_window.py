"""The main window: the form on the left, progress and preview in the middle, gallery and queue
docked on the right, engine status and notices at the bottom."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import QByteArray, QSettings, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QAction, QCloseEvent, QDesktopServices, QKeySequence
from PySide6.QtWidgets import (
    QDockWidget,
    QFileDialog,
    QLabel,
    QMainWindow,
    QScrollArea,
    QSplitter,
    QToolButton,
    QWidget,
)

from sd3desk import __version__
from sd3desk.core.atomic import atomic_write_bytes
from sd3desk.core.errors import InvalidParamsError
from sd3desk.core.jobs import DONE, Job, JobQueue, JobState
from sd3desk.core.params import FAMILY_DEFAULTS, GenerationParams, defaults_for, validate
from sd3desk.core.settings import AppPaths, Settings
from sd3desk.ui.generation_view import GenerationView
from sd3desk.ui.model_catalog import ModelCatalog, ModelEntry
from sd3desk.ui.notices import Level, Notice, NoticeLog, NoticesDialog
from sd3desk.ui.prompt_panel import PromptPanel
from sd3desk.ui.queue_model import QueueModel
from sd3desk.ui.queue_panel import QueuePanel
from sd3desk.ui.token_counter import TokenCounter

LAYOUT_VERSION = 1


@dataclass
class Services:
    """What the window works with, built by the composition root (sd3desk.app)."""

    paths: AppPaths
    settings: Settings
    queue: JobQueue
    catalog: ModelCatalog
    notices: NoticeLog
    diagnostics: Any  # () -> str
    model_override: str = ""  # --model
    runner: Any = None  # sd3desk.inference.worker.QueueRunner, from attach_runner()


class MainWindow(QMainWindow):
    """Wires the panels to the queue runner. Holds no generation logic: requests are validated
    by core (`params.validate`) and queued through the runner; everything else is shown."""

    settings_changed = Signal(object)  # Settings, after the settings dialog
    setup_requested = Signal()

    def __init__(self, services: Services) -> None:
        super().__init__()
        self.s = services
        self.setWindowTitle("sd3desk")
        self.setObjectName("mainWindow")
        self.setDockOptions(
            QMainWindow.DockOption.AnimatedDocks | QMainWindow.DockOption.AllowTabbedDocks
        )

        # 1. the panels
        self.prompt_panel = PromptPanel()
        self.generation = GenerationView()
        self.queue_model = QueueModel(services.queue)
        self.queue_panel = QueuePanel(self.queue_model)
        self.gallery_panel: Any = None  # attached by attach_gallery() once the window shows
        form_scroll = QScrollArea(widgetResizable=True, objectName="formScroll")
        form_scroll.setWidget(self.prompt_panel)
        form_scroll.setMinimumWidth(self.prompt_panel.minimumSizeHint().width() + 24)
        form_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.generation.setMinimumWidth(300)
        centre = QSplitter(objectName="centreSplitter")
        centre.addWidget(form_scroll)
        centre.addWidget(self.generation)
        centre.setStretchFactor(0, 0)
        centre.setStretchFactor(1, 1)
        centre.setCollapsible(0, False)
        centre.setSizes([360, 560])
        self.setCentralWidget(centre)
        placeholder = QLabel("Opening the gallery…", alignment=Qt.AlignmentFlag.AlignCenter)
        self.gallery_dock = self._dock("Gallery", "galleryDock", placeholder)
        self.queue_dock = self._dock("Queue", "queueDock", self.queue_panel)
        self.splitDockWidget(self.gallery_dock, self.queue_dock, Qt.Orientation.Vertical)
        self.resizeDocks([self.gallery_dock, self.queue_dock], [520, 260], Qt.Orientation.Vertical)
        self.resizeDocks([self.gallery_dock], [440], Qt.Orientation.Horizontal)

        # 2. the status bar: engine state and the latest notice
        self.engine_label = QLabel("Engine not started", objectName="engineStatus")
        self.notice_label = QLabel(objectName="noticeLabel")
        self.notice_label.setTextFormat(Qt.TextFormat.PlainText)
        self.notices_button = QToolButton(text="Notices", objectName="noticesButton")
        self.notices_button.setToolTip("Errors, warnings and messages of this session")
        self.notices_button.clicked.connect(self.show_notices)
        self.statusBar().addWidget(self.engine_label, 1)
        self.statusBar().addPermanentWidget(self.notice_label)
        self.statusBar().addPermanentWidget(self.notices_button)

        # 3. menus, then signals
        self._make_menus()
        self.token_counter = TokenCounter(self._count_tokens)
        self._connect()
        self.queue_panel.set_paused(services.queue.paused)
        self._models_listed = False
        self._family: Any = None
        self._preload_timer = QTimer(self, singleShot=True, interval=500)
        self._preload_timer.timeout.connect(self.preload_picked_model)
        self._save_form_timer = QTimer(self, singleShot=True, interval=1000)
        self._save_form_timer.timeout.connect(self.save_form)
        # The layout is saved a moment after it changes, not only on close: it survives a crash.
        self._save_layout_timer = QTimer(self, singleShot=True, interval=2000)
        self._save_layout_timer.timeout.connect(self.save_layout)
        for dock in (self.gallery_dock, self.queue_dock):
            dock.dockLocationChanged.connect(lambda *_: self._save_layout_timer.start())
            dock.topLevelChanged.connect(lambda *_: self._save_layout_timer.start())
            dock.visibilityChanged.connect(lambda *_: self._save_layout_timer.start())
        self.setMinimumSize(1080, 640)  # form ~330 + preview 300 + gallery ~430 px
        self.resize(1280, 800)

    def _dock(self, title: str, name: str, widget: QWidget) -> QDockWidget:
        dock = QDockWidget(title, self, objectName=name)
        dock.setWidget(widget)
        dock.setFeatures(
            QDockWidget.DockWidgetFeature.DockWidgetMovable
            | QDockWidget.DockWidgetFeature.DockWidgetFloatable
            | QDockWidget.DockWidgetFeature.DockWidgetClosable
        )
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
        return dock

    def _make_menus(self) -> None:
        def action(menu, text: str, slot, shortcut=None, name: str = "") -> QAction:
            act = QAction(text, self, objectName=name or None)
            if shortcut is not None:
                act.setShortcut(QKeySequence(shortcut))
            act.triggered.connect(slot)
            menu.addAction(act)
            return act

        file_menu = self.menuBar().addMenu("&File")
        action(file_menu, "&Open image…", self.open_image, QKeySequence.StandardKey.Open)
        action(file_menu, "Open &output folder", self.open_output_folder)
        file_menu.addSeparator()
        self.setup_action = action(
            file_menu, "&Models…", self.setup_requested, "Ctrl+M", "modelSetupAction"
        )
        self.settings_action = action(
            file_menu, "&Settings…", self.edit_settings, QKeySequence.StandardKey.Preferences
        )
        file_menu.addSeparator()
        action(file_menu, "&Quit", self.close, QKeySequence.StandardKey.Quit)
        queue_menu = self.menuBar().addMenu("&Queue")
        queue_menu.addAction(self.queue_panel.pause)
        queue_menu.addAction(self.queue_panel.stop_after)
        queue_menu.addAction(self.queue_panel.clear)
        view_menu = self.menuBar().addMenu("&View")
        view_menu.addAction(self.gallery_dock.toggleViewAction())
        view_menu.addAction(self.queue_dock.toggleViewAction())
        help_menu = self.menuBar().addMenu("&Help")
        action(help_menu, "&Notices", self.show_notices)
        action(help_menu, "Open &log folder", lambda: _open_folder(self.s.paths.logs))
        action(help_menu, "&About sd3desk", self.about)

    def _connect(self) -> None:
        panel = self.prompt_panel
        panel.generate_requested.connect(self.generate)
        panel.cancel_requested.connect(self.cancel_running)
        panel.setup_requested.connect(self.setup_requested)
        panel.prompt_edited.connect(self._request_token_count)
        panel.form_changed.connect(lambda: self._save_form_timer.start())
        panel.model_changed.connect(self._on_panel_model_changed)
        self.token_counter.counted.connect(panel.set_token_counts)
        self.queue_panel.duplicate_requested.connect(self._duplicate)
        self.queue_panel.clear_finished_requested.connect(self._clear_finished)
        self.queue_panel.settings_requested.connect(lambda job: panel.set_params(job.params))
        self.s.notices.added.connect(self._on_notice_added)
        self.s.catalog.found.connect(self._on_catalog_found)

    def attach_runner(self, runner: Any) -> None:
        """Connect the queue runner (made after the window shows: the worker module and its
        threads are not needed for the first paint)."""
        self.s.runner = runner
        runner.job_changed.connect(self._on_runner_job_changed)
        runner.step_progressed.connect(self._on_runner_step_progressed)
        runner.engine_state_changed.connect(self._on_runner_engine_state_changed)
        runner.job_failed.connect(self._on_runner_job_failed)
        self.queue_panel.cancel_requested.connect(runner.cancel)
        self.queue_panel.pause_toggled.connect(runner.set_paused)
        self.queue_panel.stop_after_current_requested.connect(runner.stop_after_current)

    def _count_tokens(self, text: str, limit: int) -> Any:
        runner = self.s.runner  # any thread: reading an attribute
        return runner.prompt_length(text, limit) if runner is not None else None

    def attach_gallery(self, gallery_panel: Any) -> None:
        """Put the gallery in its dock. Built after the window shows: its imports and first
        page cost tens of milliseconds the first paint need not wait for."""
        self.gallery_panel = g = gallery_panel
        self.gallery_dock.setWidget(g)
        g.rerun_requested.connect(self.enqueue)
        g.settings_requested.connect(self._on_gallery_settings_requested)
        g.seed_requested.connect(self.prompt_panel.use_seed)
        g.image_opened.connect(lambda row: self.generation.show_image(row.path))
        g.notice.connect(lambda text: self.s.notices.info(text))

    # ------------------------------------------------------------------ requests

    def generate(self) -> Job | None:
        """Validate the form and queue it; errors go next to their fields, nothing is queued."""
        params = self.prompt_panel.params()
        errors = validate(params, self._max_side(params.model))
        if not params.model:
            from sd3desk.core.errors import FieldError

            errors.insert(0, FieldError("model", "pick a model first (Add… finds or makes one)"))
        if errors:
            self.prompt_panel.show_errors(errors)
            return None
        self.prompt_panel.clear_errors()
        return self.enqueue(params)

    def enqueue(self, params: GenerationParams) -> Job | None:
        if self.s.runner is None:  # only before the event loop first runs
            return None
        try:
            job = self.s.runner.enqueue(params)
        except InvalidParamsError as exc:
            self.prompt_panel.show_errors(exc.errors)
            return None
        position = self.s.queue.position(job.id)
        where = f", {position} in line" if position and position > 1 else ""
        self.statusBar().showMessage(f"Queued job #{job.id} (seed {job.params.seed}){where}", 4000)
        return job

    def cancel_running(self) -> None:
        for job in self.s.queue.running():
            self.s.runner.cancel(job.id)

    def _duplicate(self, job_id: int) -> None:
        self.s.queue.duplicate(job_id)
        if self.s.runner is not None:
            self.s.runner.dispatch()
        self._refresh_queue()

    def _clear_finished(self) -> None:
        self.s.queue.clear_finished()
        self._refresh_queue()

    def _refresh_queue(self) -> None:
        """Reload the queue panel with the runner's progress and speeds (none before it exists)."""
        runner = self.s.runner
        if runner is None:
            self.queue_model.refresh()
        else:
            self.queue_model.refresh(runner.running_progress, runner.live_rates)

    def _max_side(self, reference: str) -> int | None:
        family = self.s.catalog.family_of(reference)
        return FAMILY_DEFAULTS[family].max_side if family else None

    # ------------------------------------------------------------------ runner events

    def _on_runner_job_changed(self, job: Job) -> None:
        self._refresh_queue()
        running = self.s.queue.running()
        self.prompt_panel.set_running(bool(running))
        self.queue_panel.set_paused(self.s.queue.paused)
        if job.state is JobState.running:
            p = job.params
            self.generation.job_started(job.id, p.steps, f"{p.width}×{p.height} · seed {p.seed}")
        elif job.state is JobState.finished:
            for path in job.outputs if self.gallery_panel else ():
                self.gallery_panel.image_added(path)
            if job.outputs:
                self.generation.show_image(job.outputs[-1])
            if job.params.seed is not None:
                self.prompt_panel.set_last_seed(job.params.seed)
            self.generation.job_ended(f"Job #{job.id} done")
        elif not running and (job.state in DONE or (job.state is JobState.queued and job.note)):
            self.generation.job_ended(f"Job #{job.id} {job.state.value}")

    def _on_runner_step_progressed(self, event: Any) -> None:
        self.generation.step(event.job_id, event.step, event.total, event.elapsed_s, event.preview)
        self.queue_model.update_progress(event.job_id, event.step, self.s.runner.live_rates)

    def _on_runner_engine_state_changed(self, state: Any) -> None:
        text = state.text
        if state.state == "loading" and state.stages:
            text = f"{state.text.rstrip('…')} ({state.stage}/{state.stages})…"
        self.engine_label.setText(text)
        if state.state in ("starting", "loading"):
            self.generation.set_waiting(text)
        elif state.state == "ready":
            self.generation.set_waiting("Ready")  # the details are in the status bar
        if state.state == "ready":
            for notice in state.notices:
                self.s.notices.info(notice)
            self._request_token_count()
        elif state.state == "generating":
            for notice in state.notices:
                self.s.notices.warning(notice)
        elif state.state == "failed" and state.text != getattr(self, "_last_failure", None):
            # (a job's failure already made its notice; a failed preload makes one here)
            self.s.notices.error(state.text, state.notices[0] if state.notices else "")

    def _on_runner_job_failed(self, event: Any) -> None:
        self._last_failure = event.message
        self.s.notices.error(f"Job #{event.job_id} failed: {event.message}", event.advice)

    # ------------------------------------------------------------------ models and the form

    def _on_catalog_found(self, entries: list[ModelEntry], problems: list[str]) -> None:
        first = not self._models_listed
        self._models_listed = True
        current = self.prompt_panel.model_reference() or self.s.model_override
        current = current or self.s.settings.last_model
        self.prompt_panel.set_models([(e.label, e.reference) for e in entries], current)
        if self._family is None:  # the restored form's model: switching within it keeps values
            self._family = self.s.catalog.family_of(self.prompt_panel.model_reference())
        if first and self.prompt_panel.model_reference():
            # Only now: the model search and the engine's torch import both import many modules,
            # and run together they stalled the GUI thread for ~200 ms (bench/gui_latency.py).
            self.engine_label.setText("Starting the engine in the background…")
            self.s.runner.preload(self.prompt_panel.model_reference())
        for problem in problems:
            self.s.notices.warning(problem)

    def _on_panel_model_changed(self, reference: str) -> None:
        if not reference:
            return
        if self.s.catalog.searched:  # else the first search result starts it (see below)
            self._preload_timer.start()  # once the pick settles: one load, not one per model
        family = self.s.catalog.family_of(reference)
        if family is not None and family != self._family:
            self.prompt_panel.apply_defaults(defaults_for(family))
        self._family = family
        if reference != self.s.settings.last_model:
            self.settings_changed.emit(dataclasses.replace(self.s.settings, last_model=reference))

    def preload_picked_model(self) -> None:
        reference = self.prompt_panel.model_reference()
        if reference and self.s.runner is not None:
            self.engine_label.setText(f"Loading {reference} in the background…")
            self.s.runner.preload(reference)

    def _on_gallery_settings_requested(self, meta: Any) -> None:
        ours = meta.source == "sd3desk"
        self.prompt_panel.set_params(meta.params, keep_model=not ours or not meta.params.model)
        self.statusBar().showMessage("Settings loaded into the form", 4000)

    def _request_token_count(self) -> None:
        panel = self.prompt_panel
        self.token_counter.request(
            panel.prompt.toPlainText(), panel.negative.toPlainText(), panel.t5_length.value()
        )

    def save_form(self) -> None:
        data = json.dumps(self.prompt_panel.state(), indent=1).encode()
        atomic_write_bytes(self.s.paths.form_file, data)

    def restore_form(self) -> None:
        try:
            data = json.loads(self.s.paths.form_file.read_text("utf-8"))
            self.prompt_panel.restore(data)
        except FileNotFoundError:
            pass
        except (
            OSError,
            ValueError,
            OverflowError,
            InvalidParamsError,
            TypeError,
            AttributeError,
        ) as exc:
            self.s.notices.warning(f"The saved form could not be restored ({exc})")
        self._family = None  # set from the restored model once the catalog knows its family

    # ------------------------------------------------------------------ layout

    def _window_settings(self) -> QSettings:
        return QSettings(str(self.s.paths.window_file), QSettings.Format.IniFormat)

    def restore_layout(self) -> None:
        store = self._window_settings()
        if store.value("layout_version", 0, int) != LAYOUT_VERSION:
            return
        geometry, state = store.value("geometry"), store.value("state")
        if isinstance(geometry, QByteArray):
            self.restoreGeometry(geometry)
        if isinstance(state, QByteArray):
            self.restoreState(state, LAYOUT_VERSION)

    def save_layout(self) -> None:
        store = self._window_settings()
        store.setValue("layout_version", LAYOUT_VERSION)
        store.setValue("geometry", self.saveGeometry())
        store.setValue("state", self.saveState(LAYOUT_VERSION))
        store.sync()

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        if hasattr(self, "_save_layout_timer"):
            self._save_layout_timer.start()

    def moveEvent(self, event) -> None:
        super().moveEvent(event)
        if hasattr(self, "_save_layout_timer"):
            self._save_layout_timer.start()

    def closeEvent(self, event: QCloseEvent) -> None:
        self.save_form()
        self.save_layout()
        super().closeEvent(event)

    # ------------------------------------------------------------------ dialogs and notices

    def _on_notice_added(self, notice: Notice) -> None:
        colour = {Level.error: "#d9534f", Level.warning: "#c08a00"}.get(notice.level)
        self.notice_label.setStyleSheet(f"color: {colour};" if colour else "")
        text = notice.text()
        self.notice_label.setText(text if len(text) <= 90 else text[:89] + "…")
        self.notice_label.setToolTip(text)
        count = len(self.s.notices.notices)
        self.notices_button.setText(f"Notices ({count})")

    def show_notices(self) -> None:
        NoticesDialog(self.s.notices, self.s.diagnostics, self).exec()

    def edit_settings(self) -> None:
        from sd3desk.ui.settings_dialog import SettingsDialog

        dialog = SettingsDialog(self.s.settings, str(self.s.paths.outputs), self)
        if dialog.exec():
            self.settings_changed.emit(dialog.result_settings())

    def open_image(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Open an image", "", "Images (*.png *.jpg *.jpeg *.webp)"
        )
        if path and self.gallery_panel:
            self.gallery_panel.import_file(path)
            self.generation.show_image(path)

    def open_output_folder(self) -> None:
        _open_folder(Path(self.s.settings.output_dir or self.s.paths.outputs))

    def about(self) -> None:
        from PySide6.QtWidgets import QMessageBox

        QMessageBox.about(
            self,
            "About sd3desk",
            f"<b>sd3desk {__version__}</b><p>Stable Diffusion 3 on your own machine.</p>"
            f"<p>Images: {self.s.settings.output_dir or self.s.paths.outputs}<br>"
            f"Logs: {self.s.paths.logs}</p>",
        )


def _open_folder(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder)))
