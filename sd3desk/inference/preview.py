"""Cheap live previews: SD3 latents to RGB with a linear map, no VAE decode (~1 ms), or through
the tiny SD3 autoencoder (TAESD3) when it is on disk: previews that look like the image."""

from __future__ import annotations

from collections import deque
from pathlib import Path
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


def predicted_x0(latents: Any, previous: Any, sigma: Any, previous_sigma: Any) -> Any:
    """The clean-image estimate from two successive flow-matching latents.

    An Euler step moves x along v = noise - x0 by (sigma - previous_sigma); x = x0 + sigma * v,
    so v and then x0 follow from the step just taken. Looks far better than the noisy latent.
    Sigmas may be 0-dim device tensors: nothing here waits for the GPU.
    """
    velocity = (latents - previous) / (sigma - previous_sigma)
    return latents - sigma * velocity


_ON_DEVICE: dict[str, tuple[Any, Any]] = {}


def _factors_on(device: Any) -> tuple[Any, Any]:
    """The factor matrix and bias on `device`, copied there once: building them per step meant
    a blocking host-to-device copy every step on CUDA."""
    import torch

    key = str(device)
    if key not in _ON_DEVICE:
        _ON_DEVICE[key] = (
            torch.tensor(SD3_LATENT_RGB_FACTORS, dtype=torch.float32, device=device),
            torch.tensor(SD3_LATENT_RGB_BIAS, dtype=torch.float32, device=device),
        )
    return _ON_DEVICE[key]


def latents_to_rgb(latents: Any) -> Any:
    """One latent [16, h, w] to uint8 RGB [h, w, 3] on the latent's own device."""
    import torch

    factors, bias = _factors_on(latents.device)
    rgb = torch.einsum("chw,cr->hwr", latents.detach().float(), factors) + bias
    return ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def rgb_to_image(rgb: Any) -> Image.Image:
    height, width, _ = rgb.shape
    return Image.frombytes("RGB", (width, height), rgb.contiguous().numpy().tobytes())


def latents_to_image(latents: Any) -> Image.Image:
    """One latent [16, h, w] (any float dtype, any device) to an RGB preview at latent size."""
    return rgb_to_image(latents_to_rgb(latents).cpu())


# A decoded preview is made at half the image's size, its longer side at most 512 px (about what
# the window shows it at). TAESD's work grows with the pixels it makes: a full-size decode is
# 2.4-3.5% of an SD3 Medium step's FLOPs from 512 to 1536 px, half the size at most 0.9%
# (bench/preview_cost.py), which leaves room for convolutions running less efficiently than the
# MMDiT's matmuls within the 2% of a GPU step a preview may take.
DECODED_SCALE = 4  # preview pixels per latent pixel (the decoder itself makes 8)
DECODED_MAX_SIDE = 512


def load_decoder(folder: Path, device: Any, dtype: Any) -> Any:
    """TAESD3 (diffusers' AutoencoderTiny) from `folder`, on `device` in `dtype`, for previews."""
    from diffusers import AutoencoderTiny

    decoder: Any = AutoencoderTiny.from_pretrained(folder, torch_dtype=dtype, local_files_only=True)
    decoder.encoder = None  # half its weights, never used for previews
    return decoder.to(device).eval().requires_grad_(False)


def decoded_rgb(
    decoder: Any, latents: Any, scale: int = DECODED_SCALE, max_side: int = DECODED_MAX_SIDE
) -> Any:
    """Latents [1, 16, h, w] in the pipeline's space through the tiny autoencoder, to uint8 RGB
    [H, W, 3] on their device: `scale` x the latents' size, the longer side at most `max_side`."""
    import torch
    import torch.nn.functional as F

    config = decoder.config
    # What diffusers' SD3 pipeline hands its VAE (taesd3's config: scale 1, shift 0, since TAESD
    # decodes the latents the model denoises as they are, see the taesd README)
    z = latents / config.scaling_factor + config.shift_factor
    upscale = config.upsampling_scaling_factor ** (len(config.decoder_block_out_channels) - 1)
    height, width = z.shape[-2:]
    shrink = min(scale * max(height, width), max_side) / (upscale * max(height, width))
    if shrink < 1:
        # Shrink the latents, not the picture: the decoder makes the preview's pixels only
        size = [max(1, round(side * shrink)) for side in (height, width)]
        z = F.interpolate(z.float(), size=size, mode="area")
    rgb = decoder.decode(z.to(decoder.dtype), return_dict=False)[0][0]  # [3, H, W] in [-1, 1]
    return ((rgb.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0)


class PreviewQueue:
    """Hands out previews without ever making the caller wait for the GPU.

    A CUDA preview is copied to pinned host memory asynchronously and becomes available once its
    copy has finished - usually by the next step - so the GPU never idles for a preview (a
    synchronize per step cost SD3 Medium 7% of its speed on an H100). CPU and MPS previews are
    ready at once.
    """

    def __init__(self) -> None:
        self._pending: deque[tuple[Any, Any]] = deque()

    def submit(self, rgb: Any) -> None:
        import torch

        if rgb.device.type == "cuda":
            host = torch.empty(rgb.shape, dtype=rgb.dtype, pin_memory=True)
            host.copy_(rgb, non_blocking=True)
            done = torch.cuda.Event()
            done.record()
            self._pending.append((host, done))
        else:
            self._pending.append((rgb.cpu(), None))

    def latest(self) -> Image.Image | None:
        """The newest preview whose copy has finished, dropping older ones; None if none is."""
        ready = None
        while self._pending and (self._pending[0][1] is None or self._pending[0][1].query()):
            ready = self._pending.popleft()[0]
        return None if ready is None else rgb_to_image(ready)
