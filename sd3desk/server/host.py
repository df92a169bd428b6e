"""Runs the server on a thread of its own (uvicorn and its asyncio loop), in the window or in
`sd3desk serve`: the runtime's thread only ever answers the runner's commands."""

from __future__ import annotations

import errno
import logging
import socket
import threading
import time
from typing import Any

from sd3desk.core.errors import SD3DeskError
from sd3desk.runtime.runtime import Runtime
from sd3desk.server.bridge import RuntimeBridge
from sd3desk.server.config import ServeConfig
from sd3desk.server.door import Door

log = logging.getLogger(__name__)
START_TIMEOUT_S = 120.0  # importing Gradio takes seconds on a slow disk
STOP_GRACE_S = 1  # seconds requests in flight get to finish when the server stops


class ServeError(SD3DeskError):
    """The server cannot start (the port is taken, the address is not this computer's)."""


class ServerHost:
    """One running server.

    Thread rule: make, start and stop it on the runtime's thread (its bridge listens there).
    """

    def __init__(self, runtime: Runtime, config: ServeConfig, web: bool = True) -> None:
        self.config = config.check()
        self.bridge = RuntimeBridge(runtime)
        self.door = Door(runtime, self.bridge, self.config)
        self.web = web
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failed: BaseException | None = None

    @property
    def url(self) -> str:
        return self.config.url()

    @property
    def serving(self) -> bool:
        """Requests are being answered."""
        return self._ready.is_set() and not self.failure

    @property
    def failure(self) -> str:
        """Why the server stopped or could not start ("" while it starts or serves)."""
        if self._failed is not None:
            return str(self._failed) or type(self._failed).__name__
        if self._thread is not None and not self._thread.is_alive() and not self._ready.is_set():
            return "it stopped while starting"
        return ""

    def begin(self) -> None:
        """Bind (raising ServeError at once when the address is taken or not this computer's),
        then build the app and serve on the server's thread (Gradio's import takes seconds);
        `serving` says when it answers."""
        sock = _bind(self.config.host, self.config.port)
        self._thread = threading.Thread(
            target=self._serve, args=(sock, self._ready), name="sd3desk-server", daemon=True
        )
        self._thread.start()

    def start(self, timeout: float = START_TIMEOUT_S) -> str:
        """`begin`, then wait until requests are answered; returns the URL. Raises ServeError
        with the reason."""
        self.begin()
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.05):
            if self.failure or time.monotonic() > deadline:
                reason = self.failure or "it did not start in time"
                self.stop()
                raise ServeError(f"the server could not start: {reason}", "details are in the log")
        return self.url

    def stop(self) -> None:
        """Stop answering; requests in flight get STOP_GRACE_S to finish, then are cut off."""
        if self._server is not None:
            self._server.should_exit = True
        self.bridge.close()  # event streams end cleanly, within the grace period
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        self._server = None

    def _serve(self, sock: socket.socket, ready: threading.Event) -> None:
        import uvicorn

        from sd3desk.server.app import create_app

        try:
            app = create_app(self.door, web=self.web)
            config = uvicorn.Config(
                app,
                log_level="warning",
                access_log=False,
                lifespan="on",
                # event streams, open pages and calls waiting for a job never end by themselves:
                # cut them off (their jobs stay queued) instead of making Ctrl+C or the
                # window's settings wait
                timeout_graceful_shutdown=STOP_GRACE_S,
            )
            self._server = server = uvicorn.Server(config)
            watcher = threading.Thread(target=_tell_when_started, args=(server, ready), daemon=True)
            watcher.start()
            server.run(sockets=[sock])
        except BaseException as exc:  # SystemExit from uvicorn included: said, not raised
            self._failed = exc
            log.exception("the server stopped", exc_info=exc)
        finally:
            sock.close()


def _tell_when_started(server: Any, ready: threading.Event) -> None:
    while not server.started and not server.should_exit:
        time.sleep(0.02)
    if server.started:
        ready.set()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on the accepted connections only then (without
    # it every answer waits 40 ms for a delayed ACK)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ServeError(
                f"port {port} on {host} is in use by another program",
                "stop that program or choose another port (--port, Settings → Serve)",
            ) from exc
        raise ServeError(
            f"cannot serve on {host}:{port}: {exc.strerror or exc}",
            "use 127.0.0.1 for this computer, 0.0.0.0 for every network it is on",
        ) from exc
    sock.listen(128)
    sock.set_inheritable(True)
    return sock
