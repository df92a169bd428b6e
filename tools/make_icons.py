"""Draw sd3desk's icon as PNGs (16-512 px), a Windows .ico and a macOS .icns from the same
shapes as resources/icons/sd3desk.svg (a dusk sky, a sun, two hills). Run once after changing it:

python tools/make_icons.py
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

ICONS = Path(__file__).resolve().parent.parent / "sd3desk" / "resources" / "icons"
SIZES = (16, 24, 32, 48, 64, 128, 256, 512)
TOP, BOTTOM = (33, 44, 94), (221, 116, 84)  # the SVG's gradient stops


def draw(size: int) -> Image.Image:
    scale = 4  # draw large, then downsample: smooth edges at every size
    side = size * scale
    unit = side / 256  # the SVG's 256-unit canvas
    sky = Image.new("RGBA", (side, side))
    pixels = ImageDraw.Draw(sky)
    for y in range(side):
        t = y / (side - 1)
        colour = tuple(round(a + (b - a) * t) for a, b in zip(TOP, BOTTOM, strict=True))
        pixels.line([(0, y), (side, y)], fill=(*colour, 255))
    shapes = ImageDraw.Draw(sky)
    shapes.ellipse([u * unit for u in (150, 62, 206, 118)], fill=(255, 209, 102, 255))
    shapes.polygon(
        [(x * unit, y * unit) for x, y in ((0, 256), (0, 176), (92, 120), (190, 256))],
        fill=(24, 30, 60, 255),
    )
    shapes.polygon(
        [(x * unit, y * unit) for x, y in ((70, 256), (170, 150), (256, 204), (256, 256))],
        fill=(12, 16, 36, 255),
    )
    mask = Image.new("L", (side, side), 0)
    ImageDraw.Draw(mask).rounded_rectangle([0, 0, side - 1, side - 1], radius=48 * unit, fill=255)
    icon = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    icon.paste(sky, (0, 0), mask)
    return icon.resize((size, size), Image.Resampling.LANCZOS)


def main() -> None:
    ICONS.mkdir(parents=True, exist_ok=True)
    images = {size: draw(size) for size in SIZES}
    for size, image in images.items():
        image.save(ICONS / f"sd3desk-{size}.png")
    images[256].save(ICONS / "sd3desk.ico", sizes=[(s, s) for s in (16, 24, 32, 48, 64, 128, 256)])
    images[512].save(ICONS / "sd3desk.icns")


if __name__ == "__main__":
    main()
