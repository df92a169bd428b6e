"""CLI argument handling that needs no model: exit codes and field-naming messages."""

from __future__ import annotations

import pytest

from sd3desk.cli import main
from sd3desk.core.errors import ExitCode


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        (["--width", "250"], "width: must be between 256 and 2048"),
        (["--height", "1000"], "height: must be a multiple of 16"),
        (["--steps", "0"], "steps: must be between 1 and 150"),
        (["--guidance", "31"], "guidance_scale: must be between 0 and 30"),
        (["--seed", "-5"], "seed: must be between 0"),
        (["--batch", "17"], "batch_size: must be between 1 and 16"),
        (["--count", "0"], "count: must be between 1 and 10000"),
        (["--aspect", "wide"], "aspect: 'wide' is not an aspect ratio"),
        (["--aspect", "16:9", "--width", "512"], "aspect: give --aspect or --width/--height"),
    ],
)
def test_invalid_arguments_exit_2_naming_the_field(capsys, tmp_path, extra, field):
    code, _, err = run(
        capsys,
        "--data-dir",
        str(tmp_path),
        "generate",
        "--model",
        "nowhere",
        "--prompt",
        "x",
        *extra,
    )
    assert code == ExitCode.usage
    assert field in err
    assert not (tmp_path / "outputs").exists()


def test_argparse_errors_also_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["generate", "--prompt", "x"])
    assert info.value.code == ExitCode.usage
    assert "--model" in capsys.readouterr().err


def test_missing_model_exits_3_with_advice(capsys, tmp_path):
    code, _, err = run(
        capsys,
        "--data-dir",
        str(tmp_path),
        "generate",
        "--model",
        str(tmp_path / "none.safetensors"),
        "--prompt",
        "x",
    )
    assert code == ExitCode.model
    assert "no model at" in err


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".bin", ".pth"])
def test_pickle_models_are_refused(capsys, tmp_path, suffix):
    bad = tmp_path / f"model{suffix}"
    bad.write_bytes(b"\x80\x04 pickle that would run code")
    code, _, err = run(
        capsys, "--data-dir", str(tmp_path), "generate", "--model", str(bad), "--prompt", "x"
    )
    assert code == ExitCode.model
    assert "never loads" in err and "safetensors" in err


def test_uncached_repo_id_says_how_to_download(capsys, tmp_path):
    code, _, err = run(
        capsys,
        "--data-dir",
        str(tmp_path),
        "generate",
        "--model",
        "stabilityai/stable-diffusion-3-medium-diffusers",
        "--prompt",
        "x",
    )
    assert code == ExitCode.model
    assert "not in the Hugging Face cache" in err and "hf download" in err


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in ("generate", "models", "make-test-model"):
        assert command in out


def test_queue_add_list_pause_resume(capsys, tmp_path):
    data = ["--data-dir", str(tmp_path)]
    code, out, _ = run(
        capsys,
        *data,
        "queue",
        "add",
        "--model",
        "test",
        "--prompt",
        "a cat",
        "--count",
        "2",
        "--seed",
        "9",
    )
    assert code == 0 and out.split() == ["queued", "job", "1", "queued", "job", "2"]
    code, out, _ = run(capsys, *data, "queue", "pause")
    assert out.strip() == "the queue is paused"
    code, out, _ = run(capsys, *data, "queue", "list")
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["1", "queued", "#1"] and "seed 9" in lines[0]
    assert "seed 10" in lines[1] and lines[-1] == "the queue is paused"
    code, _, err = run(capsys, *data, "queue", "run")
    assert code == 0 and "paused" in err
    code, out, _ = run(capsys, *data, "queue", "resume")
    assert out.strip() == "the queue is running"


def test_queue_add_with_bad_arguments_writes_nothing(capsys, tmp_path):
    data = tmp_path / "data"
    code, _, err = run(
        capsys, "--data-dir", str(data), "queue", "add", "--model", "test", "--prompt", "x",
        "--steps", "0",
    )  # fmt: skip
    assert code == ExitCode.usage and "steps: must be between 1 and 150" in err
    assert not data.exists() or not any(data.rglob("*"))  # no database, no folders
