"""The one way sd3desk runs work off the GUI thread (besides the engine's worker threads):
a function on a thread pool, its result brought back as a signal."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QThreadPool, Signal

log = logging.getLogger(__name__)

Report = Callable[[Any], None]


class _Relay(QObject):
    """Lives on the owner's thread; pool threads emit through it (queued connections)."""

    done = Signal(int, object, bool, object)  # ticket, key, ok, result or exception
    reported = Signal(int, object, object)  # ticket, key, value


class Background(QObject):
    """Runs functions on a thread pool and delivers their results on the thread that made it.

    `submit(fn, key)` runs `fn()` (or `fn(report)` with `reports=True`, where `report(value)`
    emits `progressed`) and then emits `finished(key, result)` or `failed(key, exception)`.
    With `newest_wins`, only the latest submission's result and reports are delivered: an older
    one that finishes late is dropped (token counts, model searches; one counter per object, so
    give each kind of work its own Background). With `own_thread`, each submission runs on a
    daemon thread of its own instead of the pool: for long work (a download) that must neither
    hold up the pool nor make closing a dialog or quitting wait for it.

    Thread rule: create it and call `submit` on one thread; `fn` runs on a pool thread and must
    not touch widgets or that thread's objects. The signals arrive on the creating thread.
    """

    finished = Signal(object, object)  # key, result
    failed = Signal(object, object)  # key, exception
    progressed = Signal(object, object)  # key, reported value

    def __init__(
        self,
        parent: QObject | None = None,
        *,
        pool: QThreadPool | None = None,
        newest_wins: bool = False,
        own_thread: bool = False,
    ) -> None:
        super().__init__(parent)
        self.pool = pool or QThreadPool.globalInstance()
        self.newest_wins = newest_wins
        self.own_thread = own_thread
        self._threads: dict[int, threading.Thread] = {}
        self._ticket = 0
        self._running: set[int] = set()
        self._relay = _Relay(self)
        self._relay.done.connect(self._on_relay_done)
        self._relay.reported.connect(self._on_relay_reported)

    @property
    def busy(self) -> bool:
        """Whether a submitted function has not reported its end yet."""
        return bool(self._running)

    def submit(self, fn: Callable[..., Any], key: Any = None, *, reports: bool = False) -> int:
        self._ticket += 1
        ticket, relay = self._ticket, self._relay
        self._running.add(ticket)

        def run() -> None:
            def report(value: Any) -> None:
                with contextlib.suppress(RuntimeError):  # the owner was deleted meanwhile
                    relay.reported.emit(ticket, key, value)

            try:
                result, ok = (fn(report) if reports else fn()), True
            except BaseException as exc:  # even SystemExit: the owner must hear the end
                result, ok = exc, False
            # RuntimeError: the owner was deleted meanwhile, so nobody wants the result.
            with contextlib.suppress(RuntimeError):
                relay.done.emit(ticket, key, ok, result)

        if self.own_thread:
            thread = threading.Thread(target=run, name=f"sd3desk-background-{ticket}", daemon=True)
            self._threads[ticket] = thread
            thread.start()
        else:
            self.pool.start(run)
        return ticket

    def _stale(self, ticket: int) -> bool:
        return self.newest_wins and ticket != self._ticket

    def _on_relay_done(self, ticket: int, key: Any, ok: bool, result: Any) -> None:
        self._running.discard(ticket)
        thread = self._threads.pop(ticket, None)
        if thread is not None:
            thread.join(timeout=5)  # it has just emitted its last signal and is returning
        if self._stale(ticket):
            return
        if ok:
            self.finished.emit(key, result)
        else:
            log.debug("background work for %r failed", key, exc_info=result)
            self.failed.emit(key, result)

    def _on_relay_reported(self, ticket: int, key: Any, value: Any) -> None:
        if not self._stale(ticket):
            self.progressed.emit(key, value)
