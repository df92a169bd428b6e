"""The packaging helpers: the PyInstaller spec and hooks, pruning, the .deb and .desktop file,
the Inno Setup script. The bundle itself is proven by `make package` (packaging/prove_linux.py)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGING = ROOT / "packaging"
sys.path.insert(0, str(PACKAGING))

import linux_package  # noqa: E402
from build_bundle import size_manifest  # noqa: E402
from prune import EXCLUDED_MODULES, keep  # noqa: E402


class _Recorder:
    """Stands in for PyInstaller's spec globals and remembers every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple, dict]] = []

    def make(self, kind: str):
        def build(*args, **kwargs):
            self.calls.append((kind, args, kwargs))
            scripts = [("pyi_rth_inspect", "rth.py", "PYSOURCE"), ("entry", "entry.py", "PYSOURCE")]
            return SimpleNamespace(scripts=scripts, datas=[], binaries=[], pure=[])

        return build


def _run_spec(dist: Path) -> _Recorder:
    recorder = _Recorder()
    names = {k: recorder.make(k) for k in ("Analysis", "PYZ", "EXE", "COLLECT", "BUNDLE")}
    source = (PACKAGING / "sd3desk.spec").read_text()
    (dist / "sd3desk").mkdir(parents=True, exist_ok=True)
    spec_globals = {**names, "SPECPATH": str(PACKAGING), "DISTPATH": str(dist)}
    exec(compile(source, "sd3desk.spec", "exec"), spec_globals)
    return recorder


def test_spec_builds_one_bundle_with_the_window_and_the_cli(tmp_path):
    recorder = _run_spec(tmp_path)
    analysis = next(c for c in recorder.calls if c[0] == "Analysis")
    assert analysis[1][0] == [str(PACKAGING / "entry.py")]
    assert analysis[2]["hookspath"] == [str(PACKAGING / "hooks")]
    assert analysis[2]["excludes"] == EXCLUDED_MODULES
    exes = [c for c in recorder.calls if c[0] == "EXE"]
    assert [e[2]["name"] for e in exes] == ["sd3desk"]  # not Windows: one executable...
    link = tmp_path / "sd3desk" / "sd3desk-cli"
    assert link.is_symlink() and os.readlink(link) == "sd3desk"  # ...and the CLI beside it
    collect = next(c for c in recorder.calls if c[0] == "COLLECT")
    assert collect[2]["name"] == "sd3desk"


def test_spec_on_windows_builds_a_windowed_and_a_console_executable(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "platform", "win32")
    recorder = _run_spec(tmp_path)
    exes = {c[2]["name"]: c[2] for c in recorder.calls if c[0] == "EXE"}
    assert exes["sd3desk"]["console"] is False and exes["sd3desk-cli"]["console"] is True
    assert exes["sd3desk"]["icon"].endswith("sd3desk.ico")
    assert not (tmp_path / "sd3desk" / "sd3desk-cli").exists()


def test_entry_point_opens_the_window_or_runs_a_command():
    assert "from sd3desk.cli import main" in (PACKAGING / "entry.py").read_text()
    from sd3desk.cli import build_parser

    args = build_parser().parse_args(["--self-test", "cuda", "--report", "r.json"])
    assert (args.command, args.self_test, str(args.report)) == (None, "cuda", "r.json")


def test_diffusers_hook_carries_the_metadata_its_import_checks():
    pytest.importorskip("PyInstaller")
    namespace: dict = {}
    source = (PACKAGING / "hooks" / "hook-diffusers.py").read_text()
    exec(compile(source, "hook-diffusers.py", "exec"), namespace)
    dist_infos = {
        Path(dest).name.split("-")[0].lower().replace("_", "-") for _, dest in namespace["datas"]
    }
    # diffusers' import checks these distributions' versions (dependency_versions_check.py)
    for name in ("diffusers", "requests", "filelock", "numpy", "huggingface-hub", "safetensors"):
        assert name in dist_infos, name
    assert (
        "diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3"
        in namespace["hiddenimports"]
    )
    assert not any("flax" in m or "onnx" in m for m in namespace["hiddenimports"])


def test_pruning_drops_build_files_and_keeps_what_torch_imports():
    for dropped in (
        "torch/include/ATen/ATen.h",
        "torch/lib/libprotobuf.a",
        "torch/share/cmake/Torch/TorchConfig.cmake",
        "torch/test/test_nn.py",
        "PySide6/Qt/translations/qt_de.qm",
        "PySide6/Qt/lib/libQt6Quick.so.6",
        "gradio/templates/frontend/static/ffmpeg/ffmpeg-core.wasm",
    ):
        assert not keep(dropped), dropped
    for kept in (
        "torch/lib/libtorch_cpu.so",
        "torch/lib/libgomp.so.1",
        "torch/_C.cpython-311-x86_64-linux-gnu.so",
        "PySide6/Qt/lib/libQt6Widgets.so.6",
        "PySide6/Qt/plugins/platforms/libqxcb.so",
        "sd3desk/resources/configs/sd3-medium/model_index.json",
        "torch\\lib\\torch_cpu.dll",
        "gradio/templates/frontend/index.html",
        "gradio/templates/frontend/gradio.js",
    ):
        assert keep(kept), kept


@pytest.mark.skipif(shutil.which("desktop-file-validate") is None, reason="no desktop-file-utils")
def test_desktop_file_validates():
    out = subprocess.run(
        ["desktop-file-validate", str(linux_package.DESKTOP_FILE)], capture_output=True, text=True
    )
    assert out.returncode == 0 and not out.stdout.strip(), out.stdout


