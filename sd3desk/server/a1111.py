"""The subset of AUTOMATIC1111's HTTP API that clients call (Open WebUI, SillyTavern, webuiapi),
at /sdapi/v1, on sd3desk's queue. Fields sd3desk has no use for are accepted and ignored; an
endpoint it lacks answers 404 (or 501 for one it means to offer) as JSON, never a trace.

Field names and response shapes follow A1111's `modules/api/models.py` and `api.py`."""

from __future__ import annotations

import base64
import binascii
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from sd3desk import __version__
from sd3desk.core.errors import FieldError, InvalidParamsError, SD3DeskError
from sd3desk.core.jobs import Job, JobState
from sd3desk.core.loras import LoraKind, LoraRef, split_lora_tags
from sd3desk.core.params import SEED_MAX, GenerationParams, defaults_for
from sd3desk.runtime.catalog import ModelEntry
from sd3desk.server.door import Door
from sd3desk.server.errors import ApiError, client_address, door_of

SOURCE = "a1111"
SAMPLER = "Euler"  # SD3's flow-matching Euler: the only sampler sd3desk runs
SAMPLER_ALIASES = ("euler", "flow_match_euler", "FlowMatchEulerDiscreteScheduler")
NOT_YET = {
    "extra-single-image": "sd3desk has no upscalers",
    "extra-batch-images": "sd3desk has no upscalers",
    "interrogate": "sd3desk does not caption images",
}

router = APIRouter(prefix="/sdapi/v1", tags=["AUTOMATIC1111 compatible"])


class Txt2ImgRequest(BaseModel):
    """A1111's StableDiffusionTxt2ImgProcessingAPI: the fields sd3desk maps; every other field
    a client sends (hires fix, restore faces, scripts, …) is accepted and ignored."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    prompt: str = Field("", max_length=100_000)
    negative_prompt: str = Field("", max_length=100_000)
    seed: int = Field(-1, description="-1 for a random one")
    steps: int | None = None
    cfg_scale: float | None = None
    width: int | None = None
    height: int | None = None
    batch_size: int = Field(1, ge=1, le=64)
    n_iter: int = Field(1, ge=1, le=64)
    sampler_name: str | None = None
    sampler_index: str | None = None
    scheduler: str | None = None
    override_settings: dict[str, Any] | None = None
    enable_hr: bool = False
    hr_scale: float = 2.0
    hr_second_pass_steps: int = 0  # 0: as steps
    hr_upscaler: str | None = None
    denoising_strength: float | None = None  # the hires pass's, with enable_hr
    send_images: bool = True
    save_images: bool = False


class Img2ImgRequest(Txt2ImgRequest):
    """A1111's StableDiffusionImg2ImgProcessingAPI: the picture (and mask) in base64; the
    denoising strength; inpainting's mask blur, "only masked" and its padding, inverted masks.
    sd3desk always fits the picture to the size by scaling and cropping around the centre."""

    init_images: list[str] = Field(default_factory=list, max_length=1)
    denoising_strength: float | None = 0.75  # (A1111's default)
    mask: str | None = None
    mask_blur: int = 4
    inpaint_full_res: bool = False  # "Only masked"
    inpaint_full_res_padding: int = 32
    inpainting_mask_invert: int = Field(0, ge=0, le=1)
    resize_mode: int = 1
    include_init_images: bool = False


class ImagesResponse(BaseModel):
    images: list[str] | None = None  # base64 PNGs, each with its `parameters` text chunk
    parameters: dict[str, Any]
    info: str  # a JSON string, as A1111 sends it


class ProgressState(BaseModel):
    skipped: bool = False
    interrupted: bool = False
    job: str = ""
    job_count: int = 0
    job_timestamp: str = "0"
    job_no: int = 0
    sampling_step: int = 0
    sampling_steps: int = 0


class ProgressResponse(BaseModel):
    progress: float
    eta_relative: float
    state: ProgressState
    current_image: str | None = None
    textinfo: str | None = None


class PngInfoRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    image: str = Field("", max_length=20_000_000)


class PngInfoResponse(BaseModel):
    info: str
    items: dict[str, Any]
    parameters: dict[str, Any]


class Requests:
    """Which jobs each txt2img call queued, so `interrupt` stops a whole request (as A1111 does)
    and `skip` only the image being made. Any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._groups: dict[int, tuple[int, ...]] = {}

    def add(self, jobs: list[Job]) -> None:
        ids = tuple(j.id for j in jobs)
        with self._lock:
            for job_id in ids:
                self._groups[job_id] = ids

    def remove(self, jobs: list[Job]) -> None:
        with self._lock:
            for job in jobs:
                self._groups.pop(job.id, None)

    def group_of(self, job_id: int) -> tuple[int, ...]:
        with self._lock:
            return self._groups.get(job_id, (job_id,))


