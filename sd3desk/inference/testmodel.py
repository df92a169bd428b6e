"""A deterministic tiny random SD3 in the real diffusers layout, for tests and trying the app.

Its weights are random: images are noise. It has every real part of SD3 Medium at toy sizes:
16 latent channels, 8x VAE downsampling, patch size 2, CLIP-L + CLIP-G + T5 encoders with
tokenizers built here from small hand-made vocabularies (no downloads).
"""

from __future__ import annotations

import json
import shutil
import string
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sd3desk.inference.devices import quiet_libraries, t5_tokenizer_class

MARKER_FILE = "sd3desk-test-model.json"
HEADER_KEY = "sd3desk_test_model"  # safetensors __metadata__ key naming the test-model size
GGUF_TEST_KEY = "sd3desk.test_size"  # the same, in the header of a test model's GGUF file
NOTE = "sd3desk test model: random weights, produces noise; for trying the app and for tests"


@dataclass(frozen=True)
class TestModelSize:
    """Architecture numbers of one test-model size."""

    __test__ = False  # not a pytest class

    name: str
    layers: int
    heads: int
    head_dim: int
    # CLIP-L and CLIP-G widths must differ (diffusers tells them apart by width); T5 is as wide
    # as both together, since SD3 pads the joined CLIP states up to T5's width.
    clip_l_hidden: int
    clip_g_hidden: int
    text_layers: int
    vae_channels: tuple[int, int, int, int]


SIZES = {
    # "tiny": a few MB, milliseconds per step; what the tests and `make-test-model` use.
    "tiny": TestModelSize("tiny", 2, 4, 8, 32, 48, 2, (8, 8, 16, 16)),
    # "small": benchmarks; a 256x256 step takes a fraction of a second on a laptop CPU.
    "small": TestModelSize("small", 6, 8, 32, 64, 96, 2, (32, 64, 64, 64)),
    # "medium": hundreds of MB of weights, for the loading-memory benchmark.
    "medium": TestModelSize("medium", 12, 12, 64, 128, 192, 2, (64, 128, 128, 128)),
}

_CLIP_WORDS = ("a", "an", "the", "of", "in", "on", "and", "with", "cat", "dog", "photo", "red")
_T5_WORDS = (
    "a",
    "an",
    "the",
    "of",
    "in",
    "on",
    "and",
    "with",
    "cat",
    "dog",
    "photo",
    "red",
    "blue",
)


def _byte_alphabet() -> list[str]:
    # GPT-2/CLIP byte-level BPE alphabet: printable bytes keep their character, the other bytes
    # map to code points from 256 up, in byte order (the rule CLIP's tokenizer is built on).
    keep = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    rest = [b for b in range(256) if b not in keep]
    return [chr(b) for b in keep] + [chr(256 + i) for i in range(len(rest))]


def _clip_merges() -> list[tuple[str, str]]:
    """Merges that build each word of _CLIP_WORDS letter by letter, ending in '</w>'."""
    merges: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for word in _CLIP_WORDS:
        if len(word) < 2:
            continue
        left = word[0]
        for i, char in enumerate(word[1:], start=1):
            right = char + ("</w>" if i == len(word) - 1 else "")
            if (left, right) not in seen:
                seen.add((left, right))
                merges.append((left, right))
            left += right
    return merges


def write_clip_tokenizer(folder: Path, pad_token: str) -> int:
    """A tiny CLIP BPE tokenizer (vocab.json, merges.txt, config); returns the vocabulary size."""
    merges = _clip_merges()
    alphabet = _byte_alphabet()
    tokens = alphabet + [c + "</w>" for c in alphabet] + [a + b for a, b in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {t: i for i, t in enumerate(dict.fromkeys(tokens))}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), "utf-8")
    lines = "".join(f"{a} {b}\n" for a, b in merges)
    (folder / "merges.txt").write_text("#version: 0.2\n" + lines, "utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": pad_token,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), "utf-8")
    return len(vocab)


def _t5_vocab() -> list[tuple[str, float]]:
    # Unigram pieces with scores; ids 0-2 are T5's fixed <pad>, </s>, <unk>.
    chars = string.ascii_letters + string.digits + string.punctuation
    pieces = ["\u2581", *chars, *("\u2581" + c for c in chars), *("\u2581" + w for w in _T5_WORDS)]
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    return vocab + [(p, -10.0 + min(len(p), 10) * 0.5) for p in pieces]


