"""What an image's metadata says, and sd3desk's own lossless JSON record of it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sd3desk import __version__
from sd3desk.core.errors import MetadataError
from sd3desk.core.params import GenerationParams

FORMAT_KEY = "sd3desk"
FORMAT_VERSION = 1
# The fields a file from another tool may leave out; `missing` names those it did
STATED_FIELDS = (
    "prompt",
    "negative_prompt",
    "seed",
    "steps",
    "guidance_scale",
    "width",
    "height",
    "shift",
    "max_sequence_length",
)


@dataclass(frozen=True)
class ModelIdentity:
    """Which model made an image: display name, short hash (10 hex of SHA-256), family value."""

    name: str = ""
    hash: str = ""
    family: str = ""


@dataclass(frozen=True)
class JobRef:
    """Which job of which queue made an image, and which of its images it is: lets a restart
    after a crash recognise a job's images as already saved (never made twice)."""

    queue: str  # the queue database's own id (JobQueue.uid), so ids of two queues never mix
    job: int
    image: int = 0


@dataclass(frozen=True)
class ImageMetadata:
    """Parameters read from or written into an image file.

    `source` says which format they came from; `unmapped` lists fields another tool wrote that
    have no meaning for SD3 here (shown to the user, never silently dropped); `missing` names
    the `GenerationParams` fields the file did not state: their values in `params` are
    defaults, not read, and a form loading them keeps its own.
    """

    params: GenerationParams
    model: ModelIdentity = field(default_factory=ModelIdentity)
    app_version: str = __version__
    source: str = FORMAT_KEY
    unmapped: tuple[tuple[str, str], ...] = ()
    job: JobRef | None = None  # only in our own record
    missing: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()  # what the user should know when loading it (shown as it is)
    # how sd3desk made it: device, memory plan, fast mode (our record only; not a setting of
    # the request, and a re-run on another machine or plan may differ slightly)
    made_with: tuple[tuple[str, str], ...] = ()


def stated(values: dict[str, Any], **fields: Any) -> ImageMetadata:
    """ImageMetadata from the fields a foreign file stated (`values`, GenerationParams names);
    the rest are listed as missing. InvalidParamsError for values that make no sense."""
    return ImageMetadata(
        params=GenerationParams.from_dict(values),
        missing=tuple(name for name in STATED_FIELDS if name not in values),
        app_version="",
        **fields,
    )


def json_text(meta: ImageMetadata) -> str:
    """Our lossless, versioned record of the full request and the model."""
    record: dict[str, Any] = {
        "format": FORMAT_KEY,
        "version": FORMAT_VERSION,
        "app_version": meta.app_version,
        "params": meta.params.to_dict(),
        "model": {"name": meta.model.name, "hash": meta.model.hash, "family": meta.model.family},
    }
    if meta.job is not None:
        record["job"] = {"queue": meta.job.queue, "id": meta.job.job, "image": meta.job.image}
    if meta.made_with:
        record["made_with"] = dict(meta.made_with)
    return json.dumps(record, ensure_ascii=False, sort_keys=True)


def load_json(text: str, what: str) -> Any:
    """JSON from a file's text field; MetadataError (never RecursionError) when it is not."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise MetadataError(f"the {what} is not valid JSON") from exc


def is_record(found: Any) -> bool:
    return isinstance(found, dict) and found.get("format") == FORMAT_KEY


def parse_json(text: str) -> ImageMetadata:
    """Our own record (as json_text writes it)."""
    return from_record(load_json(text, "sd3desk record"))


def from_record(record: Any) -> ImageMetadata:
    if not is_record(record):
        raise MetadataError("the JSON record is not an sd3desk record")
    version = record.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise MetadataError(
            f"the image was written by a newer sd3desk (record version {version}); update sd3desk"
        )
    found = record.get("model")
    model: dict[str, Any] = found if isinstance(found, dict) else {}
    return ImageMetadata(
        params=GenerationParams.from_dict(record.get("params", {})),
        model=ModelIdentity(
            name=str(model.get("name", "")),
            hash=str(model.get("hash", "")),
            family=str(model.get("family", "")),
        ),
        app_version=str(record.get("app_version", "")),
        source=FORMAT_KEY,
        job=_job_ref(record.get("job")),
        made_with=_made_with(record.get("made_with")),
    )


def _made_with(found: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(found, dict):
        return ()
    return tuple(
        (str(k)[:40], str(v)[:200]) for k, v in list(found.items())[:8] if isinstance(v, str)
    )


def _job_ref(found: Any) -> JobRef | None:
    if not isinstance(found, dict):
        return None
    queue, job, image = found.get("queue"), found.get("id"), found.get("image", 0)
    counts = [v for v in (job, image) if type(v) is int and 0 <= v < 2**63]
    return (
        JobRef(queue, counts[0], counts[1]) if isinstance(queue, str) and len(counts) == 2 else None
    )
