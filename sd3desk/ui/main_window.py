"""The main window: the form on the left, progress and preview in the middle, gallery and queue
docked on the right, engine status and notices at the bottom."""

from __future__ import annotations

import dataclasses
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, QTimer, QUrl
from PySide6.QtGui import QAction, QCloseEvent, QDesktopServices, QImage, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QDockWidget,
    QFileDialog,
    QLabel,
    QMainWindow,
    QMenu,
    QScrollArea,
    QSplitter,
    QWidget,
)

from sd3desk import __version__
from sd3desk.core.errors import InvalidParamsError
from sd3desk.core.jobs import Job, JobState
from sd3desk.core.params import GenerationParams
from sd3desk.core.settings import Settings
from sd3desk.runtime.catalog import ModelEntry
from sd3desk.runtime.events import (
    EngineState,
    EngineStatus,
    JobChanged,
    Level,
    Notice,
    QueueChanged,
    StepProgress,
)
from sd3desk.ui.generation_view import GenerationView, to_pil
from sd3desk.ui.prompt_panel import PromptPanel
from sd3desk.ui.queue_model import QueueModel
from sd3desk.ui.queue_panel import QueuePanel
from sd3desk.ui.session import LAYOUT_VERSION, Session
from sd3desk.ui.theme import Tone, apply_theme, tone_style
from sd3desk.ui.token_counter import TokenCounter
from sd3desk.ui.widgets import named, tool_button

if TYPE_CHECKING:  # imported when first used: the first frame need not wait for them
    from sd3desk.core.metadata import ImageMetadata
    from sd3desk.ui.batch_dialog import AddFromFileDialog
    from sd3desk.ui.gallery_panel import GalleryPanel
    from sd3desk.ui.model_setup_dialog import ModelSetupDialog

LAYOUT_SAVE_DELAY_MS = 2000  # the layout is saved a moment after it changes: survives a crash


