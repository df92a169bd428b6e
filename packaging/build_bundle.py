"""Build the sd3desk bundle with PyInstaller, write its size manifest, then this OS's installers:
Linux .deb and .tar.gz, Windows Inno Setup installer (when `iscc` is on PATH), macOS .dmg.

python packaging/build_bundle.py [--dist DIR] [--work DIR] [--skip-bundle]

Run it with the Python of a build environment made from packaging/requirements/<target>.txt.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

PACKAGING = Path(__file__).resolve().parent
ROOT = PACKAGING.parent
sys.path.insert(0, str(PACKAGING))


def version() -> str:
    from importlib.metadata import version as dist_version

    return dist_version("sd3desk")


def build_bundle(dist: Path, work: Path) -> Path:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "PyInstaller",
            "--noconfirm",
            "--clean",
            "--log-level",
            "WARN",
            "--distpath",
            str(dist),
            "--workpath",
            str(work / "pyinstaller"),
            str(PACKAGING / "sd3desk.spec"),
        ],
        check=True,
        cwd=ROOT,
    )
    return bundle_path(dist)


def bundle_path(dist: Path) -> Path:
    """The onedir folder (inside the .app on macOS)."""
    if sys.platform == "darwin":
        return dist / "sd3desk.app" / "Contents" / "MacOS"
    return dist / "sd3desk"


def size_manifest(bundle: Path, top: int = 25) -> dict:
    """Total size, file count, size per top-level package and the largest files."""
    files = [p for p in bundle.rglob("*") if p.is_file() and not p.is_symlink()]
    internal = bundle / "_internal"
    groups: dict[str, int] = {}
    for path in files:
        rel = path.relative_to(internal if internal in path.parents else bundle)
        key = rel.parts[0] if len(rel.parts) > 1 else "(top level)"
        groups[key] = groups.get(key, 0) + path.stat().st_size
    largest = sorted(files, key=lambda p: p.stat().st_size, reverse=True)[:top]
    return {
        "total_bytes": sum(p.stat().st_size for p in files),
        "files": len(files),
        "by_package": dict(sorted(groups.items(), key=lambda kv: kv[1], reverse=True)),
        "largest_files": {str(p.relative_to(bundle)): p.stat().st_size for p in largest},
    }


def write_manifest(bundle: Path, out_dir: Path) -> Path:
    manifest = size_manifest(bundle)
    target = out_dir / f"sd3desk-{version()}-{sys.platform}-size-manifest.json"
    target.write_text(json.dumps(manifest, indent=2) + "\n", "utf-8")
    print(f"bundle: {manifest['total_bytes'] / 1e6:.0f} MB in {manifest['files']} files")
    for name, size in list(manifest["by_package"].items())[:10]:
        print(f"  {name:<28} {size / 1e6:8.1f} MB")
    return target


def installers(bundle: Path, dist: Path, work: Path) -> list[Path]:
    out = dist / "installer"
    if sys.platform.startswith("linux"):
        from linux_package import build_deb, build_tarball

        shutil.rmtree(work / "deb-root", ignore_errors=True)
        return [
            build_tarball(bundle, out, version()),
            build_deb(bundle, out, version(), work),
        ]
    if sys.platform == "win32":
        iscc = shutil.which("iscc") or shutil.which("ISCC")
        if iscc is None:
            print("iscc (Inno Setup 6) not found: no installer built", file=sys.stderr)
            return []
        subprocess.run(
            [
                iscc,
                f"/DAppVersion={version()}",
                f"/DBundleDir={bundle}",
                f"/DOutputDir={out}",
                str(PACKAGING / "windows" / "sd3desk.iss"),
            ],
            check=True,
        )
        return sorted(out.glob("sd3desk-*-setup*"))
    if sys.platform == "darwin":
        out.mkdir(parents=True, exist_ok=True)
        dmg = out / f"sd3desk-{version()}-macos-arm64.dmg"
        subprocess.run(
            [
                "hdiutil",
                "create",
                "-volname",
                "sd3desk",
                "-srcfolder",
                str(dist / "sd3desk.app"),
                "-ov",
                "-format",
                "UDZO",
                str(dmg),
            ],
            check=True,
        )
        return [dmg]
    return []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dist", type=Path, default=PACKAGING / "dist")
    parser.add_argument("--work", type=Path, default=PACKAGING / "build")
    parser.add_argument("--skip-bundle", action="store_true", help="reuse the bundle in --dist")
    args = parser.parse_args()
    start = time.perf_counter()
    bundle = bundle_path(args.dist) if args.skip_bundle else build_bundle(args.dist, args.work)
    print(f"bundle built in {time.perf_counter() - start:.0f} s: {bundle}")
    write_manifest(bundle, args.dist)
    for artifact in installers(bundle, args.dist, args.work):
        print(f"{artifact.name}: {artifact.stat().st_size / 1e6:.0f} MB")
    print(f"done in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
