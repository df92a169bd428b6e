"""Round-trip tests: tiny SD3 parts -> single-file layout -> diffusers' real single-file loaders."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

from diffusers import (  # noqa: E402
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
)
from diffusers.loaders import single_file_utils as sfu  # noqa: E402
from transformers import (  # noqa: E402
    CLIPTextConfig,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
    T5TokenizerFast,
)

from sd3desk.inference.checkpoint_layout import (  # noqa: E402
    CLIP_G_PREFIX,
    CLIP_L_PREFIX,
    MMDIT_PREFIX,
    T5_PREFIX,
    VAE_PREFIX,
    to_single_file_state_dict,
)

# ---------------------------------------------------------------- tiny builders

CLIP_L_WIDTH = 16
CLIP_G_WIDTH = 48  # must differ from CLIP-L: diffusers tells the two apart by width
T5_WIDTH = 64  # = joint_attention_dim; CLIP-L + CLIP-G hidden states are padded up to it


def _randomize(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    # Default inits leave many weights at 0 or 1 (norms, zero-init projections), which would
    # hide swapped or misplaced tensors; distinct random values make every mix-up visible.
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in module.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.randn(tensor.shape, generator=gen, dtype=tensor.dtype))
    return module.eval()


def tiny_transformer(sd35: bool = False) -> SD3Transformer2DModel:
    extra = {"qk_norm": "rms_norm", "dual_attention_layers": (0,)} if sd35 else {}
    model = SD3Transformer2DModel(
        sample_size=32,
        patch_size=2,
        in_channels=16,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=T5_WIDTH,
        caption_projection_dim=32,
        pooled_projection_dim=CLIP_L_WIDTH + CLIP_G_WIDTH,
        out_channels=16,
        pos_embed_max_size=32,
        **extra,
    )
    return _randomize(model, seed=1)


def tiny_vae() -> AutoencoderKL:
    model = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=16,
        block_out_channels=(8, 8, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        norm_num_groups=4,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5305,
    )
    return _randomize(model, seed=2)


def _byte_chars() -> list[str]:
    # GPT-2's byte-to-unicode table, which CLIP's byte-level BPE vocabulary starts with.
    visible = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    extra = [b for b in range(256) if b not in visible]
    return [chr(b) for b in visible] + [chr(256 + n) for n in range(len(extra))]


def tiny_clip_tokenizer() -> CLIPTokenizer:
    chars = _byte_chars()
    merges = [("h", "e"), ("l", "l"), ("ll", "o</w>")]
    tokens = chars + [c + "</w>" for c in chars] + [a + b for a, b in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: i for i, token in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def tiny_t5_tokenizer() -> T5TokenizerFast:
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [(c, -1.0 - i / 100) for i, c in enumerate("abcdefghijklmnopqrstuvwxyz▁")]
    return T5TokenizerFast(vocab=pieces, extra_ids=0, model_max_length=512)


def tiny_clip(width: int, seed: int, vocab_size: int) -> CLIPTextModelWithProjection:
    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=width,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    )
    return _randomize(CLIPTextModelWithProjection(config), seed=seed)


def tiny_clip_l(vocab_size: int) -> CLIPTextModelWithProjection:
    model = tiny_clip(CLIP_L_WIDTH, seed=3, vocab_size=vocab_size)
    # SD3 uses CLIP-L unprojected; diffusers installs an identity projection when loading.
    with torch.no_grad():
        model.text_projection.weight.copy_(torch.eye(CLIP_L_WIDTH))
    return model


def tiny_t5(vocab_size: int) -> T5EncoderModel:
    config = T5Config(
        vocab_size=vocab_size,
        d_model=T5_WIDTH,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=16,
        feed_forward_proj="gated-gelu",  # T5 v1.1 like t5xxl: wi_0 / wi_1
        is_encoder_decoder=False,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    return _randomize(T5EncoderModel(config), seed=5)


def tiny_pipeline(sd35: bool = False) -> StableDiffusion3Pipeline:
    tokenizer = tiny_clip_tokenizer()
    t5_tokenizer = tiny_t5_tokenizer()
    return StableDiffusion3Pipeline(
        transformer=tiny_transformer(sd35),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=tiny_vae(),
        text_encoder=tiny_clip_l(len(tokenizer)),
        tokenizer=tokenizer,
        text_encoder_2=tiny_clip(CLIP_G_WIDTH, seed=4, vocab_size=len(tokenizer)),
        tokenizer_2=copy.deepcopy(tokenizer),
        text_encoder_3=tiny_t5(len(t5_tokenizer)),
        tokenizer_3=t5_tokenizer,
    )


def save_config_only(pipe: StableDiffusion3Pipeline, folder: Path) -> Path:
    """Write a diffusers-layout folder holding configs and tokenizers but no weights.

    Without weights in it, any component that silently fell back to ``from_pretrained``
    instead of reading the single file would fail to load.
    """
    pipe.save_pretrained(folder)
    for pattern in ("*.safetensors", "*.bin"):
        for weights in folder.rglob(pattern):
            weights.unlink()
    return folder


def write_single_file(pipe: StableDiffusion3Pipeline, path: Path, *, with_text: bool) -> Path:
    text = (
        {
            "text_encoder": pipe.text_encoder,
            "text_encoder_2": pipe.text_encoder_2,
            "text_encoder_3": pipe.text_encoder_3,
        }
        if with_text
        else {}
    )
    state = to_single_file_state_dict(pipe.transformer, pipe.vae, **text)
    safetensors_torch.save_file(state, str(path))
    return path


def assert_same_weights(expected: torch.nn.Module, actual: torch.nn.Module) -> None:
    want = expected.state_dict()
    got = actual.state_dict()
    assert sorted(got) == sorted(want)
    differing = [
        key
        for key, value in want.items()
        if got[key].is_meta
        or got[key].dtype != value.dtype
        or got[key].shape != value.shape
        or not torch.equal(got[key], value)
    ]
    assert differing == []


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", params=["sd3", "sd35"])
def variant(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """A tiny pipeline, its weight-less config folder and its single-file checkpoint."""
    sd35 = request.param == "sd35"
    pipe = tiny_pipeline(sd35)
    root = tmp_path_factory.mktemp(request.param)
    config = save_config_only(pipe, root / "config")
    path = write_single_file(pipe, root / "model.safetensors", with_text=True)
    return pipe, config, path


# ---------------------------------------------------------------- round trips


def test_transformer_round_trips_through_from_single_file(variant) -> None:
    pipe, config, path = variant
    loaded = SD3Transformer2DModel.from_single_file(
        str(path), config=str(config), subfolder="transformer", local_files_only=True
    )
    assert_same_weights(pipe.transformer, loaded)


def test_vae_round_trips_through_from_single_file(variant) -> None:
    pipe, config, path = variant
    loaded = AutoencoderKL.from_single_file(
        str(path), config=str(config), subfolder="vae", local_files_only=True
    )
    assert_same_weights(pipe.vae, loaded)


def test_pipeline_round_trips_through_from_single_file(variant) -> None:
    pipe, config, path = variant
    loaded = StableDiffusion3Pipeline.from_single_file(
        str(path), config=str(config), local_files_only=True
    )
    for name in ("transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3"):
        assert type(getattr(loaded, name)) is type(getattr(pipe, name)), name
        assert_same_weights(getattr(pipe, name), getattr(loaded, name))

    # The loaded pipeline is whole (no weights left on the meta device) and runs.
    image = loaded(
        "hello",
        num_inference_steps=1,
        height=32,
        width=32,
        max_sequence_length=8,
        output_type="np",
        generator=torch.Generator().manual_seed(0),
    ).images
    assert image.shape == (1, 32, 32, 3)


def test_file_without_text_encoders_loads_with_them_passed_in(tmp_path: Path) -> None:
    # Mirrors sd3_medium.safetensors, which holds only the MMDiT and the VAE.
    pipe = tiny_pipeline()
    config = save_config_only(pipe, tmp_path / "config")
    path = write_single_file(pipe, tmp_path / "model.safetensors", with_text=False)
    with safetensors_torch.safe_open(str(path), framework="pt") as handle:
        assert not any(key.startswith("text_encoders.") for key in handle.keys())  # noqa: SIM118
    loaded = StableDiffusion3Pipeline.from_single_file(
        str(path),
        config=str(config),
        local_files_only=True,
        text_encoder=pipe.text_encoder,
        text_encoder_2=pipe.text_encoder_2,
        text_encoder_3=pipe.text_encoder_3,
    )
    assert_same_weights(pipe.transformer, loaded.transformer)
    assert_same_weights(pipe.vae, loaded.vae)


# ---------------------------------------------------------------- file-side checks


def test_diffusers_converters_consume_every_key_of_the_file(variant) -> None:
    # The model-side comparison above cannot see extra keys that a loader ignores; run the
    # loaders' converters on the file and check each file key lands in exactly one model key.
    pipe, _, path = variant
    state = safetensors_torch.load_file(str(path))

    mmdit = {k: v for k, v in state.items() if k.startswith(MMDIT_PREFIX)}
    converted = sfu.convert_sd3_transformer_checkpoint_to_diffusers(mmdit)
    assert mmdit == {}  # the converter pops every key it uses
    assert sorted(converted) == sorted(pipe.transformer.state_dict())

    vae_keys = [k for k in state if k.startswith(VAE_PREFIX)]
    vae_config = dict(pipe.vae.config)
    converted = sfu.convert_ldm_vae_checkpoint({k: state[k] for k in vae_keys}, vae_config)
    assert len(converted) == len(vae_keys)
    assert sorted(converted) == sorted(pipe.vae.state_dict())

    clip_l = sfu.convert_ldm_clip_checkpoint(state, CLIP_L_PREFIX)
    assert sorted([*clip_l, "text_projection.weight"]) == sorted(pipe.text_encoder.state_dict())
    clip_g = sfu.convert_ldm_clip_checkpoint(state, CLIP_G_PREFIX)
    assert sorted(clip_g) == sorted(pipe.text_encoder_2.state_dict())
    t5 = sfu.convert_sd3_t5_checkpoint_to_diffusers(state)
    assert sorted(t5) == sorted(pipe.text_encoder_3.state_dict())

    covered = [MMDIT_PREFIX, VAE_PREFIX, CLIP_L_PREFIX, CLIP_G_PREFIX, T5_PREFIX]
    assert [k for k in state if not k.startswith(tuple(covered))] == []


def test_file_is_recognised_as_sd3_with_all_text_encoders(variant) -> None:
    pipe, _, path = variant
    state = safetensors_torch.load_file(str(path))
    assert any(key in state for key in sfu.CHECKPOINT_KEY_NAMES["sd3"])
    assert sfu.is_clip_sd3_model(state)
    assert sfu.is_open_clip_sd3_model(state)
    assert sfu.is_t5_in_single_file(state)
    for slot in ("text_encoder", "text_encoder_2"):
        assert sfu.is_clip_model_in_single_file(type(getattr(pipe, slot)), state)
    dual = sfu.get_attn2_layers(
        {k.removeprefix(MMDIT_PREFIX): v for k, v in state.items() if k.startswith(MMDIT_PREFIX)}
    )
    assert dual == tuple(pipe.transformer.config.dual_attention_layers)


def test_layout_details_match_the_original_files(variant) -> None:
    pipe, _, path = variant
    state = safetensors_torch.load_file(str(path))
    tf = pipe.transformer.state_dict()
    block = f"{MMDIT_PREFIX}joint_blocks.0"
    assert torch.equal(
        state[f"{block}.x_block.attn.qkv.weight"],
        torch.cat([tf[f"transformer_blocks.0.attn.to_{n}.weight"] for n in "qkv"]),
    )
    # The final layer's modulation is stored (shift, scale); diffusers holds (scale, shift).
    scale, shift = tf["norm_out.linear.weight"].chunk(2)
    final = state[f"{MMDIT_PREFIX}final_layer.adaLN_modulation.1.weight"]
    assert torch.equal(final, torch.cat([shift, scale]))
    assert state[f"{MMDIT_PREFIX}pos_embed"].shape == (1, 32 * 32, 32)
    # VAE attention as 1x1 convolutions; decoder blocks numbered from the lowest resolution.
    assert state[f"{VAE_PREFIX}decoder.mid.attn_1.q.weight"].shape == (16, 16, 1, 1)
    assert torch.equal(
        state[f"{VAE_PREFIX}decoder.up.3.block.0.conv1.weight"],
        pipe.vae.state_dict()["decoder.up_blocks.0.resnets.0.conv1.weight"],
    )
    # Like Stability's files: no CLIP-L projection, both tied T5 embeddings present.
    assert f"{CLIP_L_PREFIX}text_projection.weight" not in state
    assert f"{CLIP_G_PREFIX}text_projection.weight" in state
    assert f"{T5_PREFIX}shared.weight" in state
    assert f"{T5_PREFIX}encoder.embed_tokens.weight" in state


# ---------------------------------------------------------------- tensor properties


def test_tensors_are_private_contiguous_and_keep_dtype() -> None:
    pipe = tiny_pipeline(sd35=True)
    pipe.transformer.to(torch.bfloat16)
    pipe.text_encoder_3.to(torch.float16)
    state = to_single_file_state_dict(
        pipe.transformer, pipe.vae, pipe.text_encoder, pipe.text_encoder_2, pipe.text_encoder_3
    )
    assert all(t.is_contiguous() for t in state.values())
    assert {t.dtype for k, t in state.items() if k.startswith(MMDIT_PREFIX)} == {torch.bfloat16}
    assert {t.dtype for k, t in state.items() if k.startswith(T5_PREFIX)} == {torch.float16}
    assert {t.dtype for k, t in state.items() if k.startswith(VAE_PREFIX)} == {torch.float32}
    storages = [t.untyped_storage().data_ptr() for t in state.values()]
    assert len(set(storages)) == len(storages)
    live = {p.untyped_storage().data_ptr() for p in pipe.transformer.parameters()}
    assert live.isdisjoint(storages)


@pytest.mark.skipif(not hasattr(torch, "float8_e4m3fn"), reason="torch without float8")
def test_fp8_t5_is_written_as_fp8_and_loads_back(tmp_path: Path) -> None:
    # Like sd3_medium_incl_clips_t5xxlfp8.safetensors: the caller casts T5 to float8 first.
    pipe = tiny_pipeline()
    t5 = pipe.text_encoder_3.to(torch.float8_e4m3fn)
    t5.config.save_pretrained(tmp_path / "text_encoder_3")
    state = to_single_file_state_dict(pipe.transformer, pipe.vae, text_encoder_3=t5)
    path = tmp_path / "model.safetensors"
    safetensors_torch.save_file(state, str(path))
    checkpoint = safetensors_torch.load_file(str(path))
    assert {t.dtype for k, t in checkpoint.items() if k.startswith(T5_PREFIX)} == {
        torch.float8_e4m3fn
    }
    # The same helper StableDiffusion3Pipeline.from_single_file uses for text_encoder_3.
    loaded = sfu.create_diffusers_t5_model_from_checkpoint(
        T5EncoderModel,
        checkpoint=checkpoint,
        config=str(tmp_path),
        subfolder="text_encoder_3",
        local_files_only=True,
    )
    want = t5.state_dict()
    got = loaded.state_dict()
    assert sorted(got) == sorted(want)
    assert all(torch.equal(got[k].float(), want[k].float()) for k in want)


# ---------------------------------------------------------------- refusals


def test_refuses_a_clip_l_projection_that_is_not_the_identity() -> None:
    pipe = tiny_pipeline()
    clip_l = tiny_clip(CLIP_L_WIDTH, seed=7, vocab_size=len(pipe.tokenizer))
    with pytest.raises(ValueError, match="identity"):
        to_single_file_state_dict(pipe.transformer, pipe.vae, text_encoder=clip_l)


def test_refuses_clip_l_and_clip_g_of_the_same_width() -> None:
    pipe = tiny_pipeline()
    clip_g = tiny_clip(CLIP_L_WIDTH, seed=8, vocab_size=len(pipe.tokenizer))
    with pytest.raises(ValueError, match="same hidden size"):
        to_single_file_state_dict(pipe.transformer, pipe.vae, pipe.text_encoder, clip_g)


def test_refuses_weights_the_layout_cannot_hold() -> None:
    pipe = tiny_pipeline()
    pipe.transformer.register_buffer("stray", torch.zeros(2))
    with pytest.raises(ValueError, match="stray"):
        to_single_file_state_dict(pipe.transformer, pipe.vae)


# ---------------------------------------------------------------- real-size recognition


# Transformer configs of the published diffusers repos (only the fields that shape weights).
_REAL_SIZES = {
    "sd3": {"num_layers": 24, "num_attention_heads": 24, "pos_embed_max_size": 192},
    "sd35_medium": {
        "num_layers": 24,
        "num_attention_heads": 24,
        "pos_embed_max_size": 384,
        "qk_norm": "rms_norm",
        "dual_attention_layers": tuple(range(13)),
    },
    "sd35_large": {
        "num_layers": 38,
        "num_attention_heads": 38,
        "pos_embed_max_size": 192,
        "qk_norm": "rms_norm",
    },
}


@pytest.mark.parametrize("model_type", sorted(_REAL_SIZES))
def test_real_size_transformers_are_inferred_as_their_model_type(model_type: str) -> None:
    # Built on the meta device: only shapes matter to diffusers' model-type inference.
    sizes = _REAL_SIZES[model_type]
    with torch.device("meta"):
        transformer = SD3Transformer2DModel(
            sample_size=128,
            patch_size=2,
            in_channels=16,
            attention_head_dim=64,
            joint_attention_dim=4096,
            caption_projection_dim=64 * sizes["num_attention_heads"],
            pooled_projection_dim=2048,
            out_channels=16,
            **sizes,
        )
        vae = AutoencoderKL(
            latent_channels=16,
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=2,
            use_quant_conv=False,
            use_post_quant_conv=False,
        )
    state = to_single_file_state_dict(transformer, vae)
    assert sfu.infer_diffusers_model_type(state) == model_type
