"""LoRAs on the tiny model: every layout real files use gives the same picture, weights act,
other architectures and variants are refused, switching needs no reload."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import max_diff, sd3desk

from sd3desk.core.errors import LoraError
from sd3desk.core.loras import LoraLibrary, LoraRef
from sd3desk.core.metadata import read_metadata
from sd3desk.core.params import GenerationParams
from sd3desk.inference import testlora

PROMPT = GenerationParams(
    prompt="a red cat", seed=7, steps=3, guidance_scale=5.0, width=256, height=256
)


@pytest.fixture(scope="module")
def lora_engine(tiny_model_dir: Path, cache_dir: Path):
    """An engine of this module's own: LoRAs stay loaded in it between tests."""
    from sd3desk.core.settings import Device
    from sd3desk.inference.engine import Engine
    from sd3desk.inference.models import resolve_model

    engine = Engine(Device.cpu, cache_dir=cache_dir)
    engine.load(resolve_model(str(tiny_model_dir)))
    return engine


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory, lora_engine) -> Path:
    """One LoRA in each layout (the kohya and ComfyUI files made from the diffusers one), a
    second diffusers LoRA, a CLIP-only one and a T5 one."""
    folder = tmp_path_factory.mktemp("loras")
    pipe = lora_engine.pipeline
    state = testlora.random_lora(pipe, seed=1)
    testlora.write_diffusers(state, folder / "style.safetensors")
    kohya = testlora.to_kohya(state, pipe)
    testlora.save(kohya, folder / "style_kohya.safetensors")
    testlora.save(testlora.to_comfyui(kohya, pipe), folder / "style_comfyui.safetensors")
    testlora.write_diffusers(testlora.random_lora(pipe, seed=2), folder / "other.safetensors")
    clip = testlora.random_lora(pipe, seed=3, parts=("text_encoder",))
    testlora.write_diffusers(clip, folder / "clip_only.safetensors")
    t5 = testlora.random_lora(pipe, seed=4, parts=("transformer", "text_encoder_3"))
    testlora.save(testlora.to_kohya(t5, pipe), folder / "with_t5.safetensors")
    return folder


@pytest.fixture(scope="module")
def library(lora_dir: Path, cache_dir: Path) -> LoraLibrary:
    return LoraLibrary([lora_dir], cache_dir / "lora-test-hashes.json")


def run(engine, library: LoraLibrary, *loras: tuple[str, float], params=PROMPT):
    """The image of `params` with the LoRAs named (file stem, weight)."""
    refs = [library.ref(library.find(LoraRef(name, "", w)), w) for name, w in loras]
    pairs = [(ref, library.find(ref)) for ref in refs]
    request = params.replace(loras=tuple(ref for ref, _ in pairs))
    return engine.generate(request, loras=pairs).images[0]


def test_every_layout_gives_the_picture_the_diffusers_lora_gives(lora_engine, library):
    bare = run(lora_engine, library)
    peft = run(lora_engine, library, ("style", 1.0))
    assert max_diff(peft, bare) > 20  # the LoRA changes the picture
    # kohya's fused q/k/v, alphas and swapped modulation, and ComfyUI's names, converted here
    assert max_diff(run(lora_engine, library, ("style_kohya", 1.0)), peft) <= 1
    assert max_diff(run(lora_engine, library, ("style_comfyui", 1.0)), peft) <= 1


def test_weight_zero_is_no_lora_and_weights_scale_it(lora_engine, library):
    bare = run(lora_engine, library)
    assert max_diff(run(lora_engine, library, ("style_kohya", 0.0)), bare) == 0
    half = run(lora_engine, library, ("style_kohya", 0.5))
    full = run(lora_engine, library, ("style_kohya", 1.0))
    assert max_diff(half, bare) > 0 and max_diff(half, full) > 0
    assert max_diff(run(lora_engine, library), bare) == 0  # and off again exactly


def test_several_loras_at_once(lora_engine, library):
    one = run(lora_engine, library, ("style", 0.8))
    both = run(lora_engine, library, ("style", 0.8), ("other", 0.6))
    assert max_diff(both, one) > 0
    # order does not matter: their changes add up
    swapped = run(lora_engine, library, ("other", 0.6), ("style", 0.8))
    assert max_diff(swapped, both) <= 1


def test_a_text_encoder_lora_is_not_served_a_stale_prompt_cache(lora_engine, library):
    bare = run(lora_engine, library)
    changed = run(lora_engine, library, ("clip_only", 1.0))
    assert max_diff(changed, bare) > 0  # a new encoding, not the cached one
    assert max_diff(run(lora_engine, library), bare) == 0
    assert max_diff(run(lora_engine, library, ("clip_only", 1.0)), changed) == 0


