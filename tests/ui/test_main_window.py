"""The main window end to end on the tiny model: form -> queue -> worker -> gallery -> re-run."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
from PIL import Image
from PySide6.QtCore import QItemSelectionModel, Qt
from PySide6.QtWidgets import QLabel, QWidget

from sd3desk.core.jobs import JobState
from sd3desk.core.metadata import read_metadata
from sd3desk.core.settings import Theme, load_settings
from sd3desk.ui.main_window import MainWindow

OBJECT_NAMES = [
    "promptEdit",
    "negativePromptEdit",
    "seedSpin",
    "randomSeedCheck",
    "stepsSpin",
    "guidanceSpin",
    "aspectCombo",
    "widthSpin",
    "heightSpin",
    "batchSpin",
    "modelCombo",
    "generateButton",
    "cancelButton",
    "progressBar",
    "previewView",
    "queueView",
    "galleryView",
]


def select_job(queue_panel, job_id: int) -> None:
    """Click a job's row in the queue (it becomes the current and only selected row)."""
    index = queue_panel.model.index(queue_panel.model.row_of(job_id))
    queue_panel.view.setCurrentIndex(index)
    queue_panel.view.selectionModel().select(
        index, QItemSelectionModel.SelectionFlag.ClearAndSelect
    )


def finished_jobs(window):
    return [j for j in list(window.runner.snapshot().jobs) if j.state is JobState.finished]