# ---------------------------------------------------------------------- generating


@router.post("/txt2img", response_model=ImagesResponse, summary="Text to image (waits for it)")
async def txt2img(body: Txt2ImgRequest, request: Request) -> ImagesResponse:
    door = door_of(request)
    entry = _entry(door, body)
    return await _generate(door, request, body, entry, _requests(body, entry), _notes(body))


@router.post(
    "/img2img", response_model=ImagesResponse, summary="Image to image, inpainting (waits)"
)
async def img2img(body: Img2ImgRequest, request: Request) -> ImagesResponse:
    door = door_of(request)
    entry = _entry(door, body)
    if not body.init_images:
        raise InvalidParamsError([FieldError("init_images", "give one picture (base64)")])
    pictures = await run_in_threadpool(_store_pictures, door, body)
    requests = [p.replace(**pictures) for p in _requests(body, entry)]
    notes = _notes(body)
    if body.resize_mode != 1:
        notes.append("the picture was fitted by scaling and cropping (A1111's crop and resize)")
    return await _generate(door, request, body, entry, requests, notes)


def _entry(door: Door, body: Txt2ImgRequest) -> ModelEntry:
    checkpoint = (body.override_settings or {}).get("sd_model_checkpoint")
    return door.model_for(str(checkpoint or ""), "override_settings.sd_model_checkpoint")


def _store_pictures(door: Door, body: Img2ImgRequest) -> dict[str, Any]:
    """The picture and mask into the store; the request's fields of starting from them."""
    from PIL import ImageOps

    fields: dict[str, Any] = {
        "source_image": door.store_picture(body.init_images[0], "init_images"),
        "strength": 0.75 if body.denoising_strength is None else body.denoising_strength,
    }
    if body.mask:
        mask = door.store_picture(body.mask, "mask")
        if body.inpainting_mask_invert:  # "inpaint not masked": the other part repaints
            inverted = ImageOps.invert(door.runtime.sources.open(mask, "mask_image"))
            mask = door.runtime.sources.put_image(inverted, "mask")
        fields |= {
            "mask_image": mask,
            "mask_blur": body.mask_blur,
            # ("only masked" with A1111's padding 0 is a margin of one pixel here: 0 means the
            # whole picture in sd3desk)
            "mask_padding": max(1, body.inpaint_full_res_padding) if body.inpaint_full_res else 0,
        }
    return fields


async def _generate(
    door: Door,
    request: Request,
    body: Txt2ImgRequest,
    entry: ModelEntry,
    requests: list[GenerationParams],
    notes: list[str],
) -> ImagesResponse:
    # a coroutine, so that a call waiting for its images holds no thread: the threads are
    # for the short work before and after (the runner's commands, reading the PNGs)
    client = client_address(request)
    jobs = await run_in_threadpool(door.submit, requests, entry, SOURCE, client)
    groups = _groups(request)
    groups.add(jobs)
    try:
        # the queue owns the work: a client that goes away leaves its jobs running
        done = await door.bridge.wait_async([j.id for j in jobs])
    finally:
        groups.remove(jobs)
    failed = [j for j in done if j.state is JobState.failed]
    if failed and not any(j.outputs for j in done):
        raise ApiError(500, f"{failed[0].error_message} — {failed[0].error_advice}")
    if any(j.state is JobState.cancelled for j in done):
        notes.append("interrupted: some images were not made")
    return await run_in_threadpool(_images_response, door, body, requests, entry, done, notes)


def _images_response(
    door: Door,
    body: Txt2ImgRequest,
    requests: list[GenerationParams],
    entry: ModelEntry,
    done: list[Job],
    notes: list[str],
) -> ImagesResponse:
    images, texts = [], []
    for job in done:
        for path in job.outputs:
            found = door.output_file(path)
            if found is None:
                continue
            data = found.read_bytes()
            images.append(base64.b64encode(data).decode("ascii"))
            texts.append(_infotext(found))
    info = _info(body, requests, entry, texts, notes)
    return ImagesResponse(
        images=images if body.send_images else None,
        parameters=body.model_dump(),
        info=json.dumps(info),
    )


def _groups(request: Request) -> Requests:
    return request.app.state.a1111_requests


