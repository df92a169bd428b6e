"""The window's composition root: builds the runtime, the session and the main window, starts the
background work once the window is on screen, and runs the app.

Nothing here imports torch: the worker imports the ML stack on its own thread once the window
is up, so the window shows in well under a second.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PySide6.QtCore import QEvent, QObject, QTimer
from PySide6.QtGui import QIcon, QWindow
from PySide6.QtWidgets import QApplication

from sd3desk import __version__
from sd3desk.core.errors import ExitCode, FolderBusyError, StoreError
from sd3desk.core.settings import AppPaths, load_settings
from sd3desk.runtime.runtime import Runtime, build_runtime
from sd3desk.ui.main_window import MainWindow
from sd3desk.ui.session import Session
from sd3desk.ui.theme import apply_theme

START_FALLBACK_MS = 500  # the background work starts by then even if the window never shows


def window_args(argv: Sequence[str] | argparse.Namespace | None) -> argparse.Namespace:
    """The window's options, parsed by the one command-line parser (`sd3desk.cli`)."""
    if isinstance(argv, argparse.Namespace):
        return argv
    from sd3desk.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.command is not None:
        parser.error(f"'{args.command}' is a command, not a window option")
    return args


def create_window(argv: Sequence[str] | argparse.Namespace | None = None) -> MainWindow:
    """Build the runtime, the session and the window without entering the event loop; the
    background work starts when the loop first shows the window."""
    from sd3desk.qt_platform import exit_if_platform_unusable

    args = window_args(argv)
    exit_if_platform_unusable()
    existing = QApplication.instance()
    app = existing if isinstance(existing, QApplication) else QApplication(_qt_argv())
    app.setApplicationName("sd3desk")
    app.setApplicationVersion(__version__)
    app.setDesktopFileName("sd3desk")
    app.setWindowIcon(_app_icon())
    paths = AppPaths.default(args.data_dir)
    settings = load_settings(paths.settings_file)
    apply_theme(app, settings.theme)
    runtime = build_runtime(paths, settings, owner="the sd3desk window")
    session = Session(runtime, model_override=args.window_model, verbose=args.verbose)
    window = MainWindow(session)
    app.aboutToQuit.connect(session.shutdown)
    started: list[bool] = []

    def start() -> None:
        """The workers, the model search and the gallery: once the window is on screen, so
        the first paint never waits for them (or after START_FALLBACK_MS if it never shows)."""
        if not started and not session.stopped:
            started.append(True)
            session.start()
            window.attach_gallery(_make_gallery(runtime))
            if session.settings.serve:
                serving().apply(session.settings, session.picked_model)

    def serving() -> Any:
        """The window's server, made when it is first asked for (its modules load then)."""
        if not made:
            from sd3desk.server.window import WindowServing

            made.append(WindowServing(runtime, window))
            made[0].status_changed.connect(window.set_server_status)
            app.aboutToQuit.connect(made[0].stop)
        return made[0]

    made: list[Any] = []
    session.settings_changed.connect(
        lambda s: serving().apply(s, session.picked_model) if s.serve or made else None
    )

    # (with the window as context: a timer still pending when the window goes is dropped)
    _when_first_exposed(window, lambda: QTimer.singleShot(0, window, start))
    QTimer.singleShot(START_FALLBACK_MS, window, start)
    return window


class _FirstExpose(QObject):
    """Calls `callback` once, when the window it watches is first exposed (on screen)."""

    def __init__(self, parent: QObject, callback: Callable[[], object]) -> None:
        super().__init__(parent)
        self.callback = callback

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        exposed = isinstance(watched, QWindow) and watched.isExposed()
        if event.type() == QEvent.Type.Expose and exposed:
            watched.removeEventFilter(self)
            self.callback()
        return False


def _when_first_exposed(window: MainWindow, callback: Callable[[], object]) -> None:
    window.winId()  # creates the native window, so its handle exists before show()
    handle = window.windowHandle()
    assert handle is not None
    handle.installEventFilter(_FirstExpose(window, callback))


def _make_gallery(runtime: Runtime):
    from sd3desk.runtime.gallery_scanner import GalleryScanner
    from sd3desk.ui.gallery_model import GalleryModel
    from sd3desk.ui.gallery_panel import GalleryPanel
    from sd3desk.ui.thumbnails import ThumbnailLoader

    panel = GalleryPanel(GalleryModel(runtime.gallery, ThumbnailLoader(runtime.paths.cache)))
    panel.watch(GalleryScanner(runtime.paths.database, runtime.gallery.folders))
    return panel


def _qt_argv() -> list[str]:
    return [sys.argv[0] if sys.argv else "sd3desk"]


def _app_icon() -> QIcon:
    icon = QIcon()
    folder = Path(__file__).parent / "resources" / "icons"
    for size in (16, 24, 32, 48, 64, 128, 256):
        icon.addFile(str(folder / f"sd3desk-{size}.png"))
    return icon


def main(argv: Sequence[str] | argparse.Namespace | None = None) -> int:
    args = window_args(argv)
    while True:
        try:
            window = create_window(args)
            break
        except (StoreError, FolderBusyError) as exc:  # another sd3desk's queue, or unusable
            folder = _another_folder(exc)
            if folder is None:
                return ExitCode.busy if isinstance(exc, FolderBusyError) else ExitCode.error
            args.data_dir = folder
    window.show()
    if os.environ.get("SD3DESK_STARTUP_PROBE"):
        _exit_when_exposed(window)
    app = QApplication.instance()
    assert app is not None
    code = app.exec() or ExitCode.ok
    if window.session.stuck:
        # A worker is inside a call nothing can interrupt (importing torch, loading weights).
        # Its job is back in the queue, the form and the queue are saved and the folder's lock
        # is released: end the process now rather than keep it alive, windowless, for seconds.
        logging.shutdown()
        os._exit(code)
    return code


def start_failure_dialog(exc: StoreError | FolderBusyError) -> Any:
    """What the window says when it cannot start on its data folder, offering another one."""
    from PySide6.QtWidgets import QMessageBox

    box = QMessageBox(QMessageBox.Icon.Critical, "sd3desk cannot start", exc.message)
    box.setInformativeText(exc.advice)
    box.addButton("Use another folder…", QMessageBox.ButtonRole.AcceptRole)
    box.setDefaultButton(box.addButton(QMessageBox.StandardButton.Close))
    return box


def _another_folder(exc: StoreError | FolderBusyError) -> Path | None:
    """Ask; the folder the user picked, or None to quit."""
    from PySide6.QtWidgets import QFileDialog, QMessageBox

    box = start_failure_dialog(exc)
    box.exec()
    clicked = box.clickedButton()
    if clicked is None or box.buttonRole(clicked) is not QMessageBox.ButtonRole.AcceptRole:
        return None
    chosen = QFileDialog.getExistingDirectory(None, "A folder for sd3desk's queue and images")
    return Path(chosen) if chosen else None


def _exit_when_exposed(window: MainWindow) -> None:
    """For bench/startup.py: print "exposed" when the window first shows and "painted" once that
    first frame is drawn (the next turn of the event loop), then quit at once."""

    def painted() -> None:
        print("painted", flush=True)
        os._exit(0)

    def exposed() -> None:
        print("exposed", flush=True)
        QTimer.singleShot(0, painted)

    _when_first_exposed(window, exposed)
