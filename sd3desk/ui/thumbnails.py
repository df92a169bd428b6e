"""Thumbnails made and decoded on a thread pool, never on the GUI thread, and kept in a small
in-memory cache."""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from pathlib import Path

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal
from PySide6.QtGui import QImage

from sd3desk.core.gallery import make_thumbnail

SIZE = 192
MEMORY_ITEMS = 600  # 192 px RGB32 thumbnails: ~90 MB at most


class _Signals(QObject):
    done = Signal(str, QImage)


class _Job(QRunnable):
    def __init__(self, path: str, cache_dir: Path, signals: _Signals) -> None:
        super().__init__()
        self.path, self.cache_dir, self.signals = path, cache_dir, signals

    def run(self) -> None:
        try:
            image = QImage(str(make_thumbnail(self.path, self.cache_dir, SIZE)))
        except Exception:  # unreadable or vanished file: show no thumbnail, never crash
            image = QImage()
        # RuntimeError: the loader was deleted meanwhile, so nobody wants this thumbnail.
        with contextlib.suppress(RuntimeError):
            self.signals.done.emit(self.path, image)


class ThumbnailLoader(QObject):
    """Hands out thumbnails by path; asks the pool for missing ones and says when they arrive.

    Thread rule: use from the GUI thread; `loaded` is emitted there (queued from the pool).
    """

    loaded = Signal(str)

    def __init__(self, cache_dir: Path, pool: QThreadPool | None = None) -> None:
        super().__init__()
        self.cache_dir = Path(cache_dir)
        self.pool = pool or QThreadPool.globalInstance()
        self._images: OrderedDict[str, QImage] = OrderedDict()
        self._pending: set[str] = set()
        self._signals = _Signals()
        self._signals.done.connect(self._on_pool_done)

    def get(self, path: str) -> QImage | None:
        """The thumbnail if ready; else None, and it is requested."""
        image = self._images.get(path)
        if image is not None:
            self._images.move_to_end(path)
            return image
        if path not in self._pending:
            self._pending.add(path)
            self.pool.start(_Job(path, self.cache_dir, self._signals))
        return None

    def forget(self, path: str) -> None:
        self._images.pop(path, None)

    def _on_pool_done(self, path: str, image: QImage) -> None:
        self._pending.discard(path)
        if image.isNull():
            return
        self._images[path] = image
        while len(self._images) > MEMORY_ITEMS:
            self._images.popitem(last=False)
        self.loaded.emit(path)
