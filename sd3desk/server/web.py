"""The web page at / (a Gradio Blocks app, the optional extra `sd3desk[web]`): the controls of the
Stable Diffusion 3 Medium demo on this computer's queue, with each request's place in that queue
and its ETA, step progress with previews, and the PNG with its metadata intact. Its `infer` API
takes and returns what the demo's does, so `gradio_client` scripts written for it work here.

Gradio's own queue neither serialises nor drops anything here (no concurrency limit): sd3desk's
persistent queue does the waiting, and a browser that goes away leaves its job in it. The events
are coroutines, so a request waiting its turn holds no thread (Gradio and the APIs share 40)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import gradio as gr
from fastapi.concurrency import run_in_threadpool

from sd3desk.core.errors import InvalidParamsError
from sd3desk.core.jobs import DONE, Job, JobState
from sd3desk.core.params import SEED_MAX, SIZE_MAX, SIZE_MIN, SIZE_PRESETS, defaults_for
from sd3desk.core.words import duration, ordinal
from sd3desk.server.door import Door, LimitExceeded

SOURCE = "web"
POLL_S = 0.2
# requests Gradio's queue processes at once (its default, 40, would hold the 41st browser in a
# queue of its own, without sd3desk's place and ETA): waiting holds no thread, so many can
AT_ONCE = 1000
EXAMPLES = [
    "A lighthouse on a rocky coast at dusk, warm light in the windows, long exposure",
    "A red fox asleep in fresh snow, soft morning light, shallow depth of field",
    "A cosy reading nook with a rain-streaked window and a cat on a cushion, watercolour",
    "A tiny robot tending a bonsai tree, macro photograph",
]


def build_page(door: Door) -> gr.Blocks:
    """The page; its events run on Gradio's threads and reach the queue through `door`."""
    default = door.default_model
    family = defaults_for(default.family) if default else defaults_for_sd3()
    labels = [e.label for e in door.models()]
    # no telemetry and no version check (Gradio's defaults call api.gradio.app)
    with gr.Blocks(title="sd3desk", analytics_enabled=False) as page:
        gr.Markdown(
            "# sd3desk\nStable Diffusion 3 on this computer, through its queue: requests wait "
            "their turn with the window's and every other client's, and nothing is lost."
        )
        with gr.Row():
            prompt = gr.Text(
                label="Prompt",
                show_label=False,
                max_lines=1,
                placeholder="Enter your prompt",
                container=False,
                elem_id="prompt",
            )
            run = gr.Button("Generate", variant="primary", scale=0, elem_id="generate")
        status = gr.Markdown(elem_id="queue-status")
        result = gr.Image(
            label="Result", show_label=False, format="png", type="filepath", elem_id="result"
        )
        with gr.Accordion("Advanced Settings", open=False):
            model = gr.Dropdown(
                labels, value=default.label if default else None, label="Model", elem_id="model"
            )
            negative = gr.Text(label="Negative prompt", max_lines=1, placeholder="What to avoid")
            seed = gr.Slider(0, SEED_MAX, step=1, value=0, label="Seed")
            randomize = gr.Checkbox(value=True, label="Randomize seed")
            aspect = gr.Dropdown(
                [p.name for p in SIZE_PRESETS if p.width * p.height >= 900_000] + ["custom"],
                value="custom",
                label="Aspect",
            )
            with gr.Row():
                width = gr.Slider(SIZE_MIN, SIZE_MAX, step=16, value=family.width, label="Width")
                height = gr.Slider(SIZE_MIN, SIZE_MAX, step=16, value=family.height, label="Height")
            with gr.Row():
                guidance = gr.Slider(
                    0.0, 30.0, step=0.1, value=family.guidance_scale, label="Guidance scale"
                )
                steps = gr.Slider(
                    1, 150, step=1, value=family.steps, label="Number of inference steps"
                )
        gr.Examples(EXAMPLES, inputs=[prompt])

        settings = [prompt, negative, seed, randomize, width, height, guidance, steps]

        # (gr.Progress() as a default is how Gradio hands a progress tracker to an event)
        async def generate(
            prompt: str,
            negative_prompt: str,
            seed: float,
            randomize_seed: bool,
            width: float,
            height: float,
            guidance_scale: float,
            num_inference_steps: float,
            model: str,
            request: gr.Request,
            progress: gr.Progress = gr.Progress(),  # noqa: B008
        ) -> AsyncIterator:
            fields = [prompt, negative_prompt, seed, randomize_seed, width, height]
            fields += [guidance_scale, num_inference_steps]
            async for update in _page_run(door, fields, model, _client(request), progress):
                yield update

        # the parameter names are the SD3 Medium demo's: gradio_client calls name them
        async def infer(
            prompt: str,
            negative_prompt: str,
            seed: float,
            randomize_seed: bool,
            width: float,
            height: float,
            guidance_scale: float,
            num_inference_steps: float,
            request: gr.Request,
            progress: gr.Progress = gr.Progress(),  # noqa: B008
        ) -> tuple[str, int]:
            fields = [prompt, negative_prompt, seed, randomize_seed, width, height]
            fields += [guidance_scale, num_inference_steps]
            # the page's run without its previews: its last answer is the image and seed
            answers = _page_run(door, fields, "", _client(request), progress)
            last: tuple[Any, Any, str] = ("", 0, "")
            async for last in answers:  # noqa: B007
                pass
            image, done_seed, _text = last
            return image, int(done_seed or 0)

        for trigger in (run.click, prompt.submit):
            trigger(
                generate,
                inputs=[*settings, model],
                outputs=[result, seed, status],
                concurrency_limit=None,
                api_visibility="private",
            )
        aspect.change(
            _aspect_size, inputs=aspect, outputs=[width, height], api_visibility="private"
        )
        # the models the catalog knows now (it may have found more since the page was built)
        page.load(
            lambda: gr.update(choices=[e.label for e in door.models()]),
            outputs=model,
            api_visibility="private",
        )
        # the SD3 Medium demo's API: (prompt, negative_prompt, seed, randomize_seed, width,
        # height, guidance_scale, num_inference_steps) -> (image, seed)
        api = gr.Button(visible=False)
        api.click(
            infer,
            inputs=settings,
            outputs=[result, seed],
            api_name="infer",
            concurrency_limit=None,
        )
    page.max_threads = AT_ONCE  # (read by queue())
    page.queue(default_concurrency_limit=None)
    return page


