"""Rescans the gallery's folders in the background and says when the gallery index changed."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, QThreadPool, Signal

from sd3desk.core.gallery import GalleryIndex, ScanResult
from sd3desk.core.store import Store
from sd3desk.runtime.background import Background


def scan(database: Path, folders: list[Path]) -> ScanResult:
    """One rescan of the output folder (first) and the other gallery folders, on its own
    connection (SQLite objects stay on the thread that made them)."""
    store = Store.secondary(database)
    try:
        return GalleryIndex(store, folders[0], folders[1:]).scan()
    finally:
        store.close()


class GalleryScanner(QObject):
    """Starts at most one background rescan at a time (on start, on focus, on demand).

    Thread rule: call from the thread that made it; its signals arrive there.
    """

    finished = Signal(object)  # ScanResult
    failed = Signal(str)

    def __init__(
        self, database: Path, folders: list[Path], pool: QThreadPool | None = None
    ) -> None:
        super().__init__()
        self.database, self.folders = Path(database), [Path(f) for f in folders]
        self._again = False  # asked while one ran: one more after it (the folders changed)
        self._scan = Background(self, pool=pool)
        self._scan.finished.connect(self._on_scan_finished)
        self._scan.failed.connect(
            lambda _key, exc: self.failed.emit(f"The gallery could not be updated: {exc}")
        )

    @property
    def running(self) -> bool:
        return self._scan.busy

    def start(self, again: bool = False) -> bool:
        """Begin a rescan unless one is running; returns whether one began. With `again`, a
        rescan asked while one runs begins when that one ends (for a change of folders)."""
        if self._scan.busy:
            self._again = self._again or again
            return False
        database, folders = self.database, list(self.folders)
        self._scan.submit(lambda: scan(database, folders))
        return True

    def _on_scan_finished(self, _key, result: ScanResult) -> None:
        self.finished.emit(result)
        if self._again:
            self._again = False
            self.start()
