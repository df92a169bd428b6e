"""The form's LoRA picker: the LoRA folders' files in its menu (another model's greyed out), rows
that are hashed, ticked, weighted and removed, what reaches the queued job, what the saved form
keeps, an imported image's LoRAs found by their short hash (or said to be missing), the limit,
and the LoRA folders in Settings."""

from __future__ import annotations

import dataclasses
import json
import struct
from pathlib import Path

import pytest
from PySide6.QtCore import QObject, QPointF, QUrl, Slot
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QApplication, QLabel

from sd3desk.core.errors import InvalidParamsError
from sd3desk.core.loras import LORA_MAX, LoraRef
from sd3desk.core.modelhash import tensor_sha256
from sd3desk.core.params import GenerationParams
from sd3desk.core.settings import AppPaths, Settings
from sd3desk.runtime.runtime import build_runtime
from sd3desk.ui.lora_row import RowStatus
from sd3desk.ui.main_window import MainWindow
from sd3desk.ui.session import Session
from sd3desk.ui.settings_dialog import SettingsDialog
from tests.ui.conftest import wheel_down

SD3_KEYS = {
    "lora_unet_joint_blocks_0_x_block_attn_qkv.lora_down.weight": (4, 1536),
    "lora_unet_joint_blocks_0_x_block_attn_qkv.lora_up.weight": (4608, 4),
    "lora_unet_joint_blocks_0_x_block_attn_qkv.alpha": (),
}
SDXL_KEYS = {
    "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.alpha": (),
    "lora_te2_text_model_encoder_layers_0_mlp_fc1.alpha": (),
}


def write_lora(folder: Path, name: str, keys: dict[str, tuple[int, ...]] = SD3_KEYS) -> Path:
    """A small .safetensors LoRA (headers as real ones have; its bytes unique to `name`, so
    each file has its own hash)."""
    header: dict = {}
    offset = 0
    for key, shape in keys.items():
        header[key] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset]}
    raw = json.dumps(header).encode()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + name.encode() * 64)
    return path


@pytest.fixture
def open_window(qtbot):
    """The window over a real runtime and session, as app.create_window composes them, but
    without the background start (workers, model search): these tests queue jobs and look at
    them, and need no engine."""
    windows = []

    def make(data: Path, settings: Settings | None = None) -> MainWindow:
        runtime = build_runtime(AppPaths.default(data), settings or Settings(), owner="tests")
        window = MainWindow(Session(runtime, model_override="test"))
        qtbot.addWidget(window)
        window.show()
        windows.append(window)
        return window

    yield make
    for window in windows:
        window.session.shutdown()


def menu_actions(window: MainWindow, qtbot) -> dict[str, object]:
    """What the "Add LoRA…" menu offers once its scan is done, by the file each adds (or by
    its text). (Its opening is announced, not done: the offscreen platform warns on popups.)"""
    picker = window.prompt_panel.lora_list
    picker.found = None
    picker.menu.aboutToShow.emit()
    qtbot.waitUntil(lambda: picker.found is not None)
    return {a.data() or a.text(): a for a in picker.menu.actions() if not a.isSeparator()}


def wait_ready(qtbot, window: MainWindow, count: int) -> None:
    rows = window.prompt_panel.lora_list.rows
    qtbot.waitUntil(
        lambda: len(rows) == count and all(r.source.status is RowStatus.ready for r in rows)
    )


def test_the_menu_lists_the_lora_folders_files_and_greys_out_other_models(
    open_window, qtbot, tmp_path
):
    ink = write_lora(tmp_path / "loras", "ink")
    xl = write_lora(tmp_path / "loras" / "sdxl", "xl-style", SDXL_KEYS)
    window = open_window(tmp_path)
    actions = menu_actions(window, qtbot)
    sd3, sdxl = actions[str(ink)], actions[str(xl)]
    assert sd3.isEnabled() and sd3.text().startswith("ink — ") and "SD3" in sd3.text()
    assert not sdxl.isEnabled() and "SDXL" in sdxl.text() and "cannot use" in sdxl.text()
    assert {"Open a LoRA &file…", "Open the LoRA &folder", "&Rescan"} <= set(actions)
    # a file for another model, picked anyway ("Open a LoRA file…"): said, and not added
    picker = window.prompt_panel.lora_list
    picker.add_file(xl)
    qtbot.waitUntil(lambda: picker.rows == [])
    assert "SDXL" in window.findChild(QLabel, "loraNote").text()


