"""Screenshots of the main window: empty, generating (live preview), with results, and at its
minimum size, in the light or dark theme. For looking at the UI as a user would.

xvfb-run -a -s "-screen 0 1400x900x24" python tools/screenshot_window.py SHOT_DIR [light|dark]
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from sd3desk.app import create_window
from sd3desk.core.jobs import JobState


def main() -> None:
    shots = Path(sys.argv[1])
    theme = sys.argv[2] if len(sys.argv) > 2 else "light"
    shots.mkdir(parents=True, exist_ok=True)
    data = Path(tempfile.mkdtemp())
    (data / "settings.json").write_text(json.dumps({"theme": theme, "device": "cpu"}))
    window = create_window(["--data-dir", str(data), "--model", "test"])
    window.resize(1280, 800)
    window.show()
    app = QApplication.instance()
    panel = window.prompt_panel
    state = {"generating": False}

    def shot(name: str) -> None:
        window.grab().save(str(shots / f"{theme}-{name}.png"))
        print("saved", shots / f"{theme}-{name}.png", flush=True)

    def on_step(event) -> None:
        if event.step == 20 and not state["generating"]:
            state["generating"] = True
            shot("generating")

    def on_job(_event) -> None:
        done = [j for j in window.runner.snapshot().jobs if j.state is JobState.finished]
        if len(done) == 4:
            QTimer.singleShot(1500, finish)

    def queue_jobs() -> None:
        shot("empty")
        window.runner.step_progressed.connect(on_step)
        window.runner.job_changed.connect(on_job)
        window.open_model_setup()
        dialog = window.setup_dialog
        dialog.grab().save(str(shots / f"{theme}-models-dialog.png"))
        dialog.reject()
        from sd3desk.ui.settings_dialog import SettingsDialog

        settings = SettingsDialog(window.session.settings, "~/Pictures/sd3desk", window)
        settings.show()
        settings.grab().save(str(shots / f"{theme}-settings-dialog.png"))
        settings.reject()
        panel.prompt.setPlainText(
            "a lighthouse on a rocky coast at dusk, warm light in the windows, long exposure"
        )
        panel.negative.setPlainText("blurry, low contrast")
        panel.set_size(512, 512)
        panel.steps.setValue(40)
        window.generate()
        panel.steps.setValue(6)
        for _ in range(3):
            window.generate()

    def finish() -> None:
        shot("results")
        window.resize(window.minimumSize())
        QTimer.singleShot(800, lambda: (shot("minimum"), app.quit()))

    QTimer.singleShot(1500, queue_jobs)
    app.exec()
    window.session.shutdown()


if __name__ == "__main__":
    main()