def test_a_t5_lora_acts_on_t5(lora_engine, library, tmp_path):
    bare = run(lora_engine, library)
    with_t5 = run(lora_engine, library, ("with_t5", 1.0))
    assert max_diff(with_t5, bare) > 0
    assert max_diff(run(lora_engine, library), bare) == 0


def test_switching_keeps_the_model_and_matches_a_fresh_process(
    lora_engine, library, tiny_model_dir, tmp_path
):
    """Two jobs with different LoRAs in one engine make the images two fresh processes make."""
    first = run(lora_engine, library, ("other", 0.7))
    pipe = lora_engine.pipeline
    second = run(lora_engine, library, ("style_kohya", 0.9))
    assert lora_engine.pipeline is pipe  # no reload
    for name, weight, image in (("other", 0.7, first), ("style_kohya", 0.9, second)):
        done = sd3desk(
            tmp_path / name,
            "generate",
            "--model",
            str(tiny_model_dir),
            "--prompt",
            PROMPT.prompt,
            "--seed",
            str(PROMPT.seed),
            "--steps",
            str(PROMPT.steps),
            "--guidance",
            "5",
            "--lora",
            f"{library.find(LoraRef(name, '', 1))}:{weight}",
            "--out",
            str(tmp_path / name / "out"),
        )
        assert done.returncode == 0, done.stderr
        (made,) = (tmp_path / name / "out").rglob("*.png")
        from PIL import Image

        assert max_diff(Image.open(made), image) == 0
        meta = read_metadata(made)
        (ref,) = meta.params.loras
        assert (ref.name, ref.weight) == (name, weight)
        assert ref.hash == library.hash(library.find(LoraRef(name, "", 1)))


def test_a_gguf_transformer_takes_loras(library, tmp_path, cache_dir):
    from sd3desk.core.settings import Device
    from sd3desk.inference.engine import Engine
    from sd3desk.inference.models import resolve_model
    from sd3desk.inference.testmodel import write_test_gguf

    engine = Engine(Device.cpu, cache_dir=cache_dir)
    engine.load(resolve_model(str(write_test_gguf(tmp_path / "tiny.gguf", "Q8_0"))))
    bare = run(engine, library)
    assert max_diff(run(engine, library, ("style_kohya", 1.0)), bare) > 20
    assert max_diff(run(engine, library), bare) == 0


@pytest.mark.parametrize("kind", ["sdxl", "flux"])
def test_a_lora_for_another_architecture_is_refused(lora_engine, tmp_path, kind):
    path = testlora.save(testlora.other_architecture(kind), tmp_path / f"{kind}.safetensors")
    library = LoraLibrary([tmp_path])
    with pytest.raises(LoraError, match="SDXL" if kind == "sdxl" else "Flux"):
        run(lora_engine, library, (path.stem, 1.0))


def test_a_lora_whose_layers_match_nothing_or_another_width_is_refused(lora_engine, tmp_path):
    import torch

    library = LoraLibrary([tmp_path])
    # names of a 38-block SD3.5 Large: block 30 does not exist in a 2-block model
    far = {
        "lora_unet_joint_blocks_30_x_block_attn_qkv.lora_down.weight": torch.zeros(4, 32),
        "lora_unet_joint_blocks_30_x_block_attn_qkv.lora_up.weight": torch.zeros(96, 4),
    }
    testlora.save(far, tmp_path / "far.safetensors")
    with pytest.raises(LoraError, match="none of the 1 layers"):
        run(lora_engine, library, ("far", 1.0))
    wide = {
        "lora_unet_joint_blocks_0_x_block_attn_proj.lora_down.weight": torch.zeros(4, 2432),
        "lora_unet_joint_blocks_0_x_block_attn_proj.lora_up.weight": torch.zeros(2432, 4),
    }
    testlora.save(wide, tmp_path / "wide.safetensors")
    with pytest.raises(LoraError, match=r"SD3\.5 Large"):
        run(lora_engine, library, ("wide", 1.0))


def test_a_dora_is_refused_not_half_applied(lora_engine, lora_dir, tmp_path):
    from safetensors.torch import load_file

    state = load_file(str(lora_dir / "style_kohya.safetensors"))
    key = next(k for k in state if k.endswith(".alpha")).replace(".alpha", ".dora_scale")
    state[key] = state[key.replace(".dora_scale", ".alpha")].reshape(1).clone()
    testlora.save(state, tmp_path / "dora.safetensors")
    with pytest.raises(LoraError, match="DoRA"):
        run(lora_engine, LoraLibrary([tmp_path]), ("dora", 1.0))
    bare = run(lora_engine, LoraLibrary([tmp_path]))
    assert max_diff(bare, run(lora_engine, LoraLibrary([tmp_path]))) == 0


