"""A bounded fuzz of the metadata readers, the gallery scan and thumbnails (hypothesis, seconds
with a deadline): mutated PNG/JPEG/WebP files of every format we read, arbitrary A1111 texts
and arbitrary JSON for the JSON formats. Nothing but the typed errors may come out, and no read
may take long. tools/fuzz_metadata.py runs the same mutations at scale for the figures."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sd3desk.core.errors import MetadataError
from sd3desk.core.gallery import GalleryIndex, ThumbnailError, make_thumbnail
from sd3desk.core.metadata import parse_a1111, parse_texts
from sd3desk.core.metadata import read_metadata as read
from sd3desk.core.params import GenerationParams
from sd3desk.core.store import Store

FUZZ = settings(
    max_examples=300,
    deadline=2000,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,  # the same examples on every run: CI never fails by luck
)
sys.path.insert(0, str(Path(__file__).parents[2] / "tools"))
from fuzz_metadata import seed_files  # noqa: E402  (one set of seed files for both)

SEEDS = seed_files()


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        where = draw(st.integers(0, len(data) - 1))
        match draw(st.sampled_from(("flip", "cut", "insert", "repeat", "big"))):
            case "flip":
                data[where] = draw(st.integers(0, 255))
            case "cut":
                del data[where : where + draw(st.integers(1, 64))]
            case "insert":
                data[where:where] = draw(st.binary(min_size=1, max_size=32))
            case "repeat":
                data[where:where] = data[where : where + 16] * draw(st.integers(2, 50))
            case "big":  # a length field's neighbourhood set to huge values
                data[where : where + 4] = b"\xff\xff\xff\x7f"
        if not data:
            data = bytearray(b"\x89PNG")
    return bytes(data)


@FUZZ
@given(data=mutated())
def test_mutated_files_give_metadata_or_a_metadata_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "f.png"
    path.write_bytes(data)
    try:
        found = read(path)
    except MetadataError:
        return
    assert isinstance(found.params, GenerationParams)
    json.dumps(found.params.to_dict())  # what the gallery stores: finite, serialisable


@FUZZ
@given(data=mutated())
def test_mutated_files_give_a_thumbnail_or_a_thumbnail_error(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("thumb")
    path = folder / "f.png"
    path.write_bytes(data)
    with contextlib.suppress(ThumbnailError):
        assert make_thumbnail(path, folder / "cache", 32).is_file()


@FUZZ
@given(text=st.text(max_size=2000))
def test_any_a1111_text_parses_or_is_a_metadata_error(text):
    with contextlib.suppress(MetadataError):
        parse_texts({"parameters": text})


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=6)
    ),
    max_leaves=40,
)


@FUZZ
@given(
    key=st.sampled_from(["sd3desk", "prompt", "invokeai_metadata", "parameters", "Comment"]),
    value=_json,
)
def test_any_json_in_any_json_field_parses_or_is_a_metadata_error(key, value):
    texts = {key: json.dumps(value), "Software": "NovelAI"}
    with contextlib.suppress(MetadataError):
        parse_texts(texts)


def test_a1111_pairs_survive_arbitrary_neighbours():
    """A fixed point of the fuzz above worth stating: text that is not a pair between pairs
    does not swallow them."""
    meta = parse_a1111('x\nSteps: 5, junk without colon, Seed: 9, "odd, CFG scale: 4')
    assert (meta.params.steps, meta.params.seed, meta.params.guidance_scale) == (5, 9, 4)


@pytest.mark.parametrize("count", [40])
def test_a_scan_of_a_folder_of_mutated_files_indexes_every_one(tmp_path, count):
    from hypothesis import find

    out = tmp_path / "out"
    out.mkdir()
    examples: list[bytes] = []

    def collect(data: bytes) -> bool:
        examples.append(data)
        return len(examples) >= count

    find(mutated(), collect, settings=settings(max_examples=count * 3, database=None))
    for n, data in enumerate(examples):
        (out / f"{n}.{'png' if n % 3 else 'jpg'}").write_bytes(data)
    result = GalleryIndex(Store(tmp_path / "db.sqlite"), out).scan()
    assert result.added == len(examples)
    assert Path(out).is_dir()
