"""Cheap live previews: SD3 latents to RGB with a linear map, no VAE decode (~1 ms)."""

from __future__ import annotations

from typing import Any

from PIL import Image

# Linear latent->RGB factors for SD3's 16-channel latent space, and the bias, as published in
# ComfyUI's comfy/latent_formats.py (class SD3, `latent_rgb_factors`/`latent_rgb_factors_bias`).
# They apply to latents in the pipeline's scaled space ((z - 0.0609) * 1.5305), the space
# diffusers' SD3 pipeline denoises in.
SD3_LATENT_RGB_FACTORS = (
    (-0.0922, -0.0175, 0.0749),
    (0.0311, 0.0633, 0.0954),
    (0.1994, 0.0927, 0.0458),
    (0.0856, 0.0339, 0.0902),
    (0.0587, 0.0272, -0.0496),
    (-0.0006, 0.1104, 0.0309),
    (0.0978, 0.0306, 0.0427),
    (-0.0042, 0.1038, 0.1358),
    (-0.0194, 0.0020, 0.0669),
    (-0.0488, 0.0130, -0.0268),
    (0.0922, 0.0988, 0.0951),
    (-0.0278, 0.0524, -0.0542),
    (0.0332, 0.0456, 0.0895),
    (-0.0069, -0.0030, -0.0810),
    (-0.0596, -0.0465, -0.0293),
    (-0.1448, -0.1463, -0.1189),
)
SD3_LATENT_RGB_BIAS = (0.2394, 0.2135, 0.1925)


def predicted_x0(latents: Any, previous: Any, sigma: float, previous_sigma: float) -> Any:
    """The clean-image estimate from two successive flow-matching latents.

    An Euler step moves x along v = noise - x0 by (sigma - previous_sigma); x = x0 + sigma * v,
    so v and then x0 follow from the step just taken. Looks far better than the noisy latent.
    """
    if sigma == previous_sigma:
        return latents
    velocity = (latents - previous) / (sigma - previous_sigma)
    return latents - sigma * velocity


def latents_to_image(latents: Any) -> Image.Image:
    """One latent [16, h, w] (any float dtype, any device) to an RGB preview at latent size."""
    import torch

    factors = torch.tensor(SD3_LATENT_RGB_FACTORS, dtype=torch.float32)
    bias = torch.tensor(SD3_LATENT_RGB_BIAS, dtype=torch.float32)
    rgb = torch.einsum("chw,cr->hwr", latents.detach().float().cpu(), factors) + bias
    pixels = ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).contiguous()
    height, width, _ = pixels.shape
    return Image.frombytes("RGB", (width, height), pixels.numpy().tobytes())