def fresh_engine(tiny_model_dir, cache_dir, **load):
    from sd3desk.core.settings import Device
    from sd3desk.inference.engine import Engine
    from sd3desk.inference.models import resolve_model

    engine = Engine(Device.cpu, cache_dir=cache_dir)
    engine.load(resolve_model(str(tiny_model_dir)), **load)
    return engine


def test_a_first_use_at_weight_zero_and_a_failed_list_leave_the_bare_model(
    tiny_model_dir, cache_dir, library, lora_engine, tmp_path
):
    """PEFT makes each adapter it loads the active one: a LoRA used first at weight 0, or one
    loaded before another in the same job failed, must not act on later jobs."""
    engine = fresh_engine(tiny_model_dir, cache_dir)
    bare = run(engine, library)
    assert max_diff(run(engine, library, ("other", 0.0)), bare) == 0
    assert max_diff(run(engine, library), bare) == 0
    import torch

    wide = {
        "lora_unet_joint_blocks_0_x_block_attn_proj.lora_down.weight": torch.zeros(4, 2432),
        "lora_unet_joint_blocks_0_x_block_attn_proj.lora_up.weight": torch.zeros(2432, 4),
    }
    testlora.save(wide, tmp_path / "wide.safetensors")
    both = LoraLibrary([*library.folders, tmp_path], library.cache_file)
    with pytest.raises(LoraError):
        run(engine, both, ("style_kohya", 1.0), ("wide", 1.0))
    assert max_diff(run(engine, library), bare) == 0


def test_a_t5_part_is_left_out_with_a_notice_when_t5_is_off(tiny_model_dir, cache_dir, library):
    from sd3desk.core.settings import MemoryPlan

    engine = fresh_engine(tiny_model_dir, cache_dir, plan=MemoryPlan.no_t5)
    path = library.find(LoraRef("with_t5", "", 1.0))
    ref = library.ref(path)
    result = engine.generate(PROMPT.replace(loras=(ref,)), loras=[(ref, path)])
    assert any("also changes T5, which is off" in n for n in result.notices)
    assert max_diff(result.images[0], run(engine, library)) > 0  # its MMDiT part acts


def test_comfyui_names_under_model_diffusion_model_are_not_taken_for_lycoris(
    lora_engine, lora_dir, tmp_path, tiny_model_dir, cache_dir
):
    from safetensors.torch import load_file

    state = load_file(str(lora_dir / "style_comfyui.safetensors"))
    renamed = {f"model.{k}" if k.startswith("diffusion_model.") else k: v for k, v in state.items()}
    testlora.save(renamed, tmp_path / "style_model_prefix.safetensors")
    library = LoraLibrary([lora_dir, tmp_path])
    expected = run(lora_engine, library, ("style_comfyui", 1.0))
    # (a fresh engine: the same tensors have the same hash, which the module's engine has
    # loaded already under the other name)
    engine = fresh_engine(tiny_model_dir, cache_dir)
    assert max_diff(run(engine, library, ("style_model_prefix", 1.0)), expected) == 0


def test_a_diffusers_lora_with_its_own_alpha_matches_diffusers_reading_it(
    tiny_model_dir, cache_dir, tmp_path
):
    """diffusers saves lora_alpha in the file's metadata; diffusers' own loader (given the
    path) is the oracle for the strength."""
    from diffusers import StableDiffusion3Pipeline

    engine = fresh_engine(tiny_model_dir, cache_dir)
    pipe = engine.pipeline
    state = testlora.random_lora(pipe, seed=11, parts=("transformer",))
    layers = {k.removeprefix("transformer."): v for k, v in state.items()}
    targets = sorted({k.rsplit(".lora_", 1)[0] for k in layers})
    StableDiffusion3Pipeline.save_lora_weights(
        str(tmp_path),
        transformer_lora_layers=layers,
        transformer_lora_adapter_metadata={"r": 4, "lora_alpha": 12, "target_modules": targets},
        weight_name="alpha12.safetensors",
    )
    library = LoraLibrary([tmp_path])
    ours = run(engine, library, ("alpha12", 1.0))
    reference = fresh_engine(tiny_model_dir, cache_dir)
    reference.pipeline.load_lora_weights(str(tmp_path / "alpha12.safetensors"))
    theirs = reference.generate(PROMPT).images[0]
    assert max_diff(ours, theirs) <= 1
    assert max_diff(ours, run(engine, library)) > 0
