"""Finding SD3 models and their missing parts on disk: the Hugging Face cache, the user's model
folders, donors of text encoders and the T5 tokenizer, the preview decoder. Pure Python (no
torch)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from sd3desk.core.downloads import PREVIEW_DECODER_FILES, PREVIEW_DECODER_REPO
from sd3desk.core.errors import ModelError
from sd3desk.core.params import SD3_PIPELINE
from sd3desk.inference.models import (
    ModelKind,
    ModelSource,
    hub_cache_dir,
    hub_snapshot,
    source_from_path,
)

# Public SD3-family repos whose diffusers folders also serve as text-encoder donors.
KNOWN_REPOS = (
    "stabilityai/stable-diffusion-3-medium-diffusers",
    "stabilityai/stable-diffusion-3.5-medium",
    "stabilityai/stable-diffusion-3.5-large",
    "stabilityai/stable-diffusion-3.5-large-turbo",
)
# The T5 tokenizer is not bundled (see README); these public repos carry it.
T5_TOKENIZER_REPOS = ("google/t5-v1_1-xxl",)


def _sd3_folder(path: Path) -> bool:
    try:
        return (
            json.loads((path / "model_index.json").read_text("utf-8")).get("_class_name")
            == SD3_PIPELINE
        )
    except (OSError, ValueError, AttributeError):
        return False


def find_text_encoder_donor(model_dirs: list[Path] | tuple[Path, ...] = ()) -> Path | None:
    """A diffusers SD3 folder with CLIP-L and CLIP-G weights (all SD3 models share them)."""
    candidates: list[Path] = []
    for directory in model_dirs:
        directory = Path(directory)
        if _sd3_folder(directory):
            candidates.append(directory)
        elif directory.is_dir():
            candidates += [p for p in sorted(directory.iterdir()) if _sd3_folder(p)]
    for repo in KNOWN_REPOS:
        try:
            candidates.append(hub_snapshot(repo))
        except ModelError:
            continue
    for folder in candidates:
        if all(any((folder / p).glob("*.safetensors")) for p in ("text_encoder", "text_encoder_2")):
            return folder
    return None


def find_t5_tokenizer(folders: list[Path]) -> Path | None:
    """A folder holding the T5 SentencePiece tokenizer (spiece.model or tokenizer.json)."""
    candidates = [Path(f) / "tokenizer_3" for f in folders]
    for repo in (*KNOWN_REPOS, *T5_TOKENIZER_REPOS):
        try:
            snapshot = hub_snapshot(repo)
        except ModelError:
            continue
        candidates += [snapshot / "tokenizer_3", snapshot]
    for folder in candidates:
        if (folder / "spiece.model").exists() or (folder / "tokenizer.json").exists():
            return folder
    return None


def find_taesd3(model_dirs: list[Path] | tuple[Path, ...] = ()) -> Path | None:
    """The tiny SD3 autoencoder for previews: the cached snapshot of madebyollin/taesd3 that
    refs/main names (as the Models dialog downloads it), else a folder named taesd3 in (or
    being) one of the user's model folders; None when none holds it whole."""
    candidates: list[Path] = []
    with contextlib.suppress(ModelError):
        candidates.append(hub_snapshot(PREVIEW_DECODER_REPO))
    for directory in map(Path, model_dirs):
        candidates.append(directory / "taesd3")
        if directory.name == "taesd3":
            candidates.append(directory)
    return next((folder for folder in candidates if _taesd3_folder(folder)), None)


def _taesd3_folder(folder: Path) -> bool:
    """Both files there, and a config of a 16-channel AutoencoderTiny (an SD1 or SDXL TAESD has
    4 latent channels and could not decode SD3 latents)."""
    if not all((folder / name).is_file() for name in PREVIEW_DECODER_FILES):
        return False
    try:
        config = json.loads((folder / PREVIEW_DECODER_FILES[0]).read_text("utf-8"))
        return (
            config.get("_class_name") == "AutoencoderTiny" and config.get("latent_channels") == 16
        )
    except (OSError, ValueError, AttributeError):
        return False


# ------------------------------------------------------------------ listing


def current_revision(repo: Any) -> Any:
    """The cached revision of a repo that loading it uses: the one `refs/main` points to (as
    snapshot_download(local_files_only=True) resolves it), else the newest one cached."""
    main = repo.refs.get("main")
    if main is not None:
        return main
    revisions = sorted(repo.revisions, key=lambda r: r.last_modified, reverse=True)
    return revisions[0] if revisions else None


def discover_models(
    model_dirs: list[Path] | tuple[Path, ...] = (),
) -> tuple[list[ModelSource], list[str]]:
    """SD3-family models in the Hugging Face cache and in the user's folders, plus problems seen."""
    found: list[ModelSource] = []
    problems: list[str] = []
    try:
        from huggingface_hub import scan_cache_dir

        cache = scan_cache_dir(hub_cache_dir())
        for repo in sorted(cache.repos, key=lambda r: r.repo_id):
            if repo.repo_type != "model":
                continue
            revision = current_revision(repo)
            if revision is not None and _sd3_folder(revision.snapshot_path):
                try:
                    found.append(
                        source_from_path(
                            revision.snapshot_path, repo.repo_id, ModelKind.hub, repo.repo_id
                        )
                    )
                except ModelError as exc:
                    problems.append(f"{repo.repo_id}: {exc.message}")
    except Exception as exc:  # a missing or odd cache is not an error worth stopping for
        if hub_cache_dir().exists():
            problems.append(f"cannot scan the Hugging Face cache: {exc}")
    for directory in model_dirs:
        directory = Path(directory)
        if not directory.is_dir():
            problems.append(f"{directory}: folder not found")
            continue
        entries = (
            [directory]
            if (directory / "model_index.json").exists()
            else sorted(directory.iterdir())
        )
        for entry in entries:
            is_model = (entry / "model_index.json").exists() or entry.suffix.lower() in (
                ".safetensors",
                ".gguf",
            )
            if not is_model:
                continue
            try:
                found.append(source_from_path(entry, str(entry)))
            except ModelError as exc:
                problems.append(exc.message)
    return found, problems
