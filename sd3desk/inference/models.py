"""Model sources: find, identify and describe SD3 models on disk without loading any weights.

Pure Python (no torch): safetensors headers are JSON, read directly, so the CLI and the UI can
list and check models instantly.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from enum import Enum
from importlib import resources
from pathlib import Path
from typing import Any

from sd3desk.core.errors import ModelError, RefusedFormatError
from sd3desk.core.files import NotRegularFileError, check_regular, describe_kind, open_regular
from sd3desk.core.params import (
    FAMILY_DEFAULTS,
    SD3_PIPELINE,
    ModelFamily,
    architecture,
    turbo_or,
)
from sd3desk.core.weights_header import read_safetensors_header
from sd3desk.inference.checkpoint_layout import MMDIT_PREFIX
from sd3desk.inference.testmodel import GGUF_TEST_KEY, HEADER_KEY, MARKER_FILE

log = logging.getLogger(__name__)

TEST_MODEL_REFS = ("test", "sd3desk-test")
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

TEXT_PARTS = ("text_encoder", "text_encoder_2", "text_encoder_3")
# Parameters of the text encoders every SD3 model shares, for sizing a model that borrows them:
# counted from the bundled configs (resources/configs/sd3-medium/text_encoder{,_2,_3}: CLIP-L and
# CLIP-G with projection, the T5-XXL v1.1 encoder with its embedding) built on the meta device
DONOR_PARAMS = {
    "vae": 83_819_683,  # (the SD3 / SD3.5 VAE, for a GGUF file that brings only its MMDiT)
    "text_encoder": 123_650_304,
    "text_encoder_2": 694_659_840,
    "text_encoder_3": 4_893_906_944,
}


class ModelKind(Enum):
    """How a model is stored."""

    folder = "diffusers folder"
    single_file = "single file"
    gguf = "GGUF transformer"
    hub = "Hugging Face cache"
    test = "test model"


@dataclass(frozen=True)
class ModelSource:
    """A model found on disk: where it is, what it is, and which parts it brings."""

    kind: ModelKind
    path: Path  # the diffusers folder or the .safetensors file
    family: ModelFamily
    name: str
    reference: str  # what the user typed / what goes into GenerationParams.model
    parts: frozenset[str] = frozenset()  # weights present: transformer, vae, text_encoder{,_2,_3}
    component_params: dict[str, int] = field(default_factory=dict, compare=False)
    test_size: str = ""
    notices: tuple[str, ...] = field(default=(), compare=False)  # said when it is loaded
    quant: str = ""  # a GGUF file's quantization ("Q8_0", "Q4_0", ...)

    @property
    def has_t5(self) -> bool:
        return "text_encoder_3" in self.parts

    @property
    def has_clips(self) -> bool:
        return {"text_encoder", "text_encoder_2"} <= self.parts

    @property
    def max_side(self) -> int:
        return FAMILY_DEFAULTS[self.family].max_side

    def hash_files(self) -> list[Path]:
        """The files whose SHA-256 names the model: the checkpoint, or the MMDiT weights."""
        if self.kind in (ModelKind.single_file, ModelKind.gguf):
            return [self.path]
        return sorted((self.path / "transformer").glob("*.safetensors"))

    def size_bytes(self) -> int:
        """Bytes on disk of what loading reads (one variant per component)."""
        if self.path.is_file():
            return self.path.stat().st_size
        parts = ("transformer", "vae", *TEXT_PARTS)
        return sum(w.stat().st_size for p in parts for w in loaded_weights(self.path / p))

    def sizes(self) -> str:
        """Its sizes as people read them: decimal GB on disk (as downloads are sized), and in
        memory at 16 bits with any text encoders it borrows."""
        from sd3desk.core.downloads import format_bytes

        loaded = sum(self.load_bytes(2).values())
        return (
            f"{format_bytes(self.size_bytes())} on disk, {format_bytes(loaded)} to load in 16-bit"
        )

    def load_params(self, use_t5: bool = True) -> dict[str, int]:
        """Parameters per component that loading this model puts in memory: its own, and for
        the parts it lacks, those a donor folder lends (all SD3 models share their text
        encoders and VAE)."""
        params = {k: n for k, n in self.component_params.items() if n}
        if self.family is not ModelFamily.test:
            for part, count in DONOR_PARAMS.items():
                if part not in params and (use_t5 or part != "text_encoder_3"):
                    params[part] = count
        if not use_t5:
            params.pop("text_encoder_3", None)
        return params

    def load_bytes(self, bytes_per_param: int, use_t5: bool = True) -> dict[str, int]:
        """Bytes per component in memory at `bytes_per_param`; a GGUF transformer stays
        quantized (dequantized layer by layer as it runs), so it takes its file's size."""
        sizes = {k: n * bytes_per_param for k, n in self.load_params(use_t5).items()}
        if self.kind is ModelKind.gguf:
            sizes["transformer"] = self.path.stat().st_size
        return sizes


