"""Starting from a picture in the window (issue 12, items 3-4) on the tiny model: the source well,
the mask painter (strokes, undo, redo, invert, clear), the user's path generate → use as
source → vary → repaint a region → hires fix, each image re-run exactly from the gallery."""

from __future__ import annotations

import numpy as np
from PIL import Image
from PySide6.QtCore import QEvent, QPointF, Qt
from PySide6.QtGui import QMouseEvent
from PySide6.QtWidgets import QApplication

from sd3desk.core.jobs import JobState
from sd3desk.core.metadata import read_metadata


def drag(canvas, points, button=Qt.MouseButton.LeftButton) -> None:
    """A stroke through `points` (widget coordinates), as a mouse makes it."""
    first, *rest = [QPointF(*p) for p in points]
    none = Qt.KeyboardModifier.NoModifier

    def send(kind, at, pressed, buttons):
        event = QMouseEvent(kind, at, canvas.mapToGlobal(at), pressed, buttons, none)
        QApplication.sendEvent(canvas, event)

    send(QEvent.Type.MouseButtonPress, first, button, button)
    for point in rest:
        send(QEvent.Type.MouseMove, point, Qt.MouseButton.NoButton, button)
    send(
        QEvent.Type.MouseButtonRelease, rest[-1] if rest else first, button, Qt.MouseButton.NoButton
    )


def painted(canvas) -> np.ndarray:
    from sd3desk.ui.generation_view import to_pil

    return np.asarray(to_pil(canvas.marks))


def test_the_mask_painter_paints_erases_undoes_and_inverts(qtbot):
    from PySide6.QtGui import QImage

    from sd3desk.ui.mask_editor import MaskEditor

    editor = MaskEditor()
    qtbot.addWidget(editor)
    editor.resize(500, 440)
    editor.show()
    picture = QImage(400, 300, QImage.Format.Format_RGB32)
    picture.fill(Qt.GlobalColor.darkCyan)
    editor.set_picture(picture)
    canvas = editor.canvas
    assert canvas.is_empty() and not editor.undo_button.isEnabled()
    editor.brush_size.setValue(20)
    middle = canvas._target().center()
    drag(canvas, [(middle.x() - 60, middle.y()), (middle.x() + 60, middle.y())])
    first = painted(canvas)
    assert first.shape == (300, 400) and first.max() == 255  # the picture's own pixels
    y, _x = np.nonzero(first > 127)
    assert abs(y.mean() - 150) < 3 and 15 < y.max() - y.min() < 30  # a 20 px wide stroke
    editor.eraser_tool.setChecked(True)
    drag(canvas, [(middle.x(), middle.y())])
    erased = painted(canvas)
    left = canvas.to_picture(QPointF(middle.x() - 40, middle.y()))
    assert erased[150, 200] == 0 and erased[150, int(left.x())] == 255
    drag(canvas, [(middle.x() + 30, middle.y())], Qt.MouseButton.RightButton)  # right: erase
    right = canvas.to_picture(QPointF(middle.x() + 30, middle.y()))
    assert painted(canvas)[150, int(right.x())] == 0
    canvas.undo()
    canvas.undo()
    assert np.array_equal(painted(canvas), first)
    canvas.redo()
    assert np.array_equal(painted(canvas), erased)
    canvas.invert()
    assert np.array_equal(painted(canvas), 255 - erased)
    canvas.clear()
    assert canvas.is_empty() and editor.undo_button.isEnabled()


def test_generate_vary_repaint_hires_each_rerun_exactly(open_window, qtbot, tmp_path):
    window = open_window("--data-dir", str(tmp_path / "data"), "--model", "test")
    panel, runner = window.prompt_panel, window.runner
    panel.steps.setValue(4)
    panel.set_size(256, 256)
    made: list[str] = []

    def run(params_check=None) -> str:
        job = window.generate()
        assert job is not None, panel.form_error.text()
        qtbot.waitUntil(lambda: runner.job(job.id).state is JobState.finished, timeout=60_000)
        path = runner.job(job.id).outputs[0]
        made.append(path)
        return path

    # 1. text to image, then use it as the source: the well shows it, strength appears
    panel.prompt.setPlainText("a lighthouse at dusk")
    first = run()
    assert not panel._picture_box.isVisible()
    window.generation.show_image(first)
    window.generation.use_source.click()
    assert panel.well.digest and panel._picture_box.isVisible()
    assert (panel.width_spin.value(), panel.height_spin.value()) == (256, 256)
    # 2. vary it with strength 0.5
    panel.strength.setValue(0.5)
    varied = run()
    meta = read_metadata(varied)
    assert meta.params.source_image == panel.well.digest and meta.params.strength == 0.5
    # 3. repaint a region: a stroke in the mask editor makes it an inpainting job
    panel.well.mask_button.click()
    assert window.generation.pages.currentWidget() is window.generation.mask_editor
    canvas = window.generation.mask_editor.canvas
    window.generation.mask_editor.brush_size.setValue(60)
    qtbot.waitUntil(lambda: canvas.width() > 100)
    centre = canvas._target().center()
    drag(canvas, [(centre.x() - 20, centre.y()), (centre.x() + 20, centre.y())])
    assert panel._mask_box.isVisible() and "inpainting" in panel.well.caption.text()
    repainted = run()
    inpaint = read_metadata(repainted).params
    assert inpaint.mode == "inpaint"
    source = np.asarray(Image.open(first).convert("RGB")).astype(int)
    result = np.asarray(Image.open(repainted).convert("RGB")).astype(int)
    assert (np.abs(result - source)[:, :20] == 0).all()  # far from the stroke: the source
    assert (np.abs(result - source)[118:138, 118:138]).max() > 0
    # 4. hires fix of the first image's request: the well cleared, 1.5x under Advanced
    panel.well.clear_button.click()
    assert not panel.well.digest and canvas.is_empty()
    panel.advanced.setChecked(True)
    panel.hires_scale.setValue(1.5)
    bigger = run()
    assert Image.open(bigger).size == (384, 384)
    # every image re-runs exactly from the gallery
    gallery = window.gallery_panel
    for path in made:
        params = read_metadata(path).params
        job = window.enqueue(params)
        assert job is not None
        qtbot.waitUntil(
            lambda job=job: runner.job(job.id).state is JobState.finished, timeout=60_000
        )
        again = runner.job(job.id).outputs[0]
        assert np.array_equal(np.asarray(Image.open(again)), np.asarray(Image.open(path))), path
    assert gallery is not None