def defaults_for_sd3():
    from sd3desk.core.params import ModelFamily

    return defaults_for(ModelFamily.sd3_medium)


def _aspect_size(name: str) -> tuple[Any, Any]:
    for preset in SIZE_PRESETS:
        if preset.name == name:
            return preset.width, preset.height
    return gr.update(), gr.update()


def _client(request: gr.Request | None) -> str:
    client = getattr(request, "client", None) if request is not None else None
    return getattr(client, "host", "") or ""


def _submit(door: Door, fields: list[Any], model_label: str, client: str) -> Job:
    prompt, negative, seed, randomize, width, height, guidance, steps = fields
    try:
        entry = door.model_for(model_label or "")
        params = defaults_for(entry.family, str(prompt or ""), model=entry.reference).replace(
            negative_prompt=str(negative or ""),
            seed=None if randomize else int(seed),
            width=int(width),
            height=int(height),
            guidance_scale=float(guidance),
            steps=int(steps),
        )
        return door.submit([params], entry, SOURCE, client)[0]
    except InvalidParamsError as exc:
        raise _said("; ".join(f"{e.field} {e.message}" for e in exc.errors)) from None
    except LimitExceeded as exc:
        raise _said(exc.reason) from None


async def _where(door: Door, job: Job) -> tuple[Job, str, tuple[int, int] | None]:
    """The job now, a line saying where it is, and its steps done (when running)."""
    snapshot = door.runner.snapshot()
    current = snapshot.find(job.id)
    if current is None:  # gone from the snapshot: the runner looks it up (off this loop)
        current = await run_in_threadpool(door.runner.job, job.id)
    if current is None:
        raise _said(f"job #{job.id} is no longer in the queue (cleared)")
    eta = snapshot.etas.get(job.id)
    about = f" · about {duration(eta.seconds)}" if eta else ""
    if current.state is JobState.queued:
        place = snapshot.places.get(job.id, 0)
        ahead = "next" if place == 1 else f"{ordinal(place)} in line"
        return current, f"Job #{job.id} is waiting in sd3desk's queue: {ahead}{about}", None
    if current.state is JobState.running:
        step = snapshot.progress.get(job.id, 0)
        text = f"Job #{job.id}: step {step}/{current.params.steps}{about} left"
        return current, text, (step, current.params.steps)
    return current, f"Job #{job.id} {current.state.value}", None


async def _page_run(
    door: Door, fields: list[Any], model_label: str, client: str, progress: gr.Progress
) -> AsyncIterator[tuple[Any, Any, str]]:
    job = await run_in_threadpool(_submit, door, fields, model_label, client)
    shown_step = -1
    while True:
        job, text, steps = await _where(door, job)
        if job.state in DONE:
            break
        progress(steps if steps else None, desc=text)
        latest = door.bridge.latest_step(job.id)
        if latest is not None and latest.step != shown_step and latest.preview is not None:
            shown_step = latest.step
            yield latest.preview, job.params.seed, text
        elif shown_step < 0:
            yield gr.update(), job.params.seed, text
        await asyncio.sleep(POLL_S)
    job = _finished(job)
    yield _image(job), job.params.seed, f"Job #{job.id} done · seed {job.params.seed}"


def _said(message: str) -> gr.Error:
    """An answer for the page or the client, not a fault: Gradio prints no traceback for it
    (the terminal of `sd3desk serve` would get one per cancelled or refused request)."""
    return gr.Error(message, print_exception=False)


def _finished(job: Job) -> Job:
    if job.state is JobState.failed:
        raise _said(f"{job.error_message} — {job.error_advice}")
    if job.state is JobState.cancelled:
        raise _said(f"job #{job.id} was cancelled")
    return job


def _image(job: Job) -> str:
    if not job.outputs:
        raise _said(f"job #{job.id} made no image")
    return job.outputs[0]