def bundled_config_dir(family: ModelFamily) -> Path:
    """Configs (no weights) shipped for single-file loading of a real model family."""
    folder = architecture(family).value
    return Path(str(resources.files("sd3desk") / "resources" / "configs" / folder))


def bundled_clip_tokenizer_dir() -> Path:
    """CLIP's BPE vocabulary, shipped with its licence (see resources/tokenizers/clip)."""
    return Path(str(resources.files("sd3desk") / "resources" / "tokenizers" / "clip"))


def _numel(entry: Any) -> int:
    count = 1
    for dim in entry.get("shape", []) if isinstance(entry, dict) else []:
        count *= int(dim)
    return count


@dataclass(frozen=True)
class CheckpointInfo:
    """What a single-file checkpoint (safetensors or GGUF) holds, read from its header."""

    family: ModelFamily
    parts: frozenset[str]
    component_params: dict[str, int]
    test_size: str = ""
    quant: str = ""  # a GGUF file's quantization


def inspect_checkpoint(path: Path) -> CheckpointInfo:
    """Identify an SD3 single-file checkpoint (SD3 Medium, SD3.5 Medium/Large, test model)."""
    header = read_safetensors_header(path)
    meta = header.pop("__metadata__", None) or {}
    keys = header.keys()
    blocks = {
        int(m.group(1))
        for k in keys
        if (m := re.match(r"model\.diffusion_model\.joint_blocks\.(\d+)\.", k))
    }
    if not blocks:
        raise ModelError(_not_sd3_reason(path, keys), path=str(path))
    if "scaled_fp8" in keys or any(k.endswith(".scale_weight") for k in keys):
        # ComfyUI's fp8 "scaled" files: each fp8 weight must be multiplied by its scale_weight,
        # which diffusers' single-file loader does not know: it would load unscaled weights
        raise RefusedFormatError(
            f'{path.name} is an fp8 "scaled" checkpoint (saved by ComfyUI): its weights '
            "need per-tensor scales that sd3desk's loader cannot apply yet, and without them "
            "it would make garbage images",
            "use the 16-bit file of the same model (e.g. sd3.5_large.safetensors) or its "
            "diffusers folder; on a small GPU, the offload memory plan",
            path=str(path),
        )
    params = {
        "transformer": 0,
        "vae": 0,
        "text_encoder": 0,
        "text_encoder_2": 0,
        "text_encoder_3": 0,
    }
    prefixes = {
        "transformer": MMDIT_PREFIX,
        "vae": "first_stage_model.",
        "text_encoder": "text_encoders.clip_l.",
        "text_encoder_2": "text_encoders.clip_g.",
        "text_encoder_3": "text_encoders.t5xxl.",
    }
    for key, entry in header.items():
        for part, prefix in prefixes.items():
            if key.startswith(prefix):
                params[part] += _numel(entry)
                break
    parts = {p for p, n in params.items() if n}
    if "vae" not in parts:
        raise ModelError(
            f"{path.name} has no VAE weights (first_stage_model.*)",
            "use a checkpoint that includes the VAE, e.g. sd3_medium.safetensors",
            path=str(path),
        )
    if meta.get(HEADER_KEY):
        return CheckpointInfo(ModelFamily.test, frozenset(parts), params, str(meta[HEADER_KEY]))
    hidden_entry = header.get(MMDIT_PREFIX + "context_embedder.weight", {})
    hidden = (hidden_entry.get("shape") or [0])[0]
    dual = any(".x_block.attn2." in k for k in keys)
    if hidden == 2432:
        family = ModelFamily.sd35_large
    elif hidden == 1536 and dual:
        family = ModelFamily.sd35_medium
    elif hidden == 1536:
        family = ModelFamily.sd3_medium
    else:
        raise ModelError(
            f"{path.name} is an SD3-style model of an unknown size ({len(blocks)} blocks, "
            f"width {hidden}); sd3desk knows SD3 Medium and SD3.5 Medium/Large",
            path=str(path),
        )
    return CheckpointInfo(family, frozenset(parts), params)


