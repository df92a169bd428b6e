"""Every way a model reaches the engine: folder, single file (with/without CLIP/T5), HF cache."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from sd3desk.core.errors import ModelError, RefusedFormatError, SD3DeskError
from sd3desk.core.params import GenerationParams, ModelFamily
from sd3desk.core.settings import Device, MemoryPlan
from sd3desk.inference.discovery import discover_models
from sd3desk.inference.engine import Engine
from sd3desk.inference.models import (
    ModelKind,
    inspect_checkpoint,
    resolve_model,
)
from sd3desk.inference.testmodel import write_test_single_file
from tests.inference.conftest import max_diff

PARAMS = GenerationParams("a cat", seed=3, steps=3, guidance_scale=4.0, width=256, height=256)


@pytest.fixture(scope="module")
def single_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("single")
    return {
        "full": write_test_single_file(folder / "tiny_incl_clips_t5.safetensors"),
        "no_t5": write_test_single_file(folder / "tiny_incl_clips.safetensors", t5=False),
        "bare": write_test_single_file(folder / "tiny.safetensors", clips=False, t5=False),
    }


def load(reference: str, cache_dir: Path, plan=MemoryPlan.auto, model_dirs=()) -> Engine:
    engine = Engine(Device.cpu, cache_dir=cache_dir, model_dirs=tuple(model_dirs))
    engine.load(resolve_model(reference), plan)
    return engine


def test_single_file_detection_from_the_header(single_files):
    full = inspect_checkpoint(single_files["full"])
    assert full.family is ModelFamily.test
    assert full.parts == {"transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3"}
    assert inspect_checkpoint(single_files["no_t5"]).parts == full.parts - {"text_encoder_3"}
    assert inspect_checkpoint(single_files["bare"]).parts == {"transformer", "vae"}


def test_single_file_matches_the_folder_model(engine, single_files, cache_dir):
    single = load(str(single_files["full"]), cache_dir)
    assert single.loaded.source.kind is ModelKind.single_file
    assert single.loaded.plan.use_t5
    assert max_diff(single.generate(PARAMS).images[0], engine.generate(PARAMS).images[0]) <= 1


def test_single_file_without_t5_runs_on_clip_only(single_files, cache_dir):
    engine = load(str(single_files["no_t5"]), cache_dir)
    assert not engine.loaded.plan.use_t5
    assert any("no T5" in n for n in engine.loaded.notices)
    assert engine.pipeline.text_encoder_3 is None
    assert engine.prompt_length("a cat").t5_tokens is None
    assert engine.generate(PARAMS).images[0].size == (256, 256)


def test_single_file_without_clips_takes_them_from_a_donor_folder(
    engine, single_files, cache_dir, tiny_model_dir
):
    donor_engine = load(str(single_files["bare"]), cache_dir, model_dirs=[tiny_model_dir])
    assert any("taken from" in n for n in donor_engine.loaded.notices)
    assert donor_engine.loaded.plan.use_t5  # T5 came from the donor too
    image = donor_engine.generate(PARAMS).images[0]
    assert max_diff(image, engine.generate(PARAMS).images[0]) <= 1


def test_single_file_without_clips_and_no_donor_says_what_to_add(single_files, cache_dir):
    with pytest.raises(ModelError) as info:
        load(str(single_files["bare"]), cache_dir)
    assert "no CLIP text encoders" in info.value.message
    assert "_incl_clips" in info.value.advice


def test_no_t5_plan_drops_the_encoder(tiny_model_dir, cache_dir):
    engine = load(str(tiny_model_dir), cache_dir, MemoryPlan.no_t5)
    assert engine.pipeline.text_encoder_3 is None
    assert "without T5" in engine.loaded.plan.describe()
    assert engine.generate(PARAMS).images[0].size == (256, 256)


def test_offload_plans_need_a_gpu(tiny_model_dir, cache_dir):
    with pytest.raises(SD3DeskError, match="needs a GPU"):
        load(str(tiny_model_dir), cache_dir, MemoryPlan.offload)


def test_test_model_reference_builds_it_on_first_use(tmp_path):
    source = resolve_model("test", test_model_dir=tmp_path / "test-model")
    assert source.kind is ModelKind.test
    engine = Engine(Device.cpu, cache_dir=tmp_path)
    stages = []
    engine.load(source, on_stage=stages.append)
    assert stages[0].text.startswith("Building the test model")
    assert (tmp_path / "test-model" / "model_index.json").exists()


def make_hub_cache(cache: Path, repo_id: str, folder: Path) -> Path:
    """The Hugging Face cache layout: blobs named by SHA-256, snapshot symlinks, refs/main."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / commit
    for file in folder.rglob("*"):
        if file.is_file():
            digest = hashlib.sha256(file.read_bytes()).hexdigest()
            blob = repo / "blobs" / digest
            blob.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(file, blob)
            link = snapshot / file.relative_to(folder)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def test_hugging_face_cache_layout(engine, tiny_model_dir, cache_dir, tmp_path, monkeypatch):
    import huggingface_hub.constants as constants

    hub = tmp_path / "hub"
    make_hub_cache(hub, "sd3desk/tiny-sd3", tiny_model_dir)
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    source = resolve_model("sd3desk/tiny-sd3")
    assert source.kind is ModelKind.hub and source.name == "sd3desk/tiny-sd3"
    hub_engine = Engine(Device.cpu, cache_dir=cache_dir)
    hub_engine.load(source)
    assert max_diff(hub_engine.generate(PARAMS).images[0], engine.generate(PARAMS).images[0]) == 0
    # The hash comes straight from the blob's name: no re-hashing of multi-GB files.
    blob = (source.path / "transformer" / "diffusion_pytorch_model.safetensors").resolve()
    assert hub_engine.loaded.identity.hash == blob.name[:10]
    found, problems = discover_models()
    assert [s.reference for s in found] == ["sd3desk/tiny-sd3"] and problems == []


