"""Fuzz the metadata readers, the gallery scan and thumbnails at scale, and print the figures of
issue 13: files tried, untyped exceptions, hangs, and the peak RSS of making thumbnails
(including a 6000 x 6000 image and a decompression bomb).

Each file is a mutation (bytes flipped, cut, inserted, repeated, length fields set huge) of a
small PNG/JPEG/WebP in one of the formats we read; the mutations are seeded, so a run is the
same every time. tests/unit/test_metadata_fuzz.py runs a bounded share of this in CI.

Usage: python tools/fuzz_metadata.py [--files 10000] [--seed 1]
"""

from __future__ import annotations

import argparse
import io
import json
import random
import resource
import signal
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

from PIL import Image, PngImagePlugin

from sd3desk.core.errors import MetadataError
from sd3desk.core.gallery import GalleryIndex, ThumbnailError, make_thumbnail
from sd3desk.core.metadata import ImageMetadata, export_fields, png_info, read_metadata
from sd3desk.core.params import GenerationParams
from sd3desk.core.store import Store

HANG_S = 5  # a single read or thumbnail taking longer counts as a hang


META = ImageMetadata(GenerationParams("a fox, snow: 1.2", "blur", seed=7, steps=20))
GRAPH = {
    "3": {
        "class_type": "KSampler",
        "inputs": {"seed": 5, "steps": 9, "cfg": 3.5, "positive": ["6", 0], "negative": ["7", 0]},
    },
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "fox"}},
    "7": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["6", 0]}},
}
# What the text fields of our seed files hold (None: our own two chunks)
SEED_TEXTS: list[dict[str, str] | None] = [
    None,
    {"parameters": "a cat\nNegative prompt: dog\nSteps: 5, Seed: 1, CFG scale: 4, Size: 8x8"},
    {"prompt": json.dumps(GRAPH)},
    {"invokeai_metadata": json.dumps({"positive_prompt": "x", "seed": 3, "steps": 4})},
    {"Software": "NovelAI", "Comment": json.dumps({"prompt": "x", "uc": "y", "seed": 1})},
    {"parameters": json.dumps({"sui_image_params": {"prompt": "x", "seed": 2}})},
]
# Tokens that break naive readers: numbers no field holds, quotes and separators, nesting
TOKENS = (
    "1e999",
    "nan",
    "-1",
    "18446744073709551616",
    "9" * 60,
    '"',
    ":",
    ",",
    "\n",
    "[",
    "{",
    "\x00",
    "\ud800",
    "Negative prompt:",
    "Steps: ",
    ", Seed: ",
    "[" * 500,
    "\\",
    "x" * 5000,
)


def png_with(texts: dict[str, str] | None) -> bytes:
    info = png_info(META) if texts is None else PngImagePlugin.PngInfo()
    for key, value in (texts or {}).items():
        info.add_itxt(key, value, zip=key == "prompt")
    buffer = io.BytesIO()
    Image.new("RGB", (24, 24), (200, 30, 30)).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def mutate_texts(rng: random.Random) -> bytes:
    """A valid PNG whose text fields are mutated (checksums right, so the parsers are
    reached): tokens inserted into, or replacing part of, one seed's texts."""
    found = rng.choice(SEED_TEXTS[1:])
    texts = dict(found or {})
    key = rng.choice([k for k in texts if k != "Software"])
    text = texts[key]
    for _ in range(rng.randint(1, 4)):
        where = rng.randrange(len(text) + 1)
        cut = rng.choice((0, 0, 1, 3, 10))
        text = text[:where] + rng.choice(TOKENS) + text[where + cut :]
    texts[key] = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return png_with(texts)


def seed_files() -> list[bytes]:
    image = Image.new("RGB", (24, 24), (200, 30, 30))
    out = [png_with(found) for found in SEED_TEXTS]
    for kind in ("JPEG", "WEBP"):
        buffer = io.BytesIO()
        image.save(buffer, format=kind, **export_fields(META, kind))
        out.append(buffer.getvalue())
    return out


def mutate(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        where = rng.randrange(max(1, len(out)))
        kind = rng.choice(("flip", "cut", "insert", "repeat", "big"))
        if kind == "flip" and out:
            out[where] = rng.randrange(256)
        elif kind == "cut":
            del out[where : where + rng.randint(1, 64)]
        elif kind == "insert":
            out[where:where] = rng.randbytes(rng.randint(1, 32))
        elif kind == "repeat":
            out[where:where] = out[where : where + 16] * rng.randint(2, 50)
        else:
            out[where : where + 4] = b"\xff\xff\xff\x7f"
    return bytes(out)


class Hang(Exception):
    pass


def _alarm(_signum, _frame) -> None:
    raise Hang


def timed(function, *args) -> str:
    """ "ok", "typed" (an expected error), "hang", or the name of an untyped exception."""
    signal.alarm(HANG_S)
    try:
        function(*args)
        return "ok"
    except (MetadataError, ThumbnailError):
        return "typed"
    except Hang:
        return "hang"
    except Exception as exc:
        return f"untyped {type(exc).__name__}: {exc}"[:160]
    finally:
        signal.alarm(0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    signal.signal(signal.SIGALRM, _alarm)
    warnings.simplefilter("ignore")  # Pillow warns about each damaged EXIF it meets
    rng = random.Random(args.seed)
    seeds = seed_files()
    reads: Counter[str] = Counter()
    thumbs: Counter[str] = Counter()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        out, cache = root / "out", root / "cache"
        out.mkdir()
        for n in range(args.files):
            path = out / f"{n // 1000:02d}" / f"{n}.{('png', 'jpg', 'webp')[n % 3]}"
            path.parent.mkdir(exist_ok=True)
            # half mutate the bytes of a file, half the texts inside a valid one
            data = mutate(rng.choice(seeds), rng) if n % 2 else mutate_texts(rng)
            path.write_bytes(data)
            reads[timed(read_metadata, path)] += 1
            thumbs[timed(make_thumbnail, path, cache, 64)] += 1
        scan_start = time.perf_counter()
        outcome = timed(lambda: GalleryIndex(Store(root / "db.sqlite"), out).scan())
        scan_s = time.perf_counter() - scan_start
        big = root / "big.png"
        Image.effect_noise((6000, 6000), 64).convert("RGB").save(big, compress_level=1)
        big_thumb = timed(make_thumbnail, big, cache)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    untyped = [k for k in (*reads, *thumbs) if k.startswith("untyped")]
    print(f"files fuzzed: {args.files} in {time.perf_counter() - start:.0f} s (seed {args.seed})")
    print(f"  reads:      ok {reads['ok']}, typed errors {reads['typed']}, hangs {reads['hang']}")
    print(
        f"  thumbnails: ok {thumbs['ok']}, typed errors {thumbs['typed']}, hangs {thumbs['hang']}"
    )
    print(f"  gallery scan of all of them: {outcome} in {scan_s:.1f} s")
    print(f"  6000x6000 PNG thumbnail: {big_thumb}")
    print(f"  untyped exceptions: {sum(reads[k] + thumbs[k] for k in untyped)}")
    for kind in untyped:
        print(f"    {kind} x{reads[kind] + thumbs[kind]}")
    print(f"  peak RSS of the whole run: {peak_mb:.0f} MB")
    bad = untyped or reads["hang"] or thumbs["hang"] or outcome != "ok" or peak_mb > 300
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