def inspect_gguf(path: Path) -> CheckpointInfo:
    """Family and quantization of a GGUF SD3/SD3.5 transformer (the MMDiT alone, in the
    original key layout with or without "model.diffusion_model."), read from its header and
    tensor table; the tensors are memory-mapped, never read."""
    try:
        from gguf import GGUFReader
    except ImportError as exc:
        raise ModelError(
            "loading GGUF files needs the gguf package", "pip install gguf", path=str(path)
        ) from exc
    check_regular(path)
    try:
        reader = GGUFReader(str(path))
    except Exception as exc:  # the reader raises many types for damaged files
        raise ModelError(
            f"{path.name} is not a valid GGUF file ({exc})",
            "the download may be incomplete; download the file again",
            path=str(path),
        ) from exc
    tensors = {t.name.removeprefix(MMDIT_PREFIX): t for t in reader.tensors}
    if not any(name.startswith("joint_blocks.") for name in tensors):
        raise ModelError(
            f"{path.name} is a GGUF file but not an SD3 transformer (no joint_blocks)",
            "sd3desk loads GGUF files of SD3 Medium, SD3.5 Medium and SD3.5 Large transformers",
            path=str(path),
        )
    params = {"transformer": sum(int(t.n_elements) for t in tensors.values())}
    quants = Counter(t.tensor_type.name for t in tensors.values() if len(t.shape) >= 2)
    quant = quants.most_common(1)[0][0] if quants else "F32"
    parts = frozenset({"transformer"})
    field = reader.fields.get(GGUF_TEST_KEY)
    if field is not None:
        size = bytes(field.parts[field.data[0]]).decode("utf-8", "replace")
        return CheckpointInfo(ModelFamily.test, parts, params, size, quant)
    embedder = tensors.get("context_embedder.weight")
    hidden = min(int(d) for d in embedder.shape) if embedder is not None else 0
    family = {2432: ModelFamily.sd35_large, 1536: ModelFamily.sd3_medium}.get(hidden)
    if family is None:
        raise ModelError(
            f"{path.name} is an SD3-style transformer of an unknown width ({hidden})",
            path=str(path),
        )
    if family is ModelFamily.sd3_medium and any(".x_block.attn2." in n for n in tensors):
        family = ModelFamily.sd35_medium
    return CheckpointInfo(family, parts, params, "", quant)


def _not_sd3_reason(path: Path, keys: Any) -> str:
    text = " ".join(list(keys)[:2000])
    if "model.diffusion_model.input_blocks." in text:
        kind = "a Stable Diffusion 1.x/2.x/XL checkpoint"
    elif "double_blocks." in text:
        kind = "a Flux checkpoint"
    elif "transformer_blocks." in text:
        kind = "a diffusers-format component, not a whole single-file checkpoint"
    else:
        kind = "not an SD3 checkpoint (no MMDiT weights under model.diffusion_model.)"
    return f"{path.name} is {kind}; sd3desk runs SD3 and SD3.5 models"


# ------------------------------------------------------------------ diffusers folders


CONFIG_BYTES_MAX = 16 * 1024 * 1024  # a model's JSON files are KBs (tokenizer.json: a few MB)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with open_regular(path) as handle:
            raw = handle.read(CONFIG_BYTES_MAX + 1)
        if len(raw) > CONFIG_BYTES_MAX:
            raise ModelError(f"{path} is over 16 MB; it is not a model's config", path=str(path))
        data = json.loads(raw.decode("utf-8"))
    except FileNotFoundError:
        raise ModelError(
            f"{path} is missing", "the model folder is incomplete", str(path)
        ) from None
    except NotRegularFileError as exc:
        raise ModelError(f"{exc.strerror}, not a config file", path=str(path)) from exc
    except (OSError, ValueError, RecursionError) as exc:
        raise ModelError(f"{path} cannot be read: {exc}", path=str(path)) from exc
    if not isinstance(data, dict):
        raise ModelError(f"{path} does not hold a JSON object", path=str(path))
    return data


