"""The runtime behind every front door (QtCore only): the queue's one writer, the workers,
typed events and notices. `runtime.build_runtime` makes it; the window, the CLI and the
self-test all use it."""
