"""Batch files (issue 16, item 1): every format with good and bad lines, variants and wildcards
through dynamicprompts, the grid and seeds, and the same expansion on every run."""

from __future__ import annotations

import pytest

from sd3desk.core.batch import BatchFileError, read_batch
from sd3desk.core.params import GenerationParams

BASE = GenerationParams("", steps=8, guidance_scale=5.0, width=256, height=256, model="test")


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_a_text_file_is_one_prompt_per_line_without_comments_and_blanks(tmp_path):
    path = write(tmp_path, "p.txt", "# my list\na fox\n\n  a lighthouse  \n#another\n")
    plan = read_batch(path, BASE)
    assert [j.prompt for j in plan.jobs] == ["a fox", "a lighthouse"]
    assert plan.bad_lines == []
    assert all(j.steps == 8 and j.seed is not None for j in plan.jobs)


def test_jsonl_lines_override_the_command_line_and_bad_lines_are_named(tmp_path):
    path = write(
        tmp_path,
        "p.jsonl",
        '{"prompt": "one", "steps": 3, "seed": 7}\n'
        '{"prompt": "two", "steps": 999}\n'
        "not json\n"
        '["a list"]\n'
        '{"prompt": "three", "width": 1e999}\n'
        '{"prompt": "four", "guidance_scale": 2.5}\n',
    )
    plan = read_batch(path, BASE)
    assert [(j.prompt, j.steps, j.guidance_scale) for j in plan.jobs] == [
        ("one", 3, 5.0),
        ("four", 8, 2.5),
    ]
    assert plan.jobs[0].seed == 7  # a line's own seed is kept
    assert [(b.number, b.reason.split(":")[0]) for b in plan.bad_lines] == [
        (2, "steps"),
        (3, "is not a JSON object"),
        (4, "is not an object"),
        (5, "width"),
    ]
    with pytest.raises(BatchFileError, match=r"p\.jsonl line 2: steps"):
        read_batch(path, BASE, strict=True)


def test_csv_has_a_header_naming_the_fields(tmp_path):
    path = write(
        tmp_path,
        "p.csv",
        'prompt,negative_prompt,steps\n"a fox, in snow",blurry,4\na cat,,\nbad,,lots\n',
    )
    plan = read_batch(path, BASE)
    assert [(j.prompt, j.negative_prompt, j.steps) for j in plan.jobs] == [
        ("a fox, in snow", "blurry", 4),
        ("a cat", "", 8),
    ]
    assert [b.number for b in plan.bad_lines] == [4]


def test_variants_wildcards_grid_and_seeds_expand_in_a_fixed_order(tmp_path):
    cards = tmp_path / "cards"
    cards.mkdir()
    (cards / "animal.txt").write_text("fox\nowl\n")
    path = write(tmp_path, "p.txt", "a {red|blue} __animal__\n")
    grid = {"guidance_scale": [4.0, 7.0], "steps": [20, 28]}
    plan = read_batch(path, BASE, seeds=2, seed_start=100, grid=grid, wildcards=cards)
    assert len(plan.jobs) == 4 * 4 * 2  # variants x grid x seeds
    first = plan.jobs[:3]
    assert [(j.prompt, j.guidance_scale, j.steps, j.seed) for j in first] == [
        (plan.jobs[0].prompt, 4.0, 20, 100),
        (plan.jobs[0].prompt, 4.0, 20, 101),
        (plan.jobs[0].prompt, 4.0, 28, 100),
    ]
    assert {j.prompt for j in plan.jobs} == {"a red fox", "a red owl", "a blue fox", "a blue owl"}
    again = read_batch(path, BASE, seeds=2, seed_start=100, grid=grid, wildcards=cards)
    assert again.jobs == plan.jobs


def test_without_a_seed_start_seeds_come_from_the_prompt_the_same_everywhere(tmp_path):
    one = read_batch(write(tmp_path, "a.txt", "a fox\na cat\n"), BASE, seeds=3)
    other = read_batch(write(tmp_path, "b.txt", "a cat\n"), BASE, seeds=3)
    assert [j.seed for j in one.jobs[3:]] == [j.seed for j in other.jobs]
    assert len({j.seed for j in one.jobs}) == 6


def test_a_missing_wildcard_is_a_bad_line_not_a_literal_prompt(tmp_path):
    plan = read_batch(write(tmp_path, "p.txt", "a __nothing__\nfine\n"), BASE)
    assert [j.prompt for j in plan.jobs] == ["fine"]
    assert "__nothing__" in plan.bad_lines[0].reason


def test_other_suffixes_and_unreadable_files_are_errors(tmp_path):
    with pytest.raises(BatchFileError, match=r"\.txt, \.jsonl or \.csv"):
        read_batch(write(tmp_path, "p.md", "x"), BASE)
    with pytest.raises(BatchFileError, match="cannot read"):
        read_batch(tmp_path / "missing.txt", BASE)