def test_discover_lists_folders_and_single_files(tiny_model_dir, single_files):
    found, problems = discover_models([tiny_model_dir.parent, single_files["full"].parent])
    kinds = {(s.kind, s.family) for s in found}
    assert (ModelKind.folder, ModelFamily.test) in kinds
    assert (ModelKind.single_file, ModelFamily.test) in kinds
    assert problems == []


def test_folder_with_only_pickle_weights_is_refused(tiny_model_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_model_dir, bad)
    weights = bad / "transformer" / "diffusion_pytorch_model.safetensors"
    weights.rename(weights.with_suffix(".bin"))
    with pytest.raises(RefusedFormatError, match="pickle"):
        resolve_model(str(bad))


def test_damaged_weights_name_the_file(tiny_model_dir, tmp_path, cache_dir):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_model_dir, bad)
    weights = bad / "vae" / "diffusion_pytorch_model.safetensors"
    data = weights.read_bytes()
    header_end = 8 + int.from_bytes(data[:8], "little")
    weights.write_bytes(data[: header_end + 100])  # header intact, tensors cut short
    with pytest.raises(ModelError) as info:
        load(str(bad), cache_dir)
    assert info.value.path == str(bad / "vae")
    assert "vae" in info.value.message
    weights.write_bytes(data[:1000])  # header itself cut short: caught before loading
    with pytest.raises(ModelError, match="is damaged: its header") as info:
        resolve_model(str(bad))
    assert info.value.path == str(weights)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\xff" * 64)
    with pytest.raises(ModelError, match=r"garbage\.safetensors is not a valid"):
        resolve_model(str(garbage))