class MainWindow(QMainWindow):
    """Lays out the panels, forwards the user's requests to the session and the runtime's
    runner, and shows the runtime's events. Holds no generation logic.

    Thread rule: GUI thread only.
    """

    def __init__(self, session: Session) -> None:
        super().__init__()
        self.session = session
        self.runtime = session.runtime
        self.runner = session.runtime.runner
        # first: resize and move events during construction restart it
        self._save_layout_timer = QTimer(self, singleShot=True, interval=LAYOUT_SAVE_DELAY_MS)
        self._save_layout_timer.timeout.connect(self.save_layout)
        self.setWindowTitle("sd3desk")
        self.setObjectName("mainWindow")
        self.setDockOptions(
            QMainWindow.DockOption.AnimatedDocks | QMainWindow.DockOption.AllowTabbedDocks
        )

        # 1. the panels; the gallery's dock is filled once the window shows (attach_gallery)
        self.prompt_panel = PromptPanel()
        self.generation = GenerationView()
        self.queue_model = QueueModel(self.runner.snapshot())
        self.queue_panel = QueuePanel(self.queue_model)
        self.gallery_panel: GalleryPanel | None = None
        self.setup_dialog: ModelSetupDialog | None = None
        form_scroll = named(QScrollArea(widgetResizable=True), "formScroll")
        form_scroll.setWidget(self.prompt_panel)
        form_scroll.setMinimumWidth(self.prompt_panel.minimumSizeHint().width() + 24)
        form_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.generation.setMinimumWidth(300)
        centre = named(QSplitter(), "centreSplitter")
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
        self.engine_label = named(QLabel("Engine not started"), "engineStatus")
        self.notice_label = named(QLabel(), "noticeLabel")
        self.notice_label.setTextFormat(Qt.TextFormat.PlainText)
        self.notices_button = tool_button("Notices", "noticesButton")
        self.notices_button.setToolTip("Errors, warnings and messages of this session")
        self.notices_button.clicked.connect(self.show_notices)
        self.server_label = named(QLabel(), "serverStatus")
        self.server_label.setOpenExternalLinks(True)
        self.server_label.hide()
        self.statusBar().addWidget(self.engine_label, 1)
        self.statusBar().addPermanentWidget(self.server_label)
        self.statusBar().addPermanentWidget(self.notice_label)
        self.statusBar().addPermanentWidget(self.notices_button)

        # 3. menus, signals, then what was saved last time
        self._make_menus()
        self.token_counter = TokenCounter(self.runner.prompt_length)
        self._theme = session.settings.theme
        self._lora_dirs = session.settings.lora_dirs
        self._connect()
        self._on_runner_queue_changed(QueueChanged(self.runner.snapshot()))
        for notice in self.runtime.notices.notices[-1:]:  # opening the database may have made some
            self._on_notice_added(notice)
        self.setMinimumSize(1080, 640)  # form ~330 + preview 300 + gallery ~430 px
        self.resize(1280, 800)
        layout = session.load_layout()
        if layout is not None:
            self.restoreGeometry(layout[0])
            self.restoreState(layout[1], LAYOUT_VERSION)
        session.restore_form(self.prompt_panel.restore)
        if session.model_override:
            model = session.model_override
            self.prompt_panel.set_models([(model, model)], model)

    def _dock(self, title: str, name: str, widget: QWidget) -> QDockWidget:
        dock = named(QDockWidget(title, self), name)
        dock.setWidget(widget)
        dock.setFeatures(
            QDockWidget.DockWidgetFeature.DockWidgetMovable
            | QDockWidget.DockWidgetFeature.DockWidgetFloatable
            | QDockWidget.DockWidgetFeature.DockWidgetClosable
        )
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
        for changed in (dock.dockLocationChanged, dock.topLevelChanged, dock.visibilityChanged):
            changed.connect(lambda *_: self._save_layout_timer.start())
        return dock

    def _make_menus(self) -> None:
        def action(menu: QMenu, text: str, slot, shortcut=None, name: str = "") -> QAction:
            act = QAction(text, self)
            if name:
                act.setObjectName(name)
            if shortcut is not None:
                act.setShortcut(QKeySequence(shortcut))
            act.triggered.connect(slot)
            menu.addAction(act)
            return act

        file_menu = self.menuBar().addMenu("&File")
        action(file_menu, "&Open image…", self.open_image, QKeySequence.StandardKey.Open)
        action(file_menu, "Open &output folder", self.open_output_folder)
        action(file_menu, "Add a folder to the &gallery…", self.add_gallery_folder)
        file_menu.addSeparator()
        self.setup_action = action(
            file_menu, "&Models…", self.open_model_setup, "Ctrl+M", "modelSetupAction"
        )
        self.settings_action = action(
            file_menu, "&Settings…", self.edit_settings, QKeySequence.StandardKey.Preferences
        )
        file_menu.addSeparator()
        action(file_menu, "&Quit", self.close, QKeySequence.StandardKey.Quit)
        queue_menu = self.menuBar().addMenu("&Queue")
        for queue_action in (self.queue_panel.pause, self.queue_panel.stop_after):
            queue_menu.addAction(queue_action)
        queue_menu.addAction(self.queue_panel.clear)
        queue_menu.addSeparator()
        action(
            queue_menu, "Add from &file…", self.add_from_file, "Ctrl+Shift+O", "addFromFileAction"
        )
        view_menu = self.menuBar().addMenu("&View")
        view_menu.addAction(self.gallery_dock.toggleViewAction())
        view_menu.addAction(self.queue_dock.toggleViewAction())
        help_menu = self.menuBar().addMenu("&Help")
        action(help_menu, "&Notices", self.show_notices)
        action(help_menu, "Open &log folder", lambda: _open_folder(self.runtime.paths.logs))
        action(help_menu, "&About sd3desk", self.about)

    def _connect(self) -> None:
        panel, session, runner = self.prompt_panel, self.session, self.runner
        panel.generate_requested.connect(self.generate)
        panel.cancel_requested.connect(runner.cancel_running)
        panel.setup_requested.connect(self.open_model_setup)
        panel.prompt_edited.connect(self._request_token_count)
        panel.form_changed.connect(lambda: session.form_edited(panel.state()))
        panel.model_changed.connect(session.pick_model)
        self.token_counter.counted.connect(panel.set_token_counts)
        session.models_listed.connect(self._on_session_models_listed)
        session.defaults_suggested.connect(panel.apply_defaults)
        session.family_changed.connect(panel.set_family)
        panel.turbo_toggled.connect(lambda turbo: session.set_turbo(panel.model_reference(), turbo))
        panel.load_picture = self._stored_picture
        panel.lora_list.set_library(self.runtime.loras, self.runtime.paths.loras)
        well = panel.well
        well.open_requested.connect(self.open_source)
        well.paste_requested.connect(self.paste_source)
        well.file_dropped.connect(self.use_source_file)
        well.mask_requested.connect(self.generation.paint_mask)
        well.cleared.connect(self._on_source_cleared)
        self.generation.source_requested.connect(self.use_source_file)
        self.generation.mask_editor.changed.connect(self._on_mask_changed)
        session.settings_changed.connect(self._on_session_settings_changed)
        session.engine_note.connect(self.engine_label.setText)
        session.setup_needed.connect(self.open_model_setup)
        queue = self.queue_panel
        queue.cancel_requested.connect(runner.cancel)
        queue.duplicate_requested.connect(runner.duplicate)
        queue.clear_finished_requested.connect(runner.clear_finished)
        queue.pause_toggled.connect(runner.set_paused)
        queue.stop_after_current_requested.connect(runner.stop_after_current)
        queue.settings_requested.connect(lambda job: panel.set_params(job.params))
        self.queue_model.place_requested.connect(runner.place)
        runner.job_changed.connect(self._on_runner_job_changed)
        runner.queue_changed.connect(self._on_runner_queue_changed)
        runner.step_progressed.connect(self._on_runner_step_progressed)
        runner.engine_state_changed.connect(self._on_runner_engine_state_changed)
        self.runtime.notices.added.connect(self._on_notice_added)

    def attach_gallery(self, gallery_panel: GalleryPanel) -> None:
        """Put the gallery in its dock. Built after the window shows: its imports and first
        page cost tens of milliseconds the first paint need not wait for."""
        self.gallery_panel = g = gallery_panel
        self.gallery_dock.setWidget(g)
        g.rerun_requested.connect(self.enqueue)
        g.settings_requested.connect(self._on_gallery_settings_requested)
        g.seed_requested.connect(self.prompt_panel.use_seed)
        g.image_opened.connect(lambda row: self.generation.show_image(row.path))
        g.source_requested.connect(self.use_source_file)
        g.notice.connect(self.runtime.notices.info)

    # ------------------------------------------------------------------ requests

    def generate(self) -> Job | None:
        """Queue the form's request; errors go next to their fields and nothing is queued."""
        problems = self.prompt_panel.lora_list.problems()  # a ticked LoRA that is not there
        if problems:
            self.prompt_panel.show_errors(problems)
            return None
        try:
            job = self.session.submit(self._with_mask(self.prompt_panel.params()))
        except InvalidParamsError as exc:
            self.prompt_panel.show_errors(exc.errors)
            return None
        self.prompt_panel.clear_errors()
        self._say_queued(job)
        return job

    def enqueue(self, params: GenerationParams) -> Job | None:
        """Queue a request made elsewhere (a gallery re-run) as it is; a stored picture it
        needs and that was deleted is said, and nothing is queued."""
        try:
            if params.source_image:
                self.runtime.sources.check(params)
            job = self.runner.enqueue(self.session.with_lora_hashes(params))
        except InvalidParamsError as exc:
            self.prompt_panel.show_errors(exc.errors)
            return None
        self._say_queued(job)
        return job

    # ------------------------------------------------------------------ the source picture

    def _with_mask(self, params: GenerationParams) -> GenerationParams:
        """The form's request with the painted mask stored and named (inpainting), if any."""
        canvas = self.generation.mask_editor.canvas
        if not params.source_image or canvas.is_empty():
            return params
        digest = self.runtime.sources.put_image(to_pil(canvas.marks), "mask_image")
        return params.replace(mask_image=digest)

    def _stored_picture(self, digest: str) -> QImage | None:
        from sd3desk.ui.generation_view import to_qimage

        try:
            picture = to_qimage(self.runtime.sources.open(digest))
        except InvalidParamsError:
            return None
        self.generation.mask_editor.set_picture(picture)
        return picture

    def open_source(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self,
            "Start from a picture",
            "",
            "Images (*.png *.jpg *.jpeg *.webp *.bmp *.tif *.tiff)",
        )
        if path:
            self.use_source_file(path)

    def paste_source(self) -> None:
        image = QApplication.clipboard().image()
        if image.isNull():
            self.statusBar().showMessage("The clipboard holds no picture", 4000)
            return
        self._use_source(lambda store: store.put_image(to_pil(image)), "Pasted picture")

    def use_source_file(self, path: str) -> None:
        """Start the next jobs from the picture at `path` (its own size, within the model's
        limits, becomes the form's size; the mask starts empty)."""
        self._use_source(lambda store: store.put_file(path), Path(path).name)

    def _use_source(self, store_it, name: str) -> None:
        from sd3desk.core.sources import suggested_size

        try:
            digest = store_it(self.runtime.sources)
        except InvalidParamsError as exc:
            self.prompt_panel.show_errors(exc.errors)
            return
        picture = self._stored_picture(digest)
        if picture is None:
            return
        entry = self.runtime.catalog.entry(self.prompt_panel.model_reference())
        size = suggested_size(picture.width(), picture.height(), entry.max_side if entry else None)
        self.prompt_panel.set_size(*size)
        self.prompt_panel.set_source(digest, picture, name)
        self.prompt_panel.set_masked(False)
        self.prompt_panel.clear_errors()
        self.statusBar().showMessage(f"The next jobs start from {name}", 4000)

    def _on_source_cleared(self) -> None:
        self.generation.mask_editor.canvas.clear()
        self.generation.show_preview()
        self.prompt_panel.set_masked(False)

    def _on_mask_changed(self) -> None:
        self.prompt_panel.set_masked(not self.generation.mask_editor.canvas.is_empty())

    def _say_queued(self, job: Job) -> None:
        place = self.runner.snapshot().places.get(job.id)
        where = f", {place} in line" if place and place > 1 else ""
        self.statusBar().showMessage(f"Queued job #{job.id} (seed {job.params.seed}){where}", 4000)

    def _request_token_count(self) -> None:
        panel = self.prompt_panel
        self.token_counter.request(
            panel.prompt.toPlainText(), panel.negative.toPlainText(), panel.t5_length.value()
        )

    # ------------------------------------------------------------------ runner events

    def _on_runner_queue_changed(self, event: QueueChanged) -> None:
        snapshot = event.snapshot
        self.queue_model.show(snapshot)
        self.prompt_panel.set_running(snapshot.busy)
        self.queue_panel.set_paused(snapshot.paused)

    def _on_runner_job_changed(self, event: JobChanged) -> None:
        job = event.job
        if job.state is JobState.running:
            p = job.params
            self.generation.job_started(job.id, p.steps, f"{p.width}×{p.height} · seed {p.seed}")
        elif job.state is JobState.finished:
            if self.gallery_panel is not None:
                for path in job.outputs:
                    self.gallery_panel.image_added(path, indexed=True)
            if job.outputs:
                self.generation.show_image(job.outputs[-1])
            if job.params.seed is not None:
                self.prompt_panel.set_last_seed(job.params.seed)
            self.generation.job_ended(f"Job #{job.id} done")
        elif event.previous is JobState.running and not self.runner.snapshot().busy:
            self.generation.job_ended(f"Job #{job.id} {job.state.value}")

    def _on_runner_step_progressed(self, event: StepProgress) -> None:
        self.generation.step(event.job_id, event.step, event.total, event.elapsed_s, event.preview)
        self.queue_model.step(event, self.runner.snapshot())

    def _on_runner_engine_state_changed(self, state: EngineState) -> None:
        text = state.text
        if state.status is EngineStatus.loading and state.stages:
            text = f"{text.rstrip('…')} ({state.stage}/{state.stages})…"
        elif state.status is EngineStatus.ready:
            text = f"Ready: {text}"
        self.engine_label.setText(text)
        if state.status in (EngineStatus.starting, EngineStatus.loading):
            self.generation.set_waiting(text)
        elif state.status is EngineStatus.ready:
            self.generation.set_waiting("Ready")  # the details are in the status bar
            self._request_token_count()

    # ------------------------------------------------------------------ models and the form

    def _on_session_models_listed(self, entries: list[ModelEntry], current: str) -> None:
        self.prompt_panel.set_models([(e.label, e.reference) for e in entries], current)

    def _on_gallery_settings_requested(self, meta: ImageMetadata) -> None:
        from sd3desk.ui.gallery_panel import kept_fields  # (loaded with the gallery, not before)

        ours = meta.source == "sd3desk"
        self.prompt_panel.set_params(
            meta.params, keep_model=not ours or not meta.params.model, keep=kept_fields(meta)
        )
        self.statusBar().showMessage("Settings loaded into the form", 4000)

    def _on_session_settings_changed(self, settings: Settings) -> None:
        if settings.lora_dirs != self._lora_dirs:
            self._lora_dirs = settings.lora_dirs
            self.prompt_panel.lora_list.rescan()
        if self.gallery_panel is not None:
            scanner = self.gallery_panel.scanner
            if scanner is not None and scanner.folders != self.runtime.gallery.folders:
                scanner.folders = self.runtime.gallery.folders
                scanner.start(again=True)
        if settings.theme != self._theme:
            self._theme = settings.theme
            app = QApplication.instance()
            if isinstance(app, QApplication):
                apply_theme(app, settings.theme)

    def save_form(self) -> None:
        self.session.save_form(self.prompt_panel.state())

    # ------------------------------------------------------------------ layout

    def save_layout(self) -> None:
        self.session.save_layout(self.saveGeometry(), self.saveState(LAYOUT_VERSION))

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._save_layout_timer.start()

    def moveEvent(self, event) -> None:
        super().moveEvent(event)
        self._save_layout_timer.start()

    def closeEvent(self, event: QCloseEvent) -> None:
        self.save_form()
        self.save_layout()
        super().closeEvent(event)

    def set_server_status(self, text: str, url: str, token: str) -> None:
        """The serving indicator: a link to open when serving, why not when it failed."""
        if not text:
            self.server_label.hide()
            return
        if url:
            address = f"{url}?token={token}" if token else url
            self.server_label.setText(f'<a href="{address}">{escape(text)}</a>')
            tip = "Open the web page"
            if token:  # made for the user when none was typed: this is where they find it
                tip += (
                    f"\nApps need the token: {token}\n(Authorization: Bearer, or as the password)"
                )
        else:
            self.server_label.setText(escape(text))
            tip = "File → Settings → Serve on this computer"
        self.server_label.setToolTip(tip)
        self.server_label.show()

    # ------------------------------------------------------------------ dialogs and notices

    def _on_notice_added(self, notice: Notice) -> None:
        tone = {Level.error: Tone.error, Level.warning: Tone.warning}.get(notice.level)
        self.notice_label.setStyleSheet(tone_style(tone) if tone else "")
        text = notice.text()
        self.notice_label.setText(text if len(text) <= 90 else text[:89] + "…")
        self.notice_label.setToolTip(text)
        self.notices_button.setText(f"Notices ({len(self.runtime.notices.notices)})")

    def show_notices(self) -> None:
        from sd3desk.ui.notices_dialog import NoticesDialog

        NoticesDialog(self.runtime.notices, self.diagnostics, self).exec()

    def diagnostics(self) -> str:
        """What "copy diagnostics" copies: versions, settings, the engine's state, the log."""
        return self.session.diagnostics(self.engine_label.text())

    def open_model_setup(self) -> None:
        """The Models dialog; a second request raises the open one."""
        from shiboken6 import isValid

        from sd3desk.ui.model_setup_dialog import ModelSetupDialog

        current = self.setup_dialog
        if current is not None and isValid(current) and current.isVisible():
            current.raise_()
            current.activateWindow()
            return
        dialog = ModelSetupDialog(
            self.runtime.catalog, self, plan=self.session.settings.memory_plan
        )
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.model_chosen.connect(self._on_setup_dialog_model_chosen)
        dialog.plan_box.plan_chosen.connect(
            lambda plan: self.session.apply_settings(
                dataclasses.replace(self.session.settings, memory_plan=plan)
            )
        )
        self.setup_dialog = dialog
        dialog.open()

    def _on_setup_dialog_model_chosen(self, reference: str) -> None:
        entries = [(e.label, e.reference) for e in self.runtime.catalog.all_entries()]
        if reference not in [r for _, r in entries]:
            entries.insert(0, (reference, reference))
        self.prompt_panel.set_models(entries, reference)

    def edit_settings(self) -> None:
        from sd3desk.ui.settings_dialog import SettingsDialog

        paths = self.runtime.paths
        dialog = SettingsDialog(
            self.session.settings, str(paths.outputs), self, lora_folder=str(paths.loras)
        )
        if dialog.exec():
            self.session.apply_settings(dialog.result_settings())

    def open_image(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Open an image", "", "Images (*.png *.jpg *.jpeg *.webp)"
        )
        if path and self.gallery_panel:
            self.gallery_panel.import_file(path)
            self.generation.show_image(path)

    def open_output_folder(self) -> None:
        _open_folder(self.runtime.out_dir)

    def add_gallery_folder(self, folder: str = "") -> None:
        """Show the images of another folder (a batch's --out folder, say) in the gallery too;
        Settings lists these folders, and removes them."""
        folder = folder or QFileDialog.getExistingDirectory(self, "A folder of images to show")
        if folder:
            self.session.add_gallery_folder(Path(folder))
            self.statusBar().showMessage(f"The gallery now shows {folder} too", 4000)

    def add_from_file(self, path: str = "") -> AddFromFileDialog | None:
        """Offer the jobs of a batch file (the same files as `sd3desk batch`), with the form's
        model and settings for what the file leaves out: the dialog shows how many there are,
        and its OK queues them. Returns the dialog (open, window-modal)."""
        from sd3desk.ui.batch_dialog import BATCH_FILE_FILTER, AddFromFileDialog

        if not path:
            path, _ = QFileDialog.getOpenFileName(
                self, "Add jobs from a file", "", BATCH_FILE_FILTER
            )
        if not path:
            return None
        base = self.prompt_panel.params()
        entry = self.runtime.catalog.entry(base.model)
        dialog = AddFromFileDialog(Path(path), base, entry.max_side if entry else None, self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.accepted.connect(lambda: self._queue_batch(dialog))
        dialog.open()
        return dialog

    def _queue_batch(self, dialog: AddFromFileDialog) -> None:
        try:
            jobs = self.session.submit_many(dialog.jobs())
        except InvalidParamsError as exc:
            self.prompt_panel.show_errors(exc.errors)
            return
        self.prompt_panel.clear_errors()
        self.statusBar().showMessage(f"Queued {len(jobs)} jobs from {dialog.path.name}", 6000)

    def about(self) -> None:
        from PySide6.QtWidgets import QMessageBox

        QMessageBox.about(
            self,
            "About sd3desk",
            f"<b>sd3desk {__version__}</b><p>Stable Diffusion 3 on your own machine.</p>"
            f"<p>Images: {self.runtime.out_dir}<br>Logs: {self.runtime.paths.logs}</p>",
        )


def _open_folder(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder)))
