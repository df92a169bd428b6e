"""Read an SD3 pipeline from disk, offline, component by component, through diffusers' loaders."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sd3desk.core.errors import ModelError, RefusedFormatError
from sd3desk.core.params import ModelFamily
from sd3desk.core.settings import test_model_dir
from sd3desk.core.weights_header import read_safetensors_header
from sd3desk.inference import testmodel
from sd3desk.inference.checkpoint_layout import T5_PREFIX
from sd3desk.inference.devices import t5_tokenizer_class, torch_dtype
from sd3desk.inference.discovery import find_t5_tokenizer, find_text_encoder_donor
from sd3desk.inference.models import (
    ModelKind,
    ModelSource,
    bundled_clip_tokenizer_dir,
    bundled_config_dir,
    loaded_weights,
    source_from_path,
)
from sd3desk.inference.quant import Quant, bnb_config

log = logging.getLogger(__name__)

PLACE_STAGE = 7  # stages: tokenizers, CLIP-L, CLIP-G, T5, MMDiT, VAE, placing
_PART_WORDS = {
    "text_encoder": "CLIP-L",
    "text_encoder_2": "CLIP-G",
    "text_encoder_3": "T5",
    "transformer": "MMDiT",
    "vae": "VAE",
}
_ENCODER_LABELS = {
    "text_encoder": ("CLIP-L text encoder", 2),
    "text_encoder_2": ("CLIP-G text encoder", 3),
    "text_encoder_3": ("T5-XXL text encoder", 4),
}
NO_T5_NOTICE = (
    "running without T5: prompts reach the model through the CLIP encoders only (77 tokens)"
)


@dataclass(frozen=True)
class Storage:
    """How quantized parts are stored (inference/quant.py) and the device they load onto
    (bitsandbytes quantizes as it places the weights)."""

    t5_quant: Quant | None = None
    mmdit_quant: Quant | None = None  # NF4 here; fp8 is applied on the device (Engine.load)
    device: str = "cpu"
    direct: bool = False  # every weight read straight onto `device` (safetensors mmap -> GPU)
    # (component, bytes of its files, seconds): what loading read, for the user to see
    read: list[tuple[str, int, float]] = field(default_factory=list, compare=False)

    def placed(self) -> dict[str, Any]:
        """from_pretrained's arguments that read a 16-bit component onto the device."""
        return {"device_map": {"": self.device}} if self.direct else {}

    def read_notice(self) -> str | None:
        """What loading read and how fast, "read 15.2 GB in 8.3 s (1.8 GB/s)" (the page cache
        makes a second load faster than the disk); each part's figures go to the log."""
        from sd3desk.core.downloads import format_bytes

        total, seconds = sum(r[1] for r in self.read), sum(r[2] for r in self.read)
        if not total or seconds <= 0:
            return None

        def rate(size: int, spent: float) -> str:
            return f"{format_bytes(int(size / max(spent, 1e-6)))}/s"

        for part, size, spent in self.read:
            log.info(
                "read %s: %s in %.2f s (%s)",
                _PART_WORDS.get(part, part),
                format_bytes(size),
                spent,
                rate(size, spent),
            )
        return f"read {format_bytes(total)} in {seconds:.1f} s ({rate(total, seconds)})"


@dataclass(frozen=True)
class LoadStage:
    """One stage of loading a model ("Loading T5 text encoder", 4 of 7)."""

    index: int
    total: int
    text: str


def report_stage(on_stage: Callable[[LoadStage], None] | None, index: int, text: str) -> None:
    if on_stage is not None:
        on_stage(LoadStage(index, PLACE_STAGE, text))


def load_pipeline(
    source: ModelSource,
    *,
    dtype: str,
    use_t5: bool,
    cache_dir: Path | None,
    model_dirs: tuple[Path, ...] = (),
    on_stage: Callable | None = None,
    storage: Storage = Storage(),
) -> tuple[Any, bool, list[str]]:
    """The pipeline for `source`, whether T5 is in it, and notices for the user."""
    if source.kind is ModelKind.test and not (source.path / "model_index.json").exists():
        report_stage(on_stage, 1, "Building the test model (random weights)")
        testmodel.ensure_test_model(source.path, source.test_size or "tiny")
    if source.kind is ModelKind.single_file:
        loaded = _load_single_file(source, dtype, use_t5, cache_dir, model_dirs, on_stage, storage)
    elif source.kind is ModelKind.gguf:
        loaded = _load_gguf(source, dtype, use_t5, cache_dir, model_dirs, on_stage, storage)
    else:
        loaded = _load_folder(source.path, source, dtype, use_t5, on_stage, storage)
    read = storage.read_notice()
    if read:
        loaded[2].append(read)
    return loaded


