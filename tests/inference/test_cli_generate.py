"""The CLI end to end in subprocesses: the README's first-run commands, and Ctrl+C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

from sd3desk.core.metadata import parse_a1111, read_metadata


def sd3desk(*args: str, data_dir: Path) -> list[str]:
    return [sys.executable, "-m", "sd3desk", "--data-dir", str(data_dir), *args]


def test_make_test_model_then_generate_writes_readable_pngs(tmp_path):
    model = tmp_path / "m"
    made = subprocess.run(
        sd3desk("make-test-model", str(model), data_dir=tmp_path),
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert made.returncode == 0, made.stderr
    assert "random weights" in made.stderr
    result = subprocess.run(
        sd3desk(
            "generate",
            "--model",
            str(model),
            "--prompt",
            "a cat",
            "--seed",
            "1",
            "--count",
            "3",
            "--batch",
            "2",
            "--aspect",
            "1:1",
            "--steps",
            "2",
            data_dir=tmp_path,
        ),
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    paths = [Path(line) for line in result.stdout.split()]
    assert [p.name for p in paths] == ["00000-1.png", "00001-2.png", "00002-3.png"]
    assert all(p.parent.parent == tmp_path / "outputs" for p in paths)
    meta = read_metadata(paths[2])
    assert (meta.params.seed, meta.params.width, meta.params.steps) == (3, 1024, 2)
    assert meta.model.family == "sd3desk-test" and len(meta.model.hash) == 10
    with Image.open(paths[0]) as image:  # what Civitai and A1111-compatible tools read
        assert image.size == (1024, 1024)
        other_tool = parse_a1111(image.text["parameters"])
    assert other_tool.params.seed == 1 and other_tool.model.hash == meta.model.hash
    assert "[5/7] Loading MMDiT denoiser" in result.stderr


def test_ctrl_c_exits_130_and_leaves_no_files(tmp_path):
    out = tmp_path / "out"
    process = subprocess.Popen(
        sd3desk(
            "generate",
            "--model",
            "test",
            "--prompt",
            "a cat",
            "--steps",
            "150",
            "--width",
            "2048",
            "--height",
            "2048",
            "--out",
            str(out),
            data_dir=tmp_path,
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stderr is not None
    for line in process.stderr:  # wait until the model is loaded and denoising begins
        if line.startswith("model:"):
            break
    time.sleep(1.0)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr
    assert stdout == ""
    assert not out.exists() or list(out.rglob("*")) == [p for p in out.rglob("*") if p.is_dir()]


def test_broken_model_folders_exit_3_with_a_message_not_a_traceback(tmp_path, tiny_model_dir):
    """A missing tokenizer folder, a config with wrong types and a FIFO for a weights file
    (issue 13): each is exit 3 with a line that names what is wrong."""
    import json
    import shutil

    from sd3desk.inference.testmodel import MARKER_FILE

    def broken(name: str, damage) -> Path:
        folder = tmp_path / name
        shutil.copytree(tiny_model_dir, folder)
        damage(folder)
        return folder

    def wrong_type(folder: Path) -> None:
        (folder / MARKER_FILE).unlink()  # read as a real model: its configs decide
        config = folder / "vae" / "config.json"
        config.write_text(json.dumps({**json.loads(config.read_text()), "latent_channels": "16"}))

    cases = {
        "tokenizer_2": broken("no-tokenizer", lambda f: shutil.rmtree(f / "tokenizer_2")),
        "vae": broken("wrong-type", wrong_type),
    }
    if hasattr(os, "mkfifo"):

        def fifo(folder: Path) -> None:
            weights = next((folder / "vae").glob("*.safetensors"))
            weights.unlink()
            os.mkfifo(weights)

        cases["named pipe"] = broken("fifo", fifo)
    for words, folder in cases.items():
        result = subprocess.run(
            sd3desk("generate", "--model", str(folder), "--prompt", "x", data_dir=tmp_path),
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        assert result.returncode == 3, (words, result.stderr)
        assert words in result.stderr and "Traceback" not in result.stderr, result.stderr
