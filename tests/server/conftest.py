"""A real `sd3desk serve` (a subprocess on the tiny test model, CPU) for the server's tests, and
helpers to drive it with real clients."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

START_TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Served:
    """A running `sd3desk serve`."""

    url: str
    port: int
    data: Path
    process: subprocess.Popen
    stdout: list[str]

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, **({"timeout": 120} | kwargs))


def start_server(data: Path, *extra: str, port: int | None = None) -> Served:
    """Start `sd3desk serve` on the test model and wait until it says where it serves."""
    port = port or free_port()
    command = [sys.executable, "-m", "sd3desk", "--data-dir", str(data), "serve"]
    command += ["--model", "test", "--device", "cpu", "--port", str(port), *extra]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "QT_QPA_PLATFORM": "offscreen"}
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("sd3desk is serving at "):
            url = line.split(" at ", 1)[1].strip()
            # keep reading: a server whose output pipe fills up blocks on its next write
            threading.Thread(target=_drain, args=(process, lines), daemon=True).start()
            return Served(url, port, data, process, lines)
    process.kill()
    raise RuntimeError("sd3desk serve did not start:\n" + "".join(lines))


def _drain(process: subprocess.Popen, lines: list[str]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line)


def stop_server(served: Served) -> int:
    """Ctrl+C, as a user stops it; returns the exit code."""
    if served.process.poll() is None:
        served.process.send_signal(signal.SIGINT)
        try:
            served.process.wait(60)
        except subprocess.TimeoutExpired:
            served.process.kill()
            served.process.wait(10)
    return served.process.returncode


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory):
    """One server for the tests that share it (each uses prompts of its own)."""
    server = start_server(tmp_path_factory.mktemp("served"))
    yield server
    stop_server(server)


@pytest.fixture(scope="session")
def served_loras(served: Served) -> dict[str, Path]:
    """A LoRA for the test model (kohya's layout, as Civitai serves them) and one for SDXL, in
    the served data folder's LoRA folder."""
    from sd3desk.inference import testlora
    from sd3desk.inference.testmodel import build_pipeline

    pipe = build_pipeline("tiny")  # the model `--model test` serves: the same weights
    folder = served.data / "loras"
    folder.mkdir(exist_ok=True)
    kohya = testlora.to_kohya(testlora.random_lora(pipe, seed=5), pipe)
    return {
        "style": testlora.save(kohya, folder / "style.safetensors"),
        "sdxl": testlora.save(testlora.other_architecture("sdxl"), folder / "sdxl.safetensors"),
    }


def watch_steps(served: Served) -> threading.Event:
    """An event set once the server's event stream reports a denoising step. The stream stays
    open until the server ends it (a stop cuts it off, a kill breaks it)."""
    stepping = threading.Event()

    def watch() -> None:
        try:
            with (
                httpx.Client(timeout=120) as http,
                http.stream("GET", f"{served.url}api/v1/events") as stream,
            ):
                for line in stream.iter_lines():
                    if line.startswith("event: step"):
                        stepping.set()
        except httpx.HTTPError:
            pass  # the server went away

    threading.Thread(target=watch, daemon=True).start()
    return stepping


def wait_until(condition, timeout: float = 60.0, every: float = 0.05):
    """Poll `condition` until it returns something true (for clients in other processes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError("the condition never came true")
