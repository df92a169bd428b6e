"""Before Qt starts on Linux: missing xcb libraries are named with the command that installs
them, instead of Qt's abort; the list of libraries is the xcb plugin's own."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from sd3desk import qt_platform
from sd3desk.core.errors import ExitCode

DESKTOP = {"DISPLAY": ":0"}


@pytest.mark.parametrize(
    ("environ", "platform", "expected"),
    [
        (DESKTOP, "linux", True),
        ({**DESKTOP, "QT_QPA_PLATFORM": "xcb"}, "linux", True),
        ({**DESKTOP, "QT_QPA_PLATFORM": "offscreen"}, "linux", False),
        ({**DESKTOP, "QT_QPA_PLATFORM": "wayland;xcb"}, "linux", False),
        ({"XDG_SESSION_TYPE": "wayland", "WAYLAND_DISPLAY": "wayland-0"}, "linux", False),
        ({"XDG_SESSION_TYPE": "wayland"}, "linux", True),  # no compositor to talk to
        (DESKTOP, "darwin", False),
        (DESKTOP, "win32", False),
    ],
)
def test_the_check_runs_only_where_qt_starts_on_xcb(environ, platform, expected):
    assert qt_platform.uses_xcb(environ, platform) is expected


def test_missing_libraries_name_their_packages_and_the_install_command(capsys):
    gone = {"libxcb-cursor.so.0", "libxcb-icccm.so.4"}
    with pytest.raises(SystemExit) as exit_:
        qt_platform.exit_if_platform_unusable(DESKTOP, find=lambda soname: soname not in gone)
    assert exit_.value.code == ExitCode.error
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1  # one clear line, no traceback
    assert "libxcb-cursor0, libxcb-icccm4" in lines[0]
    assert lines[0].endswith("sudo apt install libxcb-cursor0 libxcb-icccm4")


def test_nothing_missing_or_another_platform_starts_normally(capsys):
    qt_platform.exit_if_platform_unusable(DESKTOP, find=lambda soname: True)
    qt_platform.exit_if_platform_unusable({"QT_QPA_PLATFORM": "offscreen"}, find=lambda s: False)
    assert capsys.readouterr().err == ""


def test_sd3desk_exits_1_before_qt_starts_without_libxcb_cursor(monkeypatch, capsys, tmp_path):
    """The `sd3desk` command itself (the window's entry), with the library lookup faked."""
    from sd3desk.cli import main

    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setattr(qt_platform, "loadable", lambda soname: soname != "libxcb-cursor.so.0")
    with pytest.raises(SystemExit) as exit_:
        main(["--data-dir", str(tmp_path)])
    assert exit_.value.code == 1
    assert "sudo apt install libxcb-cursor0" in capsys.readouterr().err
    assert not (tmp_path / "sd3desk.db").exists()  # nothing was started or written


def _needed(library: Path) -> set[str]:
    out = subprocess.run(["readelf", "-d", str(library)], capture_output=True, text=True)
    return set(re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", out.stdout))


@pytest.mark.skipif(shutil.which("readelf") is None, reason="no readelf")
def test_the_list_is_what_the_xcb_plugin_links():
    import PySide6

    qt = Path(PySide6.__file__).parent / "Qt"
    plugin = qt / "plugins" / "platforms" / "libqxcb.so"
    if not plugin.exists():
        pytest.skip("not a Linux PySide6")
    needed = _needed(plugin) | _needed(qt / "lib" / "libQt6XcbQpa.so.6")
    c_runtime = {"libc.so.6", "libm.so.6", "libstdc++.so.6", "libgcc_s.so.1"}
    system = {s for s in needed if not s.startswith("libQt6") and s not in c_runtime}
    assert system == set(qt_platform.XCB_PLUGIN_SONAMES)
    assert all(s in qt_platform.SONAME_PACKAGES for s in system)