def test_other_architectures_are_named(tmp_path):
    path = tmp_path / "sdxl.safetensors"
    header = {
        "model.diffusion_model.input_blocks.0.0.weight": {
            "dtype": "F16",
            "shape": [1],
            "data_offsets": [0, 2],
        }
    }
    raw = json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + b"\0\0")
    with pytest.raises(ModelError, match=r"Stable Diffusion 1\.x/2\.x/XL"):
        resolve_model(str(path))


def test_folder_of_another_pipeline_is_named(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    with pytest.raises(ModelError, match="FluxPipeline"):
        resolve_model(str(tmp_path))


@pytest.mark.parametrize(
    ("config", "family"),
    [
        ("sd3-medium", ModelFamily.sd3_medium),
        ("sd3.5-medium", ModelFamily.sd35_medium),
        ("sd3.5-large", ModelFamily.sd35_large),
    ],
)
def test_real_checkpoint_layouts_are_identified(tmp_path, config, family):
    """Header-only files with the real tensor names and shapes of each shipped family config."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, SD3Transformer2DModel

    from sd3desk.inference.checkpoint_layout import to_single_file_state_dict
    from sd3desk.inference.models import bundled_config_dir

    root = bundled_config_dir(family)
    assert root.name == config
    with init_empty_weights():
        transformer = SD3Transformer2DModel.from_config(
            SD3Transformer2DModel.load_config(root / "transformer")
        )
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(root / "vae"))
    state = to_single_file_state_dict(transformer, vae)
    header = {
        k: {"dtype": "F16", "shape": list(t.shape), "data_offsets": [0, 0]}
        for k, t in state.items()
    }
    raw = json.dumps(header).encode()
    path = tmp_path / f"{config}.safetensors"
    path.write_bytes(len(raw).to_bytes(8, "little") + raw)
    info = inspect_checkpoint(path)
    assert info.family is family
    assert info.parts == {"transformer", "vae"}


def test_bundled_clip_tokenizer_is_the_real_vocabulary():
    from sd3desk.inference.loading import _clip_tokenizers
    from sd3desk.inference.models import bundled_config_dir

    tokenizers = _clip_tokenizers(
        bundled_config_dir(ModelFamily.sd3_medium), ModelFamily.sd3_medium
    )
    ids = tokenizers["tokenizer"]("a photo of a cat").input_ids
    assert ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    padded = tokenizers["tokenizer_2"]("a cat", padding="max_length", max_length=77).input_ids
    assert len(padded) == 77 and padded[-1] == 0  # CLIP-G pads with "!" (id 0)


@pytest.mark.real_weights
@pytest.mark.skipif(
    not os.environ.get("SD3DESK_REAL_MODEL"), reason="set SD3DESK_REAL_MODEL to a real SD3 model"
)
def test_real_model_generates(tmp_path):
    engine = Engine(Device.auto, cache_dir=tmp_path)
    engine.load(resolve_model(os.environ["SD3DESK_REAL_MODEL"]))
    image = engine.generate(
        GenerationParams("a red apple on a table", seed=1, steps=4, width=512, height=512)
    ).images[0]
    assert image.size == (512, 512)


def test_a_comfyui_saved_checkpoint_with_t5_loads_and_matches(single_files, cache_dir, tmp_path):
    """ComfyUI saves T5 with `shared.weight` only (encoder.embed_tokens is the same tied
    tensor): the loader ties them, and the image is the one the full file makes (issue 14)."""
    from safetensors.torch import load_file, save_file

    state = load_file(single_files["full"])
    del state["text_encoders.t5xxl.transformer.encoder.embed_tokens.weight"]
    comfy = tmp_path / "tiny_comfyui_t5.safetensors"
    from safetensors import safe_open

    with safe_open(single_files["full"], "pt") as handle:
        metadata = handle.metadata()
    save_file(state, comfy, metadata=metadata)
    single = load(str(comfy), cache_dir)
    assert single.loaded.plan.use_t5
    full = load(str(single_files["full"]), cache_dir)
    assert max_diff(single.generate(PARAMS).images[0], full.generate(PARAMS).images[0]) == 0
