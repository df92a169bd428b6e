"""Kill points for the fault-injection tests: `SD3DESK_KILL_AT=POINT[:N]` makes the process die
at the N-th time (default: the first) it reaches POINT, as `kill -9` would, so a test can stop
it at an exact moment (a file written but not yet named, an image saved but not yet reported)
instead of sleeping and hoping. Unset, `reached` costs one comparison."""

from __future__ import annotations

import os
import signal

_POINT, _, _NTH = os.environ.get("SD3DESK_KILL_AT", "").partition(":")
_seen = 0


def reached(point: str) -> None:
    global _seen
    if point != _POINT:
        return
    _seen += 1
    if _seen >= int(_NTH or 1):
        os.kill(os.getpid(), signal.SIGKILL if hasattr(signal, "SIGKILL") else signal.SIGTERM)
