"""Settings and notices dialogs, live token counts, and settings reaching the workers."""

from __future__ import annotations

import dataclasses
import re

import pytest
from PySide6.QtGui import QGuiApplication

from sd3desk.app import create_window
from sd3desk.core.settings import Device, MemoryPlan, Settings, Speed, Theme, load_settings
from sd3desk.runtime.events import Level
from sd3desk.runtime.notices import NoticeLog
from sd3desk.ui.notices_dialog import NoticesDialog
from sd3desk.ui.settings_dialog import SettingsDialog


@pytest.fixture
def window(qtbot, tmp_path, tiny_model_dir):
    window = create_window(["--data-dir", str(tmp_path), "--model", str(tiny_model_dir)])
    qtbot.addWidget(window)
    window.show()
    qtbot.waitUntil(lambda: window.gallery_panel is not None, timeout=10_000)
    yield window
    window.session.shutdown()


def test_settings_dialog_edits_every_field(qtbot):
    before = Settings(model_dirs=("/models/a",))
    dialog = SettingsDialog(before, "/default/out")
    qtbot.addWidget(dialog)
    dialog.output.setText("/pictures/sd3")
    dialog.device.setCurrentIndex(dialog.device.findData(Device.cpu))
    dialog.plan.setCurrentIndex(dialog.plan.findData(MemoryPlan.t5_8bit))
    dialog.speed.setCurrentIndex(dialog.speed.findData(Speed.fast))
    assert dialog.plan.count() == len(MemoryPlan) and dialog.speed.count() == len(Speed)
    dialog.use_t5.setChecked(False)
    assert dialog.preview_decoder.isChecked()
    dialog.preview_decoder.setChecked(False)
    dialog.theme.setCurrentIndex(dialog.theme.findData(Theme.dark))
    dialog.model_dirs.addItem("/models/b")
    dialog.workers.setValue(2)
    after = dialog.result_settings()
    assert after == dataclasses.replace(
        before,
        output_dir="/pictures/sd3",
        device=Device.cpu,
        memory_plan=MemoryPlan.t5_8bit,
        speed=Speed.fast,
        use_t5=False,
        preview_decoder=False,
        theme=Theme.dark,
        model_dirs=("/models/a", "/models/b"),
        gpu_workers=2,
    )


def test_new_settings_are_saved_and_reach_the_workers(window, qtbot, tmp_path):
    session = window.session
    changed = dataclasses.replace(session.settings, use_t5=False, device=Device.cpu)
    session.apply_settings(changed)
    assert load_settings(tmp_path / "settings.json") == changed
    worker = window.runner.workers[0]
    qtbot.waitUntil(lambda: worker.config.use_t5 is False)
    assert worker.config.device is Device.cpu


def test_notices_dialog_shows_advice_and_copies_diagnostics(qtbot):
    notices = NoticeLog()
    notices.info("model loaded")
    notices.error("out of memory", "try the offload plan", details="allocation of 2 GB failed")
    dialog = NoticesDialog(notices, lambda: "sd3desk diagnostics text")
    qtbot.addWidget(dialog)
    assert dialog.list.count() == 2
    assert "out of memory" in dialog.list.item(0).text()  # newest first
    html = dialog.details.toPlainText()
    assert "try the offload plan" in html and "allocation of 2 GB failed" in html
    dialog.copy_diagnostics()
    assert QGuiApplication.clipboard().text() == "sd3desk diagnostics text"
    assert [n.level for n in notices.notices] == [Level.info, Level.error]


def test_token_counts_are_live_and_mark_truncation(window, qtbot):
    panel = window.prompt_panel
    qtbot.waitUntil(lambda: "Ready" in window.engine_label.text(), timeout=60_000)
    panel.prompt.setPlainText("a cat")
    qtbot.waitUntil(lambda: "CLIP 4/77" in panel.prompt_count.text(), timeout=10_000)
    assert "cut off" not in panel.prompt_count.text()
    panel.prompt.setPlainText(" ".join(["lighthouse"] * 100))
    qtbot.waitUntil(lambda: "cut off" in panel.prompt_count.text(), timeout=10_000)
    clip = int(re.search(r"CLIP (\d+)/77", panel.prompt_count.text()).group(1))
    assert clip > 77
    panel.t5_length.setValue(64)
    qtbot.waitUntil(lambda: "/64" in panel.prompt_count.text(), timeout=10_000)


def test_guidance_at_or_below_one_says_the_negative_prompt_is_ignored(window):
    panel = window.prompt_panel
    panel.guidance.setValue(1.0)
    assert panel.cfg_note.isVisibleTo(window)
    panel.guidance.setValue(4.5)
    assert not panel.cfg_note.isVisibleTo(window)
    assert panel.guidance_slider.value() == 45


def test_sizes_snap_and_presets_follow(window, qtbot):
    panel = window.prompt_panel
    panel.aspect.setCurrentIndex(panel.aspect.findData("16:9"))
    assert (panel.width_spin.value(), panel.height_spin.value()) == (1344, 768)
    panel.width_spin.setValue(1001)
    panel.width_spin.editingFinished.emit()
    assert panel.width_spin.value() == 1008
    assert panel.aspect.currentData() == "Custom"


def test_the_models_dialog_sets_the_memory_plan(window, qtbot, tmp_path):
    """A small GPU's user picks how to run a model where they pick the model."""
    window.open_model_setup()
    dialog = window.setup_dialog
    box = dialog.plan_box
    assert box.combo.currentData() is window.session.settings.memory_plan
    box.combo.setCurrentIndex(box.combo.findData(MemoryPlan.t5_8bit))
    box.combo.activated.emit(box.combo.currentIndex())
    assert window.session.settings.memory_plan is MemoryPlan.t5_8bit
    assert load_settings(tmp_path / "settings.json").memory_plan is MemoryPlan.t5_8bit
    worker = window.runner.workers[0]
    qtbot.waitUntil(lambda: worker.config.memory_plan is MemoryPlan.t5_8bit)
    dialog.close()
