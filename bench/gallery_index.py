"""Gallery index at scale: first indexing of 10,000 PNGs (target <= 10 s) and search latency at
100,000 rows (target <= 50 ms), with baselines measured in the same run.

The 10,000 files are hard links to a few PNGs written by sd3desk (real metadata, real chunk
layout); the page cache holds them, so this measures our parsing and SQLite, not the disk.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import common  # noqa: F401 - puts the project on sys.path
from PIL import Image

from sd3desk.core.gallery import GalleryIndex
from sd3desk.core.metadata import ImageMetadata, ModelIdentity, png_info
from sd3desk.core.params import GenerationParams
from sd3desk.core.store import Store

WORDS = [
    "fox",
    "lighthouse",
    "castle",
    "portrait",
    "dusk",
    "snow",
    "forest",
    "city",
    "neon",
    "oil",
    "painting",
    "photo",
    "cat",
    "dog",
    "mountain",
    "river",
    "ocean",
    "dragon",
    "robot",
    "garden",
    "winter",
    "summer",
    "night",
    "studio",
    "light",
]


def make_outputs(folder: Path, count: int) -> None:
    random.seed(1)
    sources = []
    for k in range(4):
        path = folder / f"source-{k}.png"
        noise = Image.effect_noise((512, 512), 60).convert("RGB")
        params = GenerationParams(" ".join(random.sample(WORDS, 6)), seed=k, model="sd3_medium")
        noise.save(
            path, pnginfo=png_info(ImageMetadata(params, ModelIdentity("sd3_medium", "0123456789")))
        )
        sources.append(path)
    for n in range(count):
        day = folder / f"2026-11-{1 + n // 400:02d}"
        day.mkdir(exist_ok=True)
        os.link(sources[n % 4], day / f"{n:05d}-{n}.png")


def main() -> None:
    work = Path(tempfile.mkdtemp())
    out = work / "outputs"
    out.mkdir()
    make_outputs(out, 10_000)

    start = time.perf_counter()
    listing = [e.path for e in os.scandir(out) if e.is_dir() for e in os.scandir(e.path)]
    for path in listing:
        with open(path, "rb") as handle:
            handle.read(4096)
    bare = time.perf_counter() - start

    gallery = GalleryIndex(Store(work / "sd3desk.db"), out)
    start = time.perf_counter()
    result = gallery.scan()
    first = time.perf_counter() - start
    start = time.perf_counter()
    gallery.scan()
    rescan = time.perf_counter() - start
    print(
        f"first index of {result.added} PNGs: {first:.2f} s  (target <= 10 s); "
        f"baseline list + read 4 KB of each: {bare:.2f} s; rescan with nothing new: {rescan:.2f} s"
    )

    # Search latency at 100,000 rows: add synthetic rows with varied prompts.
    random.seed(2)
    rows = []
    for n in range(90_000):
        prompt = " ".join(random.sample(WORDS, 8)) + (" zebra" if n % 30_000 == 0 else "")
        params = json.dumps(GenerationParams(prompt, seed=n).to_dict())
        rows.append(
            (
                f"/synthetic/{n}.png",
                n,
                1,
                1.7e9 + n,
                prompt,
                "blurry",
                n,
                1024,
                1024,
                random.choice(["sd3_medium", "sd3.5_large"]),
                "",
                params,
                "sd3desk",
            )
        )
    gallery.db.execute("BEGIN")
    gallery._upsert(rows)
    gallery.db.execute("COMMIT")
    total = gallery.count()
    queries = {
        "newest 200": lambda: gallery.search(),
        "text 'fox lighthouse'": lambda: gallery.search("fox lighthouse"),
        "text + model filter": lambda: gallery.search("neon", model="sd3.5_large"),
        "prefix 'dra'": lambda: gallery.search("dra"),
        "rare word (3 rows)": lambda: gallery.search("zebra"),
        "count 'oil'": lambda: gallery.count("oil"),
        "page 200 deep": lambda: gallery.search(offset=40_000),
    }
    print(f"search at {total} rows (median of 7):")
    for name, run in queries.items():
        times = []
        for _ in range(7):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        print(f"  {name:22s} {statistics.median(times) * 1000:6.1f} ms  (target <= 50 ms)")


if __name__ == "__main__":
    main()
