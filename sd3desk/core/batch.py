"""Batch files: many jobs from one file, expanded the same way on every run and every machine.

Formats, by suffix:
- `.txt`: one prompt per line; blank lines and lines starting with `#` are skipped;
- `.jsonl`: one JSON object per line holding any GenerationParams fields;
- `.csv`: a header row naming GenerationParams fields, then one job per row.

Each line's fields override the command line's (`base`). A prompt's variants `{a|b|c}` and
`__name__` wildcard files (a folder of name.txt files, one value per line) are expanded by the
dynamicprompts library, combinatorially (every combination, in its order). Then the grid (an
X/Y sweep of field values, e.g. guidance 4,5,7 x steps 20,28), then `seeds` images per prompt:
seed_start + k, or, without a seed_start, a seed derived from the prompt's text, so job k is the
same job wherever the file is expanded. A line's own seed is kept as it is.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sd3desk.core.errors import InvalidParamsError, SD3DeskError
from sd3desk.core.params import SEED_MAX, GenerationParams, validate

SUFFIXES = (".txt", ".jsonl", ".csv")
VARIANTS_MAX = 10_000  # expansions of one line's prompt; more is surely a mistake
JOBS_MAX = 1_000_000
_WILDCARD = re.compile(r"__([\w./-]+)__")


class BatchFileError(SD3DeskError):
    """A batch file that cannot be read, or a line of it that is wrong (with --strict)."""


@dataclass(frozen=True)
class BadLine:
    number: int  # 1-based, as an editor shows it
    reason: str

    def __str__(self) -> str:
        return f"line {self.number}: {self.reason}"


@dataclass(frozen=True)
class BatchPlan:
    """The jobs of a batch file, in order (job k is jobs[k]); and the lines that were skipped."""

    jobs: list[GenerationParams]
    bad_lines: list[BadLine] = field(default_factory=list)


def _lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, fields) of each job line of the file."""
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BatchFileError(f"cannot read {path.name}: {exc}") from exc
    suffix = path.suffix.lower()
    if suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        for row in reader:
            fields = {k.strip(): v for k, v in row.items() if k and v not in (None, "")}
            if fields:
                yield reader.line_num, fields
        return
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if suffix == ".jsonl":
            try:
                found = json.loads(stripped)
            except (ValueError, RecursionError):
                yield number, {"__error__": "is not a JSON object"}
                continue
            yield number, found if isinstance(found, dict) else {"__error__": "is not an object"}
        else:
            yield number, {"prompt": stripped}


def _seed_for(prompt: str, k: int) -> int:
    digest = hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).digest()
    return (int.from_bytes(digest[:4], "big") + k) % (SEED_MAX + 1)


def _variants(prompt: str, wildcards: Path | None) -> list[str]:
    if "{" not in prompt and "__" not in prompt:
        return [prompt]
    from dynamicprompts.generators import CombinatorialPromptGenerator
    from dynamicprompts.wildcards import WildcardManager

    manager = WildcardManager(wildcards)
    for name in _WILDCARD.findall(prompt):
        if wildcards is None or not manager.get_values(name):
            where = f"in {wildcards}" if wildcards else "(no --wildcards folder given)"
            raise ValueError(f"the wildcard __{name}__ has no values {where}")
    generator = CombinatorialPromptGenerator(manager)
    found = generator.generate(prompt, max_prompts=VARIANTS_MAX + 1)
    if len(found) > VARIANTS_MAX:
        raise ValueError(f"the prompt expands to more than {VARIANTS_MAX} variants")
    return [str(p) for p in found]


def read_batch(
    path: Path | str,
    base: GenerationParams,
    *,
    seeds: int = 1,
    seed_start: int | None = None,
    grid: dict[str, list[Any]] | None = None,
    wildcards: Path | None = None,
    strict: bool = False,
    max_side: int | None = None,
) -> BatchPlan:
    """Every job of the batch file at `path` (see the module's docstring). A line that is wrong
    is reported with its number and skipped, or, with `strict`, is a BatchFileError."""
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise BatchFileError(f"{path.name}: a batch file is .txt, .jsonl or .csv")
    grid = grid or {}
    names = list(grid)
    jobs: list[GenerationParams] = []
    bad: list[BadLine] = []
    for number, fields in _lines(path):
        try:
            if "__error__" in fields:
                raise ValueError(fields["__error__"])
            own_seed = "seed" in fields
            line = GenerationParams.from_dict({**base.to_dict(), **fields})
            expanded = []
            for prompt in _variants(line.prompt, wildcards):
                for values in itertools.product(*(grid[n] for n in names)):
                    one = line.replace(prompt=prompt, **dict(zip(names, values, strict=True)))
                    for k in range(1 if own_seed else seeds):
                        seed = line.seed if own_seed else None
                        if seed is None:
                            seed = (
                                (seed_start + k) % (SEED_MAX + 1)
                                if seed_start is not None
                                else _seed_for(prompt, k)
                            )
                        expanded.append(one.replace(seed=seed))
            for job in expanded:
                errors = validate(job, max_side)
                if errors:
                    raise InvalidParamsError(errors)
        except (ValueError, TypeError, InvalidParamsError) as exc:
            problem = BadLine(number, str(exc))
            if strict:
                raise BatchFileError(f"{path.name} {problem}") from exc
            bad.append(problem)
            continue
        jobs += expanded
        if len(jobs) > JOBS_MAX:
            raise BatchFileError(f"{path.name} expands to more than {JOBS_MAX} jobs")
    return BatchPlan(jobs, bad)


def job_key(params: GenerationParams) -> str:
    """A short fingerprint of everything that makes an image (for the manifest and resuming)."""
    text = json.dumps(params.to_dict(), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
