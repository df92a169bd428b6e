"""Rescans the output folder in the background and tells the GUI when the index changed."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

from sd3desk.core.gallery import GalleryIndex, ScanResult
from sd3desk.core.store import Store


class _Signals(QObject):
    progressed = Signal(int, int)
    finished = Signal(object)  # ScanResult
    failed = Signal(str)


class _Scan(QRunnable):
    def __init__(self, database: Path, folder: Path, signals: _Signals) -> None:
        super().__init__()
        self.database, self.folder, self.signals = database, folder, signals

    def run(self) -> None:
        try:
            store = Store(self.database)  # its own connection: SQLite objects stay on one thread
            try:
                result = GalleryIndex(store, self.folder).scan(self.signals.progressed.emit)
            finally:
                store.close()
        except Exception as exc:  # a scan that fails must never take the app down
            self.signals.failed.emit(f"The gallery could not be updated: {exc}")
            return
        self.signals.finished.emit(result)


class GalleryScanner(QObject):
    """Starts at most one background rescan at a time (on start, on focus, on demand).

    Thread rule: call from the GUI thread; its signals arrive there.
    """

    progressed = Signal(int, int)
    finished = Signal(object)
    failed = Signal(str)

    def __init__(self, database: Path, folder: Path, pool: QThreadPool | None = None) -> None:
        super().__init__()
        self.database, self.folder = Path(database), Path(folder)
        self.pool = pool or QThreadPool.globalInstance()
        self.running = False
        self._signals = _Signals()
        self._signals.progressed.connect(self.progressed)
        self._signals.finished.connect(self._on_scan_finished)
        self._signals.failed.connect(self._on_scan_failed)

    def start(self) -> bool:
        """Begin a rescan unless one is running; returns whether one began."""
        if self.running:
            return False
        self.running = True
        self.pool.start(_Scan(self.database, self.folder, self._signals))
        return True

    def _on_scan_finished(self, result: ScanResult) -> None:
        self.running = False
        self.finished.emit(result)

    def _on_scan_failed(self, message: str) -> None:
        self.running = False
        self.failed.emit(message)