def _component(
    folder: Path, part: str, load: Callable[[], Any], storage: Storage | None = None
) -> Any:
    """Run one component's loader; a failure names that component's folder. With `storage`,
    the bytes its weight files hold and the time reading them took are noted there."""
    started = time.perf_counter()
    try:
        found = load()
    except Exception as exc:
        from sd3desk.inference.devices import is_out_of_memory

        if is_out_of_memory(exc):
            raise
        raise ModelError(
            f"the {part} of {folder.name} could not be loaded: {exc}",
            "the download may be incomplete or damaged; download the model again",
            path=str(folder / part),
        ) from exc
    if storage is not None:
        size = sum(w.stat().st_size for w in loaded_weights(folder / part))
        storage.read.append((part, size, time.perf_counter() - started))
    return found


# The files a tokenizer folder loads from (either is enough): transformers 5 builds an empty
# tokenizer without a word, rather than fail, when they are missing
_TOKENIZER_FILES = {
    "tokenizer": ("tokenizer.json", "vocab.json"),
    "tokenizer_2": ("tokenizer.json", "vocab.json"),
    "tokenizer_3": ("tokenizer.json", "spiece.model"),
}


def _require_files(folder: Path, part: str) -> None:
    names = _TOKENIZER_FILES.get(part)
    if names and not any((folder / part / name).is_file() for name in names):
        raise ModelError(
            f"{folder.name} has no {part} (expected {folder / part / names[0]})",
            "the download is incomplete; download the model again",
            path=str(folder / part),
        )


def _encoder(
    folder: Path, part: str, dtype: str, on_stage: Callable | None, storage: Storage = Storage()
) -> Any:
    from transformers import CLIPTextModelWithProjection, T5EncoderModel

    label, index = _ENCODER_LABELS[part]
    quant = storage.t5_quant if part == "text_encoder_3" else None
    report_stage(on_stage, index, f"Loading {label}" + (f" ({quant.value})" if quant else ""))
    cls = T5EncoderModel if part == "text_encoder_3" else CLIPTextModelWithProjection
    extra: dict[str, Any] = storage.placed()
    if quant is not None:  # quantized while read, straight onto the device (bitsandbytes)
        extra = {
            "quantization_config": bnb_config(quant, dtype, "transformers"),
            "device_map": {"": storage.device},
        }
    model = _component(
        folder,
        part,
        lambda: cls.from_pretrained(
            folder,
            subfolder=part,
            dtype=torch_dtype(dtype),
            local_files_only=True,
            use_safetensors=True,
            **extra,
        ).eval(),
        storage,
    )
    if quant is Quant.nf4 and storage.device == "cpu":
        _generic_nf4_where_unaligned(model)
    return model


def _generic_nf4_where_unaligned(model: Any) -> None:
    """bitsandbytes' packed NF4 kernel for AVX-512 CPUs takes only layers whose widths are
    multiples of its block (64); every layer of the real T5-XXL's are, the test model's (80
    wide) are not: those take bitsandbytes' generic path instead of failing."""
    for module in model.modules():
        widths = (getattr(module, "in_features", 0), getattr(module, "out_features", 0))
        if hasattr(module, "support_avx512bf16_for_cpu") and any(w % 64 for w in widths):
            module.support_avx512bf16_for_cpu = False


