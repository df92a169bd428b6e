"""Serving from the window (File → Settings → Serve on this computer): starts and stops the
server as the settings say, without ever making the window wait for it."""

from __future__ import annotations

import dataclasses
import logging

from PySide6.QtCore import QObject, QTimer, Signal

from sd3desk.core.errors import SD3DeskError
from sd3desk.core.settings import Settings
from sd3desk.runtime.runtime import Runtime
from sd3desk.server.config import ServeConfig, with_token
from sd3desk.server.host import ServerHost

log = logging.getLogger(__name__)
WATCH_MS = 100


class WindowServing(QObject):
    """The window's server: one `ServerHost` at a time, following the settings.

    Thread rule: GUI thread (the runtime's). `status_changed` carries a line for the status bar,
    the URL to open ("" when not serving) and the token ("" when none is needed).
    """

    status_changed = Signal(str, str, str)

    def __init__(self, runtime: Runtime, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.runtime = runtime
        self.host: ServerHost | None = None
        self._config: ServeConfig | None = None
        self._watch = QTimer(self, interval=WATCH_MS)
        self._watch.timeout.connect(self._on_watch_timeout)

    def apply(self, settings: Settings, model: str = "") -> None:
        """Serve as `settings` say (starting, stopping or restarting the server)."""
        wanted = None
        if settings.serve:
            wanted = ServeConfig(
                host=settings.serve_host, port=settings.serve_port, token=settings.serve_token
            )
        if wanted == self._config and (self.host is None or not self.host.failure):
            return
        self.stop()
        self._config = wanted
        if wanted is None:
            self.status_changed.emit("", "", "")
            return
        try:
            config, _made = with_token(wanted.check(), self.runtime.paths.config)
            if model and self.runtime.catalog.entry(model) is not None:
                config = dataclasses.replace(config, model=model)
            self.host = ServerHost(self.runtime, config)
            self.host.begin()
        except (SD3DeskError, OSError) as exc:
            message = getattr(exc, "message", str(exc))
            self.runtime.notices.error(f"Serving failed: {message}", getattr(exc, "advice", ""))
            self.status_changed.emit(f"Not serving: {message}", "", "")
            self.host = None
            return
        self.status_changed.emit(f"Starting the server on {config.url()}…", "", "")
        self._watch.start()

    def stop(self) -> None:
        self._watch.stop()
        if self.host is not None:
            self.host.stop()
            self.host = None

    def _on_watch_timeout(self) -> None:
        host = self.host
        if host is None:
            self._watch.stop()
            return
        if host.failure:
            self._watch.stop()
            self.runtime.notices.error(f"The server stopped: {host.failure}", "see the log")
            self.status_changed.emit(f"Not serving: {host.failure}", "", "")
        elif host.serving:
            self._watch.stop()
            token = host.config.token
            self.status_changed.emit(f"Serving at {host.url}", host.url, token)
