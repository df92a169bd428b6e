"""Screenshot the gallery panel and the viewer over an output folder (for looking at the UI).

xvfb-run -s "-screen 0 1400x900x24" python tools/screenshot_gallery.py OUTPUTS_DIR SHOT_DIR
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QSplitter

from sd3desk.core.gallery import GalleryIndex
from sd3desk.core.store import Store
from sd3desk.ui.gallery_model import ROW_ROLE, GalleryModel
from sd3desk.ui.gallery_panel import GalleryPanel
from sd3desk.ui.thumbnails import ThumbnailLoader
from sd3desk.ui.viewer import ImageViewer


def main() -> None:
    outputs, shots = Path(sys.argv[1]), Path(sys.argv[2])
    shots.mkdir(parents=True, exist_ok=True)
    app = QApplication([])
    work = Path(tempfile.mkdtemp())
    gallery = GalleryIndex(Store(work / "sd3desk.db"), outputs)
    gallery.scan()
    panel = GalleryPanel(GalleryModel(gallery, ThumbnailLoader(work / "cache")))
    viewer = ImageViewer()
    window = QSplitter()
    window.addWidget(panel)
    window.addWidget(viewer)
    window.resize(1280, 800)
    window.setWindowTitle("sd3desk gallery")
    panel.image_opened.connect(lambda row: viewer.show_image(row.path))
    window.show()
    first = panel.model.data(panel.model.index(0), ROW_ROLE)
    viewer.show_image(first.path)

    def shoot() -> None:
        window.grab().save(str(shots / "gallery.png"))
        panel.search.setText("fox")
        QTimer.singleShot(
            800, lambda: (window.grab().save(str(shots / "gallery-search.png")), app.quit())
        )

    QTimer.singleShot(1500, shoot)
    app.exec()


if __name__ == "__main__":
    main()
