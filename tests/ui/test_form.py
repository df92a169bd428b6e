"""The form's state rules: loaded settings win over family defaults, values out of range are
brought into range, seeds above 2^31 survive, the wheel never switches models by accident."""

from __future__ import annotations

import json

import pytest
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtWidgets import QApplication

from sd3desk.app import create_window
from sd3desk.core.params import GenerationParams, ModelFamily
from sd3desk.runtime.catalog import ModelEntry
from tests.ui.conftest import wheel_down

LARGE = ModelEntry("SD3.5 Large", "/models/large", ModelFamily.sd35_large)
LARGE_2 = ModelEntry("SD3.5 Large (second copy)", "/models/large-2", ModelFamily.sd35_large)
MEDIUM = ModelEntry("SD3 Medium", "/models/medium", ModelFamily.sd3_medium)


@pytest.fixture
def open_window(qtbot):
    windows = []

    def make(data_dir, *argv: str):
        window = create_window(["--data-dir", str(data_dir), *argv])
        qtbot.addWidget(window)
        window.show()
        qtbot.waitUntil(lambda: window.runtime.catalog.searched, timeout=10_000)
        windows.append(window)
        return window

    yield make
    for window in windows:
        window.session.shutdown()


def offer(window, *entries: ModelEntry) -> None:
    """As if the model search had found these models."""
    catalog = window.runtime.catalog
    catalog.entries = list(entries)
    catalog.found.emit(catalog.all_entries(), [])


def test_loaded_settings_win_over_the_models_family_defaults(open_window, tmp_path):
    window = open_window(tmp_path, "--model", "test")
    offer(window, LARGE, MEDIUM)
    made = GenerationParams(
        "a castle",
        seed=5,
        steps=50,
        guidance_scale=9.0,
        width=512,
        height=768,
        shift=5.0,
        model=LARGE.reference,
    )
    window.prompt_panel.set_params(made)  # e.g. "load settings" from the gallery or the queue
    loaded = window.prompt_panel.params()
    assert loaded.model == LARGE.reference
    assert (loaded.steps, loaded.guidance_scale, loaded.width, loaded.height, loaded.shift) == (
        50,
        9.0,
        512,
        768,
        5.0,
    )


def test_picking_another_family_applies_its_defaults_but_not_within_a_family(open_window, tmp_path):
    window = open_window(tmp_path, "--model", "test")
    offer(window, LARGE, LARGE_2, MEDIUM)
    panel = window.prompt_panel
    panel.select_model(MEDIUM.reference)
    assert (panel.steps.value(), panel.guidance.value()) == (28, 7.0)  # SD3 Medium's
    panel.steps.setValue(33)
    window.save_form()
    window.session.shutdown()
    again = open_window(tmp_path)  # restart: the form comes back with Medium and 33 steps
    offer(again, LARGE, LARGE_2, MEDIUM)
    p = again.prompt_panel
    assert p.model_reference() == MEDIUM.reference and p.steps.value() == 33
    p.select_model(LARGE.reference)  # another family: its defaults
    assert (p.steps.value(), p.guidance.value()) == (28, 3.5)
    p.steps.setValue(40)
    p.select_model(LARGE_2.reference)  # the same family: the user's values stay
    assert p.steps.value() == 40


def test_values_beyond_a_fields_range_are_clamped_not_crashing(open_window, tmp_path):
    window = open_window(tmp_path, "--model", "test")
    panel = window.prompt_panel
    panel.set_params(GenerationParams("x", steps=3_000_000_000, width=99_999, height=16))
    assert (panel.steps.value(), panel.width_spin.value(), panel.height_spin.value()) == (
        150,
        2048,
        256,
    )
    window.session.shutdown()
    (tmp_path / "form.json").write_text(json.dumps({"prompt": "y", "steps": 2**40}))
    again = open_window(tmp_path)
    assert (
        again.prompt_panel.steps.value() == 150 and again.prompt_panel.prompt.toPlainText() == "y"
    )


def test_seeds_above_2_31_survive_use_seed(open_window, tmp_path):
    window = open_window(tmp_path, "--model", "test")
    window.gallery_panel.seed_requested.emit(3_000_000_000)
    assert window.prompt_panel.params().seed == 3_000_000_000


def test_guidance_keeps_two_decimals_from_other_tools(open_window, tmp_path):
    window = open_window(tmp_path, "--model", "test")
    window.prompt_panel.set_params(GenerationParams("x", guidance_scale=3.75))
    assert window.prompt_panel.params().guidance_scale == 3.75
    window.prompt_panel.guidance_slider.setValue(55)  # the slider moves the box
    assert window.prompt_panel.guidance.value() == 5.5


def test_the_wheel_over_an_unfocused_model_list_does_not_switch_models(open_window, tmp_path):
    window = open_window(tmp_path, "--model", "test")
    offer(window, LARGE, MEDIUM)
    combo = window.prompt_panel.model_combo
    before = combo.currentIndex()
    window.prompt_panel.prompt.setFocus()
    wheel = wheel_down(QPointF(combo.mapToGlobal(QPoint(5, 5))))
    QApplication.sendEvent(combo, wheel)
    assert combo.currentIndex() == before


def test_escape_in_the_gallery_search_clears_it_and_cancels_nothing(open_window, qtbot, tmp_path):
    window = open_window(tmp_path, "--model", "test")
    cancels = []
    window.prompt_panel.cancel_requested.connect(lambda: cancels.append(1))
    search = window.gallery_panel.search
    search.setText("fox")
    search.setFocus()
    qtbot.keyClick(search, Qt.Key.Key_Escape)
    assert search.text() == "" and cancels == []
    window.prompt_panel.prompt.setFocus()
    qtbot.keyClick(window.prompt_panel.prompt, Qt.Key.Key_Escape)
    assert cancels == [1]


def test_an_older_model_search_finishing_late_is_ignored(qtbot, monkeypatch):
    """Two searches, the older one finishing last (a slow folder): its result is dropped."""
    import threading

    from PySide6.QtCore import QThreadPool

    from sd3desk.runtime import catalog as catalog_module

    release_first = threading.Event()

    def find_models(dirs):
        if dirs == ("slow",):
            release_first.wait(10)  # the first search is slow
            return [LARGE], []
        return [MEDIUM], []

    monkeypatch.setattr(catalog_module, "find_models", find_models)
    pool = QThreadPool()
    pool.setMaxThreadCount(2)  # both searches at once
    catalog = catalog_module.ModelCatalog(pool=pool)
    found = []
    catalog.found.connect(lambda entries, _problems: found.append(entries))
    catalog.model_dirs = ("slow",)
    catalog.refresh()  # the older search: still running ...
    catalog.model_dirs = ("fast",)
    catalog.refresh()  # ... when the newer one starts and finishes
    qtbot.waitUntil(lambda: catalog.entries == [MEDIUM], timeout=10_000)
    release_first.set()
    pool.waitForDone()
    qtbot.wait(50)  # the older result arrives now, and is dropped
    assert catalog.entries == [MEDIUM] and len(found) == 1


def test_a_saved_form_with_impossible_numbers_becomes_a_notice(open_window, tmp_path):
    """JSON allows 1e999 (infinity): the window still opens, with its default form."""
    (tmp_path / "form.json").write_text('{"prompt": "x", "seed": 1e999, "random_seed": false}')
    window = open_window(tmp_path, "--model", "test")
    assert window.prompt_panel.prompt.toPlainText() == ""
    assert any("could not be restored" in n.message for n in window.runtime.notices.notices)
