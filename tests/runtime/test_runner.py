"""The runner and its QThread workers on the tiny model, plus a fault-injecting engine."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest

from sd3desk.core.errors import ModelError, OutOfMemoryError
from sd3desk.core.jobs import FailureKind, Job, JobQueue, JobState
from sd3desk.core.metadata import read_metadata
from sd3desk.core.params import GenerationParams
from sd3desk.core.settings import Device
from sd3desk.core.store import Store
from sd3desk.runtime.events import EngineStatus
from sd3desk.runtime.runner import Runner
from sd3desk.runtime.worker import (
    WORKER_NICENESS,
    Worker,
    WorkerConfig,
    default_engine_factory,
)

TIMEOUT = 60_000


class Rig(Runner):
    """A Runner with the workers it will start (`start()`, as Runtime.start_workers does)."""

    def __init__(self, queue: JobQueue, workers: list[Worker]) -> None:
        super().__init__(queue)
        self.made = workers

    def start(self) -> None:
        self.attach_workers(self.made)

    def get(self, job_id: int) -> Job:
        job = self.job(job_id)
        assert job is not None
        return job


@pytest.fixture
def make_runner(tmp_path, cache_dir, qtbot):
    runners = []

    def make(workers: int = 1, factory=default_engine_factory) -> Rig:
        queue = JobQueue(Store(tmp_path / "sd3desk.db"))
        config = WorkerConfig(
            out_dir=tmp_path / "out",
            cache_dir=cache_dir,
            sources_dir=tmp_path / "sources",
            device=Device.cpu,
        )
        runner = Rig(queue, [Worker(i, config, factory) for i in range(workers)])
        runners.append(runner)
        return runner

    yield make
    for runner in runners:
        runner.stop()


def params(model: Path, **changes) -> GenerationParams:
    base = GenerationParams(
        "a cat", seed=1, steps=3, guidance_scale=4.0, width=256, height=256, model=str(model)
    )
    return base.replace(**changes)


def wait_done(qtbot, runner: Rig, *job_ids: int) -> None:
    qtbot.waitUntil(
        lambda: all(
            runner.get(j).state in (JobState.finished, JobState.failed, JobState.cancelled)
            for j in job_ids
        ),
        timeout=TIMEOUT,
    )


def test_jobs_run_in_order_and_land_as_pngs(qtbot, make_runner, tiny_model_dir, tmp_path):
    runner = make_runner()
    steps, states = [], []
    runner.step_progressed.connect(steps.append)
    runner.engine_state_changed.connect(lambda s: states.append(s.status))
    runner.start()
    a = runner.enqueue(params(tiny_model_dir))
    b = runner.enqueue(params(tiny_model_dir, seed=None, batch_size=2))
    wait_done(qtbot, runner, a.id, b.id)
    done_a, done_b = runner.get(a.id), runner.get(b.id)
    assert done_a.state is done_b.state is JobState.finished
    assert len(done_a.outputs) == 1 and len(done_b.outputs) == 2
    meta = read_metadata(done_b.outputs[1])
    assert meta.params.seed == done_b.params.seed + 1
    assert [s.step for s in steps if s.job_id == a.id] == [1, 2, 3]
    assert states.count(EngineStatus.loading) >= 1 and EngineStatus.generating in states
    assert states.index(EngineStatus.starting) == 0
    runner.set_paused(True)
    later = runner.enqueue(params(tiny_model_dir))
    assert runner.snapshot().etas[later.id].estimated is False  # timed by the jobs before


def test_cancel_running_job_stops_within_a_step_and_writes_nothing(
    qtbot, make_runner, tiny_model_dir, tmp_path
):
    runner = make_runner()
    runner.start()
    long = runner.enqueue(params(tiny_model_dir, steps=150, width=1024, height=1024))
    after = runner.enqueue(params(tiny_model_dir))
    seen = []
    runner.step_progressed.connect(lambda s: seen.append(s.step) if s.job_id == long.id else None)
    qtbot.waitUntil(lambda: len(seen) >= 2, timeout=TIMEOUT)
    runner.cancel(long.id)
    wait_done(qtbot, runner, long.id, after.id)
    assert runner.get(long.id).state is JobState.cancelled
    assert max(seen) < 150
    assert runner.get(after.id).state is JobState.finished
    pngs = list((tmp_path / "out").rglob("*.png"))
    assert [str(p) for p in pngs] == list(runner.get(after.id).outputs)


def test_cancel_queued_pause_and_stop_after_current(qtbot, make_runner, tiny_model_dir):
    runner = make_runner()
    runner.set_paused(True)
    runner.start()
    a, b, c = (runner.enqueue(params(tiny_model_dir)) for _ in range(3))
    qtbot.wait(200)
    assert runner.get(a.id).state is JobState.queued  # paused: nothing starts
    runner.cancel(b.id)
    assert runner.get(b.id).state is JobState.cancelled
    runner.stop_after_current()
    runner.set_paused(False)  # resuming clears "stop after current"
    runner.stop_after_current()
    wait_done(qtbot, runner, a.id)
    qtbot.wait(200)
    assert runner.snapshot().paused
    assert runner.get(c.id).state is JobState.queued


class FaultyEngine:
    """Wraps the real engine and injects one fault per configured call."""

    def __init__(self, real, faults: list[Exception | None], load_fault: Exception | None = None):
        self.real, self.faults, self.load_fault = real, faults, load_fault

    def __getattr__(self, name):  # everything not faulted goes to the real engine
        return getattr(self.real, name)

    def load(self, *args, **kwargs):
        if self.load_fault is not None:
            fault, self.load_fault = self.load_fault, None
            raise fault
        return self.real.load(*args, **kwargs)

    def generate(self, *args, **kwargs):
        fault = self.faults.pop(0) if self.faults else None
        if fault is not None:
            raise fault
        return self.real.generate(*args, **kwargs)


def test_faults_fail_only_their_job(qtbot, make_runner, tiny_model_dir):
    oom = OutOfMemoryError("the device ran out of memory", "try a smaller size")
    faults = [oom, RuntimeError("a bad step"), None]
    runner = make_runner(
        factory=lambda config: FaultyEngine(
            default_engine_factory(config),
            faults,
            ModelError("cannot read model", "download again"),
        )
    )
    failures: list[Job] = []
    runner.job_changed.connect(
        lambda e: failures.append(e.job) if e.job.state is JobState.failed else None
    )
    runner.start()
    jobs = [runner.enqueue(params(tiny_model_dir)) for _ in range(4)]
    wait_done(qtbot, runner, *(j.id for j in jobs))
    states = [runner.get(j.id).state for j in jobs]
    assert states == [JobState.failed, JobState.failed, JobState.failed, JobState.finished]
    assert [f.error_kind for f in failures] == [
        FailureKind.model,
        FailureKind.out_of_memory,
        FailureKind.error,
    ]
    assert runner.get(jobs[1].id).error_advice == "try a smaller size"
    assert "a bad step" in failures[2].error_message


def test_a_missing_model_fails_the_job_with_the_reason(
    qtbot, make_runner, tiny_model_dir, tmp_path
):
    runner = make_runner()
    runner.start()
    bad = runner.enqueue(params(tmp_path / "missing.safetensors"))
    good = runner.enqueue(params(tiny_model_dir))
    wait_done(qtbot, runner, bad.id, good.id)
    assert runner.get(bad.id).error_kind is FailureKind.model
    assert "no model at" in runner.get(bad.id).error_message
    assert runner.get(good.id).state is JobState.finished


def test_two_workers_share_one_queue(qtbot, make_runner, tiny_model_dir):
    runner = make_runner(workers=2)
    used = set()
    for worker in runner.made:
        worker.job_started.connect(lambda e: used.add(e.worker))
    runner.start()
    jobs = [runner.enqueue(params(tiny_model_dir, seed=k, steps=6)) for k in range(6)]
    wait_done(qtbot, runner, *(j.id for j in jobs))
    outcomes = [(runner.get(j.id).state, runner.get(j.id).error_message) for j in jobs]
    assert all(state is JobState.finished for state, _ in outcomes), outcomes
    assert used == {0, 1}


def test_torch_is_imported_on_the_worker_thread(qtbot, make_runner, tiny_model_dir):
    threads = []

    def factory(config):
        threads.append(threading.current_thread().name)
        return default_engine_factory(config)

    runner = make_runner(factory=factory)
    runner.start()
    job = runner.enqueue(params(tiny_model_dir))
    wait_done(qtbot, runner, job.id)
    assert threads and threads[0] != threading.main_thread().name


def test_halt_puts_the_running_job_back_in_front(qtbot, make_runner, tiny_model_dir):
    runner = make_runner()
    runner.start()
    long = runner.enqueue(params(tiny_model_dir, steps=150, width=1024, height=1024))
    later = runner.enqueue(params(tiny_model_dir))
    steps = []
    runner.step_progressed.connect(steps.append)
    changes = []
    runner.job_changed.connect(lambda e: changes.append((e.job.id, e.previous, e.job.state)))
    qtbot.waitUntil(lambda: len(steps) >= 1, timeout=TIMEOUT)
    with qtbot.waitSignal(runner.idle, timeout=TIMEOUT):
        runner.halt()
    assert changes == [(long.id, JobState.running, JobState.queued)]  # put back, said so
    job = runner.get(long.id)
    assert job.state is JobState.queued and job.note.startswith("interrupted")
    assert [j.id for j in runner.snapshot().waiting] == [long.id, later.id]
    assert not runner.snapshot().paused  # a halt ends this run; it is not a remembered pause


def test_a_job_for_another_model_switches_models(qtbot, make_runner, tiny_model_dir, tmp_path):
    from sd3desk.inference.testmodel import write_test_single_file

    single = write_test_single_file(tmp_path / "tiny.safetensors")
    runner = make_runner()
    loads = []
    runner.engine_state_changed.connect(
        lambda s: (
            loads.append(s.text) if s.status is EngineStatus.loading and s.stage == 1 else None
        )
    )
    runner.start()
    jobs = [
        runner.enqueue(params(tiny_model_dir)),
        runner.enqueue(params(tiny_model_dir, seed=2)),  # same model: stays loaded
        runner.enqueue(params(single)),
        runner.enqueue(params(tiny_model_dir)),
    ]
    wait_done(qtbot, runner, *(j.id for j in jobs))
    assert all(runner.get(j.id).state is JobState.finished for j in jobs)
    # the second job reused the loaded model; the fourth the one parked in RAM by the switch
    assert len(loads) == 2
    names = [read_metadata(runner.get(j.id).outputs[0]).model.name for j in jobs]
    assert names == ["tiny-sd3", "tiny-sd3", "tiny", "tiny-sd3"]


class SlowLoadEngine(FaultyEngine):
    """The real engine, with a model load that waits until the test lets it go on."""

    def __init__(self, real, release: threading.Event):
        super().__init__(real, [])
        self.release = release

    def load(self, *args, **kwargs):
        self.release.wait(30)
        return self.real.load(*args, **kwargs)


def test_cancelling_a_job_queued_behind_a_preload_cancels_it(qtbot, make_runner, tiny_model_dir):
    release = threading.Event()
    runner = make_runner(factory=lambda c: SlowLoadEngine(default_engine_factory(c), release))
    runner.start()
    runner.preload(str(tiny_model_dir))  # the worker is busy loading ...
    job = runner.enqueue(params(tiny_model_dir))  # ... while this job is handed to it
    assert runner.get(job.id).state is JobState.running
    runner.cancel(job.id)
    release.set()
    wait_done(qtbot, runner, job.id)
    assert runner.get(job.id).state is JobState.cancelled


def test_stopping_mid_job_puts_the_job_back_first_not_as_a_crash(
    qtbot, make_runner, tiny_model_dir
):
    """What quitting the window does: the event loop has ended, so the worker's last report can
    only be applied by stop() itself."""
    runner = make_runner()
    steps: list[int] = []
    runner.step_progressed.connect(lambda e: steps.append(e.step))
    runner.start()
    first = runner.enqueue(params(tiny_model_dir, steps=150))
    second = runner.enqueue(params(tiny_model_dir))
    qtbot.waitUntil(lambda: len(steps) >= 2, timeout=TIMEOUT)
    runner.halt()
    runner.stop()  # no event loop runs between halt and stop here
    queued = runner.snapshot().waiting
    assert [j.id for j in queued] == [first.id, second.id]
    assert queued[0].crashes == 0 and "stopped" in queued[0].note


def test_a_preload_superseded_by_another_pick_is_skipped(qtbot, make_runner, tiny_model_dir):
    loads: list[str] = []
    release = threading.Event()

    class Recording(SlowLoadEngine):
        def load(self, source, *args, **kwargs):
            loads.append(source.reference)
            return super().load(source, *args, **kwargs)

    runner = make_runner(factory=lambda c: Recording(default_engine_factory(c), release))
    states: list[str] = []
    runner.engine_state_changed.connect(lambda s: states.append(s.status))
    runner.start()
    runner.preload(str(tiny_model_dir))
    qtbot.waitUntil(lambda: loads == [str(tiny_model_dir)], timeout=TIMEOUT)  # loading now
    runner.preload("test")  # meanwhile the user scrolls past the test model ...
    runner.preload(str(tiny_model_dir))  # ... and settles back on this one
    release.set()
    qtbot.waitUntil(lambda: states.count(EngineStatus.ready) >= 1, timeout=TIMEOUT)
    qtbot.wait(300)  # any further (wrong) load would have started by now
    assert loads == [str(tiny_model_dir)]


def test_commands_from_another_thread_run_on_the_runners_thread(qtbot, tmp_path):
    """What a server thread does: its calls are carried onto the runner's thread, return the
    result, raise the command's own errors there, and every event comes from one thread."""
    from sd3desk.core.errors import InvalidParamsError

    runner = Runner(JobQueue(Store(tmp_path / "sd3desk.db")))  # no workers: jobs just wait
    announced_on: set[int] = set()
    runner.job_changed.connect(lambda _e: announced_on.add(threading.get_ident()))
    results: dict = {}

    def client() -> None:
        results["jobs"] = [runner.enqueue(params(tmp_path)) for _ in range(3)]
        try:
            runner.enqueue(params(tmp_path, steps=0))
        except InvalidParamsError as exc:
            results["error"] = exc
        runner.place([results["jobs"][2].id], 0)
        results["job"] = runner.job(results["jobs"][0].id)

    thread = threading.Thread(target=client)
    thread.start()
    qtbot.waitUntil(lambda: not thread.is_alive(), timeout=10_000)
    a, b, c = results["jobs"]
    assert [j.id for j in runner.snapshot().waiting] == [c.id, a.id, b.id]
    assert results["job"].id == a.id and results["job"].state is JobState.queued
    assert [e.field for e in results["error"].errors] == ["steps"]
    assert announced_on == {threading.get_ident()}  # the runner's (this) thread only