def test_a_rerun_whose_picture_was_deleted_says_so_and_queues_nothing(open_window, tmp_path):
    window = open_window("--data-dir", str(tmp_path / "data"), "--model", "test")
    window.queue_panel.pause.trigger()
    photo = tmp_path / "photo.png"
    Image.new("RGB", (320, 240), "orange").save(photo)
    window.use_source_file(str(photo))
    panel = window.prompt_panel
    assert (panel.width_spin.value(), panel.height_spin.value()) == (336, 256)  # 256 a side
    params = panel.params()
    assert params.source_image
    window.runtime.sources.path(params.source_image).unlink()
    assert window.enqueue(params) is None
    assert "is gone from" in panel.form_error.text()
    assert not window.runner.snapshot().waiting
    # loading such settings into the form says the picture is no longer stored
    panel.clear_source()
    panel.set_params(params)
    assert not panel.well.digest and "no longer stored" in panel.form_error.text()


def test_the_gallery_badges_and_filters_images_by_how_they_were_made(qtbot, tmp_path):
    from sd3desk.core.gallery import GalleryIndex
    from sd3desk.core.metadata import ImageMetadata, png_info
    from sd3desk.core.params import GenerationParams
    from sd3desk.core.store import Store
    from sd3desk.ui.gallery_model import GalleryModel
    from sd3desk.ui.gallery_panel import GalleryPanel
    from sd3desk.ui.thumbnails import ThumbnailLoader

    out = tmp_path / "out"
    out.mkdir()
    base = GenerationParams("a fox", seed=1, width=256, height=256)
    digest = "d" * 64
    made = {
        "plain": base,
        "varied": base.replace(source_image=digest),
        "repainted": base.replace(source_image=digest, mask_image=digest),
        "bigger": base.replace(hires_scale=1.5),
    }
    for name, params in made.items():
        Image.new("RGB", (32, 32)).save(
            out / f"{name}.png", pnginfo=png_info(ImageMetadata(params))
        )
    gallery = GalleryIndex(Store(tmp_path / "db.sqlite"), out)
    gallery.scan()
    panel = GalleryPanel(GalleryModel(gallery, ThumbnailLoader(tmp_path / "cache")))
    qtbot.addWidget(panel)
    badges = {row.path.rsplit("/", 1)[-1]: row.badge for row in gallery.search()}
    assert badges == {
        "plain.png": "",
        "varied.png": "from image",
        "repainted.png": "inpaint",
        "bigger.png": "hires",
    }
    shown = {}
    for index in range(panel.mode_filter.count()):
        panel.mode_filter.setCurrentIndex(index)
        shown[panel.mode_filter.currentText()] = panel.model.rowCount()
    assert shown == {
        "Any way": 4,
        "From noise": 2,
        "From a picture": 1,
        "Inpainted": 1,
        "Hires fix": 1,
    }


def test_turbo_is_found_by_name_and_the_user_can_say_otherwise(open_window, qtbot, tmp_path):
    from sd3desk.core.params import ModelFamily
    from sd3desk.core.settings import load_settings
    from tests.unit.test_model_sizing import sd35_large_transformer_only

    large = sd35_large_transformer_only(tmp_path / "my-large-finetune.safetensors")
    window = open_window("--data-dir", str(tmp_path / "data"), "--model", str(large))
    window.queue_panel.pause.trigger()
    panel = window.prompt_panel
    qtbot.waitUntil(lambda: panel.turbo.isVisibleTo(panel), timeout=10_000)
    assert not panel.turbo.isChecked()
    panel.turbo.click()  # it is a Turbo, whatever its name says
    assert (panel.steps.value(), panel.guidance.value()) == (4, 0.0)
    saved = load_settings(window.runtime.paths.settings_file)
    assert saved.model_families == {str(large): ModelFamily.sd35_large_turbo.value}
    panel.turbo.click()
    assert (panel.steps.value(), panel.guidance.value()) == (28, 3.5)