def test_open_the_lora_folder_makes_it_first(open_window, qtbot, tmp_path):
    window = open_window(tmp_path)
    opened: list[str] = []

    class Opener(QObject):
        """Stands in for the desktop's file manager."""

        @Slot(QUrl)
        def open(self, url: QUrl) -> None:
            opened.append(url.toLocalFile())

    opener = Opener()
    QDesktopServices.setUrlHandler("file", opener, "open")
    try:
        menu_actions(window, qtbot)["Open the LoRA &folder"].trigger()
    finally:
        QDesktopServices.unsetUrlHandler("file")
    assert opened == [str(tmp_path / "loras")] and (tmp_path / "loras").is_dir()


def test_an_added_lora_and_its_weight_go_into_the_queued_job(open_window, qtbot, tmp_path):
    ink = write_lora(tmp_path / "loras", "ink")
    window = open_window(tmp_path)
    window.prompt_panel.prompt.setPlainText("a fox")
    menu_actions(window, qtbot)[str(ink)].trigger()
    row = window.prompt_panel.lora_list.rows[0]
    assert row.status.text() == "hashing…" and not row.status.isHidden()
    wait_ready(qtbot, window, 1)
    assert row.status.isHidden()
    assert "SD3 Medium" in row.check.toolTip() and str(ink) in row.check.toolTip()
    row.weight.setValue(0.75)
    window.prompt_panel.prompt.setFocus()  # the wheel over an unfocused weight scrolls the form
    QApplication.sendEvent(row.weight, wheel_down(QPointF(5, 5)))
    assert row.weight.value() == 0.75
    job = window.generate()
    assert job is not None
    assert job.params.loras == (LoraRef("ink", tensor_sha256(ink), 0.75),)
    assert window.runner.job(job.id).params.loras == job.params.loras  # as stored
    # the same file again is refused; the row it has is selected
    assert window.prompt_panel.lora_list.add_file(ink) is None
    assert len(window.prompt_panel.lora_list.rows) == 1 and row.weight.hasFocus()
    note = window.findChild(QLabel, "loraNote")
    assert note.isVisibleTo(window) and "already" in note.text()


def test_an_unticked_lora_stays_out_of_the_job_and_survives_a_restart(open_window, qtbot, tmp_path):
    ink, glow = write_lora(tmp_path / "loras", "ink"), write_lora(tmp_path / "loras", "glow")
    window = open_window(tmp_path)
    picker = window.prompt_panel.lora_list
    picker.add_file(ink)
    picker.add_file(glow)
    wait_ready(qtbot, window, 2)
    picker.rows[0].check.setChecked(False)
    picker.rows[1].weight.setValue(-1.5)
    with qtbot.waitSignal(window.prompt_panel.form_changed):  # saved as the user edits
        pass
    assert window.prompt_panel.params().loras == (LoraRef("glow", tensor_sha256(glow), -1.5),)
    window.save_form()
    window.session.shutdown()

    again = open_window(tmp_path)
    rows = again.prompt_panel.lora_list.rows
    assert [(r.source.name, r.enabled, r.weight.value()) for r in rows] == [
        ("ink", False, 1.0),
        ("glow", True, -1.5),
    ]
    wait_ready(qtbot, again, 2)
    assert again.prompt_panel.params().loras == (LoraRef("glow", tensor_sha256(glow), -1.5),)


def test_at_most_eight_loras(open_window, qtbot, tmp_path):
    files = [write_lora(tmp_path / "loras", f"style{k}") for k in range(LORA_MAX + 1)]
    window = open_window(tmp_path)
    picker = window.prompt_panel.lora_list
    for path in files[:LORA_MAX]:
        picker.add_file(path)
    assert not picker.add_button.isEnabled() and "At most 8" in picker.add_button.toolTip()
    assert picker.add_file(files[-1]) is None and len(picker.rows) == LORA_MAX
    wait_ready(qtbot, window, LORA_MAX)
    picker.rows[0].remove.click()
    assert picker.add_button.isEnabled() and len(picker.rows) == LORA_MAX - 1
    assert picker.add_file(files[-1]) is not None


