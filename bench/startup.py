"""Process start to the main window exposed, against a bare PySide6 window in the same run.

Each run is a fresh process (`python -m sd3desk` with a throwaway --data-dir, and a bare
QMainWindow script); the clock runs from just before the process is spawned until it prints
"exposed" from its first Expose event. Targets: <= 1.0 s absolute and <= 2x the bare window.
Needs a display: run under `xvfb-run` (or QT_QPA_PLATFORM=offscreen, which is faster than real).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from common import ROOT

BARE = """
import os
from PySide6.QtCore import QEvent, QObject
from PySide6.QtWidgets import QApplication, QMainWindow
app = QApplication([])
w = QMainWindow()
w.resize(1280, 800)
w.show()
from PySide6.QtCore import QTimer
class Probe(QObject):
    def eventFilter(self, watched, event):
        if event.type() == QEvent.Type.Expose and watched.isExposed():
            watched.removeEventFilter(self)
            print("exposed", flush=True)
            QTimer.singleShot(0, lambda: (print("painted", flush=True), os._exit(0)))
        return False
probe = Probe()
w.windowHandle().installEventFilter(probe)
app.exec()
"""


def time_to_window(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Seconds from spawning `command` to its window's first Expose event, and to the end of
    the first paint that follows it."""
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, env=env, cwd=ROOT, text=True)
    assert child.stdout is not None
    times = []
    for expected in ("exposed", "painted"):
        line = child.stdout.readline()
        times.append(time.perf_counter() - start)
        if line.strip() != expected:
            raise SystemExit(f"{command[:3]} did not report its window (got {line!r})")
    child.wait(timeout=30)
    return times[0], times[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    env = dict(os.environ, SD3DESK_STARTUP_PROBE="1")
    python = sys.executable
    # Installed apps run from bytecode (pip and PyInstaller compile it); a source checkout
    # with PYTHONDONTWRITEBYTECODE set would recompile sd3desk on every start.
    subprocess.run([python, "-m", "compileall", "-q", str(ROOT / "sd3desk")], check=True)
    runs: dict[str, list[tuple[float, float]]] = {"bare PySide6 window": [], "sd3desk window": []}
    with tempfile.TemporaryDirectory() as data:
        app = [python, "-m", "sd3desk", "--data-dir", data, "--model", "test"]
        time_to_window(app, env)  # first start creates the database and settings: not timed
        for _ in range(args.runs):  # interleaved, so machine noise hits both alike
            runs["bare PySide6 window"].append(time_to_window([python, "-c", BARE], env))
            runs["sd3desk window"].append(time_to_window(app, env))
    platform = os.environ.get("QT_QPA_PLATFORM", "default")
    print(f"process start -> window, {args.runs} runs each, Qt platform {platform}")
    for column, label in ((0, "exposed"), (1, "first frame painted")):
        medians = {}
        print(f" {label}:")
        for name, values in runs.items():
            times = sorted(v[column] for v in values)
            medians[name] = statistics.median(times)
            print(
                f"  {name:<20} median {medians[name] * 1000:6.0f} ms   "
                f"p90 {times[int(0.9 * (len(times) - 1))] * 1000:6.0f} ms"
            )
        ratio = medians["sd3desk window"] / medians["bare PySide6 window"]
        print(f"  ratio sd3desk / bare: {ratio:.2f}   (targets: <= 1.0 s and <= 2.0x)")


if __name__ == "__main__":
    main()
