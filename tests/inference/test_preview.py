"""Latent previews: the published SD3 factors, x0 prediction, the non-blocking queue (CPU)."""

from __future__ import annotations

import torch

from sd3desk.inference.preview import (
    SD3_LATENT_RGB_BIAS,
    PreviewQueue,
    latents_to_image,
    latents_to_rgb,
    predicted_x0,
)


def test_zero_latent_shows_the_bias_colour():
    rgb = latents_to_rgb(torch.zeros(16, 4, 6))
    expected = [round((b + 1) * 127.5) for b in SD3_LATENT_RGB_BIAS]
    assert rgb.shape == (4, 6, 3) and rgb.dtype == torch.uint8
    assert rgb[0, 0].tolist() == expected
    assert latents_to_image(torch.zeros(16, 4, 6, dtype=torch.bfloat16)).size == (6, 4)


def test_x0_prediction_recovers_the_clean_latent_of_a_straight_flow():
    x0, noise = torch.randn(16, 8, 8), torch.randn(16, 8, 8)
    at = lambda sigma: (1 - sigma) * x0 + sigma * noise  # noqa: E731 - the flow-matching path
    estimate = predicted_x0(at(0.6), at(0.8), torch.tensor(0.6), torch.tensor(0.8))
    assert torch.allclose(estimate, x0, atol=1e-5)


def test_queue_hands_out_the_newest_ready_preview():
    queue = PreviewQueue()
    assert queue.latest() is None
    older, newer = torch.zeros(16, 2, 2), torch.full((16, 2, 2), 5.0)
    queue.submit(latents_to_rgb(older))
    queue.submit(latents_to_rgb(newer))
    assert queue.latest().tobytes() == latents_to_image(newer).tobytes()
    assert queue.latest() is None  # each preview is handed out once
