"""The local proof of the Linux packaging (`make package`; CI's Linux job runs the same):

1. a build environment from packaging/requirements/<target>.txt (the CPU torch by default),
2. the PyInstaller bundle, its size manifest, the .tar.gz and the .deb (packaging/build_bundle.py),
3. the .deb extracted into a temporary root and `sd3desk-cli self-test` run there with a clean
   environment (`env -i`, offscreen Qt, Hugging Face offline, an empty home),
4. the frozen window started under Xvfb and a screenshot saved, to look at.

Takes several minutes; artifacts land in packaging/dist/.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PACKAGING = Path(__file__).resolve().parent
ROOT = PACKAGING.parent
DIST = PACKAGING / "dist"
WORK = PACKAGING / "build"


def step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def build_env(requirements: Path) -> Path:
    """A fresh virtual environment with the pinned build requirements and sd3desk itself."""
    venv = WORK / "venv"
    python = venv / "bin" / "python"
    stamp = venv / ".requirements"
    wanted = requirements.read_text() + (ROOT / "pyproject.toml").read_text()
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    if not (python.exists() and stamp.exists() and stamp.read_text() == wanted):
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([*pip, "-r", str(requirements)], check=True)
        stamp.write_text(wanted)
    # sd3desk itself every time (seconds): the bundle must carry the code as it is now
    subprocess.run([*pip, "--no-deps", "--force-reinstall", str(ROOT)], check=True)
    return python


def self_test(root: Path, home: Path) -> dict:
    """`sd3desk-cli self-test` from the extracted package, with nothing from this environment."""
    report = home / "self-test.json"
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "QT_QPA_PLATFORM": "offscreen",
        "HF_HUB_OFFLINE": "1",
        "LANG": "C.UTF-8",
    }
    command = [str(root / "opt/sd3desk/sd3desk-cli"), "self-test", "--report", str(report)]
    result = subprocess.run(["env", "-i", *[f"{k}={v}" for k, v in env.items()], *command])
    data = json.loads(report.read_text()) if report.exists() else {"ok": False}
    data["exit_code"] = result.returncode
    return data


SHOOT = """
import subprocess, sys, time
from PIL import ImageGrab
app = subprocess.Popen(sys.argv[1:-1])
time.sleep(12)  # first start: the window, then the gallery and the model search
ImageGrab.grab().save(sys.argv[-1])
app.terminate()
app.wait(timeout=30)
"""


def screenshot(python: Path, root: Path, home: Path, target: Path) -> None:
    """The frozen window under Xvfb (xvfb-run), grabbed from the virtual screen."""
    if shutil.which("xvfb-run") is None:
        print("xvfb-run not found: no screenshot (apt-get install xvfb)")
        return
    env = dict(os.environ, HOME=str(home), HF_HUB_OFFLINE="1")
    env.pop("QT_QPA_PLATFORM", None)
    subprocess.run(
        [
            "xvfb-run",
            "-a",
            "-s",
            "-screen 0 1280x800x24",
            str(python),  # the build environment's: it has Pillow
            "-c",
            SHOOT,
            str(root / "opt/sd3desk/sd3desk"),
            "--model",
            "test",
            str(target),
        ],
        check=True,
        env=env,
        timeout=120,
    )
    print(f"screenshot: {target}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--requirements", type=Path, default=PACKAGING / "requirements" / "linux-cpu.txt"
    )
    parser.add_argument("--skip-build", action="store_true", help="reuse packaging/dist")
    args = parser.parse_args()
    start = time.perf_counter()
    step(f"build environment from {args.requirements.name}")
    python = build_env(args.requirements.resolve())
    if not args.skip_build:
        step("bundle, size manifest, .tar.gz and .deb")
        shutil.rmtree(DIST, ignore_errors=True)
        subprocess.run([str(python), str(PACKAGING / "build_bundle.py")], check=True, cwd=ROOT)
    built = time.perf_counter() - start
    debs = sorted((DIST / "installer").glob("sd3desk_*.deb"))
    if not debs:
        print("no .deb was built", file=sys.stderr)
        return 1
    proof = DIST / "proof"
    proof.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sd3desk-proof-") as temp:
        root, home = Path(temp) / "root", Path(temp) / "home"
        home.mkdir()
        step(f"extract {debs[-1].name} and self-test it with a clean environment")
        subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(root)], check=True)
        report = self_test(root, home)
        (proof / "self-test.json").write_text(json.dumps(report, indent=2) + "\n")
        for s in report.get("steps", []):
            print(f"  {s['step']:<11} {'ok' if s['ok'] else 'FAILED'} {s['seconds']:7.2f} s")
        step("the frozen window under Xvfb")
        screenshot(python, root, home, proof / "window.png")
    print(f"\nbuild {built:.0f} s, proof {time.perf_counter() - start - built:.0f} s")
    for artifact in sorted((DIST / "installer").iterdir()):
        print(f"  {artifact.name}: {artifact.stat().st_size / 1e6:.0f} MB")
    if not report.get("ok") or report.get("exit_code") != 0:
        print("self-test FAILED: see packaging/dist/proof/self-test.json", file=sys.stderr)
        return 1
    print("self-test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
