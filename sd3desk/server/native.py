"""sd3desk's own REST API at /api/v1: everything the window can do with the queue, an event
stream, and the gallery. Jobs are validated with the same field errors as the form."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi import Path as FastPath
from fastapi.responses import FileResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from sd3desk.core.errors import SD3DeskError
from sd3desk.core.jobs import DONE, Job, JobState
from sd3desk.core.loras import LORA_MAX, LoraKind, LoraRef
from sd3desk.core.params import defaults_for
from sd3desk.server.door import Door
from sd3desk.server.errors import ApiError, client_address, door_of

SOURCE = "api"
STREAM_PING_S = 15.0

router = APIRouter(prefix="/api/v1", tags=["sd3desk"])
ROW_ID_MAX = 2**63 - 1  # SQLite's largest row id
JobId = Annotated[int, FastPath(ge=1, le=ROW_ID_MAX, description="a job's id")]
ImageId = Annotated[int, FastPath(ge=1, le=ROW_ID_MAX, description="an image's id")]


# ---------------------------------------------------------------------- schemas


PICTURE_CHARS_MAX = 60_000_000  # base64 of a 45 MB picture file


class LoraIn(BaseModel):
    """A LoRA for a job: by its file name in the LoRA folders, or by its hash."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = Field(max_length=200, description="the file's name without .safetensors")
    hash: str = Field("", max_length=64, description="SHA-256 of its tensors, or its start")
    weight: float = Field(1.0, description="-10 to 10")


