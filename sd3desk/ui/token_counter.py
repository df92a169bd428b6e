"""Counts prompt tokens per encoder off the GUI thread, a moment after the user stops typing."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QObject, QThreadPool, QTimer, Signal

from sd3desk.core.params import PromptLength
from sd3desk.runtime.background import Background

DEBOUNCE_MS = 250
CountFn = Callable[[str, int], PromptLength | None]


class TokenCounter(QObject):
    """`request(prompt, negative, limit)` schedules a count with `count_fn` (the loaded model's
    tokenizers; returns a PromptLength or None). `counted` carries the newest result only.

    Thread rule: call from the GUI thread; results arrive there.
    """

    counted = Signal(object, object)  # PromptLength | None for the prompt and the negative

    def __init__(self, count_fn: CountFn, pool: QThreadPool | None = None):
        super().__init__()
        self.count_fn = count_fn
        self._pending: tuple[str, str, int] = ("", "", 256)
        self._timer = QTimer(self, singleShot=True, interval=DEBOUNCE_MS)
        self._timer.timeout.connect(self._start)
        self._counts = Background(self, pool=pool, newest_wins=True)
        self._counts.finished.connect(lambda _key, counts: self.counted.emit(*counts))

    def request(self, prompt: str, negative: str, limit: int) -> None:
        self._pending = (prompt, negative, limit)
        self._timer.start()

    def _start(self) -> None:
        prompt, negative, limit = self._pending
        count = self.count_fn
        self._counts.submit(lambda: (count(prompt, limit), count(negative, limit)))
