"""Rescans the output folder in the background and says when the gallery index changed."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, QThreadPool, Signal

from sd3desk.core.gallery import GalleryIndex, ScanResult
from sd3desk.core.store import Store
from sd3desk.runtime.background import Background


def scan(database: Path, folder: Path) -> ScanResult:
    """One rescan on its own connection (SQLite objects stay on the thread that made them)."""
    store = Store.secondary(database)
    try:
        return GalleryIndex(store, folder).scan()
    finally:
        store.close()


class GalleryScanner(QObject):
    """Starts at most one background rescan at a time (on start, on focus, on demand).

    Thread rule: call from the thread that made it; its signals arrive there.
    """

    finished = Signal(object)  # ScanResult
    failed = Signal(str)

    def __init__(self, database: Path, folder: Path, pool: QThreadPool | None = None) -> None:
        super().__init__()
        self.database, self.folder = Path(database), Path(folder)
        self._scan = Background(self, pool=pool)
        self._scan.finished.connect(lambda _key, result: self.finished.emit(result))
        self._scan.failed.connect(
            lambda _key, exc: self.failed.emit(f"The gallery could not be updated: {exc}")
        )

    @property
    def running(self) -> bool:
        return self._scan.busy

    def start(self) -> bool:
        """Begin a rescan unless one is running; returns whether one began."""
        if self._scan.busy:
            return False
        database, folder = self.database, self.folder
        self._scan.submit(lambda: scan(database, folder))
        return True