def _requests(body: Txt2ImgRequest, entry: ModelEntry) -> list[GenerationParams]:
    """One job per iteration, each of `batch_size` images: image k of the whole request uses
    seed + k, as A1111's `all_seeds`."""
    if not -1 <= body.seed <= SEED_MAX:
        raise InvalidParamsError([FieldError("seed", f"must be -1 (random) or 0-{SEED_MAX}")])
    # A1111's <lora:name:weight> tags: out of the prompt, into the request (found by name)
    tagged = split_lora_tags(body.prompt)
    base = defaults_for(entry.family, tagged.prompt, model=entry.reference).replace(
        negative_prompt=body.negative_prompt,
        loras=tuple(LoraRef(name, "", weight) for name, weight in tagged.loras),
        seed=None if body.seed == -1 else body.seed,
        batch_size=body.batch_size,
    )
    for name, value in (
        ("steps", body.steps),
        ("guidance_scale", body.cfg_scale),
        ("width", body.width),
        ("height", body.height),
    ):
        if value is not None:
            base = base.replace(**{name: value})
    if body.enable_hr and not isinstance(body, Img2ImgRequest):
        base = base.replace(
            hires_scale=body.hr_scale,
            hires_steps=body.hr_second_pass_steps,
            hires_strength=0.7 if body.denoising_strength is None else body.denoising_strength,
        )
    base = base.with_concrete_seed()
    assert base.seed is not None
    return [
        base.replace(seed=(base.seed + i * body.batch_size) % (SEED_MAX + 1))
        for i in range(body.n_iter)
    ]


def _notes(body: Txt2ImgRequest) -> list[str]:
    notes = list(split_lora_tags(body.prompt).notes)
    for asked in (body.sampler_name, body.sampler_index):
        if asked and asked != SAMPLER and asked not in SAMPLER_ALIASES:
            notes.append(
                f"sampler {asked!r} is not available for SD3; used {SAMPLER} (flow matching)"
            )
    upscaler = (body.hr_upscaler or "").strip().lower()
    if body.enable_hr and upscaler not in ("", "lanczos"):
        notes.append(f"hires upscaler {body.hr_upscaler!r} is not in sd3desk; used Lanczos")
    return notes


def _infotext(path: Path) -> str:
    from sd3desk.core.metadata import a1111_text, read_metadata

    try:
        return a1111_text(read_metadata(path))
    except SD3DeskError:
        return ""


def _info(
    body: Txt2ImgRequest,
    requests: list[GenerationParams],
    entry: ModelEntry,
    texts: list[str],
    notes: list[str],
) -> dict[str, Any]:
    first = requests[0]
    seeds = [p.seed + k for p in requests for k in range(p.batch_size) if p.seed is not None]
    count = len(seeds)
    return {
        "prompt": first.prompt,
        "all_prompts": [first.prompt] * count,
        "negative_prompt": first.negative_prompt,
        "all_negative_prompts": [first.negative_prompt] * count,
        "seed": first.seed,
        "all_seeds": seeds,
        "subseed": -1,
        "all_subseeds": [-1] * count,
        "subseed_strength": 0,
        "width": first.width,
        "height": first.height,
        "sampler_name": SAMPLER,
        "cfg_scale": first.guidance_scale,
        "steps": first.steps,
        "batch_size": first.batch_size,
        "restore_faces": False,
        "sd_model_name": entry.label,
        "sd_model_hash": None,
        "seed_resize_from_w": -1,
        "seed_resize_from_h": -1,
        "denoising_strength": None,
        "extra_generation_params": {"Shift": first.shift},
        "index_of_first_image": 0,
        "infotexts": texts,
        "styles": [],
        "job_timestamp": time.strftime("%Y%m%d%H%M%S"),
        "clip_skip": 1,
        "version": f"sd3desk {__version__}",
        "comments": notes,
    }


# ---------------------------------------------------------------------- progress and control


@router.get("/progress", response_model=ProgressResponse, summary="What is running, with a preview")
def progress(request: Request, skip_current_image: bool = False) -> ProgressResponse:
    door = door_of(request)
    snapshot = door.runner.snapshot()
    count = len(snapshot.running) + len(snapshot.waiting)
    if not snapshot.running:
        return ProgressResponse(
            progress=0.0, eta_relative=0.0, state=ProgressState(job_count=count)
        )
    job = snapshot.running[0]
    step = snapshot.progress.get(job.id, 0)
    eta = snapshot.etas.get(job.id)
    image = None
    latest = door.bridge.latest_step(job.id)
    if not skip_current_image and latest is not None and latest.preview is not None:
        import io

        buffer = io.BytesIO()
        latest.preview.save(buffer, "PNG")
        image = base64.b64encode(buffer.getvalue()).decode("ascii")
    return ProgressResponse(
        progress=round(step / max(job.params.steps, 1), 4),
        eta_relative=round(eta.seconds, 2) if eta else 0.0,
        state=ProgressState(
            job=f"job {job.id}",
            job_count=count,
            job_timestamp=time.strftime("%Y%m%d%H%M%S", time.localtime(job.started or 0)),
            sampling_step=step,
            sampling_steps=job.params.steps,
        ),
        current_image=image,
    )