def _needed(library: Path) -> list[str]:
    out = subprocess.run(["readelf", "-d", str(library)], capture_output=True, text=True)
    return re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", out.stdout)


@pytest.mark.skipif(shutil.which("readelf") is None, reason="no readelf")
def test_deb_depends_on_every_system_library_qt_loads():
    """Every soname the bundled Qt libraries and the xcb plugin need is in the bundle, in the
    C runtime, or provided by a package the .deb depends on."""
    import PySide6

    qt = Path(PySide6.__file__).parent / "Qt"
    if not (qt / "plugins" / "platforms" / "libqxcb.so").exists():
        pytest.skip("not a Linux PySide6")
    libraries = [
        qt / "plugins" / "platforms" / "libqxcb.so",
        *[qt / "lib" / f"libQt6{m}.so.6" for m in ("Core", "Gui", "Widgets", "DBus", "XcbQpa")],
    ]
    shipped = {p.name for p in (qt / "lib").iterdir()}
    control = linux_package.control_text("1.0", 1000, "amd64")
    depends = re.search(r"^Depends: (.+)$", control, re.M).group(1)
    missing = []
    for library in libraries:
        for soname in _needed(library):
            if soname in shipped or soname in linux_package.BASE_SONAMES:
                continue
            package = linux_package.SONAME_PACKAGES.get(soname)
            if package is None or package not in depends:
                missing.append(f"{library.name} needs {soname}")
    assert not missing


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="no dpkg-deb")
def test_deb_lays_out_the_bundle_links_desktop_entry_and_icons(tmp_path):
    bundle = tmp_path / "bundle"
    (bundle / "_internal").mkdir(parents=True)
    for name in ("sd3desk", "sd3desk-cli"):
        (bundle / name).write_text("#!/bin/sh\n")
        (bundle / name).chmod(0o755)
    (bundle / "_internal" / "base_library.zip").write_bytes(b"x" * 2048)
    deb = linux_package.build_deb(bundle, tmp_path / "out", "1.2.3", tmp_path / "work")
    info = subprocess.run(["dpkg-deb", "-I", str(deb)], capture_output=True, text=True).stdout
    assert "Package: sd3desk" in info and "Version: 1.2.3" in info
    assert "libxcb-cursor0" in info and "libegl1" in info
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True).stdout
    for path in (
        "./opt/sd3desk/sd3desk",
        "./opt/sd3desk/_internal/base_library.zip",
        "./usr/bin/sd3desk -> /opt/sd3desk/sd3desk",
        "./usr/bin/sd3desk-cli -> /opt/sd3desk/sd3desk-cli",
        "./usr/share/applications/sd3desk.desktop",
        "./usr/share/icons/hicolor/256x256/apps/sd3desk.png",
        "./usr/share/icons/hicolor/scalable/apps/sd3desk.svg",
    ):
        assert path in listing, path
    assert "root/root" in listing  # owned by root whoever built it
    tarball = linux_package.build_tarball(bundle, tmp_path / "out", "1.2.3")
    assert tarball.exists() and tarball.stat().st_size > 0


def test_inno_setup_script_installs_per_user_in_pieces_under_2_gib():
    """No Inno Setup compiler runs here (CI compiles it on Windows); check its settings."""
    script = (PACKAGING / "windows" / "sd3desk.iss").read_text()
    setup = dict(re.findall(r"^(\w+)=(.*)$", script, re.M))
    assert setup["PrivilegesRequired"] == "lowest"
    assert setup["DefaultDirName"] == r"{autopf}\sd3desk"  # %LOCALAPPDATA%\Programs per user
    assert setup["DiskSpanning"] == "yes"
    assert int(setup["DiskSliceSize"]) < 2**31
    assert "{autoprograms}" in script and "sd3desk.exe" in script
    icon = PACKAGING / "windows" / setup["SetupIconFile"].replace("\\", "/")
    assert icon.resolve().exists()


def test_size_manifest_sums_packages_and_lists_the_largest(tmp_path):
    internal = tmp_path / "_internal"
    (internal / "torch" / "lib").mkdir(parents=True)
    (internal / "torch" / "lib" / "libtorch_cpu.so").write_bytes(b"x" * 5000)
    (internal / "PySide6").mkdir()
    (internal / "PySide6" / "QtCore.so").write_bytes(b"x" * 3000)
    (tmp_path / "sd3desk").write_bytes(b"x" * 100)
    manifest = size_manifest(tmp_path)
    assert manifest["total_bytes"] == 8100 and manifest["files"] == 3
    assert list(manifest["by_package"].items())[:2] == [("torch", 5000), ("PySide6", 3000)]
    assert next(iter(manifest["largest_files"])) == "_internal/torch/lib/libtorch_cpu.so"


def test_workflow_builds_every_os_and_runs_the_local_linux_proof():
    yaml = pytest.importorskip("yaml")
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "package.yml").read_text())
    job = workflow["jobs"]["package"]
    targets = {entry["target"] for entry in job["strategy"]["matrix"]["include"]}
    assert targets == {"linux-cpu", "linux-cuda", "windows-cuda", "macos-arm64"}
    for target in targets:
        assert (PACKAGING / "requirements" / f"{target}.txt").exists(), target
    runs = "\n".join(step.get("run", "") for step in job["steps"])
    assert "python packaging/prove_linux.py" in runs  # what `make package` runs
    # each OS: the bundle, then the installed app (Linux: the bundle inside prove_linux.py)
    assert runs.count("self-test") >= 5
    assert "/VERYSILENT" in runs and "hdiutil attach" in runs and "apt-get install -y ./" in runs
    assert "package" in (ROOT / "Makefile").read_text()
