"""A page request whose job is cleared from the queue (Queue → Clear finished in the window, right
after it was cancelled) ends with a message instead of polling a stale copy for ever. In process:
the real page code, runtime and door on an in-memory queue."""

from __future__ import annotations

import asyncio
import threading

import gradio as gr

from sd3desk.core.jobs import JobState
from sd3desk.core.params import GenerationParams
from sd3desk.core.settings import AppPaths, Settings
from sd3desk.runtime.runtime import IN_MEMORY, build_runtime
from sd3desk.server import web
from sd3desk.server.bridge import RuntimeBridge
from sd3desk.server.config import ServeConfig
from sd3desk.server.door import Door


def test_a_cleared_job_ends_the_page_request_with_a_message(tmp_path, qtbot):
    runtime = build_runtime(AppPaths.default(tmp_path), Settings(), database=IN_MEMORY)
    try:
        door = Door(runtime, RuntimeBridge(runtime), ServeConfig(model="test"))
        runner = runtime.runner
        runner.set_paused(True)
        job = runner.enqueue(GenerationParams("soon cleared", model="test"))
        runner.cancel(job.id)
        runner.clear_finished()
        assert runner.snapshot().find(job.id) is None and runner.job(job.id) is None
        said: list[BaseException] = []

        def ask() -> None:  # as the page's event does, on a loop of its own
            try:
                asyncio.run(web._where(door, job))
            except BaseException as exc:
                said.append(exc)

        # off this thread, which keeps answering the runner's commands
        asker = threading.Thread(target=ask)
        asker.start()
        qtbot.waitUntil(lambda: not asker.is_alive(), timeout=30_000)
        assert said and isinstance(said[0], gr.Error), said
        assert "no longer in the queue" in str(said[0])
        assert job.state is JobState.queued  # the stale copy it had
    finally:
        runtime.stop()
