"""The window serving its queue (File → Settings → Serve on this computer): a job posted over
HTTP shows in the window's queue, marked as such, and its image in the gallery."""

from __future__ import annotations

import dataclasses
import json
import socket
import threading

import httpx
from PySide6.QtWidgets import QWidget

from sd3desk.app import create_window
from sd3desk.core.jobs import JobState


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_job_posted_over_http_runs_in_the_window_and_lands_in_its_gallery(qtbot, tmp_path):
    port = free_port()
    settings = {"device": "cpu", "serve": True, "serve_port": port}
    (tmp_path / "settings.json").write_text(json.dumps(settings))
    window = create_window(["--data-dir", str(tmp_path), "--model", "test"])
    qtbot.addWidget(window)
    window.show()
    try:
        label = window.server_label
        qtbot.waitUntil(lambda: "Serving at" in label.text(), timeout=120_000)
        assert f"http://127.0.0.1:{port}/" in label.text() and label.isVisible()
        answers: list[httpx.Response] = []
        body = {"prompt": "from the phone", "steps": 2, "width": 256, "height": 256}
        poster = threading.Thread(
            target=lambda: answers.append(
                httpx.post(f"http://127.0.0.1:{port}/api/v1/jobs", json=body, timeout=60)
            )
        )
        poster.start()  # this thread keeps running the window (and the runner's commands)
        qtbot.waitUntil(lambda: not poster.is_alive(), timeout=60_000)
        assert answers[0].status_code == 201
        job_id = answers[0].json()["id"]
        model = window.queue_panel.model
        row = model.row_of(job_id)
        assert row >= 0 and "from the API 127.0.0.1" in model.data(model.index(row))
        qtbot.waitUntil(
            lambda: window.runner.job(job_id).state is JobState.finished, timeout=90_000
        )
        gallery = window.gallery_panel
        qtbot.waitUntil(lambda: gallery is not None and gallery.model.rowCount() == 1)
        assert gallery.model.row_at(0).prompt == "from the phone"
        # serving off again, with a client's event stream open: the port is free at once
        opened = threading.Event()

        def listen() -> None:
            try:
                with httpx.stream("GET", f"http://127.0.0.1:{port}/api/v1/events") as stream:
                    opened.set()
                    for _line in stream.iter_lines():
                        pass
            except httpx.HTTPError:
                pass  # cut off as the server stops

        listener = threading.Thread(target=listen, daemon=True)
        listener.start()
        assert opened.wait(30)
        window.session.apply_settings(dataclasses.replace(window.session.settings, serve=False))
        assert not label.isVisible()
        with socket.socket() as sock:  # (closed connections may linger in TIME_WAIT)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
    finally:
        window.session.shutdown()
        window.close()


def test_the_settings_dialog_offers_serving(qtbot, tmp_path):
    window = create_window(["--data-dir", str(tmp_path), "--model", "test"])
    qtbot.addWidget(window)
    from sd3desk.ui.settings_dialog import SettingsDialog

    dialog = SettingsDialog(window.session.settings, "", window)
    qtbot.addWidget(dialog)
    box = dialog.findChild(QWidget, "serveBox")
    assert box is not None and not dialog.serve.isChecked()
    dialog.serve.setChecked(True)
    dialog.serve_host.setText("0.0.0.0")
    dialog.serve_port.setValue(8123)
    chosen = dialog.result_settings()
    assert (chosen.serve, chosen.serve_host, chosen.serve_port) == (True, "0.0.0.0", 8123)
    window.session.shutdown()


def test_the_serving_link_carries_the_token_and_its_tooltip_names_it(qtbot, tmp_path):
    window = create_window(["--data-dir", str(tmp_path), "--model", "test"])
    qtbot.addWidget(window)
    window.show()
    try:
        url, token = "http://127.0.0.1:7860/", "s3cret-token-made-for-you"
        window.set_server_status(f"Serving at {url}", url, token)
        label = window.server_label
        assert f'href="{url}?token={token}"' in label.text() and label.isVisible()
        assert token in label.toolTip()  # where a user finds a token sd3desk made
        window.set_server_status("Not serving: port 7860 is in use", "", "")
        assert "token" not in label.text() and "Settings" in label.toolTip()
    finally:
        window.session.shutdown()
        window.close()
