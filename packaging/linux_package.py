"""The Linux artifacts of a built bundle: a .deb (dpkg-deb) and a plain .tar.gz.

The .deb installs the bundle in /opt/sd3desk, links `sd3desk` and `sd3desk-cli` into /usr/bin,
and adds the desktop entry and icons. User data stays in the user's platformdirs folders, so an
upgrade or removal of the package never touches images or settings.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from pathlib import Path

PACKAGING = Path(__file__).resolve().parent
ROOT = PACKAGING.parent
ICONS = ROOT / "sd3desk" / "resources" / "icons"
DESKTOP_FILE = PACKAGING / "linux" / "sd3desk.desktop"
INSTALL_DIR = "opt/sd3desk"
ICON_SIZES = (16, 24, 32, 48, 64, 128, 256, 512)

# What the Qt libraries in the bundle load from the system: the xcb platform plugin's X11/xcb
# libraries, EGL/GL, fontconfig/freetype, D-Bus and GLib (Qt's "X11 requirements"). The keys are
# the sonames those libraries ask for (tests/unit/test_packaging.py reads them from the ELF
# files), the values the Debian/Ubuntu packages that provide them.
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
# The C/C++ runtime: always there, and versioned by the bundle's build system (manylinux).
BASE_SONAMES = {
    "libc.so.6",
    "libm.so.6",
    "libdl.so.2",
    "librt.so.1",
    "libpthread.so.0",
    "libstdc++.so.6",
    "libgcc_s.so.1",
    "ld-linux-x86-64.so.2",
    "ld-linux-aarch64.so.1",
}
DEPENDS = sorted(set(SONAME_PACKAGES.values()))


def debian_arch() -> str:
    machine = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def control_text(version: str, installed_kib: int, arch: str | None = None) -> str:
    """The DEBIAN/control file."""
    return (
        "Package: sd3desk\n"
        f"Version: {version}\n"
        "Section: graphics\n"
        "Priority: optional\n"
        f"Architecture: {arch or debian_arch()}\n"
        "Maintainer: sd3desk developers <sd3desk@users.noreply.github.com>\n"
        f"Installed-Size: {installed_kib}\n"
        f"Depends: {', '.join(DEPENDS)}\n"
        # Qt's GTK platform theme (native dialogs and colours on GNOME); Qt skips it without.
        "Recommends: libgtk-3-0t64 | libgtk-3-0\n"
        "Homepage: https://github.com/sd3desk/sd3desk\n"
        "Description: generate images with Stable Diffusion 3 on your own computer\n"
        " A desktop app for SD3 Medium and SD3.5 with a persistent job queue, live\n"
        " previews and a searchable gallery. Models are not included: it finds them\n"
        " on disk or downloads them from Hugging Face when asked.\n"
    )


def _tree_kib(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) // 1024


def stage_deb_root(bundle: Path, root: Path, version: str) -> Path:
    """Lay out the package's files under `root` (what dpkg-deb packs)."""
    shutil.copytree(bundle, root / INSTALL_DIR, symlinks=True)
    bin_dir = root / "usr" / "bin"
    bin_dir.mkdir(parents=True)
    for name in ("sd3desk", "sd3desk-cli"):
        (bin_dir / name).symlink_to(f"/{INSTALL_DIR}/{name}")
    apps = root / "usr" / "share" / "applications"
    apps.mkdir(parents=True)
    shutil.copy2(DESKTOP_FILE, apps / "sd3desk.desktop")
    hicolor = root / "usr" / "share" / "icons" / "hicolor"
    for size in ICON_SIZES:
        target = hicolor / f"{size}x{size}" / "apps"
        target.mkdir(parents=True)
        shutil.copy2(ICONS / f"sd3desk-{size}.png", target / "sd3desk.png")
    (hicolor / "scalable" / "apps").mkdir(parents=True)
    shutil.copy2(ICONS / "sd3desk.svg", hicolor / "scalable" / "apps" / "sd3desk.svg")
    debian = root / "DEBIAN"
    debian.mkdir()
    (debian / "control").write_text(control_text(version, _tree_kib(root)), "utf-8")
    return root


def build_deb(bundle: Path, out_dir: Path, version: str, work: Path) -> Path:
    """sd3desk_VERSION_ARCH.deb from the onedir bundle (files owned by root)."""
    root = stage_deb_root(bundle, work / "deb-root", version)
    out_dir.mkdir(parents=True, exist_ok=True)
    deb = out_dir / f"sd3desk_{version}_{debian_arch()}.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-Zxz", "-z6", "--build", str(root), str(deb)],
        check=True,
    )
    return deb


def build_tarball(bundle: Path, out_dir: Path, version: str) -> Path:
    """sd3desk-VERSION-linux-ARCH.tar.gz: the bundle folder, to unpack and run anywhere."""
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"sd3desk-{version}-linux-{os.uname().machine}.tar.gz"
    with tarfile.open(target, "w:gz", compresslevel=6) as tar:
        tar.add(bundle, arcname=f"sd3desk-{version}")
    return target