def test_building_and_showing_the_window_imports_no_torch(tmp_path):
    """In a fresh process: the window is built and shown before torch is imported, and the
    gallery and the model search never import it (only the worker does, on its thread)."""
    script = textwrap.dedent(
        f"""
        import sys
        from PySide6.QtWidgets import QApplication, QWidget
        from sd3desk.app import create_window
        window = create_window(["--data-dir", {str(tmp_path)!r}])
        window.show()
        shown_without_torch = "torch" not in sys.modules
        app = QApplication.instance()
        found = []
        window.runtime.catalog.found.connect(lambda *a: found.append(1))
        while window.gallery_panel is None or not found:
            app.processEvents()
        app.processEvents()
        names = {OBJECT_NAMES!r}
        missing = [n for n in names if window.findChild(QWidget, n) is None]
        window.session.shutdown()
        print(shown_without_torch, "torch" not in sys.modules, missing, flush=True)
        if window.session.stuck:  # a worker still importing the ML stack: as app.main ends
            import os
            os._exit(0)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "True True []"


def test_prompt_to_gallery_and_exact_rerun(open_window, qtbot, tiny_model_dir, tmp_path):
    window = open_window("--data-dir", str(tmp_path), "--model", str(tiny_model_dir))
    panel = window.prompt_panel
    panel.prompt.setPlainText("a lighthouse at dusk")
    panel.steps.setValue(4)
    panel.set_size(256, 256)
    steps: list[int] = []
    window.runner.step_progressed.connect(
        lambda e: steps.append(window.generation.progress.value())
    )

    qtbot.mouseClick(window.findChild(QWidget, "generateButton"), Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(finished_jobs(window)) == 1, timeout=90_000)

    # progress advanced step by step, and the queue timed the job as it ran
    assert steps == [1, 2, 3, 4]
    assert window.runner.snapshot().live_rates
    assert (
        "step 4/4" in window.generation.progress.format()
        or "done" in window.generation.progress.format()
    )
    # the image is in the gallery with its parameters, and shown in the viewer
    gallery = window.gallery_panel
    qtbot.waitUntil(lambda: gallery.model.rowCount() == 1)
    row = gallery.model.row_at(0)
    meta = read_metadata(row.path)
    assert meta.params.prompt == "a lighthouse at dusk"
    assert (meta.params.steps, meta.params.width) == (4, 256)
    assert panel.last_seed == meta.params.seed
    # re-run exactly from the gallery: identical pixels
    gallery.view.selectionModel().select(
        gallery.model.index(0), QItemSelectionModel.SelectionFlag.Select
    )
    gallery.actions_["rerun"].trigger()
    qtbot.waitUntil(lambda: len(finished_jobs(window)) == 2, timeout=90_000)
    first, again = (j.outputs[0] for j in sorted(finished_jobs(window), key=lambda j: j.id))
    assert first != again
    assert np.array_equal(np.asarray(Image.open(first)), np.asarray(Image.open(again)))


def test_invalid_input_is_shown_by_its_field_and_queues_nothing(open_window, tmp_path):
    window = open_window("--data-dir", str(tmp_path), "--model", "test")
    panel = window.prompt_panel
    panel.prompt.setPlainText("x" * 20_001)
    panel.width_spin.setValue(1000)  # typed, not yet snapped: not a multiple of 16
    assert window.generate() is None
    prompt_error = window.findChild(QLabel, "promptError")
    width_error = window.findChild(QLabel, "widthError")
    assert prompt_error.isVisibleTo(window) and "20000" in prompt_error.text()
    assert width_error.isVisibleTo(window) and "multiple of 16" in width_error.text()
    assert list(window.runner.snapshot().jobs) == []
    # fixing the field clears its message
    panel.width_spin.setValue(1024)
    assert not width_error.isVisibleTo(window)


def test_no_model_means_an_error_not_a_job(open_window, tmp_path):
    window = open_window("--data-dir", str(tmp_path), "--model", "test")
    window.prompt_panel.model_combo.clear()
    window.prompt_panel.prompt.setPlainText("a cat")
    assert window.generate() is None
    assert "pick a model" in window.findChild(QLabel, "modelError").text()
    assert list(window.runner.snapshot().jobs) == []


def test_form_settings_and_layout_survive_a_restart(open_window, qtbot, tmp_path):
    data = str(tmp_path)
    window = open_window("--data-dir", data, "--model", "test")
    panel = window.prompt_panel
    panel.prompt.setPlainText("a red fox in snow")
    panel.negative.setPlainText("blurry")
    panel.use_seed(1234)
    panel.steps.setValue(12)
    panel.guidance.setValue(3.5)
    panel.set_size(1344, 768)
    panel.batch.setValue(3)
    session = window.session
    session.apply_settings(dataclasses.replace(session.settings, theme=Theme.dark))
    window.save_form()  # the form saves itself a second after each edit; do it now
    window.save_layout()
    session.shutdown()

    again = open_window("--data-dir", data)
    p = again.prompt_panel
    assert p.prompt.toPlainText() == "a red fox in snow"
    assert p.negative.toPlainText() == "blurry"
    assert not p.random_seed.isChecked() and p.seed.value() == 1234
    assert (p.steps.value(), p.guidance.value(), p.batch.value()) == (12, 3.5, 3)
    assert (p.width_spin.value(), p.height_spin.value()) == (1344, 768)
    assert p.aspect.currentData() == "16:9"
    assert load_settings(tmp_path / "settings.json").theme is Theme.dark
    assert again.session.settings.theme is Theme.dark


def test_form_is_saved_while_typing(open_window, qtbot, tmp_path):
    """A crash loses at most the last second of typing: the form is saved as the user types."""
    window = open_window("--data-dir", str(tmp_path), "--model", "test")
    window.prompt_panel.prompt.setPlainText("saved without closing")
    form = tmp_path / "form.json"
    qtbot.waitUntil(
        lambda: form.exists() and "saved without closing" in form.read_text(), timeout=5_000
    )
    assert json.loads(form.read_text())["prompt"] == "saved without closing"


def test_first_run_without_models_opens_the_setup_dialog(open_window, qtbot, tmp_path):
    window = open_window("--data-dir", str(tmp_path))
    qtbot.waitUntil(lambda: window.setup_dialog is not None, timeout=10_000)
    dialog = window.setup_dialog
    assert dialog.isVisible()
    qtbot.mouseClick(dialog.findChild(QWidget, "useTestModelButton"), Qt.MouseButton.LeftButton)
    assert window.prompt_panel.model_reference() == "test"
    assert not dialog.isVisible()


def test_queue_panel_pause_reorder_duplicate_cancel_clear(open_window, qtbot, tmp_path):
    window = open_window("--data-dir", str(tmp_path), "--model", "test")
    queue_panel, runner = window.queue_panel, window.runner
    queue_panel.pause.trigger()  # paused: nothing runs, and it is remembered
    assert runner.snapshot().paused
    window.prompt_panel.prompt.setPlainText("first")
    first = window.generate()
    window.prompt_panel.prompt.setPlainText("second")
    second = window.generate()
    model = queue_panel.model
    assert [model.job_at(r).id for r in range(model.rowCount())] == [first.id, second.id]
    assert "waiting · 1st" in model.data(model.index(0))
    # drag the second job above the first
    mime = model.mimeData([model.index(1)])
    model.dropMimeData(mime, Qt.DropAction.MoveAction, 0, 0, model.index(0).parent())
    assert [j.id for j in runner.snapshot().waiting] == [second.id, first.id]
    # duplicate, then cancel the copy
    select_job(queue_panel, first.id)
    queue_panel.duplicate.trigger()
    copy = runner.snapshot().waiting[-1]
    assert copy.params == first.params and copy.id not in (first.id, second.id)
    queue_panel.view.clearSelection()
    select_job(queue_panel, copy.id)
    queue_panel.cancel.trigger()
    assert runner.job(copy.id).state is JobState.cancelled
    queue_panel.clear.trigger()
    assert [j.id for j in runner.snapshot().jobs] == [second.id, first.id]


def test_escape_cancels_the_running_job_and_failures_become_notices(
    open_window, qtbot, tmp_path, tiny_model_dir
):
    window = open_window("--data-dir", str(tmp_path), "--model", str(tiny_model_dir))
    panel = window.prompt_panel
    panel.prompt.setPlainText("a long one")
    panel.steps.setValue(150)
    panel.set_size(256, 256)
    job = window.generate()
    qtbot.waitUntil(lambda: window.generation.progress.value() >= 1, timeout=90_000)
    assert panel.cancel_button.isEnabled()
    qtbot.keyClick(panel.prompt, Qt.Key.Key_Escape)
    qtbot.waitUntil(lambda: window.runner.job(job.id).state is JobState.cancelled, timeout=30_000)
    assert not panel.cancel_button.isEnabled()

    panel.select_model(str(tmp_path / "missing-model"))
    failed = window.generate()
    qtbot.waitUntil(lambda: window.runner.job(failed.id).state is JobState.failed, timeout=30_000)
    notices = window.runtime.notices.notices
    assert any("failed" in n.message and n.level.value == "error" for n in notices)
    assert "Notices (" in window.notices_button.text()
    assert "Traceback" not in window.notice_label.toolTip()
    text = window.diagnostics()
    assert "sd3desk" in text and "PySide6" in text


def test_models_dialog_opens_once_and_is_freed(open_window, qtbot, tmp_path):
    from shiboken6 import isValid

    window = open_window("--data-dir", str(tmp_path), "--model", "test")
    window.setup_action.trigger()
    first = window.setup_dialog
    window.setup_action.trigger()  # a second request raises the open dialog
    assert window.setup_dialog is first
    first.reject()
    qtbot.waitUntil(lambda: not isValid(first))
    window.setup_action.trigger()
    assert window.setup_dialog is not first and window.setup_dialog.isVisible()
    window.setup_dialog.reject()


def test_dropping_an_a1111_image_fills_the_form_and_keeps_the_model(open_window, tmp_path):
    from PIL import PngImagePlugin

    window = open_window("--data-dir", str(tmp_path / "data"), "--model", "test")
    info = PngImagePlugin.PngInfo()
    info.add_text(
        "parameters",
        "a castle\nNegative prompt: fog\nSteps: 20, Sampler: DPM++ 2M, CFG scale: 6, Seed: 7, "
        "Size: 832x1216, Model: sd3_medium",
    )
    forge = tmp_path / "forge.png"
    Image.new("RGB", (8, 8)).save(forge, pnginfo=info)
    window.gallery_panel.import_file(str(forge))  # what a drop on the gallery does
    panel = window.prompt_panel
    assert panel.prompt.toPlainText() == "a castle"
    assert panel.negative.toPlainText() == "fog"
    assert (panel.steps.value(), panel.guidance.value(), int(panel.seed.value())) == (20, 6.0, 7)
    assert (panel.width_spin.value(), panel.height_spin.value()) == (832, 1216)
    assert not panel.random_seed.isChecked()
    assert panel.model_reference() == "test"  # another tool's model name is not a model here
    assert any("Sampler: DPM++ 2M" in n.message for n in window.runtime.notices.notices)


def test_layout_is_saved_without_closing(open_window, qtbot, tmp_path):
    window = open_window("--data-dir", str(tmp_path), "--model", "test")
    window.queue_dock.hide()
    ini = tmp_path / "window.ini"
    qtbot.waitUntil(lambda: ini.exists(), timeout=5_000)
    window.session.shutdown()
    again = open_window("--data-dir", str(tmp_path))
    assert not again.queue_dock.isVisible() and again.gallery_dock.isVisible()


def test_ctrl_enter_in_the_prompt_queues_without_a_newline(open_window, qtbot, tmp_path):
    window = open_window("--data-dir", str(tmp_path), "--model", "test")
    window.queue_panel.pause.trigger()  # keep the job waiting: only the queueing is tested
    panel = window.prompt_panel
    panel.prompt.setPlainText("a cat")
    panel.prompt.setFocus()
    qtbot.keyClick(panel.prompt, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    jobs = list(window.runner.snapshot().jobs)
    assert [j.params.prompt for j in jobs] == ["a cat"]
    assert panel.prompt.toPlainText() == "a cat"


def test_dragging_several_waiting_jobs_keeps_their_list_order(open_window, tmp_path):
    window = open_window("--data-dir", str(tmp_path), "--model", "test")
    window.queue_panel.pause.trigger()
    jobs = []
    for name in "abcde":
        window.prompt_panel.prompt.setPlainText(name)
        jobs.append(window.generate())
    a, b, c, d, e = (j.id for j in jobs)
    model = window.queue_panel.model
    runner = window.runner
    # B then A (selection order), dropped before E: they land as A, B
    mime = model.mimeData([model.index(1), model.index(0)])
    model.dropMimeData(mime, Qt.DropAction.MoveAction, 4, 0, model.index(0).parent())
    assert [j.id for j in runner.snapshot().waiting] == [c, d, a, b, e]


def test_generate_clicks_before_the_workers_exist_queue_and_then_run(open_window, qtbot, tmp_path):
    """The runner exists with the window; workers come after the first frame. Three quick clicks
    before that are three jobs, which run once the workers are up."""
    window = open_window("--data-dir", str(tmp_path), "--model", "test", started=False)
    panel = window.prompt_panel
    panel.prompt.setPlainText("early")
    panel.steps.setValue(2)
    button = window.findChild(QWidget, "generateButton")
    for _ in range(3):
        qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    assert window.runner.workers == []  # nothing has started yet
    assert [j.params.prompt for j in window.runner.snapshot().waiting] == ["early"] * 3
    qtbot.waitUntil(lambda: len(finished_jobs(window)) == 3, timeout=90_000)


def test_the_queue_view_keeps_its_selection_while_jobs_run(open_window, qtbot, tmp_path):
    window = open_window("--data-dir", str(tmp_path), "--model", "test")
    window.queue_panel.pause.trigger()
    panel = window.prompt_panel
    panel.steps.setValue(2)
    jobs = []
    for name in "abc":
        panel.prompt.setPlainText(name)
        jobs.append(window.generate())
    queue_panel = window.queue_panel
    select_job(queue_panel, jobs[2].id)
    rows_seen: set[int] = set()
    window.runner.queue_changed.connect(
        lambda _e: rows_seen.add(queue_panel.model.row_of(jobs[2].id))
    )
    queue_panel.pause.trigger()  # resume: a and b run, then c; their rows move past c's
    qtbot.waitUntil(lambda: len(finished_jobs(window)) == 3, timeout=90_000)
    assert len(rows_seen) > 1  # c's row moved while the others ran
    assert [j.id for j in queue_panel.selected()] == [jobs[2].id]
    assert queue_panel.view.currentIndex().row() == queue_panel.model.row_of(jobs[2].id)


def test_a_job_failed_by_crash_recovery_is_a_notice_in_the_window(open_window, tmp_path):
    """The app stopped twice during a job: the job fails when the queue opens, and the window
    says so (this notice used to go to a copy nobody showed)."""
    from sd3desk.core.jobs import JobQueue
    from sd3desk.core.params import GenerationParams
    from sd3desk.core.store import Store

    for _ in range(2):  # two runs that each died during the job
        queue = JobQueue(Store(tmp_path / "sd3desk.db"))
        if not queue.queued():
            queue.enqueue(GenerationParams("a crash", seed=1, model="test"))
        job = queue.mark_running(queue.queued()[0].id)
        queue.mark_generating(job.id)  # (a crash while its model loads is not the job's)
        queue.store.close()
    window = open_window("--data-dir", str(tmp_path), "--model", "test", started=False)
    assert "stopped twice" in window.notice_label.toolTip()
    assert window.notices_button.text() == "Notices (1)"
    failed = [j for j in window.runner.snapshot().done if j.state is JobState.failed]
    assert [j.params.prompt for j in failed] == ["a crash"]


def test_a_queue_locked_by_another_program_is_said_and_left_alone(qtbot, tmp_path, monkeypatch):
    import sqlite3

    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication, QMessageBox

    from sd3desk import app
    from sd3desk.core.errors import ExitCode
    from sd3desk.core.store import Store

    Store(tmp_path / "sd3desk.db").db.close()
    other = sqlite3.connect(tmp_path / "sd3desk.db")  # another program holding it for itself
    other.execute("PRAGMA locking_mode=EXCLUSIVE")
    other.execute("BEGIN EXCLUSIVE")
    monkeypatch.setattr(Store, "BUSY_TIMEOUT_S", 0.1)
    said: list[str] = []

    def answer() -> None:  # as the user does, once the dialog is up
        box = QApplication.activeModalWidget()
        if not isinstance(box, QMessageBox):
            QTimer.singleShot(20, answer)
            return
        said.append(box.text())
        box.accept()

    QTimer.singleShot(0, answer)
    try:
        assert app.main(["--data-dir", str(tmp_path)]) == ExitCode.error
    finally:
        other.rollback()
        other.close()
    assert said and "locked by another program" in said[0]
    assert not [p for p in tmp_path.iterdir() if ".unreadable-" in p.name]


def answer_dialog(reply: str, said: list[str]) -> None:
    """Once a modal message box is up, note its text and press the button labelled `reply`."""
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication, QMessageBox

    box = QApplication.activeModalWidget()
    if not isinstance(box, QMessageBox):
        QTimer.singleShot(20, lambda: answer_dialog(reply, said))
        return
    said.append(f"{box.text()}\n{box.informativeText()}")
    [button] = [b for b in box.buttons() if b.text().replace("&", "") == reply]
    button.click()


def test_a_second_window_on_a_folder_says_who_runs_it_and_offers_another(
    open_window, qtbot, tmp_path, monkeypatch
):
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication, QFileDialog

    from sd3desk import app
    from sd3desk.core.errors import ExitCode

    first = open_window("--data-dir", str(tmp_path / "data"), "--model", "test", started=False)
    said: list[str] = []
    QTimer.singleShot(0, lambda: answer_dialog("Close", said))
    assert app.main(["--data-dir", str(tmp_path / "data")]) == ExitCode.busy
    assert f"is run by the sd3desk window (process {os.getpid()}, since" in said[0]
    assert "--data-dir" in said[0]
    # "Use another folder…": the window starts there
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(other))
    monkeypatch.setattr(QApplication, "exec", lambda self: 0)  # (no event loop in a test)
    QTimer.singleShot(0, lambda: answer_dialog("Use another folder…", said))
    assert app.main(["--data-dir", str(tmp_path / "data")]) == ExitCode.ok
    [second] = [
        w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow) and w is not first
    ]
    try:
        assert second.session.runtime.paths.data == other
        assert (other / "queue.lock").exists() and (other / "sd3desk.db").exists()
    finally:
        second.session.shutdown()
        second.close()
