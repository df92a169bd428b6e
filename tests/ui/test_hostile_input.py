"""The window under hostile or odd input (issue 13): a 1 MB paste never reaches the text layout,
another tool's file fills only the fields it states, impossible numbers become notices, and a
window closed while its worker is inside an uninterruptible load does not wait for it."""

from __future__ import annotations

import time

import pytest
from PIL import Image, PngImagePlugin
from PySide6.QtCore import QMimeData

from sd3desk.app import create_window
from sd3desk.core import failpoints
from sd3desk.core.jobs import JobState
from sd3desk.core.params import PROMPT_CHARS_MAX


@pytest.fixture
def window(qtbot, tmp_path):
    made = create_window(["--data-dir", str(tmp_path / "data"), "--model", "test"])
    qtbot.addWidget(made)
    made.show()
    qtbot.waitUntil(lambda: made.gallery_panel is not None, timeout=10_000)
    yield made
    made.session.shutdown()


def error_text(window, name: str) -> str:
    label = window.prompt_panel._errors[name]
    return label.text() if label.isVisible() else ""


def test_a_1_mb_paste_is_refused_with_a_message_and_the_window_stays_responsive(window):
    panel = window.prompt_panel
    panel.prompt.setPlainText("a cat")
    data = QMimeData()
    data.setText("x" * 1_000_000)
    start = time.perf_counter()
    panel.prompt.insertFromMimeData(data)  # what Ctrl+V and a drop do
    assert time.perf_counter() - start < 1
    assert panel.prompt.toPlainText() == "a cat"
    assert "1,000,005 characters" in error_text(window, "prompt")
    assert "nothing was pasted" in error_text(window, "prompt")
    small = QMimeData()
    small.setText(" on a mat")
    panel.prompt.moveCursor(panel.prompt.textCursor().MoveOperation.End)
    panel.prompt.insertFromMimeData(small)
    assert panel.prompt.toPlainText() == "a cat on a mat"


def png_with_parameters(path, text: str):
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", text)
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    return str(path)


def test_a_huge_prompt_in_a_file_is_cut_at_the_limit_and_said(window, tmp_path):
    path = png_with_parameters(
        tmp_path / "huge.png", "y" * 300_000 + "\nSteps: 9, Seed: 1, CFG scale: 2"
    )
    window.gallery_panel.import_file(path)
    assert len(window.prompt_panel.prompt.toPlainText()) == PROMPT_CHARS_MAX
    assert "only the first 20,000 were loaded" in error_text(window, "prompt")


def test_fields_a_file_does_not_state_keep_the_forms_own_values(window, tmp_path):
    panel = window.prompt_panel
    panel.steps.setValue(11)
    panel.random_seed.setChecked(False)
    panel.seed.setValue(77)
    panel.set_size(512, 768)
    path = png_with_parameters(
        tmp_path / "sparse.png", "a lighthouse\nCFG scale: 5, Sampler: Euler a, Clip skip: 2"
    )
    window.gallery_panel.import_file(path)
    assert panel.prompt.toPlainText() == "a lighthouse"
    assert panel.guidance.value() == 5
    assert (panel.steps.value(), int(panel.seed.value())) == (11, 77)
    assert (panel.width_spin.value(), panel.height_spin.value()) == (512, 768)
    said = [n.message for n in window.runtime.notices.notices]
    assert any("keeps its own: seed, steps, width, height" in m for m in said), said
    assert any("Sampler: Euler a" in m for m in said), said  # another sampler: listed


def test_a_file_with_impossible_numbers_becomes_a_notice(window, tmp_path):
    path = png_with_parameters(tmp_path / "inf.png", "x\nSteps: 1e999, Seed: 1, CFG scale: nan")
    window.gallery_panel.import_file(path)
    said = [n.message for n in window.runtime.notices.notices]
    assert any("make no sense" in m and "steps" in m for m in said), said


def test_closing_while_a_model_load_cannot_be_interrupted_does_not_wait_for_it(qtbot, tmp_path):
    """The worker is held inside the model load (as inside an import of torch or a read of
    weights): closing waits SHUTDOWN_WAIT_S, then says it is stuck, the job is back in the
    queue, and the folder is free for the next process."""
    from sd3desk.ui.session import SHUTDOWN_WAIT_S

    arrived = failpoints.stall("model-load")
    try:
        window = create_window(["--data-dir", str(tmp_path / "data"), "--model", "test"])
        qtbot.addWidget(window)
        window.show()
        qtbot.waitUntil(lambda: window.gallery_panel is not None, timeout=10_000)
        window.prompt_panel.prompt.setPlainText("held")
        window.prompt_panel.generate_requested.emit()
        qtbot.waitUntil(arrived.is_set, timeout=60_000)
        start = time.perf_counter()
        window.close()
        window.session.shutdown()
        took = time.perf_counter() - start
        assert window.session.stuck
        assert SHUTDOWN_WAIT_S <= took < SHUTDOWN_WAIT_S + 3
        (job,) = window.runner._queue.jobs()
        assert job.state is JobState.queued
    finally:
        failpoints.release()
        for worker in window.runner.workers:  # (a QThread must not outlive its object)
            worker.thread_.wait()
    again = create_window(["--data-dir", str(tmp_path / "data"), "--model", "test"])
    qtbot.addWidget(again)
    again.session.shutdown()
