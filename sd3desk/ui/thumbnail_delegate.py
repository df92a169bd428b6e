"""Draws one gallery cell: the thumbnail centred in its square, a star on favourites, a badge
saying how it was made when not from noise alone ("from image", "inpaint", "hires")."""

from __future__ import annotations

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QRect, QSize, Qt
from PySide6.QtGui import QImage, QPainter
from PySide6.QtWidgets import QStyle, QStyledItemDelegate, QStyleOptionViewItem

from sd3desk.ui.gallery_model import GalleryModel


class ThumbnailDelegate(QStyledItemDelegate):
    """Cells of one size, whatever the image's aspect ratio; selection as a frame."""

    def __init__(self, cell: int, parent=None) -> None:
        super().__init__(parent)
        self.cell = cell

    def sizeHint(
        self, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex
    ) -> QSize:
        return QSize(self.cell, self.cell)

    def paint(
        self,
        painter: QPainter,
        option: QStyleOptionViewItem,
        index: QModelIndex | QPersistentModelIndex,
    ) -> None:
        painter.save()
        rect = option.rect.adjusted(3, 3, -3, -3)
        palette = option.palette
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        painter.fillRect(rect, palette.highlight() if selected else palette.alternateBase())
        # Ask our model directly: no round trip through C++ and QVariant for every cell.
        model = index.model()
        assert isinstance(model, GalleryModel)
        row = model.row_at(index.row())
        image = model.thumbnails.get(row.path) if row is not None else None
        if isinstance(image, QImage) and not image.isNull():
            inner = rect.adjusted(4, 4, -4, -4)
            scaled = image.size().scaled(inner.size(), Qt.AspectRatioMode.KeepAspectRatio)
            target = QRect(0, 0, scaled.width(), scaled.height())
            target.moveCenter(inner.center())
            painter.drawImage(target, image)
        elif row is not None and row.path in model.thumbnails.failed:
            painter.setPen(palette.placeholderText().color())
            painter.drawText(rect, Qt.AlignmentFlag.AlignCenter, "no preview")
        if row is not None and row.badge:
            font = painter.font()
            font.setPointSizeF(font.pointSizeF() * 0.8)
            painter.setFont(font)
            text_rect = painter.fontMetrics().boundingRect(row.badge).adjusted(-4, -1, 4, 1)
            text_rect.moveBottomLeft(rect.adjusted(6, 0, 0, -6).bottomLeft())
            painter.fillRect(text_rect, palette.toolTipBase())
            painter.setPen(palette.toolTipText().color())
            painter.drawText(text_rect, Qt.AlignmentFlag.AlignCenter, row.badge)
        if row is not None and row.favourite:
            painter.setPen(palette.brightText().color() if selected else Qt.GlobalColor.darkYellow)
            painter.drawText(
                rect.adjusted(6, 4, -6, -4),
                Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignTop,
                "★",
            )
        painter.restore()
