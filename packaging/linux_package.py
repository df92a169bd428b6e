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

# What the bundled Qt loads from the system, by soname, and the packages that provide it: one
# table, shared with the window's own check at start.
from sd3desk.qt_platform import SONAME_PACKAGES

PACKAGING = Path(__file__).resolve().parent
ROOT = PACKAGING.parent
ICONS = ROOT / "sd3desk" / "resources" / "icons"
DESKTOP_FILE = PACKAGING / "linux" / "sd3desk.desktop"
INSTALL_DIR = "opt/sd3desk"
ICON_SIZES = (16, 24, 32, 48, 64, 128, 256, 512)

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
