"""The composition root: builds every service and the main window, wires them, runs the app.

Nothing here imports torch: the worker imports the ML stack on its own thread once the window
is up, so the window shows in well under a second.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PySide6.QtCore import QEvent, QObject, QTimer
from PySide6.QtWidgets import QApplication

from sd3desk import __version__
from sd3desk.core.jobs import JobQueue
from sd3desk.core.outputs import sweep_stale_temp_files
from sd3desk.core.settings import AppPaths, Settings, load_settings, save_settings
from sd3desk.core.store import Store
from sd3desk.ui.main_window import MainWindow, Services
from sd3desk.ui.model_catalog import ModelCatalog, ModelEntry
from sd3desk.ui.notices import NoticeLog, diagnostics
from sd3desk.ui.theme import apply_theme

log = logging.getLogger("sd3desk")
LOG_BYTES, LOG_FILES = 1_000_000, 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sd3desk", description="The sd3desk window.")
    parser.add_argument("--data-dir", type=Path, help="keep settings, cache and outputs under DIR")
    parser.add_argument("--model", default="", help="model to select: PATH, REPO_ID or 'test'")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    return parser


def setup_logging(paths: AppPaths, verbose: bool) -> Path:
    """A rotating log file in the log folder (what "copy diagnostics" quotes)."""
    import logging.handlers

    paths.logs.mkdir(parents=True, exist_ok=True)
    log_file = paths.logs / "sd3desk.log"
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "sd3desk", False):
            root.removeHandler(handler)
            handler.close()
    handler = logging.handlers.RotatingFileHandler(
        log_file, maxBytes=LOG_BYTES, backupCount=LOG_FILES, encoding="utf-8"
    )
    handler.sd3desk = True  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    if verbose:
        console = logging.StreamHandler()
        console.sd3desk = True  # type: ignore[attr-defined]
        root.addHandler(console)
    return log_file


class Controller:
    """Owns the services behind one window: starts them once the window shows, applies
    settings, opens the model setup dialog, and shuts the workers down on close."""

    def __init__(self, args: argparse.Namespace, app: QApplication) -> None:
        # 1. folders, log, settings
        self.app = app
        self.paths = AppPaths.default(args.data_dir)
        for folder in (self.paths.data, self.paths.config, self.paths.cache):
            folder.mkdir(parents=True, exist_ok=True)
        self.log_file = self.paths.logs / "sd3desk.log"
        self._verbose = args.verbose
        self.settings = load_settings(self.paths.settings_file)
        apply_theme(app, self.settings.theme)
        # 2. the database: queue and gallery index
        self.store = Store(self.paths.database)
        self.queue = JobQueue(self.store)
        self.out_dir = Path(self.settings.output_dir or self.paths.outputs)
        # 3. the model list (searched once the window shows) and the notices
        self.runner: Any = None  # made in start(), with its workers
        self.catalog = ModelCatalog(self._model_dirs())
        self.notices = NoticeLog()
        self.services = Services(
            paths=self.paths,
            settings=self.settings,
            queue=self.queue,
            catalog=self.catalog,
            notices=self.notices,
            diagnostics=self.diagnostics,
            model_override=args.model,
        )
        # 4. the window, with the form and layout of last time
        self.window = MainWindow(self.services)
        self.window.controller = self  # type: ignore[attr-defined]
        self.window.restore_layout()
        self.window.restore_form()
        if args.model:
            self.window.prompt_panel.set_models([(args.model, args.model)], args.model)
        self.window.settings_changed.connect(self.apply_settings)
        self.window.setup_requested.connect(self.open_model_setup)
        self.catalog.found.connect(self._on_catalog_found)
        app.aboutToQuit.connect(self.shutdown)
        self._started = False
        self._stopped = False

    def _worker_config(self, index: int) -> Any:
        from sd3desk.inference.worker import WorkerConfig

        s = self.settings
        return WorkerConfig(
            out_dir=self.out_dir,
            cache_dir=self.paths.cache,
            device=s.device,
            memory_plan=s.memory_plan,
            model_dirs=self._model_dirs(),
            device_index=index,
            use_t5=s.use_t5,
        )

    def _model_dirs(self) -> tuple[Path, ...]:
        return tuple(Path(d) for d in self.settings.model_dirs)

    def start(self) -> None:
        """The background work, once the window is on screen."""
        if self._started or self._stopped:
            return
        self._started = True
        # 0. the log file and leftovers of a crash: neither may keep the app from working
        try:
            setup_logging(self.paths, self._verbose)
        except OSError as exc:
            self.notices.warning(
                f"The log file cannot be written ({exc})", f"check {self.paths.logs}"
            )
        for text in self.store.notices:
            self.notices.warning(text)
        try:
            sweep_stale_temp_files(self.out_dir)
        except OSError as exc:
            self.notices.warning(f"The output folder cannot be read ({exc})", str(self.out_dir))
        # 1. workers (idle threads until a job or a preload arrives) and the runner
        from sd3desk.inference.worker import QueueRunner, Worker, default_engine_factory

        workers = [
            Worker(i, self._worker_config(i), default_engine_factory)
            for i in range(self.settings.gpu_workers)
        ]
        self.runner = QueueRunner(self.queue, workers)
        self.window.attach_runner(self.runner)
        self.runner.start()
        # 2. the model search (it starts the engine when done), then the gallery
        self.catalog.refresh()
        self.window.attach_gallery(self._make_gallery())

    def _make_gallery(self):
        from sd3desk.core.gallery import GalleryIndex
        from sd3desk.ui.gallery_model import GalleryModel
        from sd3desk.ui.gallery_panel import GalleryPanel
        from sd3desk.ui.gallery_scanner import GalleryScanner
        from sd3desk.ui.thumbnails import ThumbnailLoader

        gallery = GalleryIndex(self.store, self.out_dir)
        panel = GalleryPanel(GalleryModel(gallery, ThumbnailLoader(self.paths.cache)))
        panel.watch(GalleryScanner(self.paths.database, self.out_dir))
        return panel

    def shutdown(self) -> None:
        """Running jobs go back to the front of the queue; workers stop within a step."""
        if self._stopped:
            return
        self._stopped = True
        if self.runner is None:  # never started
            return
        self.runner.halt()
        self.runner.stop()

    # ------------------------------------------------------------------ settings and models

    def apply_settings(self, settings: Settings) -> None:
        old, self.settings = self.settings, settings
        self.services.settings = settings
        try:
            save_settings(settings, self.paths.settings_file)
        except OSError as exc:
            self.notices.error(f"Settings could not be saved: {exc}", "check the config folder")
        if settings.theme != old.theme:
            apply_theme(self.app, settings.theme)
        engine_fields = ("device", "memory_plan", "use_t5", "model_dirs")
        if any(getattr(old, f) != getattr(settings, f) for f in engine_fields):
            for worker in self.runner.workers if self.runner else ():
                worker.reconfigure_requested.emit(self._worker_config(worker.index))
            # reload the picked model with the new settings now, not at the next job
            self.window.engine_label.setText("Settings changed: reloading the model…")
            self.window.preload_picked_model()
            self.catalog.model_dirs = self._model_dirs()
            self.catalog.refresh()
        if settings.output_dir != old.output_dir or settings.gpu_workers != old.gpu_workers:
            self.notices.info(
                "The new output folder and number of GPU workers apply after a restart"
            )

    def _on_catalog_found(self, entries: list[ModelEntry], problems: list[str]) -> None:
        if self._stopped:  # a search started before the window closed
            return
        has_model = bool(self.window.prompt_panel.model_reference())
        if not self.catalog.entries and not has_model and not self.queue.queued():
            QTimer.singleShot(0, self.open_model_setup)  # first run: help the user get a model

    def open_model_setup(self) -> None:
        from PySide6.QtCore import Qt
        from shiboken6 import isValid

        from sd3desk.ui.model_setup_dialog import ModelSetupDialog

        current = getattr(self.window, "setup_dialog", None)
        if current is not None and isValid(current) and current.isVisible():
            current.raise_()
            current.activateWindow()
            return
        dialog = ModelSetupDialog(self.catalog, self.paths, self.window)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.model_chosen.connect(self._on_model_chosen)
        self.window.setup_dialog = dialog  # type: ignore[attr-defined]  (tests reach it)
        dialog.open()

    def _on_model_chosen(self, reference: str) -> None:
        panel = self.window.prompt_panel
        entries = [(e.label, e.reference) for e in self.catalog.all_entries()]
        if reference not in [r for _, r in entries]:
            entries.insert(0, (reference, reference))
        panel.set_models(entries, reference)

    def diagnostics(self) -> str:
        s = self.settings
        return diagnostics(
            {
                "device setting": s.device.value,
                "memory plan": s.memory_plan.value,
                "T5": "on" if s.use_t5 else "off",
                "engine": self.window.engine_label.text(),
                "data folder": str(self.paths.data),
                "output folder": str(self.out_dir),
            },
            self.log_file,
        )


def create_window(argv: Sequence[str] | None = None) -> MainWindow:
    """Build every service and the window without entering the event loop; the background
    work starts when the loop first runs. `window.controller` is the Controller."""
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    app = QApplication.instance() or QApplication([sys.argv[0] if sys.argv else "sd3desk"])
    app.setApplicationName("sd3desk")
    app.setApplicationVersion(__version__)
    app.setDesktopFileName("sd3desk")
    app.setWindowIcon(_app_icon())
    controller = Controller(args, app)
    _start_when_exposed(controller)
    return controller.window


class _FirstExpose(QObject):
    """Starts the controller once the window is first on screen, so the first paint never
    waits for the worker, the model search or the gallery; or after START_FALLBACK_MS when
    the window is not shown at all."""

    def __init__(self, controller: Controller) -> None:
        super().__init__(controller.window)
        self.controller = controller
        self.handle = None

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.Expose and watched.isExposed():
            watched.removeEventFilter(self)
            QTimer.singleShot(0, self.controller.start)
        return False


START_FALLBACK_MS = 500


def _start_when_exposed(controller: Controller) -> None:
    window = controller.window
    window.winId()  # creates the native window, so its handle exists before show()
    window.windowHandle().installEventFilter(_FirstExpose(controller))
    QTimer.singleShot(START_FALLBACK_MS, controller.start)  # start() runs once only


def _app_icon():
    from PySide6.QtGui import QIcon

    icon = QIcon()
    folder = Path(__file__).parent / "resources" / "icons"
    for size in (16, 24, 32, 48, 64, 128, 256):
        icon.addFile(str(folder / f"sd3desk-{size}.png"))
    return icon


def main(argv: Sequence[str] | None = None) -> int:
    window = create_window(argv)
    window.show()
    if os.environ.get("SD3DESK_STARTUP_PROBE"):
        _exit_when_exposed(window)
    return QApplication.instance().exec()


def _exit_when_exposed(window: MainWindow) -> None:
    """For bench/startup.py: print "exposed" when the window first shows, "painted" once that
    first frame is drawn (the next turn of the event loop), then quit at once."""

    class Probe(QObject):
        def eventFilter(self, watched, event) -> bool:
            if event.type() == QEvent.Type.Expose and watched.isExposed():
                watched.removeEventFilter(self)
                print("exposed", flush=True)
                QTimer.singleShot(0, lambda: (print("painted", flush=True), os._exit(0)))
            return False

    window._probe = Probe()  # type: ignore[attr-defined]
    window.windowHandle().installEventFilter(window._probe)
