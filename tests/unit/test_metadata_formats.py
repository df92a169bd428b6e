"""Metadata every tool reads, and every tool's we read (issue 13, item 5): UserComment byte
order, UTF-8 in tEXt, ComfyUI graphs walked through conditioning nodes and SamplerCustomAdvanced,
fields a file leaves out stay out, and the readers for InvokeAI, NovelAI, Fooocus, SwarmUI and
ComfyUI graphs in WebP/JPEG EXIF. Files are built the way each tool writes them; the public
sample files and the other projects' parsers as oracles are in test_metadata_oracles.py."""

from __future__ import annotations

import io
import json
import struct
import zlib

import piexif
import piexif.helper
import pytest
from PIL import Image, PngImagePlugin

from sd3desk.core.errors import MetadataError
from sd3desk.core.metadata import decode_user_comment, parse_texts, read_metadata


def png(tmp_path, name="a.png", **texts: str):
    info = PngImagePlugin.PngInfo()
    for key, value in texts.items():
        info.add_text(key, value)
    path = tmp_path / name
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    return path


# ---------------------------------------------------------------- EXIF UserComment


A1111 = (
    "猫が寝ている, 桜\nNegative prompt: 低品質\n"
    "Steps: 24, Sampler: Euler, CFG scale: 5.5, Seed: 99, Size: 832x1216"
)


@pytest.mark.parametrize("order", ["big", "little"])
@pytest.mark.parametrize("tiff", ["MM", "II"])
def test_user_comment_byte_order_is_read_right_for_cjk_prompts(order, tiff):
    """A prompt that starts with CJK characters has no zero bytes to look at first; the whole
    text decides (here the settings line), whatever order the TIFF itself says."""
    body = A1111.encode("utf-16-be" if order == "big" else "utf-16-le")
    assert decode_user_comment(b"UNICODE\0" + body, little_endian=tiff == "II") == A1111


def test_a_user_comment_without_any_ascii_follows_the_tiffs_byte_order():
    text = "猫桜"
    le = b"UNICODE\0" + text.encode("utf-16-le")
    assert decode_user_comment(le, little_endian=True) == text
    assert decode_user_comment(b"UNICODE\0" + text.encode("utf-16-be")) == text


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_a1111s_own_jpeg_and_webp_read_with_a_cjk_prompt(tmp_path, fmt):
    """The way A1111 saves (piexif.dump with UserComment.dump(..., encoding="unicode"))."""
    exif = piexif.dump(
        {"Exif": {piexif.ExifIFD.UserComment: piexif.helper.UserComment.dump(A1111, "unicode")}}
    )
    path = tmp_path / f"a.{fmt.lower()}"
    Image.new("RGB", (8, 8)).save(path, format=fmt, exif=exif)
    meta = read_metadata(path)
    assert (meta.params.prompt, meta.params.negative_prompt) == ("猫が寝ている, 桜", "低品質")
    assert (meta.params.steps, meta.params.seed, meta.params.width) == (24, 99, 832)


def test_utf8_written_into_a_text_chunk_is_read_as_utf8(tmp_path):
    """Stability Matrix and scripts write UTF-8 into tEXt, which the PNG spec says is Latin-1."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    data = buffer.getvalue()
    text = "ein Bär im Schnee, 熊\nSteps: 9, Seed: 4, CFG scale: 3"
    end = data.rindex(b"IEND") - 4
    path = tmp_path / "utf8.png"
    path.write_bytes(data[:end] + chunk(b"tEXt", b"parameters\0" + text.encode()) + data[end:])
    assert read_metadata(path).params.prompt == "ein Bär im Schnee, 熊"
    latin = "café crème\nSteps: 9, Seed: 4, CFG scale: 3"  # real Latin-1 stays Latin-1
    path.write_bytes(
        data[:end] + chunk(b"tEXt", b"parameters\0" + latin.encode("latin-1")) + data[end:]
    )
    assert read_metadata(path).params.prompt == "café crème"


# ---------------------------------------------------------------- fields a file leaves out


def test_fields_an_a1111_text_leaves_out_are_missing_not_defaults():
    meta = parse_texts({"parameters": "a boat\nSteps: 12, CFG scale: 6, Sampler: Euler"})
    assert set(meta.missing) >= {"seed", "width", "height"}
    assert "steps" not in meta.missing and "negative_prompt" not in meta.missing
    assert meta.params.steps == 12


def test_unmapped_samplers_are_listed_and_ours_are_not():
    ancestral = parse_texts({"parameters": "x\nSteps: 1, Sampler: Euler a, CFG scale: 2"})
    assert ("Sampler", "Euler a") in ancestral.unmapped
    ours = parse_texts({"parameters": "x\nSteps: 1, Sampler: Euler, CFG scale: 2"})
    assert ours.unmapped == ()


# ---------------------------------------------------------------- ComfyUI graphs


def sd3_graph(negative_link: list, extra: dict | None = None) -> dict:
    """The shape of ComfyUI's SD3/SD3.5 example workflows (API format)."""
    graph = {
        "4": {
            "class_type": "CheckpointLoaderSimple",
            "inputs": {"ckpt_name": "sd3.5_large.safetensors"},
        },
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a glass fox", "clip": ["4", 1]}},
        "71": {
            "class_type": "CLIPTextEncode",
            "inputs": {"text": "blurry, text", "clip": ["4", 1]},
        },
        "67": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["71", 0]}},
        "68": {
            "class_type": "ConditioningSetTimestepRange",
            "inputs": {"conditioning": ["67", 0], "start": 0.1, "end": 1.0},
        },
        "70": {
            "class_type": "ConditioningSetTimestepRange",
            "inputs": {"conditioning": ["71", 0], "start": 0.0, "end": 0.1},
        },
        "69": {
            "class_type": "ConditioningCombine",
            "inputs": {"conditioning_1": ["68", 0], "conditioning_2": ["70", 0]},
        },
        "135": {
            "class_type": "EmptySD3LatentImage",
            "inputs": {"width": 1024, "height": 1024, "batch_size": 1},
        },
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": 714,
                "steps": 28,
                "cfg": 4.5,
                "sampler_name": "dpmpp_2m",
                "scheduler": "sgm_uniform",
                "denoise": 1.0,
                "model": ["4", 0],
                "positive": ["6", 0],
                "negative": negative_link,
                "latent_image": ["135", 0],
            },
        },
    }
    graph.update(extra or {})
    return graph


