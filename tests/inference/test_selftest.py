"""`sd3desk self-test`: the install check that every packaged bundle runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from sd3desk.selftest import run_self_test


def test_self_test_passes_through_both_loaders_the_queue_and_the_window(qtbot, tmp_path):
    report = run_self_test("cpu", work=tmp_path)
    assert report["ok"], report["steps"]
    assert [s["step"] for s in report["steps"]] == [
        "window",
        "device",
        "test model",
        "generate",
        "metadata",
    ]
    assert report["device"]["kind"] == "cpu"
    assert len(report["images"]) == 2  # one from the diffusers folder, one from the single file
    assert all(v != "missing" for v in report["versions"].values())


def test_a_missing_device_fails_with_words_not_a_crash(qtbot, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    report = run_self_test("cuda", work=tmp_path)
    assert not report["ok"]
    failed = report["steps"][-1]
    assert failed["step"] == "device" and "CUDA" in failed["error"]


def test_cli_self_test_prints_json_and_writes_the_report(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    out = subprocess.run(
        [sys.executable, "-m", "sd3desk", "self-test", "--report", str(tmp_path / "r.json")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    assert report["ok"] and report["qt_platform"] == "offscreen"
    assert json.loads((tmp_path / "r.json").read_text()) == report


def test_missing_qt_libraries_fail_the_window_step_with_the_command(qtbot, tmp_path, monkeypatch):
    from sd3desk import qt_platform

    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setattr(qt_platform, "loadable", lambda soname: soname != "libxcb-cursor.so.0")
    report = run_self_test("cpu", work=tmp_path)
    assert not report["ok"]
    window = report["steps"][0]
    assert window["step"] == "window" and not window["ok"]
    assert "sudo apt install libxcb-cursor0" in window["error"]
