"""The SD3 engine: load a model through diffusers, turn a GenerationParams into images."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from sd3desk.core.errors import (
    FieldError,
    GenerationCancelled,
    InvalidParamsError,
    ModelError,
    OutOfMemoryError,
    SD3DeskError,
)
from sd3desk.core.metadata import ModelIdentity
from sd3desk.core.modelhash import model_hash
from sd3desk.core.params import SEED_MAX, GenerationParams, PromptLength, check
from sd3desk.core.settings import Device, MemoryPlan, hash_cache_file
from sd3desk.inference import loading
from sd3desk.inference.devices import (
    DeviceInfo,
    Placement,
    ResolvedPlan,
    free_memory,
    gc_paused,
    is_out_of_memory,
    pick_device,
    place_pipeline,
    quiet_libraries,
    resolve_plan,
)
from sd3desk.inference.loading import LoadStage
from sd3desk.inference.models import ModelSource
from sd3desk.inference.preview import PreviewQueue, latents_to_rgb, predicted_x0

# Above this many pixels the VAE decodes in tiles, so big images fit in modest VRAM.
VAE_TILING_PIXELS = 1536 * 1536
_LOAD_LOCK = threading.Lock()
OOM_ADVICE = (
    "Try a smaller size or fewer images per job, the 'offload' or 'sequential' memory plan, "
    "or running without T5 ('no-t5'). Memory has been freed; the next job can run normally."
)


@dataclass(frozen=True)
class StepInfo:
    """Progress of one denoising step (1-based), with a cheap preview of the first image.

    `preview` is the newest one ready: this step's on the CPU, usually the previous step's on a
    GPU (previews never make the GPU wait), None before the first is ready.
    """

    step: int
    total: int
    elapsed_s: float  # since denoising began
    step_s: float  # this step alone
    preview: Image.Image | None


@dataclass(frozen=True)
class LoadedModel:
    """The model an Engine holds, how it is placed, and anything the user should know."""

    source: ModelSource
    identity: ModelIdentity
    device: DeviceInfo
    plan: ResolvedPlan
    notices: tuple[str, ...] = ()

    def describe(self) -> str:
        return f"{self.identity.name} on {self.device.describe()} · {self.plan.describe()}"


@dataclass(frozen=True)
class GenerationResult:
    """Images of one request; `params[k]` re-makes `images[k]` on its own (seed + k)."""

    images: list[Image.Image]
    params: list[GenerationParams]
    model: ModelIdentity
    timings: dict[str, float]
    prompt_cache_hit: bool


class Engine:
    """Owns one SD3 pipeline on one device.

    Thread rule: not thread-safe. Create it and call every method from one thread (the worker);
    only `cancel` events may be set from other threads.
    """

    def __init__(
        self,
        device: Device = Device.auto,
        *,
        cache_dir: Path | None = None,
        model_dirs: tuple[Path, ...] = (),
        prompt_cache_size: int = 16,
        device_index: int = 0,
    ) -> None:
        self._requested_device = device
        self._device_index = device_index
        self._cache_dir = cache_dir
        self._model_dirs = model_dirs
        self._prompt_cache: OrderedDict[tuple, tuple] = OrderedDict()
        self._tokenizer_lock = threading.Lock()
        self._prompt_cache_size = prompt_cache_size
        self._device: DeviceInfo | None = None
        self._pipe: Any = None
        self._loaded: LoadedModel | None = None

    @property
    def loaded(self) -> LoadedModel | None:
        return self._loaded

    def loaded_model(self) -> LoadedModel:
        """The loaded model; raises ModelError before load()."""
        if self._loaded is None:
            raise ModelError("no model is loaded", "load a model first")
        return self._loaded

    @property
    def pipeline(self) -> Any:
        """The diffusers pipeline (for benchmarks and tests); None before load()."""
        return self._pipe

    def device(self) -> DeviceInfo:
        if self._device is None:
            self._device = pick_device(self._requested_device, self._device_index)
        return self._device

    # ------------------------------------------------------------------ loading

    def load(
        self,
        source: ModelSource,
        plan: MemoryPlan = MemoryPlan.auto,
        on_stage: Callable[[LoadStage], None] | None = None,
        use_t5: bool = True,
    ) -> LoadedModel:
        """Load `source` (unloading any other model first) and place it per `plan`; without T5
        when `use_t5` is False (the user's setting) or the plan is no-t5."""
        # 1. device, dtype and a concrete memory plan from the weights' sizes
        quiet_libraries()
        device = self.device()
        bytes_per_param = 4 if device.dtype == "float32" else 2
        # (everything that will be loaded: the text encoders a single file borrows included)
        sizes = source.load_bytes(bytes_per_param, use_t5)
        resolved = resolve_plan(plan, device, sizes, has_t5=use_t5)
        # 2. free the previous model before reading the next one
        self.unload()
        try:
            # 3. read every component through diffusers/transformers, offline; one load at a
            # time per process, because their loaders patch torch globally while they run
            with _LOAD_LOCK, gc_paused():
                pipe, use_t5, notices = loading.load_pipeline(
                    source,
                    dtype=device.dtype,
                    use_t5=resolved.use_t5,
                    cache_dir=self._cache_dir,
                    model_dirs=self._model_dirs,
                    on_stage=on_stage,
                )
            resolved = ResolvedPlan(resolved.placement, use_t5)
            # 4. place the weights
            loading.report_stage(on_stage, loading.PLACE_STAGE, "Moving the model to the device")
            place_pipeline(pipe, resolved.placement, device)
        except SD3DeskError:
            free_memory(device)
            raise
        except Exception as exc:
            free_memory(device)
            if is_out_of_memory(exc):
                raise OutOfMemoryError(
                    f"out of memory while loading {source.name}", OOM_ADVICE
                ) from exc
            raise ModelError(
                f"{source.name} could not be loaded: {exc}",
                "the files may be incomplete or of an unsupported variant",
                path=str(source.path),
            ) from exc
        return self.attach(pipe, source, resolved, notices)

    def attach(
        self, pipe: Any, source: ModelSource, plan: ResolvedPlan, notices: Sequence[str] = ()
    ) -> LoadedModel:
        """Adopt a pipeline already placed per `plan` (load() ends here; benchmarks use it)."""
        # The model hash names the model in every image's metadata; cached on disk after once.
        hash_cache = hash_cache_file(self._cache_dir) if self._cache_dir else None
        files = source.hash_files()
        identity = ModelIdentity(
            name=source.name,
            hash=model_hash(files, hash_cache) if files else "",
            family=source.family.value,
        )
        pipe.set_progress_bar_config(disable=True)
        self._pipe = pipe
        self._loaded = LoadedModel(source, identity, self.device(), plan, tuple(notices))
        return self._loaded

    def unload(self) -> None:
        """Drop the model and give its memory back."""
        if self._pipe is None:
            return
        self._pipe = None
        self._loaded = None
        self._prompt_cache.clear()
        free_memory(self._device)

    # ------------------------------------------------------------------ prompts

    def prompt_length(self, prompt: str, max_sequence_length: int = 256) -> PromptLength:
        """Tokens per encoder for `prompt` (with start/end tokens), for truncation warnings.
        Any thread: the tokenizers are shared with encoding, and a fast tokenizer's call sets
        its truncation and padding on the shared Rust object, so the two take turns."""
        pipe = self._require_pipe()
        with self._tokenizer_lock:
            clip = len(pipe.tokenizer(prompt, truncation=False).input_ids)
            t5 = None
            if pipe.text_encoder_3 is not None and pipe.tokenizer_3 is not None:
                t5 = len(pipe.tokenizer_3(prompt, truncation=False).input_ids)
        return PromptLength(clip_tokens=clip, t5_tokens=t5, t5_limit=max_sequence_length)

    def _encode(self, params: GenerationParams) -> tuple[tuple, bool]:
        """Prompt embeddings, from the LRU cache when this prompt was encoded before."""
        cfg = params.uses_cfg
        assert self._loaded is not None
        key = (
            params.prompt,
            params.negative_prompt if cfg else None,
            params.max_sequence_length,
            self._loaded.plan.use_t5,
        )
        cached = self._prompt_cache.get(key)
        if cached is not None:
            self._prompt_cache.move_to_end(key)
            return cached, True
        pipe = self._pipe
        with self._tokenizer_lock:  # see prompt_length
            embeds = pipe.encode_prompt(
                prompt=params.prompt,
                prompt_2=None,
                prompt_3=None,
                device=pipe._execution_device,
                num_images_per_prompt=1,
                do_classifier_free_guidance=cfg,
                negative_prompt=params.negative_prompt if cfg else None,
                max_sequence_length=params.max_sequence_length,
            )
        self._prompt_cache[key] = embeds
        while len(self._prompt_cache) > self._prompt_cache_size:
            self._prompt_cache.popitem(last=False)
        return embeds, False

    # ------------------------------------------------------------------ generating

    def generate(
        self,
        params: GenerationParams,
        on_step: Callable[[StepInfo], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> GenerationResult:
        """Run one request. Raises InvalidParamsError, GenerationCancelled or OutOfMemoryError."""
        import torch

        pipe = self._require_pipe()
        assert self._loaded is not None
        # 1. validate: every field, the model's size limit, a concrete seed
        check(params, self._loaded.source.max_side)
        if params.seed is None:
            raise InvalidParamsError([_seed_error()])
        _raise_if_cancelled(cancel, 0)
        timings: dict[str, float] = {}
        started = time.perf_counter()
        try:
            with torch.inference_mode():
                # 2. encode the prompt (cached: a new seed skips all three text encoders)
                embeds, hit = self._encode(params)
                timings["encode_s"] = time.perf_counter() - started
                _raise_if_cancelled(cancel, 0)
                # 3. initial noise from a CPU generator per image: the same on every device
                latents = _initial_latents(params, pipe)
                # 4. denoise, reporting every step and honouring cancel within one step
                denoise_start = time.perf_counter()
                latents = self._denoise(params, embeds, latents, on_step, cancel)
                timings["denoise_s"] = time.perf_counter() - denoise_start
                # 5. decode one image at a time (bounded memory; batch image k == single run)
                decode_start = time.perf_counter()
                images = []
                for k in range(params.batch_size):
                    _raise_if_cancelled(cancel, params.steps)
                    images.append(_decode(pipe, latents[k : k + 1], params))
                timings["decode_s"] = time.perf_counter() - decode_start
        except (GenerationCancelled, SD3DeskError):
            raise
        except Exception as exc:
            if is_out_of_memory(exc):
                free_memory(self._device)
                raise OutOfMemoryError(
                    f"the device ran out of memory at {params.width}x{params.height} "
                    f"with {params.batch_size} image(s)",
                    OOM_ADVICE,
                ) from exc
            raise
        timings["total_s"] = time.perf_counter() - started
        per_image = [params.for_image(k) for k in range(params.batch_size)]
        return GenerationResult(images, per_image, self._loaded.identity, timings, hit)

    def _denoise(
        self,
        params: GenerationParams,
        embeds: tuple,
        latents: Any,
        on_step: Callable[[StepInfo], None] | None,
        cancel: threading.Event | None,
    ) -> Any:
        pipe = self._pipe
        _set_shift(pipe, params.shift)
        if _wants_tiling(params, self._loaded):
            pipe.vae.enable_tiling()
        else:
            pipe.vae.disable_tiling()
        prompt_embeds, negative_embeds, pooled, negative_pooled = embeds
        batch = params.batch_size
        state = {"previous": latents[:1], "start": time.perf_counter()}
        state["last"] = state["start"]
        previews = PreviewQueue()

        def step_end(pipeline: Any, i: int, t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            # Raising here stops the pipeline before its next step and before any VAE decode.
            _raise_if_cancelled(cancel, i + 1)
            if on_step is not None:
                now = time.perf_counter()
                current = tensors["latents"][:1]
                previews.submit(self._preview_rgb(pipeline, i, current, state["previous"]))
                preview = previews.latest()
                state["previous"] = current
                on_step(
                    StepInfo(
                        i + 1, params.steps, now - state["start"], now - state["last"], preview
                    )
                )
                state["last"] = now
                _raise_if_cancelled(cancel, i + 1)  # cancelled from the step report itself
            return {}

        result = pipe(
            prompt_embeds=_repeat(prompt_embeds, batch),
            pooled_prompt_embeds=_repeat(pooled, batch),
            negative_prompt_embeds=_repeat(negative_embeds, batch),
            negative_pooled_prompt_embeds=_repeat(negative_pooled, batch),
            num_inference_steps=params.steps,
            guidance_scale=params.guidance_scale,
            height=params.height,
            width=params.width,
            latents=latents,
            max_sequence_length=params.max_sequence_length,
            output_type="latent",
            callback_on_step_end=step_end,
            callback_on_step_end_tensor_inputs=["latents"],
        )
        return result.images

    def _preview_rgb(self, pipe: Any, i: int, current: Any, previous: Any) -> Any:
        """The x0 prediction of this step, as RGB at latent size (see preview.py)."""
        previous = previous.to(device=current.device, dtype=current.dtype)
        sigmas = pipe.scheduler.sigmas.to(current.device)
        return latents_to_rgb(predicted_x0(current, previous, sigmas[i + 1], sigmas[i])[0])

    def _require_pipe(self) -> Any:
        if self._pipe is None:
            raise ModelError("no model is loaded", "load a model first")
        return self._pipe


def _seed_error() -> FieldError:
    return FieldError("seed", f"must be a number from 0 to {SEED_MAX}; resolve 'random' first")


def _raise_if_cancelled(cancel: threading.Event | None, step: int) -> None:
    if cancel is not None and cancel.is_set():
        raise GenerationCancelled(step)


def _repeat(tensor: Any, batch: int) -> Any:
    if tensor is None or batch == 1:
        return tensor
    return tensor.repeat(batch, *([1] * (tensor.dim() - 1)))


def _initial_latents(params: GenerationParams, pipe: Any) -> Any:
    import torch

    channels = pipe.transformer.config.in_channels
    scale = pipe.vae_scale_factor
    shape = (1, channels, params.height // scale, params.width // scale)
    noise = []
    for k in range(params.batch_size):
        seed = params.for_image(k).seed
        assert seed is not None  # generate() checked for a concrete seed
        generator = torch.Generator("cpu").manual_seed(seed)
        noise.append(torch.randn(shape, generator=generator, dtype=torch.float32))
    return torch.cat(noise)


def _set_shift(pipe: Any, shift: float) -> None:
    if float(pipe.scheduler.config.get("shift", 1.0)) != float(shift):
        pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, shift=float(shift))


def _wants_tiling(params: GenerationParams, loaded: LoadedModel | None) -> bool:
    light = loaded is not None and loaded.plan.placement is not Placement.device
    return params.width * params.height > VAE_TILING_PIXELS or (
        light and params.width * params.height > 1024 * 1024
    )


def _decode(pipe: Any, latents: Any, params: GenerationParams) -> Image.Image:
    vae = pipe.vae
    latents = latents / vae.config.scaling_factor + vae.config.shift_factor
    decoded = vae.decode(latents.to(vae.dtype), return_dict=False)[0]
    return pipe.image_processor.postprocess(decoded, output_type="pil")[0]
