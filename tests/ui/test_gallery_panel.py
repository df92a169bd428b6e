"""The gallery panel, model and viewer under pytest-qt (offscreen), on PNGs written by sd3desk."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image
from PySide6.QtCore import QItemSelectionModel, Qt
from PySide6.QtGui import QGuiApplication

from sd3desk.core.gallery import GalleryIndex
from sd3desk.core.metadata import ImageMetadata, ModelIdentity, png_info, read_metadata
from sd3desk.core.params import GenerationParams
from sd3desk.core.store import Store
from sd3desk.ui.gallery_model import ROW_ROLE, GalleryModel
from sd3desk.ui.gallery_panel import GalleryPanel
from sd3desk.ui.thumbnails import ThumbnailLoader
from sd3desk.ui.viewer import ImageViewer

T0 = 1_790_000_000


def write(path: Path, prompt: str, seed: int, model: str, when: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    params = GenerationParams(
        prompt, negative_prompt="blurry", seed=seed, width=1024, height=1024, model="/m"
    )
    meta = ImageMetadata(params, ModelIdentity(model, "0123456789", "sd3-medium"))
    Image.effect_noise((320, 240), 40).convert("RGB").save(path, pnginfo=png_info(meta))
    os.utime(path, (when, when))
    return path


@pytest.fixture
def panel(qtbot, tmp_path, monkeypatch):
    (tmp_path / "xdg").mkdir()
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))  # the trash lives in here
    out = tmp_path / "outputs"
    write(out / "2026-11-25" / "00000-1.png", "a red fox in snow", 1, "sd3_medium", T0)
    write(out / "2026-11-26" / "00000-2.png", "a lighthouse at dusk", 2, "sd3.5_large", T0 + 10)
    write(out / "2026-11-26" / "00001-3.png", "a fox by a lighthouse", 3, "sd3_medium", T0 + 20)
    gallery = GalleryIndex(Store(tmp_path / "sd3desk.db"), out)
    gallery.scan()
    model = GalleryModel(gallery, ThumbnailLoader(tmp_path / "cache"))
    widget = GalleryPanel(model)
    qtbot.addWidget(widget)
    widget.resize(900, 600)
    widget.show()
    return widget


def names(panel: GalleryPanel) -> list[str]:
    model = panel.model
    return [Path(model.data(model.index(r), ROW_ROLE).path).name for r in range(model.rowCount())]


def select(panel: GalleryPanel, *rows: int) -> None:
    selection = panel.view.selectionModel()
    selection.clearSelection()
    for row in rows:
        selection.select(panel.model.index(row), QItemSelectionModel.SelectionFlag.Select)


def test_grid_lists_newest_first_with_thumbnails_and_tooltips(qtbot, panel):
    assert names(panel) == ["00001-3.png", "00000-2.png", "00000-1.png"]
    model = panel.model
    qtbot.waitUntil(
        lambda: model.data(model.index(0), Qt.ItemDataRole.DecorationRole) is not None,
        timeout=10_000,
    )
    thumb = model.data(model.index(0), Qt.ItemDataRole.DecorationRole)
    assert max(thumb.width(), thumb.height()) == 192
    tip = model.data(model.index(1), Qt.ItemDataRole.ToolTipRole)
    assert "a lighthouse at dusk" in tip and "seed 2" in tip and "sd3.5_large" in tip


def test_search_model_filter_and_favourites(qtbot, panel):
    panel.search.setText("fox")
    assert names(panel) == ["00001-3.png", "00000-1.png"]
    panel.model_filter.setCurrentText("sd3_medium")
    panel.search.setText("lighthouse")
    assert names(panel) == ["00001-3.png"]
    panel.search.clear()
    panel.model_filter.setCurrentText("All models")
    select(panel, 2)
    panel.actions_["favourite"].trigger()
    panel.favourites.setChecked(True)
    assert names(panel) == ["00000-1.png"]
    assert "★" in panel.model.data(panel.model.index(0), Qt.ItemDataRole.ToolTipRole)


def test_rerun_settings_and_seed_requests(qtbot, panel):
    select(panel, 1)
    with qtbot.waitSignal(panel.rerun_requested) as exact:
        panel.actions_["rerun"].trigger()
    assert exact.args[0].seed == 2 and exact.args[0].prompt == "a lighthouse at dusk"
    with qtbot.waitSignal(panel.rerun_requested) as fresh:
        panel.actions_["rerun_seed"].trigger()
    assert fresh.args[0].seed is None and fresh.args[0].prompt == "a lighthouse at dusk"
    with qtbot.waitSignal(panel.settings_requested) as settings:
        panel.actions_["settings"].trigger()
    assert settings.args[0].model.name == "sd3.5_large"
    with qtbot.waitSignal(panel.seed_requested) as seed:
        panel.actions_["seed"].trigger()
    assert seed.args == [2]


def test_copy_parameters_and_image(qtbot, panel):
    select(panel, 0)
    panel.actions_["copy_params"].trigger()
    text = QGuiApplication.clipboard().text()
    assert text.startswith("a fox by a lighthouse\nNegative prompt: blurry\nSteps: 28")
    panel.actions_["copy_image"].trigger()
    assert QGuiApplication.clipboard().image().size().width() == 320


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp"])
def test_export_keeps_the_parameters(qtbot, panel, tmp_path, suffix):
    select(panel, 2)
    target = tmp_path / f"exported{suffix}"
    panel.export(str(target))
    assert read_metadata(target).params.prompt == "a red fox in snow"
    assert read_metadata(target).params.seed == 1


def test_move_to_trash_removes_file_and_row(qtbot, panel, tmp_path):
    select(panel, 0, 2)
    victims = [panel.model.data(panel.model.index(r), ROW_ROLE).path for r in (0, 2)]
    panel.actions_["delete"].trigger()
    assert names(panel) == ["00000-2.png"]
    assert not any(Path(v).exists() for v in victims)
    trashed = sorted(p.name for p in (tmp_path / "xdg").rglob("*.png"))
    assert trashed == ["00000-1.png", "00001-3.png"]
    assert panel.model.gallery.count() == 1


def test_actions_without_a_selection_say_so(qtbot, panel):
    panel.view.selectionModel().clearSelection()
    with qtbot.waitSignal(panel.notice) as notice:
        panel.actions_["rerun"].trigger()
    assert "Select an image" in notice.args[0]


def test_viewer_fits_zooms_and_shows_parameters(qtbot, panel, tmp_path):
    viewer = ImageViewer()
    qtbot.addWidget(viewer)
    viewer.resize(320, 220)
    viewer.show()
    path = panel.model.data(panel.model.index(1), ROW_ROLE).path
    viewer.show_image(path)
    assert "a lighthouse at dusk" in viewer.params.toPlainText()
    fitted = viewer.picture.pixmap().size()
    assert fitted.width() < 320
    viewer.set_zoom(1.0)
    assert viewer.picture.pixmap().size().width() == 320
    viewer.step_zoom(1)
    assert viewer.zoom == 1.5
    viewer.fit()
    assert viewer.picture.pixmap().size() == fitted


def test_importing_a1111_comfyui_and_hostile_files(qtbot, panel, tmp_path):
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text(
        "parameters",
        "a castle\nNegative prompt: fog\nSteps: 20, Sampler: DPM++ 2M, CFG scale: 6, Seed: 7, "
        "Size: 832x1216, Clip skip: 2",
    )
    forge = tmp_path / "forge.png"
    Image.new("RGB", (8, 8)).save(forge, pnginfo=info)
    notices = []
    panel.notice.connect(notices.append)
    with qtbot.waitSignal(panel.settings_requested) as loaded:
        panel.import_file(str(forge))
    params = loaded.args[0].params
    assert (params.prompt, params.negative_prompt, params.seed, params.width) == (
        "a castle",
        "fog",
        7,
        832,
    )
    assert notices == ["Not used by SD3, so not loaded: Sampler: DPM++ 2M, Clip skip: 2"]
    hostile = tmp_path / "hostile.png"
    hostile.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\xff" * 64)
    panel.import_file(str(hostile))
    assert "truncated" in notices[-1] or "damaged" in notices[-1]


def test_background_rescan_picks_up_new_files(qtbot, panel, tmp_path):
    from PySide6.QtCore import Qt as QtCore_Qt

    from sd3desk.runtime.gallery_scanner import GalleryScanner

    scanner = GalleryScanner(tmp_path / "sd3desk.db", [tmp_path / "outputs"])
    with qtbot.waitSignal(scanner.finished, timeout=10_000):
        panel.watch(scanner)  # scans at once
    write(
        tmp_path / "outputs" / "2026-11-27" / "00000-8.png", "a new owl", 8, "sd3.5_medium", T0 + 30
    )
    with qtbot.waitSignal(scanner.finished, timeout=10_000) as done:
        panel._on_app_state_changed(QtCore_Qt.ApplicationState.ApplicationActive)  # focus back
        assert not scanner.start()  # one scan at a time
    assert done.args[0].added == 1
    assert names(panel)[0] == "00000-8.png"
    assert panel.model_filter.findText("sd3.5_medium") >= 0


def test_a_new_image_shows_at_once(qtbot, panel, tmp_path):
    path = write(
        tmp_path / "outputs" / "2026-11-27" / "00001-9.png", "fresh", 9, "sd3_medium", T0 + 40
    )
    panel.image_added(str(path))
    assert names(panel)[0] == "00001-9.png"


def test_an_image_no_thumbnail_can_be_made_of_says_so_once(qtbot, tmp_path):
    """A decompression bomb (a header saying 30000 x 30000): refused before decoding, drawn as
    "no preview", and not asked for again on every repaint."""
    import struct
    import zlib

    out = tmp_path / "outputs"
    write(out / "good.png", "a fox", 1, "m", T0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", 30_000, 30_000, 8, 2, 0, 0, 0)
    (out / "bomb.png").write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )
    gallery = GalleryIndex(Store(tmp_path / "sd3desk.db"), out)
    gallery.scan()
    loader = ThumbnailLoader(tmp_path / "cache")
    asked: list[str] = []
    submit = loader._work.submit
    loader._work.submit = lambda work, key: (asked.append(key), submit(work, key=key))  # type: ignore[method-assign]
    bomb = str(out / "bomb.png")
    assert loader.get(bomb) is None
    qtbot.waitUntil(lambda: bomb in loader.failed, timeout=10_000)
    assert loader.get(bomb) is None and loader.get(bomb) is None
    assert asked == [bomb]
    widget = GalleryPanel(GalleryModel(gallery, loader))
    qtbot.addWidget(widget)
    widget.resize(600, 400)
    widget.show()
    # (the model's first read of the index clears failures once: a file may have changed)
    qtbot.waitUntil(lambda: str(out / "good.png") in loader._images, timeout=10_000)
    qtbot.waitUntil(lambda: bomb in loader.failed, timeout=10_000)
    before = asked.count(bomb)
    widget.grab()  # paints the "no preview" tile without asking for it again
    widget.grab()
    assert asked.count(bomb) == before
    viewer = ImageViewer()
    qtbot.addWidget(viewer)
    viewer.show_image(bomb)  # never decoded (Qt would warn, and fail this test, if it tried)
    assert viewer.picture.text() == "bomb.png is 30000x30000 pixels: too large to show"
