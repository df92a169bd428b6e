"""A schema-driven fuzz run (schemathesis over /openapi.json): no request makes a 5xx."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import httpx
from conftest import start_server, stop_server


def test_no_request_the_schema_allows_gets_a_server_error(tmp_path):
    server = start_server(tmp_path / "data", "--no-web")
    try:
        # paused: the jobs fuzzed requests make only wait (txt2img, which waits for its
        # images, and the endless event stream are left out for that reason)
        httpx.post(f"{server.url}api/v1/queue/pause").raise_for_status()
        runner = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
        assert runner is not None
        result = subprocess.run(
            [
                runner,
                "run",
                f"{server.url}openapi.json",
                "--checks",
                "not_a_server_error",
                "--max-examples",
                "15",
                "--exclude-path",
                "/sdapi/v1/txt2img",
                "--exclude-path",
                "/api/v1/events",
                "--generation-deterministic",
                "--request-timeout",
                "30",
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stdout[-4000:]
        assert " passed" in result.stdout
    finally:
        stop_server(server)
    assert "Traceback" not in "".join(server.stdout) + (server.process.stdout.read() or "")
