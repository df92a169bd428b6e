"""List model over the gallery index: rows fetched by page on demand, thumbnails from the loader."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from PySide6.QtCore import QAbstractListModel, QModelIndex, QPersistentModelIndex, Qt

from sd3desk.core.gallery import GalleryIndex, ImageRow
from sd3desk.ui.thumbnails import ThumbnailLoader

PAGE = 200
ROW_ROLE = Qt.ItemDataRole.UserRole + 1


class GalleryModel(QAbstractListModel):
    """Every image matching the current query, newest first; no widget per image.

    Thread rule: GUI thread only. The row count comes from one COUNT query, rows from pages
    of 200 read when first shown, so 100,000 images cost only what is on screen.
    """

    def __init__(self, gallery: GalleryIndex, thumbnails: ThumbnailLoader) -> None:
        super().__init__()
        self.gallery = gallery
        self.thumbnails = thumbnails
        self._query: dict[str, Any] = {"text": ""}
        self._count = 0
        self._pages: OrderedDict[int, list[ImageRow]] = OrderedDict()
        self._row_of_path: dict[str, int] = {}
        thumbnails.loaded.connect(self._on_thumbnails_loaded)
        self.refresh()

    def set_query(self, text: str = "", **filters: Any) -> None:
        self._query = {"text": text, **filters}
        self.refresh()

    def refresh(self) -> None:
        """Re-read after the index changed (a scan, a new image, a deletion)."""
        self.beginResetModel()
        self._pages.clear()
        self._row_of_path.clear()
        self.thumbnails.failed.clear()  # (a changed file may have become readable)
        self._count = self.gallery.count(**self._query)
        self.endResetModel()

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else self._count

    def row_at(self, row: int) -> ImageRow | None:
        if not 0 <= row < self._count:
            return None
        number = row // PAGE
        page = self._pages.get(number)
        if page is None:
            query = dict(self._query)
            page = self.gallery.search(query.pop("text"), limit=PAGE, offset=number * PAGE, **query)
            self._pages[number] = page
            for k, item in enumerate(page):
                self._row_of_path[item.path] = number * PAGE + k
            while len(self._pages) > 50:
                self._pages.popitem(last=False)
        else:
            self._pages.move_to_end(number)
        index = row - number * PAGE
        return page[index] if index < len(page) else None

    def data(
        self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        item = self.row_at(index.row()) if index.isValid() else None
        if item is None:
            return None
        if role == Qt.ItemDataRole.DecorationRole:
            return self.thumbnails.get(item.path)
        if role == Qt.ItemDataRole.ToolTipRole:
            star = "★ " if item.favourite else ""
            details = f"seed {item.seed} · {item.width}x{item.height} · {item.model_name}"
            return f"{star}{item.prompt or '(no parameters in this file)'}\n{details}"
        if role == Qt.ItemDataRole.AccessibleTextRole:
            return item.prompt or item.path
        if role == ROW_ROLE:
            return item
        return None

    def _on_thumbnails_loaded(self, path: str) -> None:
        row = self._row_of_path.get(path)
        if row is not None:
            index = self.index(row)
            self.dataChanged.emit(index, index, [Qt.ItemDataRole.DecorationRole])