def _load_folder(
    folder: Path,
    source: ModelSource,
    dtype: str,
    use_t5: bool,
    on_stage: Callable | None,
    storage: Storage = Storage(),
    transformer: Any = None,
) -> tuple[Any, bool, list[str]]:
    """The pipeline of a diffusers folder; with `transformer`, that one instead of the
    folder's (a GGUF file's, with the rest lent by the folder)."""
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import CLIPTokenizer

    T5TokenizerFast = t5_tokenizer_class()
    notices = list(source.notices)
    if use_t5 and not source.has_t5:
        use_t5 = False
        notices.append(f"{source.name} has no T5 encoder; " + NO_T5_NOTICE)
    elif not use_t5:
        notices.append(NO_T5_NOTICE)
    missing = {"text_encoder", "text_encoder_2"} - source.parts
    if missing:
        raise ModelError(
            f"{folder} has no weights for {', '.join(sorted(missing))}",
            "the download is incomplete; download the model again",
            path=str(folder / sorted(missing)[0]),
        )
    report_stage(on_stage, 1, "Loading tokenizers")
    for name in ("tokenizer", "tokenizer_2", "tokenizer_3"):
        if use_t5 or name != "tokenizer_3":
            _require_files(folder, name)
    parts: dict[str, Any] = {
        name: _component(
            folder,
            name,
            lambda c=cls, n=name: c.from_pretrained(folder, subfolder=n, local_files_only=True),
        )
        for name, cls in (
            ("tokenizer", CLIPTokenizer),
            ("tokenizer_2", CLIPTokenizer),
            ("tokenizer_3", T5TokenizerFast),
            ("scheduler", FlowMatchEulerDiscreteScheduler),
        )
        if use_t5 or name != "tokenizer_3"
    }
    parts.setdefault("tokenizer_3", None)
    for part in ("text_encoder", "text_encoder_2", "text_encoder_3"):
        parts[part] = (
            _encoder(folder, part, dtype, on_stage, storage)
            if use_t5 or part != "text_encoder_3"
            else None
        )
    common = {"torch_dtype": torch_dtype(dtype), "local_files_only": True, "use_safetensors": True}
    # NF4 is quantized as it is read, onto this worker's device (not the current CUDA one);
    # an fp8 MMDiT is read into RAM and quantized block by block onto the device later
    mmdit: dict[str, Any] = {} if storage.mmdit_quant is Quant.fp8 else storage.placed()
    if storage.mmdit_quant is Quant.nf4:
        mmdit = {
            "quantization_config": bnb_config(Quant.nf4, dtype, "diffusers"),
            "device_map": {"": storage.device},
        }
    report_stage(on_stage, 5, "Loading MMDiT denoiser" + (" (4-bit NF4)" if mmdit else ""))
    parts["transformer"] = transformer or _component(
        folder,
        "transformer",
        lambda: SD3Transformer2DModel.from_pretrained(
            folder, subfolder="transformer", **common, **mmdit
        ),
        storage,
    )
    report_stage(on_stage, 6, "Loading VAE")
    parts["vae"] = _component(
        folder,
        "vae",
        lambda: AutoencoderKL.from_pretrained(
            folder, subfolder="vae", **common, **storage.placed()
        ),
        storage,
    )
    return StableDiffusion3Pipeline(**parts), use_t5, notices


def _clip_tokenizers(config_dir: Path, family: ModelFamily) -> dict[str, Any]:
    from transformers import CLIPTokenizer

    if family is ModelFamily.test:
        return {
            "tokenizer": CLIPTokenizer.from_pretrained(config_dir, subfolder="tokenizer"),
            "tokenizer_2": CLIPTokenizer.from_pretrained(config_dir, subfolder="tokenizer_2"),
        }
    vocab = bundled_clip_tokenizer_dir()
    shared = {
        "vocab": str(vocab / "vocab.json"),
        "merges": str(vocab / "merges.txt"),
        "model_max_length": 77,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
    }
    # SD3's two CLIP tokenizers differ only in padding: CLIP-G pads with "!" (its repo config).
    return {
        "tokenizer": CLIPTokenizer(pad_token="<|endoftext|>", **shared),
        "tokenizer_2": CLIPTokenizer(pad_token="!", **shared),
    }


def _config_dir(source: ModelSource, cache_dir: Path | None) -> Path:
    """The configs a file without its own is loaded with: bundled for the real families,
    rebuilt from code for the test model."""
    if source.family is not ModelFamily.test:
        return bundled_config_dir(source.family)
    if cache_dir is None:
        raise ModelError(f"loading the test model from {source.path.name} needs a cache folder")
    return testmodel.write_config_folder(
        cache_dir / "test-model-configs" / source.test_size, source.test_size
    )


