"""Counts prompt tokens per encoder off the GUI thread, a moment after the user stops typing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, QTimer, Signal

DEBOUNCE_MS = 250


class _Signals(QObject):
    counted = Signal(int, object, object)


class _Count(QRunnable):
    def __init__(self, ticket: int, count: Callable, texts: tuple[str, str], limit: int, signals):
        super().__init__()
        self.ticket, self.count, self.texts, self.limit, self.signals = (
            ticket,
            count,
            texts,
            limit,
            signals,
        )

    def run(self) -> None:
        prompt, negative = (self.count(t, self.limit) for t in self.texts)
        self.signals.counted.emit(self.ticket, prompt, negative)


class TokenCounter(QObject):
    """`request(prompt, negative, limit)` schedules a count with `count_fn` (the loaded model's
    tokenizers; returns a PromptLength or None). `counted` carries the newest result only.

    Thread rule: call from the GUI thread; results arrive there.
    """

    counted = Signal(object, object)  # PromptLength | None for the prompt and the negative

    def __init__(self, count_fn: Callable[[str, int], Any], pool: QThreadPool | None = None):
        super().__init__()
        self.count_fn = count_fn
        self.pool = pool or QThreadPool.globalInstance()
        self._ticket = 0
        self._pending: tuple[str, str, int] = ("", "", 256)
        self._timer = QTimer(self, singleShot=True, interval=DEBOUNCE_MS)
        self._timer.timeout.connect(self._start)
        self._signals = _Signals()
        self._signals.counted.connect(self._on_counted)

    def request(self, prompt: str, negative: str, limit: int) -> None:
        self._pending = (prompt, negative, limit)
        self._timer.start()

    def _start(self) -> None:
        self._ticket += 1
        prompt, negative, limit = self._pending
        self.pool.start(
            _Count(self._ticket, self.count_fn, (prompt, negative), limit, self._signals)
        )

    def _on_counted(self, ticket: int, prompt: Any, negative: Any) -> None:
        if ticket == self._ticket:  # an older count finishing late must not overwrite a newer
            self.counted.emit(prompt, negative)
