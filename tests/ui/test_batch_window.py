"""Batch files in the window (issue 16, item 4): Queue → Add from file… expands a file with the
parser `sd3desk batch` uses, shows the count, and queues exactly those jobs; the gallery shows
another folder (a batch's --out folder) besides the output folder."""

from __future__ import annotations

import dataclasses

from PIL import Image
from PIL.PngImagePlugin import PngInfo
from PySide6.QtWidgets import QDialogButtonBox

from sd3desk.core.batch import read_batch
from sd3desk.core.settings import load_settings


def test_add_from_file_counts_the_jobs_then_queues_them(open_window, qtbot, tmp_path):
    window = open_window("--data-dir", str(tmp_path / "data"), "--model", "test")
    window.queue_panel.pause.trigger()  # nothing runs: the jobs are looked at as queued
    window.prompt_panel.steps.setValue(3)
    batch = tmp_path / "prompts.txt"
    batch.write_text("# two prompts, one with variants\na fox\na {red|blue} boat\n")
    dialog = window.add_from_file(str(batch))
    assert dialog is not None and dialog.isVisible()
    ok = dialog.buttons.button(QDialogButtonBox.StandardButton.Ok)
    assert dialog.summary.text() == "3 jobs from prompts.txt" and ok.text() == "Add 3 jobs"
    dialog.seeds.setValue(2)  # re-expanded a moment later
    qtbot.waitUntil(lambda: ok.text() == "Add 6 jobs", timeout=5000)
    assert "a red boat — seed" in dialog.preview.toPlainText()
    expected = read_batch(batch, window.prompt_panel.params(), seeds=2).jobs
    ok.click()
    waiting = window.runner.snapshot().waiting
    assert [j.params for j in waiting] == expected
    assert {j.params.steps for j in waiting} == {3}  # the form's, for what the file leaves out
    assert [j.params.prompt for j in waiting[::2]] == ["a fox", "a red boat", "a blue boat"]
    assert "Queued 6 jobs from prompts.txt" in window.statusBar().currentMessage()


def test_add_from_file_names_bad_lines_and_refuses_an_empty_file(open_window, qtbot, tmp_path):
    window = open_window("--data-dir", str(tmp_path / "data"), "--model", "test")
    window.queue_panel.pause.trigger()
    batch = tmp_path / "jobs.jsonl"
    batch.write_text('{"prompt": "a fox", "seed": 7}\n{"prompt": "x", "steps": 0}\nnot json\n')
    dialog = window.add_from_file(str(batch))
    assert dialog.summary.text() == "1 job from jobs.jsonl · 2 lines skipped"
    shown = dialog.preview.toPlainText().splitlines()
    assert shown[0].startswith("Skipped line 2:") and "steps" in shown[0]
    assert shown[1] == "Skipped line 3: is not a JSON object"
    assert shown[2].startswith("1. a fox — seed 7,")
    dialog.seed_mode.setCurrentIndex(1)  # counting from a seed: a line's own seed stays
    dialog.expand()
    assert dialog.jobs()[0].seed == 7
    dialog.reject()
    assert not window.runner.snapshot().waiting
    comments = tmp_path / "empty.txt"
    comments.write_text("# nothing but a comment\n")
    empty = window.add_from_file(str(comments))
    assert not empty.buttons.button(QDialogButtonBox.StandardButton.Ok).isEnabled()
    assert empty.summary.text() == "0 jobs from empty.txt"
    empty.reject()
    wrong = tmp_path / "notes.md"
    wrong.write_text("a fox\n")
    refused = window.add_from_file(str(wrong))
    assert "a batch file is .txt, .jsonl or .csv" in refused.summary.text()
    assert not refused.buttons.button(QDialogButtonBox.StandardButton.Ok).isEnabled()
    refused.reject()


def test_the_gallery_shows_an_added_folder_until_it_is_removed(open_window, qtbot, tmp_path):
    window = open_window("--data-dir", str(tmp_path / "data"), "--model", "test")
    gallery = window.gallery_panel.model
    qtbot.waitUntil(lambda: not window.gallery_panel.scanner.running, timeout=10_000)
    assert gallery.rowCount() == 0
    made_elsewhere = tmp_path / "batch-out" / "2026-12-03"
    made_elsewhere.mkdir(parents=True)
    info = PngInfo()
    info.add_text("parameters", "a lighthouse\nSteps: 20, Seed: 42, Size: 64x64")
    Image.new("RGB", (64, 64), "navy").save(made_elsewhere / "00001.png", pnginfo=info)
    window.add_gallery_folder(str(tmp_path / "batch-out"))
    qtbot.waitUntil(lambda: gallery.rowCount() == 1, timeout=10_000)
    assert gallery.gallery.search()[0].prompt == "a lighthouse"
    saved = load_settings(window.runtime.paths.settings_file)
    assert saved.gallery_dirs == (str((tmp_path / "batch-out").resolve()),)
    # removed in Settings: its images leave the gallery at the rescan
    window.session.apply_settings(dataclasses.replace(saved, gallery_dirs=()))
    qtbot.waitUntil(lambda: gallery.rowCount() == 0, timeout=10_000)
