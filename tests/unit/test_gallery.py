"""Gallery index: rebuild from files, incremental rescans, search and filters, thumbnails."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from sd3desk.core.gallery import GalleryIndex, make_thumbnail, thumbnail_path
from sd3desk.core.metadata import ImageMetadata, ModelIdentity, a1111_text, png_info
from sd3desk.core.params import GenerationParams
from sd3desk.core.store import Store

DAY = 1_790_000_000  # a fixed "now" for file times


def write(folder: Path, name: str, meta: ImageMetadata | None, when: int, size=(64, 48)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    Image.new("RGB", size, (40, 80, 120)).save(path, pnginfo=png_info(meta) if meta else None)
    os.utime(path, (when, when))
    return path


def meta(prompt: str, seed: int, model: str = "sd3_medium", width: int = 1024) -> ImageMetadata:
    params = GenerationParams(prompt, negative_prompt="blurry", seed=seed, width=width, height=1024)
    return ImageMetadata(params, ModelIdentity(model, "abcdef0123", "sd3-medium"))


@pytest.fixture
def outputs(tmp_path) -> Path:
    out = tmp_path / "outputs"
    write(out / "2026-11-24", "00000-1.png", meta("a red fox in snow", 1), DAY)
    write(
        out / "2026-11-25",
        "00000-2.png",
        meta("a lighthouse at dusk", 2, "sd3.5_large"),
        DAY + 86400,
    )
    write(
        out / "2026-11-26",
        "00000-3.png",
        meta("a fox at a lighthouse", 3, width=1344),
        DAY + 2 * 86400,
    )
    write(out / "imported", "plain.png", None, DAY - 86400)
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", a1111_text(meta("castle, masterpiece", 4)))
    path = out / "imported" / "a1111.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    os.utime(path, (DAY - 2 * 86400,) * 2)
    (out / "2026-11-26" / ".00001-4.png.x.tmp").write_bytes(b"half a file")
    return out


def index_for(tmp_path: Path, outputs: Path) -> GalleryIndex:
    return GalleryIndex(Store(tmp_path / "sd3desk.db"), outputs)


def test_first_scan_indexes_every_image_with_its_parameters(tmp_path, outputs):
    gallery = index_for(tmp_path, outputs)
    progress = []
    result = gallery.scan(lambda done, total: progress.append((done, total)))
    assert (result.added, result.updated, result.removed, result.unreadable) == (5, 0, 0, 1)
    assert progress[-1] == (5, 5)
    rows = gallery.search()
    assert [Path(r.path).name for r in rows] == [
        "00000-3.png",
        "00000-2.png",
        "00000-1.png",
        "plain.png",
        "a1111.png",
    ]
    newest = rows[0]
    assert newest.params() == meta("a fox at a lighthouse", 3, width=1344).params
    assert (newest.model_name, newest.model_hash, newest.source) == (
        "sd3_medium",
        "abcdef0123",
        "sd3desk",
    )
    assert {r.source for r in rows} == {"sd3desk", "a1111", "none"}
    assert rows[3].params() is None


def test_full_text_search_and_filters(tmp_path, outputs):
    gallery = index_for(tmp_path, outputs)
    gallery.scan()
    names = lambda rows: [Path(r.path).name for r in rows]  # noqa: E731
    assert names(gallery.search("fox")) == ["00000-3.png", "00000-1.png"]
    assert names(gallery.search("LIGHT fox")) == ["00000-3.png"]  # every word, prefixes, any case
    assert names(gallery.search("blurry")) != []  # negative prompts are searched too
    assert gallery.search('fox" OR *') == []  # user text never becomes FTS syntax
    assert names(gallery.search(model="sd3.5_large")) == ["00000-2.png"]
    assert names(gallery.search(size=(1344, 1024))) == ["00000-3.png"]
    assert names(gallery.search(since=DAY + 86400)) == ["00000-3.png", "00000-2.png"]
    assert names(gallery.search(newest_first=False, limit=2)) == ["a1111.png", "plain.png"]
    assert gallery.count("fox") == 2 and gallery.count() == 5
    assert gallery.models() == ["sd3.5_large", "sd3_medium"]
    fox = gallery.search("snow")[0]
    gallery.set_favourite(fox.id, True)
    assert names(gallery.search(favourites=True)) == ["00000-1.png"]


def test_rescans_pick_up_files_added_changed_and_removed_outside_the_app(tmp_path, outputs):
    gallery = index_for(tmp_path, outputs)
    gallery.scan()
    (outputs / "2026-11-24" / "00000-1.png").unlink()
    write(outputs / "2026-11-26", "00001-9.png", meta("a new one", 9), DAY + 3 * 86400)
    write(outputs / "2026-11-25", "00000-2.png", meta("rewritten prompt", 2), DAY + 4 * 86400)
    result = gallery.scan()
    assert (result.added, result.updated, result.removed) == (1, 1, 1)
    assert gallery.search("rewritten")[0].seed == 2
    assert gallery.search("lighthouse dusk") == []
    assert gallery.scan().added == gallery.scan().updated == 0  # nothing changed: nothing read


def test_deleting_the_database_loses_nothing(tmp_path, outputs):
    gallery = index_for(tmp_path, outputs)
    gallery.scan()
    before = [(r.path, r.params_json, r.model_hash) for r in gallery.search()]
    gallery.store.close()
    for file in tmp_path.glob("sd3desk.db*"):
        file.unlink()
    rebuilt = index_for(tmp_path, outputs)
    rebuilt.scan()
    assert [(r.path, r.params_json, r.model_hash) for r in rebuilt.search()] == before


def test_add_indexes_a_freshly_written_image(tmp_path, outputs):
    gallery = index_for(tmp_path, outputs)
    path = write(outputs / "2026-11-27", "00000-5.png", meta("just generated", 5), DAY + 5 * 86400)
    gallery.add(path)
    assert gallery.search("generated")[0].path == str(path)
    assert json.loads(gallery.search("generated")[0].params_json)["seed"] == 5


def test_thumbnails_are_small_cached_and_follow_file_changes(tmp_path, outputs):
    image = write(outputs / "big", "00000-7.png", meta("big", 7), DAY, size=(1024, 768))
    cache = tmp_path / "cache"
    thumb = make_thumbnail(image, cache)
    with Image.open(thumb) as small:
        assert small.size == (256, 192)
    assert make_thumbnail(image, cache) == thumb  # cached
    os.utime(image, (DAY + 10, DAY + 10))
    assert make_thumbnail(image, cache) != thumb  # a changed file gets a new thumbnail
    assert thumbnail_path(cache, image, 1) != thumbnail_path(cache, image, 2)