def _load_gguf(
    source: ModelSource,
    dtype: str,
    use_t5: bool,
    cache_dir: Path | None,
    model_dirs: tuple[Path, ...],
    on_stage: Callable | None,
    storage: Storage = Storage(),
) -> tuple[Any, bool, list[str]]:
    """A GGUF transformer (kept quantized, dequantized as it runs: diffusers'
    GGUFQuantizationConfig) with the VAE, text encoders, tokenizers and scheduler of a diffusers
    SD3 folder: the test model's own for the test family, else a donor."""
    from diffusers import GGUFQuantizationConfig, SD3Transformer2DModel

    config_dir = _config_dir(source, cache_dir)
    if source.family is ModelFamily.test and cache_dir is not None:
        donor: Path | None = testmodel.ensure_test_model(
            test_model_dir(cache_dir), source.test_size or "tiny"
        )
    else:
        donor = find_text_encoder_donor(model_dirs)
    if donor is None or not any((donor / "vae").glob("*.safetensors")):
        raise ModelError(
            f"{source.path.name} holds only the MMDiT; the VAE and text encoders come from an SD3 "
            "diffusers folder, and none was found in your model folders or the Hugging Face cache",
            "download stabilityai/stable-diffusion-3.5-large (or -medium, or SD3 Medium "
            "diffusers): all SD3 models share the VAE and text encoders; or add such a folder to "
            "your model folders",
            path=str(source.path),
        )
    report_stage(on_stage, 5, f"Loading {source.path.name} ({source.quant})")
    started = time.perf_counter()
    transformer = SD3Transformer2DModel.from_single_file(
        str(source.path),
        config=str(config_dir),
        subfolder="transformer",
        quantization_config=GGUFQuantizationConfig(compute_dtype=torch_dtype(dtype)),
        torch_dtype=torch_dtype(dtype),
        local_files_only=True,
    )
    storage.read.append(("transformer", source.size_bytes(), time.perf_counter() - started))
    pipe, use_t5, notices = _load_folder(
        donor, source_from_path(donor, str(donor)), dtype, use_t5, on_stage, storage, transformer
    )
    if source.family is not ModelFamily.test:
        notices.append(f"VAE and text encoders taken from {donor}")
    return pipe, use_t5, notices


def _has_key(path: Path, key: str) -> bool:
    return key in read_safetensors_header(path)


def _tied_t5(path: Path, config_dir: Path, dtype: str) -> Any:
    """The T5 encoder of a checkpoint that stores its embedding once, as `shared.weight`
    (ComfyUI saves it so): transformers 5 leaves the tied `encoder.embed_tokens` unloaded
    ("Cannot copy out of meta tensor"), so the state is built here with both names."""
    import torch
    from safetensors import safe_open
    from transformers import T5Config, T5EncoderModel

    with torch.device("meta"):
        model = T5EncoderModel(T5Config.from_pretrained(config_dir))
    state = {}
    with safe_open(str(path), "pt") as handle:
        for key in handle.keys():  # noqa: SIM118 (a safetensors handle, not a dict)
            if key.startswith(T5_PREFIX):
                state[key[len(T5_PREFIX) :]] = handle.get_tensor(key).to(torch_dtype(dtype))
    state["encoder.embed_tokens.weight"] = state["shared.weight"]
    model.load_state_dict(state, strict=True, assign=True)
    model.tie_weights()
    return model.eval()


def t5_quantizable(source: ModelSource, model_dirs: tuple[Path, ...]) -> bool:
    """Whether this model's T5 can be read quantized: from its folder, or, for a single file
    holding its own, from a diffusers folder's text_encoder_3 (the same T5-XXL)."""
    if source.kind is not ModelKind.single_file or source.family is ModelFamily.test:
        return True
    if not source.has_t5:
        return True  # (it borrows a folder's T5 anyway)
    return _has_t5_weights(find_text_encoder_donor(model_dirs))


def _has_t5_weights(folder: Path | None) -> bool:
    return folder is not None and any((folder / "text_encoder_3").glob("*.safetensors"))


def _t5_folder(
    source: ModelSource, donor: Path | None, cache_dir: Path | None, storage: Storage
) -> Path:
    """A diffusers folder with the T5 weights, to read them quantized."""
    if source.family is ModelFamily.test and cache_dir is not None:  # the same weights
        return testmodel.ensure_test_model(test_model_dir(cache_dir), source.test_size or "tiny")
    if donor is not None and _has_t5_weights(donor):
        return donor
    quant = storage.t5_quant.value if storage.t5_quant else ""
    raise ModelError(
        f"T5 in {quant} is read from an SD3 diffusers folder's text_encoder_3, and none was "
        f"found in your model folders or the Hugging Face cache ({source.path.name}'s own T5 "
        "cannot be quantized as it loads)",
        "download stabilityai/stable-diffusion-3-medium-diffusers's text_encoder_3 folder (the "
        "T5 every SD3 and SD3.5 uses), or choose the 'offload' or 'no-t5' memory plan",
        path=str(source.path),
    )