def make_tokenizers(root: Path) -> dict[str, Any]:
    """Build the three tokenizers into root/tokenizer{,_2,_3} and load them."""
    from transformers import CLIPTokenizer

    T5TokenizerFast = t5_tokenizer_class()

    write_clip_tokenizer(root / "tokenizer", "<|endoftext|>")
    write_clip_tokenizer(root / "tokenizer_2", "!")
    T5TokenizerFast(vocab=_t5_vocab(), extra_ids=0, model_max_length=512).save_pretrained(
        root / "tokenizer_3"
    )
    return {
        "tokenizer": CLIPTokenizer.from_pretrained(root / "tokenizer"),
        "tokenizer_2": CLIPTokenizer.from_pretrained(root / "tokenizer_2"),
        "tokenizer_3": T5TokenizerFast.from_pretrained(root / "tokenizer_3"),
    }


def _seeded(name: str) -> None:
    import torch

    torch.manual_seed(zlib.crc32(name.encode()))


def build_pipeline(size: str = "tiny", work_dir: Path | None = None) -> Any:
    """A StableDiffusion3Pipeline with random weights, identical on every call (CPU, fp32)."""
    import torch
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import (
        CLIPTextConfig,
        CLIPTextModelWithProjection,
        T5Config,
        T5EncoderModel,
    )

    quiet_libraries()
    spec = SIZES[size]
    with tempfile.TemporaryDirectory() as tmp:
        tokenizers = make_tokenizers(Path(work_dir or tmp))
    hidden = spec.heads * spec.head_dim
    clip_vocab = len(tokenizers["tokenizer"])
    eos = tokenizers["tokenizer"].eos_token_id

    def clip(name: str, act: str, width: int) -> Any:
        config = CLIPTextConfig(
            vocab_size=clip_vocab,
            hidden_size=width,
            intermediate_size=width * 2,
            num_hidden_layers=spec.text_layers,
            num_attention_heads=4,
            max_position_embeddings=77,
            projection_dim=width,
            hidden_act=act,
            bos_token_id=tokenizers["tokenizer"].bos_token_id,
            eos_token_id=eos,
            pad_token_id=1,
        )
        _seeded(name)
        return CLIPTextModelWithProjection(config)

    t5_width = spec.clip_l_hidden + spec.clip_g_hidden
    with torch.no_grad():
        text_encoder = clip("text_encoder", "quick_gelu", spec.clip_l_hidden)
        # Stability's single files carry no CLIP-L projection and diffusers puts an identity in
        # its place, so the test model uses one too and survives the single-file round trip.
        text_encoder.text_projection.weight.copy_(torch.eye(spec.clip_l_hidden))
        text_encoder_2 = clip("text_encoder_2", "gelu", spec.clip_g_hidden)
        _seeded("text_encoder_3")
        t5_config: dict[str, Any] = {  # (a dict: the configs' annotations are narrower)
            "vocab_size": len(tokenizers["tokenizer_3"]),
            "d_model": t5_width,
            "d_ff": t5_width * 2,
            "d_kv": 16,
            "num_layers": spec.text_layers,
            "num_heads": 4,
            "feed_forward_proj": "gated-gelu",
            "relative_attention_num_buckets": 8,
            "relative_attention_max_distance": 32,
            "decoder_start_token_id": 0,
        }
        text_encoder_3 = T5EncoderModel(T5Config(**t5_config))
        _seeded("transformer")
        transformer = SD3Transformer2DModel(
            sample_size=32,
            patch_size=2,
            in_channels=16,
            num_layers=spec.layers,
            attention_head_dim=spec.head_dim,
            num_attention_heads=spec.heads,
            joint_attention_dim=t5_width,
            caption_projection_dim=hidden,
            pooled_projection_dim=t5_width,
            out_channels=16,
            pos_embed_max_size=128,
        )
        _seeded("vae")
        vae_config: dict[str, Any] = {
            "in_channels": 3,
            "out_channels": 3,
            "down_block_types": ("DownEncoderBlock2D",) * 4,
            "up_block_types": ("UpDecoderBlock2D",) * 4,
            "block_out_channels": spec.vae_channels,
            "layers_per_block": 1,
            "latent_channels": 16,
            "norm_num_groups": 8,
            "sample_size": 256,
            "scaling_factor": 1.5305,  # SD3's VAE numbers, so latents sit in the same range
            "shift_factor": 0.0609,
            "use_quant_conv": False,
            "use_post_quant_conv": False,
        }
        vae = AutoencoderKL(**vae_config)
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        text_encoder_3=text_encoder_3,
        **tokenizers,
    )


def write_test_model(folder: Path, size: str = "tiny") -> Path:
    """Write the test model as a diffusers folder (model_index.json + components) at `folder`."""
    return _write_folder(Path(folder), size, weights=True)


