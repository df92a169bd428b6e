"""The test model: byte-identical builds, real layouts, SD3.5 folder detection."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sd3desk.core.params import ModelFamily
from sd3desk.inference.models import bundled_config_dir, inspect_folder
from sd3desk.inference.testmodel import NOTE, write_test_model, write_test_single_file


def files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_builds_are_byte_identical(tmp_path, tiny_model_dir):
    again = write_test_model(tmp_path / "again")
    assert files(again) == files(tiny_model_dir)
    a = write_test_single_file(tmp_path / "a.safetensors")
    b = write_test_single_file(tmp_path / "b.safetensors")
    assert a.read_bytes() == b.read_bytes()


def test_it_is_small_and_says_it_makes_noise(tiny_model_dir):
    size = sum(len(b) for b in files(tiny_model_dir).values())
    assert size < 8 * 2**20
    marker = json.loads((tiny_model_dir / "sd3desk-test-model.json").read_text())
    assert marker["note"] == NOTE and "noise" in NOTE


def test_it_has_the_real_sd3_layout(tiny_model_dir):
    index = json.loads((tiny_model_dir / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusion3Pipeline"
    transformer = json.loads((tiny_model_dir / "transformer" / "config.json").read_text())
    vae = json.loads((tiny_model_dir / "vae" / "config.json").read_text())
    assert transformer["in_channels"] == 16 and transformer["patch_size"] == 2
    assert vae["latent_channels"] == 16 and len(vae["block_out_channels"]) == 4  # 8x down


def _fake_weights(folder: Path) -> None:
    header = json.dumps({"w": {"dtype": "F16", "shape": [1], "data_offsets": [0, 2]}}).encode()
    for part in ("transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3"):
        (folder / part / "weights.safetensors").write_bytes(
            len(header).to_bytes(8, "little") + header + b"\0\0"
        )


@pytest.mark.parametrize(
    "family", [ModelFamily.sd3_medium, ModelFamily.sd35_medium, ModelFamily.sd35_large]
)
def test_real_family_folders_are_recognised(tmp_path, family):
    folder = tmp_path / family.value
    shutil.copytree(bundled_config_dir(family), folder)
    _fake_weights(folder)
    found, parts, _, _ = inspect_folder(folder)
    assert found is family
    assert {"transformer", "vae", "text_encoder_3"} <= parts