def check_folder_files(folder: Path) -> None:
    """Refuse a model folder holding anything but files and folders where its files go (a FIFO
    named like a weight or config would hang whoever opens it)."""
    for place in (folder, *(p for p in folder.iterdir() if p.is_dir())):
        for entry in place.iterdir():
            try:
                if not entry.is_dir():
                    check_regular(entry)
            except NotRegularFileError as exc:
                raise ModelError(
                    f"{entry} is {describe_kind(entry)}, not a file",
                    "a model folder holds only files and folders; remove it or download the "
                    "model again",
                    path=str(entry),
                ) from exc
            except OSError as exc:  # e.g. a link to nowhere: loading names what is missing
                log.debug("skipping %s: %s", entry, exc)


# Libraries whose classes a model folder may name; anything else is custom code of its own
_KNOWN_LIBRARIES = ("diffusers", "transformers", None)


def custom_code_notices(folder: Path, index: dict[str, Any]) -> tuple[str, ...]:
    """What a folder asks to run of its own (custom pipeline or component classes, `auto_map`
    in a config), said to the user: sd3desk never runs it and loads the standard SD3 classes."""
    named = []  # (a pipeline class other than SD3's was refused by inspect_folder already)
    if "custom_pipeline" in index:
        named.append(f"pipeline {index['custom_pipeline']}")
    for part, entry in index.items():
        if part.startswith("_") or not isinstance(entry, list) or len(entry) != 2:
            continue
        if entry[0] not in _KNOWN_LIBRARIES:
            named.append(f"{part}: {entry[0]}.{entry[1]}")
    for config in sorted(folder.glob("*/config.json")) + sorted(
        folder.glob("*/tokenizer_config.json")
    ):
        try:
            if "auto_map" in _read_json(config):
                named.append(f"auto_map in {config.parent.name}/{config.name}")
        except ModelError:
            continue  # loading that part says what is wrong with it
    if not named:
        return ()
    return (
        f"{folder.name} names code of its own ({'; '.join(named)}); sd3desk never runs code "
        "from a model folder and loads it with the standard SD3 classes",
    )


# diffusers/transformers weight files: NAME[.VARIANT][-0000N-of-0000M].safetensors
_WEIGHTS_NAME = re.compile(
    r"^(?P<name>[^.]+)(?:\.(?P<variant>[\w]+))?(?:-\d+-of-\d+)?\.safetensors$"
)


def loaded_weights(part_folder: Path) -> list[Path]:
    """The weight files of one component that loading reads: one variant only. A repo ships
    e.g. model.safetensors and model.fp16.safetensors side by side; from_pretrained without a
    variant (as sd3desk loads) reads the plain one, so that is what is counted, and a folder
    with variants only counts the first of them."""
    groups: dict[str, list[Path]] = {}
    for weights in sorted(part_folder.glob("*.safetensors")):
        found = _WEIGHTS_NAME.match(weights.name)
        variant = (found["variant"] or "") if found else weights.name
        groups.setdefault(variant, []).append(weights)
    if not groups:
        return []
    return groups.get("", groups[min(groups)])


def _folder_params(folder: Path, part: str) -> int:
    total = 0
    for weights in loaded_weights(folder / part):
        header = read_safetensors_header(weights)
        header.pop("__metadata__", None)
        total += sum(_numel(e) for e in header.values())
    return total


def inspect_folder(
    folder: Path, index: dict[str, Any] | None = None
) -> tuple[ModelFamily, frozenset[str], dict[str, int], str]:
    """Family, parts with weights, parameter counts and test size of a diffusers folder
    (`index`: its model_index.json, when read already)."""
    index = _read_json(folder / "model_index.json") if index is None else index
    if index.get("_class_name") != SD3_PIPELINE:
        raise ModelError(
            f"{folder} holds a {index.get('_class_name', 'unknown')} model; "
            "sd3desk runs StableDiffusion3Pipeline models (SD3, SD3.5)",
            path=str(folder),
        )
    test_size = ""
    if (folder / MARKER_FILE).exists():
        test_size = str(_read_json(folder / MARKER_FILE).get("size", "tiny"))
        family = ModelFamily.test
    else:
        config = _read_json(folder / "transformer" / "config.json")
        hidden = config.get("caption_projection_dim", 0)
        if not isinstance(hidden, int) or isinstance(hidden, bool):
            raise ModelError(
                f"{folder / 'transformer' / 'config.json'} is damaged: caption_projection_dim "
                f"is {hidden!r}, not a whole number",
                "download the model again",
                path=str(folder / "transformer" / "config.json"),
            )
        family = (
            ModelFamily.sd35_large
            if hidden == 2432
            else ModelFamily.sd35_medium
            if config.get("dual_attention_layers")
            else ModelFamily.sd3_medium
        )
    params = {}
    for part in ("transformer", "vae", *TEXT_PARTS):
        entry = index.get(part)
        if (folder / part).is_dir() and isinstance(entry, list) and entry and entry[0] is not None:
            params[part] = _folder_params(folder, part)
            if not params[part] and any((folder / part).glob("*.bin")):
                raise RefusedFormatError(
                    f"{folder / part} has only pickle (.bin) weights; sd3desk never loads pickle "
                    "files because they can run code",
                    "download the .safetensors version of this model",
                    path=str(folder / part),
                )
    parts = frozenset(p for p, n in params.items() if n)
    for needed in ("transformer", "vae"):
        if needed not in parts:
            raise ModelError(
                f"{folder} has no {needed} weights (expected {folder / needed}/*.safetensors)",
                "the download is incomplete; download the model again",
                path=str(folder / needed),
            )
    return family, parts, params, test_size