def _load_single_file(
    source: ModelSource,
    dtype: str,
    use_t5: bool,
    cache_dir: Path | None,
    model_dirs: tuple[Path, ...],
    on_stage: Callable | None,
    storage: Storage = Storage(),
) -> tuple[Any, bool, list[str]]:
    from diffusers import SD3Transformer2DModel, StableDiffusion3Pipeline

    T5TokenizerFast = t5_tokenizer_class()
    notices: list[str] = []
    config_dir = _config_dir(source, cache_dir)
    report_stage(on_stage, 1, "Loading tokenizers")
    extra: dict[str, Any] = _clip_tokenizers(config_dir, source.family)
    # 2. text encoders the checkpoint lacks come from a diffusers folder (all SD3s share them)
    donor = None
    if not source.has_clips or (use_t5 and not (source.has_t5 and storage.t5_quant is None)):
        donor = find_text_encoder_donor(model_dirs)
    if not source.has_clips:
        if donor is None:
            raise ModelError(
                f"{source.path.name} holds no CLIP text encoders, and no SD3 diffusers folder with "
                "them was found in your model folders or the Hugging Face cache",
                "use the '_incl_clips' checkpoint (e.g. sd3_medium_incl_clips.safetensors), or "
                "download stabilityai/stable-diffusion-3-medium-diffusers (its text_encoder and "
                "text_encoder_2 folders suffice), or add such a folder to your model folders",
                path=str(source.path),
            )
        for part in ("text_encoder", "text_encoder_2"):
            extra[part] = _encoder(donor, part, dtype, on_stage)
        notices.append(f"CLIP text encoders taken from {donor}")
    # 3. T5: from the checkpoint or a donor, with its tokenizer from a folder the user has
    t5_weights = source.has_t5 or (donor is not None and (donor / "text_encoder_3").is_dir())
    if use_t5 and not t5_weights:
        use_t5 = False
        notices.append(f"{source.path.name} has no T5 encoder; " + NO_T5_NOTICE)
    elif not use_t5:
        notices.append(NO_T5_NOTICE)
    if use_t5:
        if source.family is ModelFamily.test:
            extra["tokenizer_3"] = T5TokenizerFast.from_pretrained(
                config_dir, subfolder="tokenizer_3"
            )
        else:
            folder = find_t5_tokenizer([d for d in (donor, *model_dirs) if d is not None])
            if folder is None:
                raise ModelError(
                    "the T5 tokenizer (spiece.model or tokenizer.json) was not found: it is not "
                    "bundled with sd3desk and no model folder or cached repo provides it",
                    "download it once (it is public): `hf download google/t5-v1_1-xxl "
                    "spiece.model tokenizer_config.json special_tokens_map.json`, or add an SD3 "
                    "diffusers folder to your model folders, or run without T5 (--memory no-t5)",
                    path="tokenizer_3/spiece.model",
                )
            extra["tokenizer_3"] = T5TokenizerFast.from_pretrained(folder)
        if storage.t5_quant is not None:
            # bitsandbytes quantizes as transformers reads a model folder: the T5 of a folder
            # (the same T5-XXL in every SD3 and SD3.5), not the checkpoint's own
            folder = _t5_folder(source, donor, cache_dir, storage)
            extra["text_encoder_3"] = _encoder(folder, "text_encoder_3", dtype, on_stage, storage)
            if source.family is not ModelFamily.test:
                notices.append(f"T5 in {storage.t5_quant.value} taken from {folder}")
        elif not source.has_t5:
            assert donor is not None
            extra["text_encoder_3"] = _encoder(donor, "text_encoder_3", dtype, on_stage)
        elif not _has_key(source.path, T5_PREFIX + "encoder.embed_tokens.weight"):
            report_stage(on_stage, 4, "Loading T5-XXL text encoder")
            extra["text_encoder_3"] = _tied_t5(source.path, config_dir / "text_encoder_3", dtype)
    else:
        extra["tokenizer_3"] = None
        extra["text_encoder_3"] = None
    # 4. the checkpoint itself, converted by diffusers' single-file loader
    report_stage(on_stage, 5, f"Loading {source.path.name}")
    if storage.mmdit_quant is Quant.nf4:
        extra["transformer"] = SD3Transformer2DModel.from_single_file(
            str(source.path),
            config=str(config_dir),
            subfolder="transformer",
            quantization_config=bnb_config(Quant.nf4, dtype, "diffusers"),
            device_map={"": storage.device},
            torch_dtype=torch_dtype(dtype),
            local_files_only=True,
        )
    started = time.perf_counter()
    try:
        pipe = StableDiffusion3Pipeline.from_single_file(
            str(source.path),
            config=str(config_dir),
            local_files_only=True,
            torch_dtype=torch_dtype(dtype),
            **extra,
        )
    except (RefusedFormatError, ModelError):
        raise
    storage.read.append((source.path.name, source.size_bytes(), time.perf_counter() - started))
    for part in ("text_encoder", "text_encoder_2", "text_encoder_3", "transformer", "vae"):
        module = getattr(pipe, part, None)
        if module is not None:
            module.eval()
    report_stage(on_stage, 6, "Checkpoint loaded")
    return pipe, use_t5, notices
