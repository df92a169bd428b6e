"""Thumbnails made and decoded on a thread pool, never on the GUI thread, and kept in a small
in-memory cache."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

from PySide6.QtCore import QObject, QThreadPool, Signal
from PySide6.QtGui import QImage

from sd3desk.core.gallery import make_thumbnail
from sd3desk.runtime.background import Background

SIZE = 192
MEMORY_ITEMS = 600  # 192 px RGB32 thumbnails: ~90 MB at most


def load_thumbnail(path: str, cache_dir: Path) -> QImage:
    """The thumbnail of `path` (made and cached on disk first if needed), decoded."""
    return QImage(str(make_thumbnail(path, cache_dir, SIZE)))


class ThumbnailLoader(QObject):
    """Hands out thumbnails by path; asks the pool for missing ones and says when they arrive.

    Thread rule: use from the GUI thread; `loaded` is emitted there.
    """

    loaded = Signal(str)

    def __init__(self, cache_dir: Path, pool: QThreadPool | None = None) -> None:
        super().__init__()
        self.cache_dir = Path(cache_dir)
        self._images: OrderedDict[str, QImage] = OrderedDict()
        self._pending: set[str] = set()
        # Files no thumbnail could be made of (damaged, over the pixel budget): not asked for
        # again each time their tile is painted, until the gallery is re-read or forget()
        self.failed: set[str] = set()
        self._work = Background(self, pool=pool)
        self._work.finished.connect(self._on_work_finished)
        self._work.failed.connect(self._on_work_failed)

    def get(self, path: str) -> QImage | None:
        """The thumbnail if ready; else None, and it is requested."""
        image = self._images.get(path)
        if image is not None:
            self._images.move_to_end(path)
            return image
        if path not in self._pending and path not in self.failed:
            self._pending.add(path)
            cache_dir = self.cache_dir
            self._work.submit(lambda: load_thumbnail(path, cache_dir), key=path)
        return None

    def forget(self, path: str) -> None:
        self._images.pop(path, None)
        self.failed.discard(path)

    def _on_work_failed(self, path: str, _exc: BaseException) -> None:
        self._pending.discard(path)
        self.failed.add(path)

    def _on_work_finished(self, path: str, image: QImage) -> None:
        self._pending.discard(path)
        if image.isNull():
            return
        self._images[path] = image
        while len(self._images) > MEMORY_ITEMS:
            self._images.popitem(last=False)
        self.loaded.emit(path)