def comfy(graph: dict):
    return parse_texts({"prompt": json.dumps(graph)})


def test_the_sd3_example_negative_is_found_through_zero_out_and_combine():
    meta = comfy(sd3_graph(["69", 0]))
    assert (meta.params.prompt, meta.params.negative_prompt) == ("a glass fox", "blurry, text")


def test_a_negative_made_by_zeroing_the_positive_is_empty_not_the_positive():
    """SD3.5 workflows make an empty negative as ConditioningZeroOut(positive encoding)."""
    zero = {"40": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["6", 0]}}}
    meta = comfy(sd3_graph(["40", 0], zero))
    assert (meta.params.prompt, meta.params.negative_prompt) == ("a glass fox", "")


@pytest.mark.parametrize(
    ("kind", "inputs"),
    [
        ("ControlNetApplySD3", {"strength": 0.7, "vae": ["4", 2], "image": ["9", 0]}),
        ("ControlNetApplyAdvanced", {"strength": 0.7, "image": ["9", 0]}),
        ("InstructPixToPixConditioning", {"vae": ["4", 2], "pixels": ["9", 0]}),
    ],
)
def test_nodes_with_positive_and_negative_outputs_are_followed_by_output_index(kind, inputs):
    node = {
        "50": {
            "class_type": kind,
            "inputs": {"positive": ["6", 0], "negative": ["71", 0], **inputs},
        }
    }
    graph = sd3_graph(["50", 1], node)
    graph["3"]["inputs"]["positive"] = ["50", 0]
    meta = comfy(graph)
    assert (meta.params.prompt, meta.params.negative_prompt) == ("a glass fox", "blurry, text")


def test_sampler_custom_advanced_graphs_give_prompts_seed_steps_and_cfg():
    """The Flux-style graph ComfyUI's custom sampling nodes make (nodes_custom_sampler.py)."""
    graph = sd3_graph(["71", 0])
    del graph["3"]
    graph.update(
        {
            "13": {
                "class_type": "SamplerCustomAdvanced",
                "inputs": {
                    "noise": ["25", 0],
                    "guider": ["22", 0],
                    "sampler": ["16", 0],
                    "sigmas": ["17", 0],
                    "latent_image": ["135", 0],
                },
            },
            "25": {"class_type": "RandomNoise", "inputs": {"noise_seed": 2**40}},
            "22": {
                "class_type": "CFGGuider",
                "inputs": {
                    "model": ["4", 0],
                    "positive": ["6", 0],
                    "negative": ["71", 0],
                    "cfg": 3.5,
                },
            },
            "16": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
            "17": {
                "class_type": "BasicScheduler",
                "inputs": {"model": ["4", 0], "scheduler": "simple", "steps": 20, "denoise": 1.0},
            },
        }
    )
    meta = comfy(graph)
    p = meta.params
    assert (p.prompt, p.negative_prompt, p.seed, p.steps, p.guidance_scale) == (
        "a glass fox",
        "blurry, text",
        2**40,
        20,
        3.5,
    )
    assert meta.unmapped == ()


def test_a_basic_guider_has_a_positive_only_and_no_cfg():
    graph = sd3_graph(["71", 0])
    del graph["3"]
    graph["13"] = {"class_type": "SamplerCustomAdvanced", "inputs": {"guider": ["22", 0]}}
    graph["22"] = {"class_type": "BasicGuider", "inputs": {"conditioning": ["6", 0]}}
    meta = comfy(graph)
    assert (meta.params.prompt, meta.params.guidance_scale) == ("a glass fox", 1.0)
    assert "negative_prompt" in meta.missing and "seed" in meta.missing


