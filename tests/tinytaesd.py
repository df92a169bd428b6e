"""A tiny random TAESD3 for the preview tests: diffusers' real AutoencoderTiny with SD3's 16
latent channels and 8x upscaling at toy widths, laid out as the Hugging Face cache holds
madebyollin/taesd3 (no download, ever)."""

from __future__ import annotations

import shutil
from pathlib import Path

REPO_FOLDER = "models--madebyollin--taesd3"
# The real one's stages (4 decoder blocks: 3 upsamplings, so 8x) at 8 channels instead of 64.
TINY_CONFIG = {
    "latent_channels": 16,
    "encoder_block_out_channels": (8, 8, 8, 8),
    "decoder_block_out_channels": (8, 8, 8, 8),
    "num_encoder_blocks": (1, 1, 1, 1),
    "num_decoder_blocks": (1, 1, 1, 1),
}


def write_tiny_taesd3(folder: Path, seed: int = 0) -> Path:
    """A random 16-channel AutoencoderTiny saved as diffusers saves it (config.json and
    diffusion_pytorch_model.safetensors)."""
    import torch
    from diffusers import AutoencoderTiny

    torch.manual_seed(seed)
    AutoencoderTiny(**TINY_CONFIG).save_pretrained(folder)
    return folder


def cache_taesd3(cache: Path, source: Path, revision: str = "c" * 40, main: bool = True) -> Path:
    """`source`'s files as a snapshot of madebyollin/taesd3 in the Hugging Face cache `cache`
    (links into blobs/, as huggingface_hub makes them), refs/main naming it when `main`; the
    snapshot folder."""
    repo = cache / REPO_FOLDER
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir(exist_ok=True)
    for path in sorted(source.iterdir()):
        blob = repo / "blobs" / f"{revision[:8]}-{path.name}"
        shutil.copyfile(path, blob)
        (snapshot / path.name).symlink_to(Path("..", "..", "blobs", blob.name))
    if main:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(revision)
    return snapshot
