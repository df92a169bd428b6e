"""The gallery view at 10,000 images: time to the first screen of thumbnails (target <= 0.5 s,
warm index), memory added (target <= 150 MB) and GUI stalls while scrolling top to bottom
(target: none over 50 ms). Offscreen Qt; the PNGs are hard links to a few written by sd3desk.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import common  # noqa: F401 - puts the project on sys.path
from gallery_index import make_outputs

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    from PySide6.QtCore import QElapsedTimer, Qt, QTimer
    from PySide6.QtWidgets import QApplication

    from sd3desk.core.gallery import GalleryIndex
    from sd3desk.core.store import Store
    from sd3desk.ui.gallery_model import GalleryModel
    from sd3desk.ui.gallery_panel import GalleryPanel
    from sd3desk.ui.thumbnails import ThumbnailLoader

    app = QApplication([])
    work = Path(tempfile.mkdtemp())
    out = work / "outputs"
    out.mkdir()
    make_outputs(out, 10_000)
    GalleryIndex(Store(work / "sd3desk.db"), out).scan()  # warm index

    def first_screen(cache: Path) -> tuple[float, GalleryPanel]:
        start = time.perf_counter()
        panel = GalleryPanel(
            GalleryModel(GalleryIndex(Store(work / "sd3desk.db"), out), ThumbnailLoader(cache))
        )
        panel.resize(1280, 800)
        panel.show()
        app.processEvents()
        model = panel.model
        visible = [
            i
            for i in range(60)
            if panel.view.visualRect(model.index(i)).intersects(panel.view.viewport().rect())
        ]
        while any(
            model.data(model.index(i), Qt.ItemDataRole.DecorationRole) is None for i in visible
        ):
            app.processEvents()
            time.sleep(0.002)
        return time.perf_counter() - start, panel

    before = rss_mb()
    cold, first = first_screen(work / "cache")
    first.close()
    warm, panel = first_screen(work / "cache")
    print(
        f"first screen of thumbnails, warm index: {cold:.2f} s with no thumbnail cache, "
        f"{warm:.2f} s with it  (target <= 0.5 s)"
    )

    # Scroll top to bottom in screen-sized steps while a 10 ms timer measures GUI lateness.
    clock, last, worst = QElapsedTimer(), [0.0], [0.0]
    clock.start()
    ticker = QTimer()
    ticker.setTimerType(Qt.TimerType.PreciseTimer)

    def tick() -> None:
        now = clock.nsecsElapsed() / 1e6
        if last[0]:
            worst[0] = max(worst[0], now - last[0] - 10)
        last[0] = now

    ticker.timeout.connect(tick)
    ticker.start(10)
    bar = panel.view.verticalScrollBar()
    start = time.perf_counter()
    while bar.value() < bar.maximum():
        bar.setValue(bar.value() + bar.pageStep())
        deadline = time.perf_counter() + 0.02
        while time.perf_counter() < deadline:
            app.processEvents()
    ticker.stop()
    print(
        f"scrolled {panel.model.rowCount()} images in {time.perf_counter() - start:.1f} s; "
        f"worst GUI stall {worst[0]:.1f} ms  (target <= 50 ms)"
    )
    print(f"resident memory added by the gallery: {rss_mb() - before:.0f} MB  (target <= 150 MB)")


if __name__ == "__main__":
    main()