@router.post("/interrupt", summary="Stop the running request (all its images)")
def interrupt(request: Request) -> dict[str, Any]:
    door = door_of(request)
    for job in door.runner.snapshot().running:
        for job_id in _groups(request).group_of(job.id):
            door.runner.cancel(job_id)
    return {}


@router.post("/skip", summary="Stop the image being made; the request goes on")
def skip(request: Request) -> dict[str, Any]:
    door = door_of(request)
    for job in door.runner.snapshot().running:
        door.runner.cancel(job.id)
    return {}


# ---------------------------------------------------------------------- options and lists


def _title(entry: ModelEntry) -> str:
    return entry.label


@router.get("/options", summary="The current model and a few settings")
def get_options(request: Request) -> dict[str, Any]:
    default = door_of(request).default_model
    return {
        "sd_model_checkpoint": _title(default) if default else None,
        "sd_checkpoint_hash": None,
        "samples_format": "png",
        "sd_vae": "Automatic",
        "CLIP_stop_at_last_layers": 1,
    }


@router.post("/options", summary="Choose the model (sd_model_checkpoint); others are ignored")
def set_options(body: dict[str, Any], request: Request) -> None:
    door = door_of(request)
    name = body.get("sd_model_checkpoint")
    if name is not None:
        entry = door.model_for(str(name), "sd_model_checkpoint")
        door.set_default_model(entry)


@router.get("/sd-models", summary="The models this server offers")
def sd_models(request: Request) -> list[dict[str, Any]]:
    return [
        {
            "title": _title(e),
            "model_name": Path(e.reference).stem or e.reference,
            "hash": None,
            "sha256": None,
            "filename": e.reference,
            "config": None,
        }
        for e in door_of(request).models()
    ]


@router.get("/loras", summary="The SD3 LoRAs in the LoRA folders, for <lora:name:weight>")
def loras(request: Request) -> list[dict[str, Any]]:
    return [
        {"name": info.name, "alias": info.name, "path": str(info.path), "metadata": {}}
        for info in door_of(request).loras()
        if info.kind is LoraKind.sd3
    ]


@router.post("/refresh-loras", summary="Nothing to do: the folders are read on every request")
def refresh_loras() -> None:
    return None


@router.get("/samplers", summary="The one sampler SD3 uses")
def samplers() -> list[dict[str, Any]]:
    return [{"name": SAMPLER, "aliases": list(SAMPLER_ALIASES), "options": {}}]


@router.get("/schedulers", summary="The one schedule SD3 uses")
def schedulers() -> list[dict[str, Any]]:
    return [
        {
            "name": "flow_match",
            "label": "Flow matching (SD3 shift)",
            "aliases": None,
            "default_rho": -1,
            "need_inner_model": False,
        }
    ]


@router.get("/upscalers", summary="None: sd3desk has no upscalers yet")
def upscalers() -> list[dict[str, Any]]:
    return [{"name": "None", "model_name": None, "model_path": None, "model_url": None, "scale": 1}]


@router.get("/sd-vae", summary="None besides each model's own")
def sd_vae() -> list[dict[str, Any]]:
    return []


@router.get("/scripts", summary="None")
def scripts() -> dict[str, list[str]]:
    return {"txt2img": [], "img2img": []}


@router.post("/png-info", response_model=PngInfoResponse, summary="Read an image's parameters")
def png_info(body: PngInfoRequest) -> PngInfoResponse:
    from sd3desk.core.metadata import a1111_text, read_metadata

    text = body.image.split(",", 1)[1] if body.image.startswith("data:") else body.image
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(422, "image: not base64 image data") from None
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "image"
        path.write_bytes(data)
        try:
            meta = read_metadata(path)
        except SD3DeskError as exc:
            return PngInfoResponse(info="", items={}, parameters={"error": exc.message})
    info = a1111_text(meta)
    p = meta.params
    parameters = {
        "Prompt": p.prompt,
        "Negative prompt": p.negative_prompt,
        "Steps": p.steps,
        "Sampler": SAMPLER,
        "CFG scale": p.guidance_scale,
        "Seed": p.seed,
        "Size-1": p.width,
        "Size-2": p.height,
        "Model": meta.model.name,
        "Model hash": meta.model.hash,
    }
    return PngInfoResponse(info=info, items={"parameters": info}, parameters=parameters)


# ---------------------------------------------------------------------- everything else


@router.api_route(
    "/{rest:path}",
    methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
    include_in_schema=False,
)
def not_offered(rest: str) -> None:
    name = rest.strip("/").split("/")[0]
    if name in NOT_YET:
        raise ApiError(501, f"/sdapi/v1/{name}: {NOT_YET[name]}")
    raise ApiError(404, f"sd3desk does not offer /sdapi/v1/{rest}")
