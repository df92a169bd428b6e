"""LoRA references, A1111's prompt tags and hashes, the LoRA folders (core, no torch)."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import pytest

from sd3desk.core.errors import InvalidParamsError, LoraError
from sd3desk.core.loras import (
    LoraKind,
    LoraLibrary,
    LoraNotFoundError,
    LoraRef,
    inspect_lora,
    lora_kind,
    parse_lora_hashes,
    parse_lora_spec,
    split_lora_tags,
)
from sd3desk.core.metadata import ImageMetadata, read_metadata
from sd3desk.core.metadata.a1111 import a1111_text, parse_a1111
from sd3desk.core.modelhash import tensor_sha256
from sd3desk.core.params import GenerationParams, check

HASH = "ab" * 32


def write_safetensors(
    path: Path, tensors: dict[str, tuple[int, ...]], payload: bytes = b""
) -> Path:
    """A .safetensors file with F32 tensors of the given shapes (zeros), plus `payload` bytes
    standing in for their data where given."""
    header: dict = {}
    offset = 0
    for name, shape in tensors.items():
        size = 4
        for dim in shape:
            size *= dim
        header[name] = {
            "dtype": "F32",
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + (payload or bytes(offset)))
    return path


KOHYA_SD3 = {
    "lora_unet_joint_blocks_0_x_block_attn_qkv.lora_down.weight": (4, 1536),
    "lora_unet_joint_blocks_0_x_block_attn_qkv.lora_up.weight": (4608, 4),
    "lora_unet_joint_blocks_0_x_block_attn_qkv.alpha": (),
    "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": (4, 768),
}


def test_tags_come_out_of_the_prompt_with_their_weights():
    found = split_lora_tags("a fox <lora:snowy:0.8>, in snow <LORA:ink style:1.2> <hypernet:x:1>")
    assert found.prompt == "a fox, in snow <hypernet:x:1>"
    assert found.loras == (("snowy", 0.8), ("ink style", 1.2))
    assert split_lora_tags("<lora:a>").loras == (("a", 1.0),)
    # A1111's text encoder and UNet weights: the MMDiT's is used, and the user is told
    two = split_lora_tags("x <lora:a:0.3:0.9> <lora:b:te=0.5:unet=1> <lyco:c:0.4:dyn=8>")
    assert two.loras == (("a", 0.9), ("b", 1.0), ("c", 0.4))
    assert len(two.notes) == 2 and "0.9" in two.notes[0]
    assert split_lora_tags("<lora:bad:heavy>").loras == ()


def test_lora_hashes_as_a1111_writes_and_reads_them():
    assert parse_lora_hashes("snowy: 1a2b3c4d5e6f, ink style: abcdef012345") == {
        "snowy": "1a2b3c4d5e6f",
        "ink style": "abcdef012345",
    }
    assert parse_lora_hashes("junk, : 12, x: not-hex") == {}


def test_a1111_text_carries_loras_and_reads_back():
    refs = (LoraRef("snowy", HASH, 0.8), LoraRef("ink", "cd" * 32, -1.5))
    params = GenerationParams("a fox", seed=3, loras=refs)
    text = a1111_text(ImageMetadata(params))
    assert text.splitlines()[0] == "a fox <lora:snowy:0.8> <lora:ink:-1.5>"
    assert 'Lora hashes: "snowy: ababababab' in text
    back = parse_a1111(text).params
    assert back.prompt == "a fox"
    assert back.loras == (LoraRef("snowy", HASH[:12], 0.8), LoraRef("ink", "cd" * 6, -1.5))


def test_our_record_keeps_the_whole_hash_and_old_records_read_the_same():
    params = GenerationParams("a fox", seed=3, loras=(LoraRef("snowy", HASH, 0.8),))
    data = params.to_dict()
    assert data["loras"] == [{"name": "snowy", "hash": HASH, "weight": 0.8}]
    assert GenerationParams.from_dict(data) == params
    assert "loras" not in GenerationParams("a fox").to_dict()  # text-only records unchanged


def test_sd_parsers_reads_the_tags_in_our_png(tmp_path):
    from PIL import Image
    from sd_parsers import ParserManager

    from sd3desk.core.metadata.writing import png_info

    params = GenerationParams("a fox", seed=3, loras=(LoraRef("snowy", HASH, 0.8),))
    path = tmp_path / "x.png"
    Image.new("RGB", (64, 64)).save(path, pnginfo=png_info(ImageMetadata(params)))
    found = ParserManager().parse(str(path))
    assert found is not None
    assert [p.value for p in found.prompts] == ["a fox <lora:snowy:0.8>"]
    assert read_metadata(path).params.loras == params.loras


@pytest.mark.parametrize(
    ("refs", "says"),
    [
        ((LoraRef("a", HASH, 11.0),), "between -10 and 10"),
        ((LoraRef("a", HASH, float("nan")),), "between -10 and 10"),
        ((LoraRef("a:b", HASH, 1.0),), "without < > :"),
        ((LoraRef("a", "abc", 1.0),), "64 hex"),
        ((LoraRef("a", HASH), LoraRef("b", HASH)), "listed twice"),
        (tuple(LoraRef(f"n{i}", f"{i:064x}") for i in range(9)), "at most 8"),
    ],
)
def test_bad_loras_are_refused_by_field(refs, says):
    with pytest.raises(InvalidParamsError) as caught:
        check(GenerationParams("x", loras=refs))
    assert caught.value.errors[0].field == "loras"
    assert says in caught.value.errors[0].message


def test_a_record_with_a_malformed_lora_list_is_a_field_error():
    with pytest.raises(InvalidParamsError, match="loras"):
        GenerationParams.from_dict({"prompt": "x", "loras": [{"hash": HASH}]})
    with pytest.raises(InvalidParamsError, match="loras"):
        GenerationParams.from_dict({"prompt": "x", "loras": "snowy"})


def test_specs_of_the_command_line():
    assert parse_lora_spec("style.safetensors:0.7") == ("style.safetensors", 0.7)
    assert parse_lora_spec("style") == ("style", 1.0)
    assert parse_lora_spec(r"C:\loras\style.safetensors") == (r"C:\loras\style.safetensors", 1.0)
    assert parse_lora_spec(r"C:\loras\style.safetensors:-0.5") == (
        r"C:\loras\style.safetensors",
        -0.5,
    )


def test_the_hash_is_a1111s_addnet_hash_of_the_tensors(tmp_path):
    path = write_safetensors(tmp_path / "x.safetensors", {"a.lora_down.weight": (2,)}, b"12345678")
    assert tensor_sha256(path) == hashlib.sha256(b"12345678").hexdigest()
    # metadata edits (a longer header) leave it as it was
    raw = path.read_bytes()
    length = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + length])
    header["__metadata__"] = {"ss_output_name": "renamed"}
    new = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + length :])
    assert tensor_sha256(path) == hashlib.sha256(b"12345678").hexdigest()


@pytest.mark.parametrize(
    ("keys", "kind", "layout"),
    [
        (list(KOHYA_SD3), LoraKind.sd3, "kohya"),
        (
            ["diffusion_model.joint_blocks.0.x_block.attn.qkv.lora_up.weight"],
            LoraKind.sd3,
            "comfyui",
        ),
        (["transformer.transformer_blocks.0.attn.to_q.lora_A.weight"], LoraKind.sd3, "diffusers"),
        (
            ["lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.alpha", "lora_te2_x"],
            LoraKind.sdxl,
            "",
        ),
        (["lora_unet_down_blocks_0_attentions_0_proj_in.alpha", "lora_te_x"], LoraKind.sd1, ""),
        (["unet.down_blocks.0.attentions.0.proj_in.lora_A.weight"], LoraKind.sd1, ""),
        (["lora_unet_double_blocks_0_img_attn_qkv.alpha"], LoraKind.flux, ""),
        (["transformer.single_transformer_blocks.0.proj_out.lora_A.weight"], LoraKind.flux, ""),
        (["something.else"], LoraKind.unknown, ""),
    ],
)
def test_what_a_lora_is_for_comes_from_its_tensor_names(keys, kind, layout):
    assert lora_kind(keys) == (kind, layout)


def test_inspect_reads_width_rank_and_parts_from_the_header(tmp_path):
    info = inspect_lora(write_safetensors(tmp_path / "snowy.safetensors", KOHYA_SD3))
    assert (info.kind, info.layout, info.rank, info.width) == (LoraKind.sd3, "kohya", 4, 1536)
    assert info.parts == {"transformer", "text_encoder"}
    assert info.describe() == "SD3 Medium / SD3.5 Medium LoRA (MMDiT + CLIP-L, rank 4)"
    with pytest.raises(LoraError, match="safetensors only"):
        inspect_lora(tmp_path / "snowy.ckpt")


def test_the_library_finds_a_lora_by_name_by_hash_and_after_a_rename(tmp_path):
    folder = tmp_path / "loras"
    (folder / "styles").mkdir(parents=True)
    path = write_safetensors(folder / "styles" / "snowy.safetensors", KOHYA_SD3)
    write_safetensors(folder / "other.safetensors", {"x.lora_up.weight": (3,)})
    (folder / "notes.txt").write_text("not a LoRA")
    library = LoraLibrary([folder, tmp_path / "missing"], tmp_path / "hashes.json")
    assert [p.name for p in library.files()] == ["other.safetensors", "snowy.safetensors"]
    ref = library.ref(path, 0.5)
    assert (ref.name, len(ref.hash), ref.weight) == ("snowy", 64, 0.5)
    assert library.find(ref) == path
    # by a short hash (A1111's 12 digits), and under another name
    moved = path.rename(folder / "snow_v2.safetensors")
    assert library.find(LoraRef("snowy", ref.hash[:12], 1.0)) == moved
    assert library.resolve([LoraRef("snowy", ref.hash[:12], 0.3)]) == (
        LoraRef("snow_v2", ref.hash, 0.3),
    )
    with pytest.raises(LoraNotFoundError, match=r"'gone'.*not in your LoRA folders"):
        library.find(LoraRef("gone", "0" * 64))


def test_a_file_hashed_elsewhere_is_found_again_by_its_hash(tmp_path):
    """`generate --lora /somewhere/x.safetensors`: the worker finds it through the cache."""
    (tmp_path / "downloads").mkdir()
    outside = write_safetensors(tmp_path / "downloads" / "x.safetensors", KOHYA_SD3)
    cache = tmp_path / "hashes.json"
    ref = LoraLibrary([], cache).ref(outside)
    assert LoraLibrary([tmp_path / "loras"], cache).find(ref) == outside
