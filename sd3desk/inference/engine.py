"""The SD3 engine: load a model through diffusers, turn a GenerationParams into images."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from PIL import Image, ImageFilter

from sd3desk.core.errors import (
    FieldError,
    GenerationCancelled,
    InvalidParamsError,
    ModelError,
    OutOfMemoryError,
    SD3DeskError,
)
from sd3desk.core.loras import LoraRef
from sd3desk.core.metadata import ModelIdentity
from sd3desk.core.modelhash import model_hash
from sd3desk.core.params import (
    SEED_MAX,
    SLG_LAYERS,
    SLG_START,
    SLG_STOP,
    GenerationParams,
    PromptLength,
    check,
    defaults_for,
    picture_steps,
)
from sd3desk.core.settings import Device, MemoryPlan, Speed, hash_cache_file
from sd3desk.core.sources import fit
from sd3desk.inference import loading
from sd3desk.inference.devices import (
    GIB,
    PLAN_QUANTS,
    DeviceInfo,
    Placement,
    ResolvedPlan,
    free_memory,
    gc_paused,
    is_out_of_memory,
    lighter_plans,
    pick_device,
    place_pipeline,
    quiet_libraries,
    resolve_plan,
    torch_dtype,
)
from sd3desk.inference.loading import LoadStage
from sd3desk.inference.lora import LoraSet
from sd3desk.inference.models import ModelKind, ModelSource
from sd3desk.inference.preview import (
    PreviewQueue,
    decoded_rgb,
    latents_to_rgb,
    load_decoder,
    predicted_x0,
)
from sd3desk.inference.quant import Quant, quantize_fp8
from sd3desk.inference.speed import make_fast, use_compile_cache
from sd3desk.inference.speed import unavailable as speed_unavailable

# Above this many pixels the VAE decodes in tiles, so big images fit in modest VRAM.
VAE_TILING_PIXELS = 1536 * 1536
_LOAD_LOCK = threading.Lock()
log = logging.getLogger(__name__)


def oom_advice(device: DeviceInfo, plan: ResolvedPlan | None = None) -> str:
    """What to try after running out of memory: a smaller job, or a plan lighter than all in
    16-bit that this device can run (the quantized ones first: they keep the speed), other
    than `plan` itself."""
    current = (plan.t5_quant, plan.mmdit_quant) if plan and plan.quantized else None
    lighter = [
        repr(p.value)
        for p in lighter_plans(device, plan.use_t5 if plan else True)
        if current is None or PLAN_QUANTS.get(p) != current
    ]
    plans = f", or a lighter memory plan ({', '.join(lighter)})" if lighter else ""
    return (
        f"Try a smaller size or fewer images per job{plans}. Memory has been freed; the next "
        "job can run normally."
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
    speed: Speed = Speed.off
    preview: str = "linear"  # how step previews are made: "linear" (x0 factors) or "taesd3"

    def describe(self) -> str:
        fast = "" if self.speed is Speed.off else f" · {self.speed.value}"
        shown = " · TAESD3 previews" if self.preview == "taesd3" else ""
        return (
            f"{self.identity.name} on {self.device.describe()} · {self.plan.describe()}{fast}"
            f"{shown}"
        )

    def made_with(self) -> tuple[tuple[str, str], ...]:
        """How images are made, for their metadata (the request says what is made)."""
        return (
            ("device", f"{self.device.name} · {self.device.dtype}"),
            ("memory", self.plan.describe()),
            ("speed", self.speed.value),
        )


@dataclass(frozen=True)
class GenerationResult:
    """Images of one request; `params[k]` re-makes `images[k]` on its own (seed + k)."""

    images: list[Image.Image]
    params: list[GenerationParams]
    model: ModelIdentity
    timings: dict[str, float]
    prompt_cache_hit: bool
    notices: tuple[str, ...] = ()  # what the user should know about this run
    made_with: tuple[tuple[str, str], ...] = ()  # device, memory plan, speed (LoadedModel)


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
        self._picture_pipes: dict[str, Any] = {}  # img2img, inpaint: from_pipe of _pipe
        self._loras: LoraSet | None = None  # the LoRAs loaded into _pipe
        self._loaded: LoadedModel | None = None
        self._key: tuple = ()  # what load() was asked for: a switch back finds it parked
        self._parked: _Parked | None = None  # the model before the last switch, in RAM
        self._warmed: set[tuple[int, int]] = set()  # sizes fast mode compiled for (warm_up)
        # TAESD3 for previews: its folder as last set, and the decoder (None: linear previews);
        # kept across models (it depends on the device only)
        self._decoder_folder: Path | None = None
        self._decoder: Any = None

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
        speed: Speed = Speed.off,
    ) -> LoadedModel:
        """Load `source` (unloading any other model first) and place it per `plan`; without T5
        when `use_t5` is False (the user's setting) or the plan is no-t5; made fast per
        `speed` (the compile itself happens in `warm_up` or the first job)."""
        # 1. device, dtype and a concrete memory plan from the weights' sizes
        quiet_libraries()
        device = self.device()
        why = speed_unavailable(speed, device)
        if why:
            raise SD3DeskError(f"fast mode {speed.value!r} cannot run here: {why}")
        bytes_per_param = 4 if device.dtype == "float32" else 2
        # (everything that will be loaded: the text encoders a single file borrows included)
        sizes = source.load_bytes(bytes_per_param, use_t5)
        resolved = resolve_plan(
            plan,
            device,
            sizes,
            has_t5=use_t5,
            mmdit_quantizable=source.kind is not ModelKind.gguf,
            t5_quantizable=loading.t5_quantizable(source, self._model_dirs),
        )
        # 2. the model parked by the last switch comes back from RAM if it is this one;
        # otherwise the previous model is parked (RAM allowing) or freed before reading
        key = (source, plan, use_t5, speed)
        parked, self._parked = self._parked, None
        self._park(sum(sizes.values()))
        if parked is not None and parked.key == key:
            back = self._unpark(parked)
            if back is not None:
                return back
        if parked is not None:  # another model: its memory goes back
            parked = None
            free_memory(device)
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
                    storage=loading.Storage(
                        resolved.t5_quant,
                        resolved.mmdit_quant,
                        device.torch_device,
                        # all on a GPU: weights read straight onto it, no copy in RAM first
                        direct=device.kind == "cuda" and resolved.placement is Placement.device,
                    ),
                )
            resolved = replace(
                resolved, use_t5=use_t5, t5_quant=resolved.t5_quant if use_t5 else None
            )
            # 4. place the weights (an fp8 MMDiT is quantized on the device first, so that it
            # is never there in 16-bit beside the rest)
            loading.report_stage(on_stage, loading.PLACE_STAGE, "Moving the model to the device")
            if resolved.mmdit_quant is Quant.fp8:
                quantize_fp8(pipe.transformer, device.torch_device)
            place_pipeline(pipe, resolved.placement, device)
            if speed is not Speed.off:  # 5. fast mode
                use_compile_cache(self._cache_dir)
                # (a quantized or GGUF MMDiT: its weights can be neither joined nor quantized
                # again, so fast mode compiles it as it is)
                plain = not resolved.mmdit_quant and source.kind is not ModelKind.gguf
                make_fast(pipe, speed, device, plain_mmdit=plain)
                if speed is Speed.fastest and not plain:
                    notices.append(
                        "'fastest' left its fp8 step out: the MMDiT is stored quantized "
                        f"already ({resolved.describe()}); it runs as 'fast'"
                    )
            if plan is MemoryPlan.auto and resolved.quantized:
                notices.append(
                    f"{resolved.describe()} so that {source.name} fits in the "
                    f"{(device.free_bytes or 0) / GIB:.1f} GB free; images differ slightly "
                    "from 16-bit ones (the 'gpu' plan, on a card with room for it)"
                )
        except SD3DeskError:
            free_memory(device)
            raise
        except Exception as exc:
            free_memory(device)
            if is_out_of_memory(exc):
                raise OutOfMemoryError(
                    f"out of memory while loading {source.name}", oom_advice(device, resolved)
                ) from exc
            raise ModelError(
                f"{source.name} could not be loaded: {exc}",
                "the files may be incomplete or of an unsupported variant",
                path=str(source.path),
            ) from exc
        loaded = self.attach(pipe, source, resolved, notices, speed)
        self._key = key
        return loaded

    def _park(self, next_bytes: int) -> None:
        """Keep the loaded model in RAM for a switch back, when it sits all on the device in
        16-bit and RAM has room for it and for what comes next; otherwise unload it.

        From a GPU the weights move to ordinary (pageable) RAM, not pinned: PyTorch's pinned
        allocator rounds every tensor up to a power of two and keeps the memory locked after
        it is freed, so a parked 17 GB model could lock ~25 GB for good."""
        loaded = self._loaded
        if loaded is None:
            return
        device = loaded.device
        # a GPU model moves to RAM; either way the next one may be read through RAM beside it
        needed = next_bytes
        if device.kind == "cuda":
            needed += sum(p.numel() * p.element_size() for p in _parameters(self._pipe))
        keep = (
            device.kind in ("cuda", "cpu")
            and loaded.plan.placement is Placement.device
            and not loaded.plan.quantized
            and loaded.source.kind is not ModelKind.gguf
            and available_ram() - needed > PARK_RESERVE
        )
        if keep and device.kind == "cuda":
            try:
                _move(self._pipe, "cpu")
            except Exception:  # (out of RAM, a module that cannot move): not worth keeping
                log.info("could not park %s", loaded.source.name, exc_info=True)
                keep = False
        if not keep:
            self.unload()
            return
        self._parked = _Parked(
            self._key, self._pipe, loaded, self._loras, self._picture_pipes, self._prompt_cache
        )
        self._pipe, self._loaded, self._loras = None, None, None
        self._picture_pipes, self._prompt_cache = {}, OrderedDict()

    def _unpark(self, parked: _Parked) -> LoadedModel | None:
        """The parked model back on its device, as it was (LoRAs, prompt cache and all); None
        when it no longer fits there (it is dropped and read again)."""
        device = parked.loaded.device
        if device.kind == "cuda":
            try:
                _move(parked.pipe, device.torch_device)
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                del parked
                free_memory(device)
                return None
        self._pipe, self._loaded, self._loras = parked.pipe, parked.loaded, parked.loras
        self._picture_pipes, self._prompt_cache = parked.picture_pipes, parked.prompt_cache
        self._key = parked.key
        self._note_preview()
        return self._loaded

    def attach(
        self,
        pipe: Any,
        source: ModelSource,
        plan: ResolvedPlan,
        notices: Sequence[str] = (),
        speed: Speed = Speed.off,
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
        self._picture_pipes.clear()
        self._warmed.clear()
        self._loras = LoraSet(pipe)
        self._loaded = LoadedModel(
            source, identity, self.device(), plan, tuple(notices), speed, self.preview_kind
        )
        return self._loaded

    @property
    def preview_kind(self) -> str:
        """How step previews are made now: "taesd3" or "linear"."""
        return "linear" if self._decoder is None else "taesd3"

    def set_preview_decoder(self, folder: Path | None) -> None:
        """Make previews with the TAESD3 in `folder`, or with the linear x0 map (None). Loaded
        here, once per folder (the worker calls this before each job); one that cannot be loaded
        is logged and the linear previews stay: a preview never fails a job."""
        if folder == self._decoder_folder:
            return
        self._decoder_folder, self._decoder = folder, None
        if folder is not None:
            device = self.device()
            try:
                with _LOAD_LOCK:  # (diffusers' loaders patch torch globally while they run)
                    self._decoder = load_decoder(
                        folder, device.torch_device, torch_dtype(device.dtype)
                    )
            except Exception as exc:
                log.warning("linear previews: the preview decoder in %s failed: %s", folder, exc)
        self._note_preview()

    def _note_preview(self) -> None:
        if self._loaded is not None and self._loaded.preview != self.preview_kind:
            self._loaded = replace(self._loaded, preview=self.preview_kind)

    def needs_warm_up(self, width: int, height: int) -> bool:
        """Fast mode has not compiled for this size since the model was loaded."""
        loaded = self.loaded_model()
        return loaded.speed is not Speed.off and (width, height) not in self._warmed

    def warm_up(self, width: int, height: int) -> float:
        """In fast mode, compile for `width` x `height` now (two small steps, nothing kept),
        so the first job does not wait for it; seconds taken (0 when there is nothing to do)."""
        if not self.needs_warm_up(width, height):
            return 0.0
        loaded = self.loaded_model()
        started = time.perf_counter()
        request = defaults_for(loaded.source.family, "warm-up").replace(
            steps=2, seed=0, width=width, height=height
        )
        self.generate(request)
        self._warmed.add((width, height))
        return time.perf_counter() - started

    def unload(self) -> None:
        """Drop the model (and one parked from the last switch) and give its memory back."""
        dropped, self._parked = self._parked, None
        if self._pipe is None:
            if dropped is not None:
                dropped = None
                free_memory(self._device)
            return
        self._pipe = None
        self._picture_pipes.clear()
        self._loras = None
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
            self._loras.text_key(params.loras) if self._loras else (),
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
        *,
        source: Image.Image | None = None,
        mask: Image.Image | None = None,
        loras: Sequence[tuple[LoraRef, Path]] = (),
    ) -> GenerationResult:
        """Run one request: from noise, or from `source` (img2img) and `mask` (inpainting),
        the pictures `params.source_image` and `params.mask_image` name, with the files of
        `params.loras` in `loras`. Raises InvalidParamsError, LoraError, GenerationCancelled
        or OutOfMemoryError."""
        import torch

        pipe = self._require_pipe()
        assert self._loaded is not None
        # 1. validate: every field, the model's size limit, a concrete seed, the pictures
        check(params, self._loaded.source.max_side)
        if params.seed is None:
            raise InvalidParamsError([_seed_error()])
        for field, given in (("source_image", source), ("mask_image", mask)):
            if getattr(params, field) and given is None:
                raise InvalidParamsError([FieldError(field, "the picture was not given")])
        if tuple(ref for ref, _ in loras) != params.loras:
            raise InvalidParamsError([FieldError("loras", "the LoRA files were not given")])
        _raise_if_cancelled(cancel, 0)
        timings: dict[str, float] = {}
        started = time.perf_counter()
        steps = _Steps(on_step, cancel, total_steps(params))
        try:
            # 2. the request's LoRAs on the model (loaded once, then switched by weight)
            assert self._loras is not None
            notices = self._loras.apply(loras)
            timings["lora_s"] = time.perf_counter() - started
            with torch.inference_mode():
                # 3. encode the prompt (cached: a new seed skips all three text encoders)
                embeds, hit = self._encode(params)
                timings["encode_s"] = time.perf_counter() - started
                _raise_if_cancelled(cancel, 0)
                denoise_start = time.perf_counter()
                if source is None:
                    # 4. initial noise from a CPU generator per image: the same on every device
                    latents = _initial_latents(params, pipe)
                    # 5. denoise, reporting every step and honouring cancel within one step
                    latents = self._denoise(params, embeds, latents, steps)
                    timings["denoise_s"] = time.perf_counter() - denoise_start
                    # 6. decode one image at a time (bounded memory; batch image k == single run)
                    decode_start = time.perf_counter()
                    images = []
                    for k in range(params.batch_size):
                        _raise_if_cancelled(cancel, steps.done)
                        images.append(_decode(pipe, latents[k : k + 1], params))
                    timings["decode_s"] = time.perf_counter() - decode_start
                    if params.hires:  # 7. upscale each, and img2img over it at the new size
                        hires_start = time.perf_counter()
                        images = [
                            self._hires(params.for_image(k), embeds, image, steps)
                            for k, image in enumerate(images)
                        ]
                        timings["hires_s"] = time.perf_counter() - hires_start
                else:
                    # 4-6. from the picture, fitted to the request's size, as the user saw it
                    images = self._from_picture(params, embeds, source, mask, steps)
                    timings["denoise_s"] = time.perf_counter() - denoise_start
        except (GenerationCancelled, SD3DeskError):
            raise
        except Exception as exc:
            if is_out_of_memory(exc):
                free_memory(self._device)
                size = "x".join(map(str, params.hires_size() if params.hires else ()))
                raise OutOfMemoryError(
                    f"the device ran out of memory at {params.width}x{params.height}"
                    + (f" (hires {size})" if size else "")
                    + f" with {params.batch_size} image(s)",
                    oom_advice(self.device(), self._loaded.plan),
                ) from exc
            raise
        timings["total_s"] = time.perf_counter() - started
        per_image = [params.for_image(k) for k in range(params.batch_size)]
        return GenerationResult(
            images,
            per_image,
            self._loaded.identity,
            timings,
            hit,
            tuple(notices),
            self._loaded.made_with(),
        )

    def _denoise(self, params: GenerationParams, embeds: tuple, latents: Any, steps: _Steps) -> Any:
        """The text-to-image pass (with skip-layer guidance when asked), to latents."""
        pipe = self._pipe
        _set_shift(pipe, params.shift)
        _set_tiling(pipe, params, self._loaded)
        batch = params.batch_size
        extra: dict[str, Any] = {}
        if params.slg_scale > 0:
            layers = SLG_LAYERS.get(self._loaded.source.family) if self._loaded else None
            if layers:  # (another family: no layers known to skip, so it does nothing)
                extra = {
                    "skip_guidance_layers": list(layers),
                    "skip_layer_guidance_scale": params.slg_scale,
                    "skip_layer_guidance_start": SLG_START,
                    "skip_layer_guidance_stop": SLG_STOP,
                }
        return pipe(
            **_embeds_for(embeds, batch),
            num_inference_steps=params.steps,
            guidance_scale=params.guidance_scale,
            height=params.height,
            width=params.width,
            latents=latents,
            max_sequence_length=params.max_sequence_length,
            output_type="latent",
            callback_on_step_end=steps.callback(self, latents[:1]),
            callback_on_step_end_tensor_inputs=["latents"],
            **extra,
        ).images

    def _picture_pipe(self, kind: str) -> Any:
        """The img2img or inpainting pipeline over the loaded one's components (diffusers'
        from_pipe: the same weights, no second copy), made on first use."""
        found = self._picture_pipes.get(kind)
        if found is None:
            from diffusers import StableDiffusion3Img2ImgPipeline, StableDiffusion3InpaintPipeline

            cls = (
                StableDiffusion3InpaintPipeline
                if kind == "inpaint"
                else StableDiffusion3Img2ImgPipeline
            )
            # (from_pipe casts every shared component to its dtype, float32 unless told)
            found = cls.from_pipe(self._pipe, dtype=self._pipe.transformer.dtype)
            found.set_progress_bar_config(disable=True)
            self._picture_pipes[kind] = found
        return found

    def _picture_pass(
        self,
        params: GenerationParams,
        embeds: tuple,
        image: Image.Image,
        steps: _Steps,
        *,
        strength: float,
        num_steps: int,
        seeds: list[int],
        mask: Image.Image | None = None,
    ) -> Any:
        """One denoising pass from `image` (already at the pass's size) to latents."""
        import torch

        pipe = self._picture_pipe("inpaint" if mask is not None else "img2img")
        _set_shift(pipe, params.shift)
        width, height = image.size
        _set_tiling(pipe, params.replace(width=width, height=height), self._loaded)
        extra: dict[str, Any] = {} if mask is None else {"mask_image": [mask] * len(seeds)}
        return pipe(
            **_embeds_for(embeds, len(seeds)),
            image=[image] * len(seeds),
            strength=strength,
            num_inference_steps=num_steps,
            guidance_scale=params.guidance_scale,
            height=height,
            width=width,
            # a CPU generator per image: the same noise (and VAE sample) on every device
            generator=[torch.Generator("cpu").manual_seed(seed) for seed in seeds],
            max_sequence_length=params.max_sequence_length,
            output_type="latent",
            callback_on_step_end=steps.callback(self, None),
            callback_on_step_end_tensor_inputs=["latents"],
            **extra,
        ).images

    def _from_picture(
        self,
        params: GenerationParams,
        embeds: tuple,
        source: Image.Image,
        mask: Image.Image | None,
        steps: _Steps,
    ) -> list[Image.Image]:
        """img2img, or inpainting with the result pasted over the source through the blurred
        mask (what is not masked stays the source's pixels exactly)."""
        size = (params.width, params.height)
        picture = fit(source.convert("RGB"), *size)
        seeds = [params.for_image(k).seed or 0 for k in range(params.batch_size)]
        common = {"strength": params.strength, "num_steps": params.steps, "seeds": seeds}
        if mask is None:
            latents = self._picture_pass(params, embeds, picture, steps, **common)
            return [self._decoded(latents, k, params, steps) for k in range(len(seeds))]
        feather = fit(mask.convert("L"), *size)
        if params.mask_blur:
            feather = feather.filter(ImageFilter.GaussianBlur(params.mask_blur))
        if params.mask_padding and feather.getbbox() is not None:
            # only the masked area (and a margin), at the request's full size, then put back
            box = self._picture_pipe("inpaint").mask_processor.get_crop_region(
                feather, params.width, params.height, pad=params.mask_padding
            )
            region = picture.crop(box).resize(size, Image.Resampling.LANCZOS)
            region_mask = feather.crop(box).resize(size, Image.Resampling.LANCZOS)
            latents = self._picture_pass(params, embeds, region, steps, mask=region_mask, **common)
            made = []
            for k in range(len(seeds)):
                whole = picture.copy()
                crop = self._decoded(latents, k, params, steps)
                whole.paste(
                    crop.resize((box[2] - box[0], box[3] - box[1]), Image.Resampling.LANCZOS),
                    box[:2],
                )
                made.append(whole)
        else:
            latents = self._picture_pass(params, embeds, picture, steps, mask=feather, **common)
            made = [self._decoded(latents, k, params, steps) for k in range(len(seeds))]
        return [Image.composite(image, picture, feather) for image in made]

    def _hires(
        self, params: GenerationParams, embeds: tuple, image: Image.Image, steps: _Steps
    ) -> Image.Image:
        """The hires fix of one image: Lanczos to the hires size, then img2img over it."""
        width, height = params.hires_size()
        bigger = image.resize((width, height), Image.Resampling.LANCZOS)
        latents = self._picture_pass(
            params,
            embeds,
            bigger,
            steps,
            strength=params.hires_strength,
            num_steps=params.hires_pass_steps(),
            seeds=[params.seed or 0],
        )
        return self._decoded(latents, 0, params.replace(width=width, height=height), steps)

    def _decoded(self, latents: Any, k: int, params: GenerationParams, steps: _Steps) -> Any:
        _raise_if_cancelled(steps.cancel, steps.done)
        return _decode(self._pipe, latents[k : k + 1], params)

    def _preview_rgb(self, pipe: Any, current: Any, previous: Any) -> Any:
        """The x0 prediction of the step just taken, as RGB (see preview.py): through TAESD3
        when it is loaded, else at latent size by the linear map. The scheduler's step index
        says where in the schedule it was (a pass from a picture starts part-way)."""
        previous = previous.to(device=current.device, dtype=current.dtype)
        sigmas = pipe.scheduler.sigmas.to(current.device)
        index = pipe.scheduler.step_index
        x0 = predicted_x0(current, previous, sigmas[index], sigmas[index - 1])
        if self._decoder is not None:
            try:
                return decoded_rgb(self._decoder, x0)
            except Exception as exc:  # (out of memory, an odd decoder: never the job's end)
                log.warning("linear previews from now on: the preview decoder failed: %s", exc)
                self._decoder = None
                self._note_preview()
        return latents_to_rgb(x0[0])

    def _require_pipe(self) -> Any:
        if self._pipe is None:
            raise ModelError("no model is loaded", "load a model first")
        return self._pipe


class _Steps:
    """Step reports over every pass of one job: a hires job's passes are one bar."""

    def __init__(
        self,
        on_step: Callable[[StepInfo], None] | None,
        cancel: threading.Event | None,
        total: int,
    ) -> None:
        self.on_step, self.cancel, self.total = on_step, cancel, total
        self.done = 0
        self.start = self.last = time.perf_counter()
        self.previews = PreviewQueue()

    def callback(self, engine: Engine, first: Any) -> Callable[..., dict[str, Any]]:
        """A diffusers step-end callback for one pass; `first`: the latents it starts from
        (None when the pipeline makes them: that pass's first step has no preview)."""
        state = {"previous": first}

        def step_end(pipeline: Any, i: int, t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            # Raising here stops the pipeline before its next step and before any VAE decode.
            self.done += 1
            _raise_if_cancelled(self.cancel, self.done)
            if self.on_step is not None:
                now = time.perf_counter()
                current = tensors["latents"][:1]
                if state["previous"] is not None:
                    self.previews.submit(engine._preview_rgb(pipeline, current, state["previous"]))
                state["previous"] = current
                info = StepInfo(
                    self.done, self.total, now - self.start, now - self.last, self.previews.latest()
                )
                self.on_step(info)
                self.last = now
                _raise_if_cancelled(self.cancel, self.done)  # cancelled from the report itself
            return {}

        return step_end


def total_steps(params: GenerationParams) -> int:
    """The denoising steps a request runs, every pass and image counted."""
    if params.source_image:
        return picture_steps(params.steps, params.strength)
    hires = picture_steps(params.hires_pass_steps(), params.hires_strength) if params.hires else 0
    return params.steps + params.batch_size * hires


def _embeds_for(embeds: tuple, batch: int) -> dict[str, Any]:
    prompt_embeds, negative_embeds, pooled, negative_pooled = embeds
    return {
        "prompt_embeds": _repeat(prompt_embeds, batch),
        "pooled_prompt_embeds": _repeat(pooled, batch),
        "negative_prompt_embeds": _repeat(negative_embeds, batch),
        "negative_pooled_prompt_embeds": _repeat(negative_pooled, batch),
    }


def _set_tiling(pipe: Any, params: GenerationParams, loaded: LoadedModel | None) -> None:
    if _wants_tiling(params, loaded):
        pipe.vae.enable_tiling()
    else:
        pipe.vae.disable_tiling()


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
    pixels = params.width * params.height
    if loaded is not None and loaded.plan.quantized:  # a plan for small GPUs: less headroom
        return pixels >= 1024 * 1024
    light = loaded is not None and loaded.plan.placement is not Placement.device
    return pixels > VAE_TILING_PIXELS or (light and pixels > 1024 * 1024)


def _decode(pipe: Any, latents: Any, params: GenerationParams) -> Image.Image:
    vae = pipe.vae
    latents = latents / vae.config.scaling_factor + vae.config.shift_factor
    decoded = vae.decode(latents.to(vae.dtype), return_dict=False)[0]
    return pipe.image_processor.postprocess(decoded, output_type="pil")[0]


# RAM left free when a model is parked (the rest of the app, the next model's loading)
PARK_RESERVE = 4 * GIB


@dataclass
class _Parked:
    """A model kept in RAM after a switch, with everything made for it."""

    key: tuple
    pipe: Any
    loaded: LoadedModel
    loras: LoraSet | None
    picture_pipes: dict[str, Any]
    prompt_cache: OrderedDict[tuple, tuple]


def available_ram() -> int:
    """Bytes of RAM the system can give without swapping."""
    import psutil  # (accelerate's dependency)

    return int(psutil.virtual_memory().available)


def _modules(pipe: Any) -> list[Any]:
    import torch

    return [m for m in pipe.components.values() if isinstance(m, torch.nn.Module)]


def _parameters(pipe: Any) -> list[Any]:
    return [t for m in _modules(pipe) for t in (*m.parameters(), *m.buffers())]


def _move(pipe: Any, device: str) -> None:
    """Every component of `pipe` to `device` (a GPU: synchronised before it is used)."""
    import torch

    for module in _modules(pipe):
        module.to(device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