# ------------------------------------------------------------------ resolving references


def resolve_model(reference: str, test_model_dir: Path | None = None) -> ModelSource:
    """What a model reference (path, Hugging Face repo id, or "test") points at. Offline."""
    ref = reference.strip()
    if not ref:
        raise ModelError("no model given", "pass --model PATH, a Hugging Face repo id, or 'test'")
    if ref in TEST_MODEL_REFS:
        if test_model_dir is None:
            raise ModelError("no folder for the test model was given")
        return ModelSource(
            ModelKind.test,
            test_model_dir,
            ModelFamily.test,
            "sd3desk-test",
            ref,
            frozenset({"transformer", "vae", *TEXT_PARTS}),
            test_size="tiny",
        )
    path = Path(ref).expanduser()
    if path.exists():
        return source_from_path(path, ref)
    if _REPO_ID.match(ref):
        return source_from_path(hub_snapshot(ref), ref, ModelKind.hub, name=ref)
    raise ModelError(
        f"no model at {ref!r}: no such file or folder, and not a Hugging Face repo id",
        "give a .safetensors file, a diffusers folder, or a repo id like "
        "stabilityai/stable-diffusion-3-medium-diffusers",
        path=ref,
    )


def source_from_path(
    path: Path, reference: str, kind: ModelKind | None = None, name: str | None = None
) -> ModelSource:
    if path.is_dir():
        if not (path / "model_index.json").exists():
            raise ModelError(
                f"{path} is not a diffusers model folder (no model_index.json)",
                "point at the folder that holds model_index.json, or at a .safetensors file",
                path=str(path),
            )
        check_folder_files(path)
        index = _read_json(path / "model_index.json")
        family, parts, params, test_size = inspect_folder(path, index)
        return ModelSource(
            kind or ModelKind.folder,
            path,
            turbo_or(family, path.name, Path(reference).name, name or ""),
            name or path.name,
            reference,
            parts,
            params,
            test_size,
            custom_code_notices(path, index),
        )
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        raise RefusedFormatError(
            f"{path.name} is a pickle-based model file; sd3desk never loads those because "
            "opening one can run arbitrary code",
            "use the .safetensors version of this model",
            path=str(path),
        )
    if suffix == ".gguf":
        info, default_kind = inspect_gguf(path), ModelKind.gguf
    elif suffix == ".safetensors":
        info, default_kind = inspect_checkpoint(path), ModelKind.single_file
    else:
        raise ModelError(
            f"{path.name} is not a model file sd3desk can load (expected .safetensors or .gguf)",
            path=str(path),
        )
    return ModelSource(
        kind or default_kind,
        path,
        turbo_or(info.family, path.name, Path(reference).name, name or ""),
        name or path.stem,
        reference,
        info.parts,
        info.component_params,
        info.test_size,
        quant=info.quant,
    )


def hub_snapshot(repo_id: str) -> Path:
    """The cached snapshot folder of a Hugging Face repo (HF_HOME), never downloading."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError) as exc:
        raise ModelError(
            f"{repo_id} is not in the Hugging Face cache ({hub_cache_dir()})",
            "download it first: accept the licence on its Hugging Face page, log in with a token "
            f"(`hf auth login`), then `hf download {repo_id}`",
            path=repo_id,
        ) from exc


def hub_cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)