def test_a_command_that_timed_out_is_withdrawn_not_run_later(qtbot, tmp_path, monkeypatch):
    """No event loop runs on the runner's thread, so a call from another thread times out; the
    caller may retry, so that first call must never land afterwards."""
    from sd3desk.runtime import runner as runner_module

    monkeypatch.setattr(runner_module, "COMMAND_TIMEOUT_S", 0.2)
    runner = Runner(JobQueue(Store(tmp_path / "sd3desk.db")))
    failed: list[BaseException] = []

    def client() -> None:
        try:
            runner.enqueue(params(tmp_path))
        except TimeoutError as exc:
            failed.append(exc)

    thread = threading.Thread(target=client)
    thread.start()
    thread.join(5)  # this thread ran no event loop meanwhile
    assert failed and runner.snapshot().waiting == ()
    qtbot.wait(100)  # now the queued call is delivered ... and dropped
    assert runner.snapshot().waiting == ()
    assert runner.job(1) is None


def test_jobs_another_process_adds_are_taken_within_a_second(qtbot, tmp_path):
    """`sd3desk queue add` and `queue pause` in a terminal while the window runs the queue."""
    runner = Runner(JobQueue(Store(tmp_path / "sd3desk.db")))
    runner.attach_workers([])  # a running queue (no worker needed to see the change)
    mine = runner.enqueue(params(tmp_path))
    other = JobQueue(Store(tmp_path / "sd3desk.db"))  # another connection, as another process
    theirs = other.enqueue(params(tmp_path, prompt="from the terminal"))
    changed = []
    runner.queue_changed.connect(changed.append)
    qtbot.waitUntil(lambda: len(runner.snapshot().waiting) == 2, timeout=5_000)
    assert [j.id for j in runner.snapshot().waiting] == [mine.id, theirs.id]
    other.set_paused(True)
    qtbot.waitUntil(lambda: runner.snapshot().paused, timeout=5_000)
    assert len(changed) == 2  # one announcement per outside change, none in between


