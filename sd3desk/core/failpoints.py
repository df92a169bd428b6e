"""Fault points for the fault-injection tests, reached at exact moments so a test never sleeps
and hopes:

- `SD3DESK_KILL_AT=POINT[:N]` makes the process die the N-th time (default: the first) it
  reaches POINT, as `kill -9` would (a file written but not yet named, an image saved but not
  yet reported);
- `stall(POINT)` (in-process tests) makes the thread that reaches POINT block there until
  `release()`, like a call nothing can interrupt (an import, a load of weights).

Unset, `reached` costs two comparisons."""

from __future__ import annotations

import os
import signal
import threading

_POINT, _, _NTH = os.environ.get("SD3DESK_KILL_AT", "").partition(":")
_seen = 0
_stall_at = ""
_stalled = threading.Event()  # set when a thread arrived at the stall point
_released = threading.Event()


def stall(point: str) -> threading.Event:
    """Block the next threads reaching `point` until release(); the event is set on arrival."""
    global _stall_at
    _stall_at = point
    _stalled.clear()
    _released.clear()
    return _stalled


def release() -> None:
    global _stall_at
    _stall_at = ""
    _released.set()


def reached(point: str) -> None:
    global _seen
    if point == _stall_at:
        _stalled.set()
        _released.wait()
    if point != _POINT:
        return
    _seen += 1
    if _seen >= int(_NTH or 1):
        os.kill(os.getpid(), signal.SIGKILL if hasattr(signal, "SIGKILL") else signal.SIGTERM)