def ensure_test_model(folder: Path, size: str = "tiny") -> Path:
    """The test model at `folder`, built when missing. Processes building it at once each
    build their own, and the first one moved into place stays (the others are dropped).

    Call it before a torch.distributed process group starts: under one, transformers saves
    weights only on rank 0, and any other rank would write text encoders without weights."""
    folder = Path(folder)
    if not (folder / "model_index.json").exists():
        _write_folder(folder, size, weights=True, replace=False)
    return folder


def _lacks_weights(part: Path) -> bool:
    return (part / "config.json").exists() and not any(part.glob("*.safetensors"))


def write_config_folder(folder: Path, size: str) -> Path:
    """Configs and tokenizers (no weights) of a test-model size: what a single file needs."""
    folder = Path(folder)
    if (folder / "model_index.json").exists():
        return folder
    return _write_folder(folder, size, weights=False)


def _write_folder(folder: Path, size: str, weights: bool, replace: bool = True) -> Path:
    """Build the model in a staging folder beside `folder`, then move it into place whole
    (without `replace`, a folder that appeared meanwhile is kept and the new one dropped)."""
    if size not in SIZES:
        raise ValueError(f"unknown test model size {size!r}; choose from {', '.join(SIZES)}")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    staging.chmod(0o755)
    try:
        build_pipeline(size).save_pretrained(staging, safe_serialization=True)
        if weights:
            empty = [p.name for p in staging.iterdir() if p.is_dir() and _lacks_weights(p)]
            if empty:  # (transformers saves only on rank 0 of a torch.distributed group)
                raise RuntimeError(f"the test model's {', '.join(sorted(empty))} got no weights")
            marker = {"format": HEADER_KEY, "size": size, "note": NOTE}
            (staging / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n", "utf-8")
        else:
            for file in staging.rglob("*.safetensors"):
                file.unlink()
        if folder.exists():
            if not replace:
                return folder
            shutil.rmtree(folder)
        try:
            staging.rename(folder)
        except OSError:  # another process moved its own into place first
            if replace or not (folder / "model_index.json").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def write_test_single_file(
    path: Path, size: str = "tiny", *, clips: bool = True, t5: bool = True
) -> Path:
    """Write the test model as one .safetensors checkpoint in Stability AI's original layout."""
    from safetensors.torch import save

    from sd3desk.core.atomic import atomic_write_bytes
    from sd3desk.inference.checkpoint_layout import to_single_file_state_dict

    pipe = build_pipeline(size)
    state = to_single_file_state_dict(
        pipe.transformer,
        pipe.vae,
        pipe.text_encoder if clips else None,
        pipe.text_encoder_2 if clips else None,
        pipe.text_encoder_3 if t5 else None,
    )
    path = Path(path)
    atomic_write_bytes(path, save(state, metadata={HEADER_KEY: size}))
    return path


def write_test_gguf(path: Path, quant: str = "Q8_0", size: str = "tiny") -> Path:
    """Write the test model's MMDiT as a GGUF file the way the published SD3/SD3.5 GGUF files
    are laid out (see `write_gguf`)."""
    return write_gguf(build_pipeline(size).transformer, path, quant, {GGUF_TEST_KEY: size})


def write_gguf(transformer: Any, path: Path, quant: str, strings: dict[str, str]) -> Path:
    """`transformer` as the published SD3/SD3.5 GGUF files are laid out: the original key
    names without "model.diffusion_model.", weight matrices in `quant` (Q8_0, Q4_0, ... in
    blocks of 32 along a row), biases, norms and the position embedding in F32; `strings` as
    header fields."""
    import gguf
    import numpy as np

    from sd3desk.inference.checkpoint_layout import MMDIT_PREFIX, _mmdit_entries

    state = _mmdit_entries(transformer)
    kind = gguf.GGMLQuantizationType[quant]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.writing")
    writer = gguf.GGUFWriter(str(staging), "sd3")
    for key, value in strings.items():
        writer.add_string(key, value)
    for key, tensor in state.items():
        array = tensor.float().numpy()
        name = key[len(MMDIT_PREFIX) :]
        if array.ndim == 2 and name.endswith(".weight") and array.shape[-1] % 32 == 0:
            packed = gguf.quants.quantize(array, kind)
            writer.add_tensor(name, packed, raw_shape=packed.shape, raw_dtype=kind)
        else:
            writer.add_tensor(name, array.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    staging.replace(path)  # (the writer needs a path of its own; then renamed into place)
    return path