class JobRequest(BaseModel):
    """A generation request; unset fields take the model family's defaults."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    prompt: str = Field(max_length=100_000)
    negative_prompt: str = Field("", max_length=100_000)
    seed: int | None = Field(None, description="0-4294967295; null for a random one")
    steps: int | None = None
    guidance_scale: float | None = None
    width: int | None = None
    height: int | None = None
    batch_size: int = 1
    shift: float | None = None
    max_sequence_length: int | None = None
    model: str = Field("", max_length=4096, description="a model from /api/v1/models")
    front: bool = Field(False, description="put the job before every waiting one")
    source_image: str | None = Field(
        None,
        max_length=PICTURE_CHARS_MAX,
        description="start from this picture (img2img): base64 PNG, JPEG or WebP, or the "
        "sha256 of a picture stored already (as a job's params name it)",
    )
    strength: float | None = Field(None, description="how much of the picture to change, 0-1")
    mask_image: str | None = Field(
        None,
        max_length=PICTURE_CHARS_MAX,
        description="inpainting: white repaints, black keeps; the source's size (as source_image)",
    )
    mask_blur: int | None = None
    mask_padding: int | None = Field(
        None, description="0: the whole picture; more: only the masked area with this margin"
    )
    hires_scale: float | None = Field(None, description="1 (off) or 1.25-2: the hires fix")
    hires_steps: int | None = None
    hires_strength: float | None = None
    slg_scale: float | None = Field(None, description="skip-layer guidance, 0 (off) to 10")
    loras: list[LoraIn] | None = Field(None, max_length=LORA_MAX, description="see /api/v1/loras")


class ImageLink(BaseModel):
    path: str  # inside the output folder
    url: str


class JobError(BaseModel):
    kind: str
    message: str
    advice: str


class JobOut(BaseModel):
    id: int
    state: Literal["queued", "running", "finished", "failed", "cancelled"]
    source: str
    place: int | None = None  # 1 runs next
    eta_seconds: float | None = None
    eta_estimated: bool | None = None
    step: int | None = None
    steps: int
    note: str = ""
    error: JobError | None = None
    params: dict[str, Any]
    images: list[ImageLink] = []
    created: float
    started: float | None = None
    ended: float | None = None


class MoveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    index: int = Field(ge=0, description="0-based place among the other waiting jobs")


class QueueOut(BaseModel):
    paused: bool
    running: list[int]
    waiting: list[int]


class ModelOut(BaseModel):
    reference: str
    label: str
    family: str
    max_side: int
    default: bool


class LoraOut(BaseModel):
    name: str
    path: str
    kind: str = Field(description="what it was made for; only SD3 / SD3.5 LoRAs apply")
    about: str
    usable: bool


class ImageOut(BaseModel):
    id: int
    url: str
    thumbnail_url: str
    parameters_url: str
    prompt: str
    negative_prompt: str
    seed: int | None
    width: int | None
    height: int | None
    model: str
    created: float
    favourite: bool


class ImagePage(BaseModel):
    total: int
    images: list[ImageOut]


class Parameters(BaseModel):
    params: dict[str, Any] | None
    text: str


# ---------------------------------------------------------------------- helpers


def job_out(door: Door, job: Job) -> JobOut:
    snapshot = door.runner.snapshot()
    eta = snapshot.etas.get(job.id)
    error = None
    if job.error_kind is not None:
        error = JobError(
            kind=job.error_kind.value, message=job.error_message, advice=job.error_advice
        )
    images = []
    for path in job.outputs:
        if door.output_file(path) is not None:
            relative = door.relative(path)
            images.append(ImageLink(path=relative, url=f"/api/v1/files/{relative}"))
    return JobOut(
        id=job.id,
        state=job.state.value,
        source=job.source,
        place=snapshot.places.get(job.id),
        eta_seconds=round(eta.seconds, 1) if eta else None,
        eta_estimated=eta.estimated if eta else None,
        step=snapshot.progress.get(job.id) if job.state is JobState.running else None,
        steps=job.params.steps,
        note=job.note,
        error=error,
        params=job.params.to_dict(),
        images=images,
        created=job.created,
        started=job.started,
        ended=job.ended,
    )


def _job_or_404(door: Door, job_id: int) -> Job:
    job = door.runner.job(job_id)
    if job is None:
        raise ApiError(404, f"there is no job {job_id}")
    return job


def _image_out(row: Any) -> ImageOut:
    return ImageOut(
        id=row.id,
        url=f"/api/v1/images/{row.id}",
        thumbnail_url=f"/api/v1/images/{row.id}/thumbnail",
        parameters_url=f"/api/v1/images/{row.id}/parameters",
        prompt=row.prompt,
        negative_prompt=row.negative_prompt,
        seed=row.seed,
        width=row.width,
        height=row.height,
        model=row.model_name,
        created=row.created,
        favourite=row.favourite,
    )


def _queue_out(door: Door) -> QueueOut:
    snapshot = door.runner.snapshot()
    return QueueOut(
        paused=snapshot.paused,
        running=[j.id for j in snapshot.running],
        waiting=[j.id for j in snapshot.waiting],
    )


# ---------------------------------------------------------------------- models and jobs


@router.get("/models", response_model=list[ModelOut], summary="The models this server offers")
def list_models(request: Request) -> list[ModelOut]:
    door = door_of(request)
    default = door.default_model
    return [
        ModelOut(
            reference=e.reference,
            label=e.label,
            family=e.family.value,
            max_side=e.max_side,
            default=default is not None and e.reference == default.reference,
        )
        for e in door.models()
    ]


@router.get("/loras", response_model=list[LoraOut], summary="The LoRAs in the LoRA folders")
def list_loras(request: Request) -> list[LoraOut]:
    return [
        LoraOut(
            name=info.name,
            path=str(info.path),
            kind=info.kind.value,
            about=info.describe(),
            usable=info.kind is LoraKind.sd3,
        )
        for info in door_of(request).loras()
    ]


@router.post("/jobs", response_model=JobOut, status_code=201, summary="Queue a job")
def create_job(body: JobRequest, request: Request) -> JobOut:
    door = door_of(request)
    entry = door.model_for(body.model)
    given = {
        k: v
        for k, v in body.model_dump(exclude={"model", "front", "loras"}).items()
        if v is not None
    }
    for field in ("source_image", "mask_image"):
        if field in given:
            given[field] = door.store_picture(given[field], field)
    if body.loras:
        given["loras"] = tuple(LoraRef(x.name, x.hash.lower(), x.weight) for x in body.loras)
    params = dataclasses.replace(defaults_for(entry.family, model=entry.reference), **given)
    (job,) = door.submit([params], entry, SOURCE, client_address(request), front=body.front)
    return job_out(door, job)


@router.get("/jobs", response_model=list[JobOut], summary="Running, waiting and recent jobs")
def list_jobs(
    request: Request,
    state: Literal["active", "done", "all"] = "all",
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> list[JobOut]:
    door = door_of(request)
    snapshot = door.runner.snapshot()
    jobs: list[Job] = []
    if state in ("active", "all"):
        jobs += [*snapshot.running, *snapshot.waiting]
    if state in ("done", "all"):
        jobs += door.runner.history(limit)
    jobs = jobs[:limit] if state != "all" else jobs
    return [job_out(door, job) for job in jobs]


@router.get("/jobs/{job_id}", response_model=JobOut, summary="One job, with its images")
def get_job(job_id: JobId, request: Request) -> JobOut:
    door = door_of(request)
    return job_out(door, _job_or_404(door, job_id))


@router.post("/jobs/{job_id}/cancel", response_model=JobOut, summary="Cancel a job")
def cancel_job(job_id: JobId, request: Request) -> JobOut:
    """A waiting job is cancelled at once; a running one stops within one step."""
    door = door_of(request)
    job = _job_or_404(door, job_id)
    if job.state in DONE:
        raise ApiError(409, f"job {job_id} is already {job.state.value}")
    door.runner.cancel(job_id)
    return job_out(door, _job_or_404(door, job_id))


@router.post("/jobs/{job_id}/move", response_model=QueueOut, summary="Move a waiting job")
def move_job(job_id: JobId, body: MoveRequest, request: Request) -> QueueOut:
    door = door_of(request)
    job = _job_or_404(door, job_id)
    if job.state is not JobState.queued:
        raise ApiError(409, f"job {job_id} is {job.state.value}, not waiting")
    door.runner.place([job_id], body.index)
    return _queue_out(door)


@router.get("/jobs/{job_id}/preview", summary="The newest preview of a running job (PNG)")
def job_preview(job_id: JobId, request: Request) -> Response:
    door = door_of(request)
    step = door.bridge.latest_step(job_id)
    if step is None or step.preview is None:
        raise ApiError(404, f"job {job_id} has no preview (it is not running yet)")
    buffer = io.BytesIO()
    step.preview.save(buffer, "PNG")
    return Response(buffer.getvalue(), media_type="image/png")


@router.get("/queue", response_model=QueueOut, summary="The queue's order and pause state")
def get_queue(request: Request) -> QueueOut:
    return _queue_out(door_of(request))


@router.post("/queue/pause", response_model=QueueOut, summary="Keep waiting jobs waiting")
def pause_queue(request: Request) -> QueueOut:
    door = door_of(request)
    door.runner.set_paused(True)
    return _queue_out(door)


@router.post("/queue/resume", response_model=QueueOut, summary="Let waiting jobs run")
def resume_queue(request: Request) -> QueueOut:
    door = door_of(request)
    door.runner.set_paused(False)
    return _queue_out(door)


@router.get(
    "/events",
    summary="Server-Sent Events: job, step, engine and queue changes",
    response_class=StreamingResponse,
)
async def events(request: Request) -> StreamingResponse:
    door = door_of(request)
    queue = door.bridge.subscribe()

    async def stream():
        try:
            yield ": sd3desk events\n\n"
            while not await request.is_disconnected():
                try:
                    event = await asyncio.wait_for(queue.get(), STREAM_PING_S)
                except asyncio.TimeoutError:  # (not the builtin one before Python 3.11)
                    yield ": ping\n\n"
                    continue
                if event is None:  # the server is stopping
                    return
                yield f"event: {event.name}\ndata: {json.dumps(event.data)}\n\n"
        finally:
            door.bridge.unsubscribe(queue)

    return StreamingResponse(stream(), media_type="text/event-stream")


# ---------------------------------------------------------------------- the gallery and files


@router.get("/images", response_model=ImagePage, summary="Search the gallery")
def search_images(
    request: Request,
    q: Annotated[str, Query(max_length=1000)] = "",
    model: Annotated[str | None, Query(max_length=4096)] = None,
    favourites: bool = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> ImagePage:
    gallery = door_of(request).gallery()
    filters: dict[str, Any] = {"model": model, "favourites": favourites}
    rows = gallery.search(q, limit=limit, offset=offset, **filters)
    return ImagePage(total=gallery.count(q, **filters), images=[_image_out(r) for r in rows])


def _image_file(request: Request, image_id: int) -> tuple[Door, Any]:
    door = door_of(request)
    row = door.gallery().get(image_id)
    if row is None or door.gallery_file(row.path) is None:
        raise ApiError(404, f"there is no image {image_id}")
    return door, row


@router.get("/images/{image_id}", summary="An image file, with its metadata")
def get_image(image_id: ImageId, request: Request) -> FileResponse:
    door, row = _image_file(request, image_id)
    path = door.gallery_file(row.path)
    assert path is not None
    return FileResponse(path)


@router.get("/images/{image_id}/thumbnail", summary="A small WebP of an image")
def get_thumbnail(image_id: ImageId, request: Request) -> FileResponse:
    from sd3desk.core.gallery import make_thumbnail

    door, row = _image_file(request, image_id)
    try:
        thumbnail = make_thumbnail(row.path, door.runtime.paths.cache, 256)
    except (OSError, ValueError) as exc:
        raise ApiError(404, f"image {image_id} has no thumbnail: {exc}") from exc
    return FileResponse(thumbnail, media_type="image/webp")


@router.get("/images/{image_id}/parameters", response_model=Parameters, summary="Its settings")
def get_parameters(image_id: ImageId, request: Request) -> Parameters:
    from sd3desk.core.metadata import a1111_text, read_metadata

    _door, row = _image_file(request, image_id)
    try:
        meta = read_metadata(row.path)
    except SD3DeskError as exc:
        return Parameters(params=None, text=exc.message)
    return Parameters(params=meta.params.to_dict(), text=a1111_text(meta))


@router.get("/files/{path:path}", summary="A job's output file, by its path in the output folder")
def get_file(path: str, request: Request) -> FileResponse:
    found = door_of(request).output_file(path)
    if found is None:
        raise ApiError(404, "no such image in the output folder")
    return FileResponse(found)
