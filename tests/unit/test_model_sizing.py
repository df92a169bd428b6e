"""Honest sizes and plans (issue 14, item 1): what is counted is what will be loaded — one
variant per component, the text encoders a single file borrows from a donor — the Hugging Face
listing follows refs/main, and fp8 "scaled" files are refused instead of loaded unscaled.

Checkpoints here are header-only safetensors files in Stability AI's key layout (the loaders
read headers only when sizing), with the shapes of the real models."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest

from sd3desk.core.errors import RefusedFormatError
from sd3desk.core.params import ModelFamily
from sd3desk.core.settings import MemoryPlan
from sd3desk.inference import quant
from sd3desk.inference.devices import DeviceInfo, Placement, resolve_plan
from sd3desk.inference.models import DONOR_PARAMS, resolve_model

GIB = 1024**3


def header_only(path: Path, tensors: dict[str, list[int]], dtype: str = "BF16") -> Path:
    """A safetensors file whose header describes `tensors` (their data is not written)."""
    header, offset = {}, 0
    for name, shape in tensors.items():
        size = 2
        for dim in shape:
            size *= dim
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)
    return path


def sd35_large_transformer_only(path: Path) -> Path:
    """SD3.5 Large's MMDiT and VAE (the "transformer only" downloads people have): 38 joint
    blocks of width 2432, about 8.1 B parameters; no text encoders."""
    prefix = "model.diffusion_model."
    tensors = {f"{prefix}context_embedder.weight": [2432, 4096]}
    for block in range(38):
        for part in ("x_block", "context_block"):
            tensors[f"{prefix}joint_blocks.{block}.{part}.attn.qkv.weight"] = [3 * 2432, 2432]
            tensors[f"{prefix}joint_blocks.{block}.{part}.mlp.fc1.weight"] = [4 * 2432, 2432]
            tensors[f"{prefix}joint_blocks.{block}.{part}.mlp.fc2.weight"] = [2432, 4 * 2432]
            tensors[f"{prefix}joint_blocks.{block}.{part}.adaLN_modulation.1.weight"] = [
                6 * 2432,
                2432,
            ]
    tensors["first_stage_model.decoder.conv_in.weight"] = [512, 16, 3, 3]
    return header_only(path, tensors)


def test_a_single_file_is_planned_with_the_encoders_it_borrows(tmp_path, monkeypatch):
    """Planned from its own tensors only, SD3.5 Large looked like it fits 23 GiB; with the
    CLIPs and T5 it loads from a donor it does not, so auto offloads instead of running out of
    memory while loading."""
    source = resolve_model(str(sd35_large_transformer_only(tmp_path / "large.safetensors")))
    assert source.family is ModelFamily.sd35_large and not source.has_clips
    own = sum(source.component_params.values())
    loaded = source.load_params()
    encoders = {k: n for k, n in DONOR_PARAMS.items() if k.startswith("text_encoder")}
    assert {k: loaded[k] for k in encoders} == encoders  # (its own VAE is its own)
    assert sum(loaded.values()) == own + sum(encoders.values())
    assert "text_encoder_3" not in source.load_params(use_t5=False)
    card = DeviceInfo("cuda", 0, "a 24 GB card", "bfloat16", 24 * GIB, 23 * GIB)
    sizes = {k: 2 * n for k, n in loaded.items()}
    assert own * 2 + 2 * GIB < card.free_bytes  # its own weights alone would have "fit"
    monkeypatch.setattr(quant, "installed", lambda name: False)  # 16-bit plans only
    assert resolve_plan(MemoryPlan.auto, card, sizes).placement is Placement.offload
    monkeypatch.setattr(quant, "installed", lambda name: True)  # then T5 in 8-bit fits
    assert resolve_plan(MemoryPlan.auto, card, sizes).t5_quant is quant.Quant.int8


def test_a_folder_with_fp32_and_fp16_variants_is_counted_once(tmp_path, tiny_model_dir):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    plain = resolve_model(str(folder))
    for part in ("transformer", "text_encoder", "vae"):
        weights = next((folder / part).glob("*.safetensors"))
        shutil.copy(
            weights, weights.with_name(weights.name.replace(".safetensors", ".fp16.safetensors"))
        )
    with_variants = resolve_model(str(folder))
    assert with_variants.component_params == plain.component_params
    assert with_variants.size_bytes() == plain.size_bytes()
    # a folder that has only a variant counts that
    for weights in (folder / "vae").glob("*.safetensors"):
        if ".fp16." not in weights.name:
            weights.unlink()
    assert resolve_model(str(folder)).component_params == plain.component_params


def test_fp8_scaled_checkpoints_are_refused_with_what_to_use_instead(tmp_path):
    path = sd35_large_transformer_only(tmp_path / "sd3.5_large_fp8_scaled.safetensors")
    data = json.loads(path.read_bytes()[8:])
    data["scaled_fp8"] = {"dtype": "F8_E4M3", "shape": [0], "data_offsets": [0, 0]}
    data["model.diffusion_model.joint_blocks.0.x_block.attn.qkv.scale_weight"] = {
        "dtype": "F32",
        "shape": [1],
        "data_offsets": [0, 4],
    }
    raw = json.dumps(data).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)
    with pytest.raises(RefusedFormatError, match='fp8 "scaled"') as refused:
        resolve_model(str(path))
    assert "16-bit file" in refused.value.advice


def test_the_hugging_face_listing_follows_refs_main(tmp_path, tiny_model_dir, monkeypatch):
    """A stale, incomplete snapshot cached next to the current one must not hide or replace
    it: the listing takes the revision refs/main names."""
    import huggingface_hub.constants as constants

    from sd3desk.inference.discovery import discover_models

    cache = tmp_path / "hub"
    repo = cache / "models--someone--sd3-test"
    old, new = "a" * 40, "b" * 40
    shutil.copytree(tiny_model_dir, repo / "snapshots" / new)
    stale = repo / "snapshots" / old
    shutil.copytree(tiny_model_dir, stale)
    shutil.rmtree(stale / "transformer")  # an interrupted old download
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(new)
    (repo / "blobs").mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    found, problems = discover_models()
    assert [s.path.name for s in found] == [new]
    assert problems == []


def test_sd35_large_turbo_is_told_from_large_by_its_name(tmp_path):
    """Turbo's weights are shaped like Large's: the file or repo name tells them apart, and
    Turbo brings Stability's 4 steps with guidance off, on Large's configs and limits."""
    from sd3desk.core.params import defaults_for
    from sd3desk.inference.models import bundled_config_dir

    turbo = resolve_model(
        str(sd35_large_transformer_only(tmp_path / "sd3.5_large_turbo.safetensors"))
    )
    large = resolve_model(str(sd35_large_transformer_only(tmp_path / "sd3.5_large.safetensors")))
    assert turbo.family is ModelFamily.sd35_large_turbo and large.family is ModelFamily.sd35_large
    assert turbo.max_side == large.max_side and turbo.load_params() == large.load_params()
    assert bundled_config_dir(turbo.family) == bundled_config_dir(large.family)
    defaults = defaults_for(turbo.family)
    assert (defaults.steps, defaults.guidance_scale, defaults.uses_cfg) == (4, 0.0, False)