def test_an_imported_short_hash_becomes_its_file(open_window, qtbot, tmp_path):
    """An A1111 image names its LoRA by 12 hex digits (and here by another name)."""
    ink = write_lora(tmp_path / "loras", "ink")
    whole = tensor_sha256(ink)
    window = open_window(tmp_path)
    window.prompt_panel.set_params(
        GenerationParams("a fox", loras=(LoraRef("ink_v1", whole[:12], 0.6),), model="test")
    )
    row = window.prompt_panel.lora_list.rows[0]
    assert row.status.text() == "finding…"
    wait_ready(qtbot, window, 1)
    assert window.prompt_panel.params().loras == (LoraRef("ink", whole, 0.6),)
    # queued straight from an imported request, the session finds it the same way
    imported = GenerationParams("a fox", loras=(LoraRef("x", whole[:12]),), model="test")
    job = window.session.submit(imported)
    assert job.params.loras == (LoraRef("ink", whole, 1.0),)


def test_an_unknown_lora_is_not_found_and_nothing_is_queued(open_window, qtbot, tmp_path):
    window = open_window(tmp_path)
    ghost = LoraRef("ghost", "0123456789ab", 1.0)
    window.prompt_panel.set_params(GenerationParams("a fox", loras=(ghost,), model="test"))
    row = window.prompt_panel.lora_list.rows[0]
    qtbot.waitUntil(lambda: row.source.status is RowStatus.missing)
    assert row.status.text() == "not found" and "0123456789ab" in row.check.toolTip()
    assert window.prompt_panel.params().loras == ()  # left out of the request
    assert window.generate() is None
    error = window.findChild(QLabel, "lorasError")
    assert error.isVisibleTo(window) and "ghost" in error.text() and "LoRA folders" in error.text()
    assert list(window.runner.snapshot().jobs) == []
    with pytest.raises(InvalidParamsError) as raised:  # the session's own check says the same
        window.session.submit(GenerationParams("a fox", loras=(ghost,), model="test"))
    assert [e.field for e in raised.value.errors] == ["loras"]
    # unticked, it is not asked for
    row.check.setChecked(False)
    assert not error.isVisibleTo(window) and window.generate() is not None


def test_lora_folders_in_settings_round_trip_and_rescan(open_window, qtbot, tmp_path):
    dialog = SettingsDialog(Settings(lora_dirs=("/a",)), "/out", lora_folder="/data/loras")
    qtbot.addWidget(dialog)
    listed = [dialog.lora_dirs.item(i).text() for i in range(dialog.lora_dirs.count())]
    assert listed[0].startswith("/data/loras") and listed[1:] == ["/a"]
    dialog.lora_dirs.selectAll()  # the data folder's own cannot be selected, nor removed
    assert [i.text() for i in dialog.lora_dirs.selectedItems()] == ["/a"]
    dialog.lora_dirs.addItem("/b")
    assert dialog.result_settings().lora_dirs == ("/a", "/b")

    extra = write_lora(tmp_path / "elsewhere", "far")
    window = open_window(tmp_path / "data")
    window.prompt_panel.set_params(
        GenerationParams("x", loras=(LoraRef("far", tensor_sha256(extra)[:12]),), model="test")
    )
    row = window.prompt_panel.lora_list.rows[0]
    qtbot.waitUntil(lambda: row.source.status is RowStatus.missing)
    settings = window.session.settings
    window.session.apply_settings(
        dataclasses.replace(settings, lora_dirs=(str(tmp_path / "elsewhere"),))
    )
    qtbot.waitUntil(lambda: row.source.status is RowStatus.ready)  # found there now
    assert str(extra) in menu_actions(window, qtbot)


@pytest.mark.parametrize(
    "rows", ["ink", [{"name": 5}], [{"name": "ink", "weight": "heavy"}], [["ink", 1.0]]]
)
def test_a_saved_form_with_malformed_lora_rows_becomes_a_notice(open_window, tmp_path, rows):
    (tmp_path / "form.json").write_text(json.dumps({"prompt": "kept?", "lora_rows": rows}))
    window = open_window(tmp_path)
    assert window.prompt_panel.lora_list.rows == []
    assert any("could not be restored" in n.message for n in window.runtime.notices.notices)