def test_parameters_starting_with_a_brace_fall_back_to_the_comfyui_graph(tmp_path):
    path = png(
        tmp_path,
        parameters='{"some": "json of a tool we do not know"}',
        prompt=json.dumps(sd3_graph(["69", 0])),
    )
    meta = read_metadata(path)
    assert (meta.source, meta.params.prompt) == ("comfyui", "a glass fox")
    with pytest.raises(MetadataError, match="JSON parameters in a format"):
        read_metadata(png(tmp_path, "b.png", parameters='{"some": "json"}'))


@pytest.mark.parametrize("fmt", ["WEBP", "JPEG"])
def test_comfyui_graphs_in_webp_and_jpeg_exif_are_read(tmp_path, fmt):
    """ComfyUI's SaveAnimatedWEBP writes "prompt:" + the graph into IFD0's Model tag (0x0110)
    and "workflow:" + the UI graph into Make (0x010F)."""
    exif = Image.Exif()
    exif[0x0110] = "prompt:" + json.dumps(sd3_graph(["69", 0]))
    exif[0x010F] = "workflow:" + json.dumps({"nodes": []})
    path = tmp_path / f"c.{fmt.lower()}"
    Image.new("RGB", (8, 8)).save(path, format=fmt, exif=exif.tobytes())
    meta = read_metadata(path)
    assert (meta.source, meta.params.prompt, meta.params.seed) == ("comfyui", "a glass fox", 714)


# ---------------------------------------------------------------- other tools


def test_invokeai_metadata(tmp_path):
    record = {
        "generation_mode": "sd3_txt2img",
        "positive_prompt": "an owl, ink",
        "negative_prompt": "photo",
        "width": 1024,
        "height": 1344,
        "seed": 3016931209,
        "cfg_scale": 4.0,
        "steps": 30,
        "scheduler": "euler",
        "model": {
            "key": "k",
            "hash": "blake3:abc",
            "name": "SD3.5 Medium",
            "base": "sd-3",
            "type": "main",
        },
    }
    meta = read_metadata(png(tmp_path, invokeai_metadata=json.dumps(record)))
    p = meta.params
    assert meta.source == "invokeai"
    assert (p.prompt, p.negative_prompt, p.seed, p.steps, p.guidance_scale, p.width, p.height) == (
        "an owl, ink",
        "photo",
        3016931209,
        30,
        4.0,
        1024,
        1344,
    )
    assert meta.model.name == "SD3.5 Medium"


def test_novelai_metadata(tmp_path):
    comment = {
        "prompt": "1girl, hat",
        "uc": "lowres",
        "steps": 28,
        "scale": 5.0,
        "seed": 12345,
        "width": 832,
        "height": 1216,
        "sampler": "k_euler_ancestral",
    }
    path = png(
        tmp_path,
        Software="NovelAI",
        Description="1girl, hat",
        Source="NovelAI Diffusion V3",
        Comment=json.dumps(comment),
    )
    meta = read_metadata(path)
    p = meta.params
    assert meta.source == "novelai"
    assert (p.prompt, p.negative_prompt, p.seed, p.steps, p.guidance_scale) == (
        "1girl, hat",
        "lowres",
        12345,
        28,
        5.0,
    )
    assert ("sampler", "k_euler_ancestral") in meta.unmapped


def test_swarmui_metadata(tmp_path):
    record = {
        "sui_image_params": {
            "prompt": "a red door",
            "negativeprompt": "people",
            "model": "OfficialStableDiffusion/sd3.5_medium",
            "seed": 1849013,
            "steps": 40,
            "cfgscale": 4.5,
            "width": 1024,
            "height": 1024,
            "sampler": "euler",
        },
        "sui_models": [],
    }
    meta = read_metadata(png(tmp_path, parameters=json.dumps(record)))
    p = meta.params
    assert meta.source == "swarmui"
    assert (p.prompt, p.negative_prompt, p.seed, p.steps, p.guidance_scale, p.width) == (
        "a red door",
        "people",
        1849013,
        40,
        4.5,
        1024,
    )
    assert meta.model.name == "OfficialStableDiffusion/sd3.5_medium"


def test_fooocus_metadata(tmp_path):
    record = {
        "prompt": "a lighthouse at dusk",
        "negative_prompt": "",
        "resolution": "(1152, 896)",
        "guidance_scale": 4,
        "steps": 30,
        "seed": "5739218375",
        "sampler": "dpmpp_2m_sde_gpu",
        "scheduler": "karras",
        "base_model": "juggernautXL_v8Rundiffusion.safetensors",
        "version": "Fooocus v2.5.5",
    }
    meta = read_metadata(png(tmp_path, parameters=json.dumps(record), fooocus_scheme="fooocus"))
    p = meta.params
    assert meta.source == "fooocus"
    assert (p.prompt, p.seed, p.steps, p.guidance_scale, p.width, p.height) == (
        "a lighthouse at dusk",
        5739218375,
        30,
        4,
        1152,
        896,
    )
    assert ("sampler", "dpmpp_2m_sde_gpu") in meta.unmapped
