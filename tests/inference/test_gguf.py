"""GGUF transformers (issue 14, item 2): tiny GGUF files written with the `gguf` package in the
layout of the published SD3/SD3.5 GGUF files (original key names, weights in Q8_0 or Q4_0),
identified from their header, loaded through diffusers' GGUF loader with the rest of the
pipeline from a diffusers folder, and generating on the CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sd3desk.core.errors import ModelError
from sd3desk.core.params import GenerationParams, ModelFamily
from sd3desk.core.settings import Device
from sd3desk.inference.discovery import discover_models
from sd3desk.inference.engine import Engine
from sd3desk.inference.models import ModelKind, resolve_model
from sd3desk.inference.testmodel import write_test_gguf

PARAMS = GenerationParams("a cat", seed=3, steps=3, guidance_scale=4.0, width=256, height=256)


@pytest.fixture(scope="module")
def gguf_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("gguf")
    return {q: write_test_gguf(folder / f"tiny-{q}.gguf", q) for q in ("Q8_0", "Q4_0")}


def pixels(engine: Engine) -> np.ndarray:
    return np.asarray(engine.generate(PARAMS).images[0]).astype(int)


def test_family_and_quantization_come_from_the_header(gguf_files):
    for quant, path in gguf_files.items():
        source = resolve_model(str(path))
        assert (source.kind, source.family, source.quant) == (
            ModelKind.gguf,
            ModelFamily.test,
            quant,
        )
        assert source.parts == {"transformer"}
        assert source.load_bytes(2)["transformer"] == path.stat().st_size  # stays quantized


@pytest.mark.parametrize(("quant", "mean_limit"), [("Q8_0", 1.0), ("Q4_0", 6.0)])
def test_gguf_transformers_generate_and_re_run_exactly(
    gguf_files, engine, cache_dir, quant, mean_limit
):
    """Against the same model unquantized: close (Q8_0 within a level of 255 on average), and
    the same GGUF twice gives the same pixels."""
    quantized = Engine(Device.cpu, cache_dir=cache_dir)
    quantized.load(resolve_model(str(gguf_files[quant])))
    first = pixels(quantized)
    assert (first == pixels(quantized)).all()
    assert np.abs(first - pixels(engine)).mean() <= mean_limit


def test_gguf_files_are_listed_with_their_sizes(gguf_files):
    found, problems = discover_models([gguf_files["Q8_0"].parent])
    assert sorted(s.path.name for s in found) == ["tiny-Q4_0.gguf", "tiny-Q8_0.gguf"]
    assert problems == []
    assert all("on disk" in s.sizes() for s in found)


def test_a_gguf_file_that_is_not_an_sd3_transformer_is_named(tmp_path):
    import gguf

    path = tmp_path / "llama.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tensor("token_embd.weight", np.zeros((4, 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ModelError, match="not an SD3 transformer"):
        resolve_model(str(path))
    (tmp_path / "cut.gguf").write_bytes(path.read_bytes()[:40])
    with pytest.raises(ModelError, match="not a valid GGUF file"):
        resolve_model(str(tmp_path / "cut.gguf"))


@pytest.mark.parametrize(
    ("width", "dual", "family"),
    [
        (2432, False, ModelFamily.sd35_large),
        (1536, True, ModelFamily.sd35_medium),
        (1536, False, ModelFamily.sd3_medium),
    ],
)
def test_real_families_are_told_apart_by_their_tensor_table(tmp_path, width, dual, family):
    """The shapes of the published GGUF files: context_embedder is (width, 4096) in torch's
    order (GGUF stores it reversed); SD3.5 Medium's blocks have a second attention."""
    import gguf

    path = tmp_path / "real.gguf"
    writer = gguf.GGUFWriter(str(path), "sd3")
    names = ["context_embedder.weight", "joint_blocks.0.x_block.attn.qkv.weight"]
    if dual:
        names.append("joint_blocks.0.x_block.attn2.qkv.weight")
    for name in names:
        shape = (width, 4096) if name.startswith("context") else (3 * 32, 32)
        packed = gguf.quants.quantize(np.zeros(shape, np.float32), gguf.GGMLQuantizationType.Q8_0)
        writer.add_tensor(
            name, packed, raw_shape=packed.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    source = resolve_model(str(path))
    assert (source.family, source.quant) == (family, "Q8_0")
    # the VAE and all three text encoders come from a donor: the plan counts them
    assert set(source.load_params()) == {
        "transformer",
        "vae",
        "text_encoder",
        "text_encoder_2",
        "text_encoder_3",
    }
