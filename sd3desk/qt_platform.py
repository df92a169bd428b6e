"""Before the window's QApplication exists on Linux: are the system libraries of Qt's xcb platform
plugin there? Without them Qt aborts with "could not load the Qt platform plugin xcb" and a hint
about one package; this names every missing package and the command that installs them."""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from sd3desk.core.errors import ExitCode

# What the Qt libraries load from the system: the xcb platform plugin's X11/xcb libraries,
# EGL/GL, fontconfig/freetype, D-Bus and GLib (Qt's "X11 requirements"). Keys are the sonames
# those libraries ask for (tests read them from the ELF files), values the Debian/Ubuntu packages
# that provide them. packaging/linux_package.py makes the .deb's Depends from this table.
SONAME_PACKAGES = {
    "libX11.so.6": "libx11-6",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libxcb.so.1": "libxcb1",
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-glx.so.0": "libxcb-glx0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-render.so.0": "libxcb-render0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-util.so.1": "libxcb-util1",
    "libxcb-xfixes.so.0": "libxcb-xfixes0",
    "libxcb-xinerama.so.0": "libxcb-xinerama0",
    "libxcb-xinput.so.0": "libxcb-xinput0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libSM.so.6": "libsm6",
    "libICE.so.6": "libice6",
    "libEGL.so.1": "libegl1",
    "libGL.so.1": "libgl1",
    "libOpenGL.so.0": "libopengl0",
    "libGLX.so.0": "libglx0",
    "libfontconfig.so.1": "libfontconfig1",
    "libfreetype.so.6": "libfreetype6",
    "libdbus-1.so.3": "libdbus-1-3",
    "libglib-2.0.so.0": "libglib2.0-0t64 | libglib2.0-0",
    "libgthread-2.0.so.0": "libglib2.0-0t64 | libglib2.0-0",
    "libgobject-2.0.so.0": "libglib2.0-0t64 | libglib2.0-0",
    "libz.so.1": "zlib1g",
    "libzstd.so.1": "libzstd1",
}
# What the xcb plugin itself (libqxcb.so and libQt6XcbQpa.so.6) needs beyond Qt's own libraries
# and the C runtime (tests/unit/test_qt_platform.py reads the plugin's ELF to keep this true).
XCB_PLUGIN_SONAMES = (
    "libX11.so.6",
    "libX11-xcb.so.1",
    "libxcb.so.1",
    "libxcb-cursor.so.0",
    "libxcb-icccm.so.4",
    "libxcb-image.so.0",
    "libxcb-keysyms.so.1",
    "libxcb-randr.so.0",
    "libxcb-render.so.0",
    "libxcb-render-util.so.0",
    "libxcb-shape.so.0",
    "libxcb-shm.so.0",
    "libxcb-sync.so.1",
    "libxcb-util.so.1",
    "libxcb-xfixes.so.0",
    "libxcb-xkb.so.1",
    "libxkbcommon.so.0",
    "libxkbcommon-x11.so.0",
    "libGL.so.1",
    "libglib-2.0.so.0",
    "libgthread-2.0.so.0",
)


def uses_xcb(environ: Mapping[str, str], platform: str = sys.platform) -> bool:
    """Whether Qt will start on its xcb plugin (X11): Linux, unless another platform is asked
    for (QT_QPA_PLATFORM, first choice) or this is a Wayland session, which Qt 6 prefers."""
    if not platform.startswith("linux"):
        return False
    asked = environ.get("QT_QPA_PLATFORM", "").split(";")[0].split(":")[0].strip()
    if asked:
        return asked == "xcb"
    wayland = environ.get("XDG_SESSION_TYPE") == "wayland" and bool(environ.get("WAYLAND_DISPLAY"))
    return not wayland


def loadable(soname: str) -> bool:
    """Whether `soname` will load: a file in the usual library folders, next to Qt's own
    libraries or in a frozen bundle (a stat each: this runs before the first frame), else what
    the dynamic linker itself says (for folders set up in /etc/ld.so.conf)."""
    if any((folder / soname).exists() for folder in _library_folders()):
        return True
    import ctypes  # only now: the fast path above finds nearly every library

    try:
        ctypes.CDLL(soname, mode=os.RTLD_LAZY)  # the plugin would load it anyway
        return True
    except OSError:
        return False


@functools.cache
def _library_folders() -> tuple[Path, ...]:
    multiarch = getattr(sys.implementation, "_multiarch", "") or f"{os.uname().machine}-linux-gnu"
    folders = [Path(p) for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p]
    for root in ("/usr/lib", "/lib"):
        folders += [Path(root) / multiarch, Path(root + "64"), Path(root)]
    spec = importlib.util.find_spec("PySide6")
    locations = (spec.submodule_search_locations or []) if spec is not None else []
    folders += [Path(location) / "Qt" / "lib" for location in locations]
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        folders.append(Path(bundle))
    return tuple(folders)


def missing_packages(find: Callable[[str], bool] | None = None) -> list[str]:
    """The packages of the xcb plugin's libraries that `find` (default: `loadable`) cannot
    find, sorted."""
    find = find or loadable
    return sorted({SONAME_PACKAGES[s] for s in XCB_PLUGIN_SONAMES if not find(s)})


def unusable_reason(
    environ: Mapping[str, str] | None = None, find: Callable[[str], bool] | None = None
) -> str:
    """Why Qt's platform plugin cannot start here, with the command that fixes it; "" when it
    can (or when Qt will not use its xcb plugin)."""
    if not uses_xcb(os.environ if environ is None else environ):
        return ""
    packages = missing_packages(find)
    if not packages:
        return ""
    names = [p.split(" | ")[-1] for p in packages]  # the name older releases also know
    return (
        f"the window needs system libraries that are missing: {', '.join(names)}. "
        f"Install them with: sudo apt install {' '.join(names)}"
    )


def exit_if_platform_unusable(
    environ: Mapping[str, str] | None = None, find: Callable[[str], bool] | None = None
) -> None:
    """On an X11 desktop without the libraries Qt's xcb plugin needs, print one line naming the
    packages and how to install them, then exit 1 (Qt itself would abort with a riddle)."""
    reason = unusable_reason(environ, find)
    if reason:
        print(f"sd3desk: {reason}", file=sys.stderr)
        raise SystemExit(ExitCode.error)
