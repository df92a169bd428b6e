"""sd3desk: generate images with Stable Diffusion 3 on your own machine."""

__version__ = "0.1.0"