def _nice_of(thread_id: str) -> int:
    """A thread's nice value from /proc (field 19 of its stat line)."""
    stat = Path(f"/proc/self/task/{thread_id}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[16])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread priority is Linux's")
def test_the_worker_and_its_compute_threads_yield_the_cpu_to_the_gui(
    qtbot, make_runner, tiny_model_dir
):
    gui = os.getpriority(os.PRIO_PROCESS, 0)  # (0: the calling thread, on Linux)
    seen = {}

    def factory(config):
        engine = default_engine_factory(config)  # (a CPU engine: the one that yields)
        seen["worker"] = os.getpriority(os.PRIO_PROCESS, 0)  # on the worker's thread
        return engine

    runner = make_runner(factory=factory)
    runner.start()
    job = runner.enqueue(params(tiny_model_dir, width=512, height=512))
    wait_done(qtbot, runner, job.id)
    assert runner.get(job.id).state is JobState.finished
    assert seen["worker"] == min(19, gui + WORKER_NICENESS)
    assert os.getpriority(os.PRIO_PROCESS, 0) == gui  # the GUI thread keeps its own
    import torch

    # torch's compute threads, started from the worker's thread, run at its priority too
    niced = [t for t in os.listdir("/proc/self/task") if _nice_of(t) == seen["worker"]]
    assert len(niced) >= (2 if torch.get_num_threads() > 1 else 1)
