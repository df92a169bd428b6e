"""The `sd3desk` command line, and the one argument parser of every front door: no command opens
the window; `generate`, `queue`, `models`, `make-test-model` and `self-test` work in a terminal.
Imports torch only when a command needs it."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sd3desk import __version__
from sd3desk.core.errors import (
    ExitCode,
    FieldError,
    FolderBusyError,
    InvalidParamsError,
    ModelError,
    SD3DeskError,
)
from sd3desk.core.jobs import JobState
from sd3desk.core.loras import LORA_MAX, WEIGHT_MAX, WEIGHT_MIN, LoraRef
from sd3desk.core.params import (
    ASPECT_MAX,
    SEED_MAX,
    SIZE_PRESETS,
    GenerationParams,
    check,
    defaults_for,
    size_for_aspect,
)
from sd3desk.core.settings import AppPaths, Device, MemoryPlan, Settings, Speed, load_settings

log = logging.getLogger("sd3desk")


class _Parser(argparse.ArgumentParser):
    """argparse, with our exit code for bad arguments (2) and no traceback."""

    def error(self, message: str) -> Any:
        self.print_usage(sys.stderr)
        self.exit(ExitCode.usage, f"{self.prog}: error: {message}\n")


def _seed(text: str) -> int | None:
    if text.lower() in ("random", "-1"):
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"seed must be a number from 0 to {SEED_MAX} or 'random'"
        ) from None
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="sd3desk",
        description="Generate images with Stable Diffusion 3 on your own machine.",
        epilog="Run 'sd3desk COMMAND --help' for a command's options. "
        "Without a command, sd3desk opens its window.",
    )
    parser.add_argument("--version", action="version", version=f"sd3desk {__version__}")
    parser.add_argument("--data-dir", type=Path, help="keep settings, cache and outputs under DIR")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    parser.add_argument(
        "--model",
        dest="window_model",
        default="",
        metavar="MODEL",
        help="(window) model to select: PATH, REPO_ID or 'test'",
    )
    parser.add_argument(
        "--self-test",
        nargs="?",
        const="auto",
        choices=[d.value for d in Device],
        metavar="DEVICE",
        help="the same as the self-test command (for the windowed executable); "
        "--report FILE saves the JSON",
    )
    parser.add_argument("--report", type=Path, help=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    gen = commands.add_parser("generate", help="make images from a prompt and save them as PNG")
    _add_generation_args(gen)
    gen.add_argument("--out", type=Path, help="output folder (default: your Pictures/sd3desk)")
    _add_engine_args(gen)

    batch = commands.add_parser(
        "batch",
        help="make the images of a batch file (.txt prompts, .jsonl or .csv of settings); "
        "resumable: a re-run skips the jobs done",
    )
    batch.add_argument("file", type=Path, help="the batch file (.txt, .jsonl or .csv)")
    batch.add_argument("--model", required=True, help="as for generate (a line may name another)")
    batch.add_argument(
        "--out", type=Path, help="output folder; its manifest.jsonl lists the jobs done"
    )
    batch.add_argument("--negative", default="", help="what to avoid, where a line says nothing")
    batch.add_argument("--steps", type=_numbers(int), help="steps, or a list to sweep: 20,28")
    batch.add_argument("--guidance", type=_numbers(float), help="CFG scale, or a list: 4,5,7")
    batch.add_argument("--width", type=int, help="256-2048, a multiple of 16")
    batch.add_argument("--height", type=int, help="256-2048, a multiple of 16")
    batch.add_argument("--aspect", help="aspect ratio at about one megapixel, as for generate")
    batch.add_argument("--shift", type=float, help="scheduler shift, 0.1-20 (model default)")
    batch.add_argument("--t5-length", type=int, help="T5 max sequence length, 1-512")
    batch.add_argument("--seeds", type=int, default=1, help="images per prompt (default 1)")
    batch.add_argument(
        "--seed-start",
        type=_seed,
        default=None,
        help="first seed of each prompt (default: one derived from the prompt's text)",
    )
    batch.add_argument("--wildcards", type=Path, help="folder of NAME.txt files for __NAME__")
    _add_lora_arg(batch)
    batch.add_argument("--dry-run", action="store_true", help="print the jobs; make nothing")
    batch.add_argument("--strict", action="store_true", help="a bad line stops the batch")
    _add_engine_args(batch)

    queue = commands.add_parser("queue", help="the persistent job queue (shared with the window)")
    actions = queue.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    actions.required = True
    add = actions.add_parser("add", help="queue images without running them")
    _add_generation_args(add)
    add.add_argument("--front", action="store_true", help="put the jobs first in the queue")
    actions.add_parser("list", help="show queued, running and recent jobs with their ETA")
    actions.add_parser("pause", help="keep queued jobs waiting (remembered across restarts)")
    actions.add_parser("resume", help="let queued jobs run again")
    run = actions.add_parser(
        "run",
        help="run queued jobs until none is left (Ctrl+C stops; "
        "the running job goes back to the front)",
    )
    run.add_argument("--out", type=Path, help="output folder (default: your Pictures/sd3desk)")
    _add_engine_args(run)

    serve = commands.add_parser(
        "serve",
        help="serve the queue over HTTP: a web page, sd3desk's API (/api/v1) and "
        "AUTOMATIC1111's (/sdapi/v1); Ctrl+C stops (the running job goes back to the front)",
    )
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this computer only; 0.0.0.0: every "
        "network, which needs a token)",
    )
    serve.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    serve.add_argument(
        "--token",
        default="",
        help="the token every request must carry (Authorization: Bearer, or HTTP Basic "
        "password); made and kept in the config folder when another address needs one",
    )
    serve.add_argument(
        "--model", default="", help="the model for requests that name none (PATH, REPO_ID, test)"
    )
    serve.add_argument(
        "--cors",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="a web page origin allowed to call the API, e.g. http://localhost:3000 (repeatable)",
    )
    serve.add_argument("--no-web", action="store_true", help="the APIs only, no web page")
    serve.add_argument("--out", type=Path, help="output folder (default: your Pictures/sd3desk)")
    _add_engine_args(serve)

    models = commands.add_parser("models", help="list the SD3 models sd3desk can find")
    models.add_argument(
        "--model-dir", type=Path, action="append", default=[], help="also look in DIR (repeatable)"
    )

    test = commands.add_parser(
        "self-test",
        help="check this install offline with the tiny test model (no weights, no GPU needed); "
        "prints a JSON report, exit 0 when every check passed",
    )
    test.add_argument(
        "--device",
        choices=[d.value for d in Device],
        default="auto",
        help="run the tiny model on this device (cuda/mps check the GPU libraries)",
    )
    test.add_argument("--report", type=Path, help="also write the JSON report to FILE")

    make = commands.add_parser(
        "make-test-model",
        help="write the tiny random test model "
        "(images are noise; for trying the app and for tests)",
    )
    make.add_argument(
        "path",
        type=Path,
        help="a folder (diffusers layout), a FILE.safetensors (single-file checkpoint) or a "
        "FILE.gguf (the MMDiT alone, quantized; --quant)",
    )
    make.add_argument(
        "--quant", choices=("Q8_0", "Q5_0", "Q4_0"), default="Q8_0", help="GGUF file: weights in"
    )
    make.add_argument("--size", choices=("tiny", "small", "medium"), default="tiny")
    make.add_argument("--no-clips", action="store_true", help="single file: leave out CLIP-L/G")
    make.add_argument("--no-t5", action="store_true", help="single file: leave out T5")
    return parser


def _add_generation_args(gen: argparse.ArgumentParser) -> None:
    gen.add_argument(
        "--model",
        required=True,
        help="a .safetensors file, a GGUF transformer (.gguf; the rest from an SD3 diffusers "
        "folder), a diffusers folder, a Hugging Face repo id (from the local cache), or 'test'",
    )
    gen.add_argument("--prompt", required=True, help="what to draw")
    gen.add_argument("--negative", default="", help="what to avoid (only used when guidance > 1)")
    gen.add_argument(
        "--seed",
        type=_seed,
        default=None,
        help=f"0-{SEED_MAX}, or 'random' (default); image k of --count uses seed + k",
    )
    gen.add_argument("--steps", type=int, help="denoising steps, 1-150 (model default)")
    gen.add_argument(
        "--guidance", type=float, help="CFG scale, 0-30; <= 1 turns CFG off (model default)"
    )
    gen.add_argument("--width", type=int, help="256-2048, a multiple of 16")
    gen.add_argument("--height", type=int, help="256-2048, a multiple of 16")
    gen.add_argument(
        "--aspect",
        help="aspect ratio at about one megapixel: "
        + ", ".join(p.name for p in SIZE_PRESETS if ":" in p.name and " " not in p.name)
        + f", or any W:H between 1:{ASPECT_MAX:g} and {ASPECT_MAX:g}:1",
    )
    gen.add_argument("--count", type=int, default=1, help="how many images (default 1)")
    gen.add_argument("--batch", type=int, default=1, help="images per job, 1-16 (default 1)")
    gen.add_argument("--shift", type=float, help="scheduler shift, 0.1-20 (model default)")
    gen.add_argument("--t5-length", type=int, help="T5 max sequence length, 1-512 (default 256)")
    pictures = gen.add_argument_group("from a picture, hires fix, skip-layer guidance")
    pictures.add_argument(
        "--image",
        type=Path,
        help="start from this picture (img2img); the size defaults to the picture's own "
        "(fitted to the model's limits), and another size crops it around the centre",
    )
    pictures.add_argument(
        "--strength", type=float, help="how much of the picture to change, 0-1 (default 0.6)"
    )
    pictures.add_argument(
        "--mask", type=Path, help="repaint where this picture is white (inpainting; --image's size)"
    )
    pictures.add_argument("--mask-blur", type=int, help="feather the mask's edge, 0-64 px (4)")
    pictures.add_argument(
        "--mask-padding",
        type=int,
        help="repaint only the masked area and this many pixels around it (1-256), at the full "
        "size (default 0: the whole picture)",
    )
    pictures.add_argument(
        "--hires",
        type=float,
        metavar="SCALE",
        help="hires fix: make the image, enlarge it x1.25-2 (Lanczos), then run img2img over it",
    )
    pictures.add_argument("--hires-steps", type=int, help="steps of the hires pass (as --steps)")
    pictures.add_argument(
        "--hires-strength", type=float, help="strength of the hires pass, 0-1 (default 0.5)"
    )
    pictures.add_argument(
        "--slg",
        type=float,
        metavar="SCALE",
        help="skip-layer guidance scale, 0-10 (SD3.5 Medium: 2.8 by default; 0 turns it off)",
    )
    _add_lora_arg(gen)


def _add_lora_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--lora",
        action="append",
        metavar="FILE[:WEIGHT]",
        help="apply a LoRA (.safetensors: kohya/Civitai, ComfyUI or diffusers layout; or the "
        f"name of one in your LoRA folders) with a weight from {WEIGHT_MIN:g} to "
        f"{WEIGHT_MAX:g} (default 1); repeat for several, up to {LORA_MAX}",
    )


def _numbers(kind: type) -> Any:
    """An argparse type: one number, or a comma-separated list of them (a sweep)."""

    def parse(text: str) -> list[Any]:
        try:
            return [kind(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a number or a list like 4,5,7"
            ) from None

    return parse


def _add_engine_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=[d.value for d in Device], help="default: auto")
    parser.add_argument(
        "--memory",
        choices=[m.value for m in MemoryPlan],
        help="memory plan (default auto: the fastest that fits); t5-8bit, t5-4bit: T5 stored "
        "in 8/4 bits; fp8, 4bit: the MMDiT too (see the README)",
    )
    parser.add_argument(
        "--fast",
        nargs="?",
        const=Speed.fast.value,
        choices=[s.value for s in Speed],
        help="fast mode: the MMDiT compiled with torch.compile (a warm-up first; cached on "
        "disk); 'fastest' adds fp8 matmuls on RTX 40xx / H100-class GPUs (default: off)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.self_test and args.command is None:
        from sd3desk.selftest import main as self_test

        return self_test(args.self_test, args.report)
    if args.command is None:  # the window; it sets up its own log file
        from sd3desk.app import main as run_window

        return run_window(args)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    paths = AppPaths.default(args.data_dir)
    handlers = {
        "generate": _generate,
        "batch": _batch,
        "queue": _queue,
        "models": _models,
        "serve": _serve,
        "make-test-model": _make_test_model,
        "self-test": _self_test,
    }
    try:
        return handlers[args.command](args, paths)
    except InvalidParamsError as exc:
        for error in exc.errors:
            print(f"sd3desk {args.command}: error: {error}", file=sys.stderr)
        return ExitCode.usage
    except ModelError as exc:
        _print_error(exc, args.verbose)
        return ExitCode.model
    except KeyboardInterrupt:
        print("\ninterrupted; no partial files were written", file=sys.stderr)
        return ExitCode.interrupted
    except FolderBusyError as exc:
        _print_error(exc, args.verbose)
        return ExitCode.busy
    except SD3DeskError as exc:
        _print_error(exc, args.verbose)
        return ExitCode.error


def _print_error(exc: SD3DeskError, verbose: bool) -> None:
    print(f"error: {exc.message}", file=sys.stderr)
    if exc.advice:
        print(f"  {exc.advice}", file=sys.stderr)
    if verbose and exc.__cause__ is not None:
        log.exception("cause", exc_info=exc.__cause__)


# ---------------------------------------------------------------- generate


def _explicit_params(args: argparse.Namespace) -> dict[str, Any]:
    values: dict[str, Any] = {
        "prompt": args.prompt,
        "negative_prompt": args.negative,
        "seed": args.seed,
        **_size_fields(args),
    }
    for name, attr in (("steps", "steps"), ("guidance_scale", "guidance")):
        if getattr(args, attr) is not None:
            values[name] = getattr(args, attr)
    values["batch_size"] = args.batch
    for name, attr in (
        ("strength", "strength"),
        ("mask_blur", "mask_blur"),
        ("mask_padding", "mask_padding"),
        ("hires_scale", "hires"),
        ("hires_steps", "hires_steps"),
        ("hires_strength", "hires_strength"),
        ("slg_scale", "slg"),
    ):
        if getattr(args, attr, None) is not None:
            values[name] = getattr(args, attr)
    return values


def _picture_fields(
    args: argparse.Namespace, paths: AppPaths, explicit: dict[str, Any], max_side: int
) -> dict[str, Any]:
    """--image and --mask stored in the data folder's picture store (jobs name them by their
    SHA-256), and the picture's own size where no size was given."""
    unused = [
        FieldError(field, f"{flag} needs {needed}")
        for field, flag, needed, given in (
            ("mask_image", "--mask", "--image", args.mask is not None and args.image is None),
            (
                "strength",
                "--strength",
                "--image (the hires pass: --hires-strength)",
                args.strength is not None and args.image is None,
            ),
            ("mask_blur", "--mask-blur", "--mask", args.mask_blur is not None and not args.mask),
            (
                "mask_padding",
                "--mask-padding",
                "--mask",
                args.mask_padding is not None and not args.mask,
            ),
        )
        if given
    ]
    if unused:
        raise InvalidParamsError(unused)
    if args.image is None:
        return {}
    from sd3desk.core.sources import SourceStore, suggested_size

    store = SourceStore(paths.sources)
    values: dict[str, Any] = {"source_image": store.put_file(args.image)}
    if args.mask is not None:
        values["mask_image"] = store.put_file(args.mask, "mask_image")
    picture = store.open(values["source_image"])
    if "width" not in explicit and "height" not in explicit:
        values["width"], values["height"] = suggested_size(*picture.size, max_side)
    return values


def _size_fields(args: argparse.Namespace) -> dict[str, Any]:
    """Size (--aspect, or --width/--height), shift and T5 length, where given."""
    values: dict[str, Any] = {}
    if args.aspect:
        if args.width or args.height:
            raise InvalidParamsError(
                [FieldError("aspect", "give --aspect or --width/--height, not both")]
            )
        values["width"], values["height"] = size_for_aspect(args.aspect)
    for name, attr in (
        ("width", "width"),
        ("height", "height"),
        ("shift", "shift"),
        ("max_sequence_length", "t5_length"),
    ):
        if getattr(args, attr) is not None:
            values[name] = getattr(args, attr)
    return values


def _lora_refs(specs: list[str] | None, paths: AppPaths) -> tuple[LoraRef, ...]:
    """--lora FILE[:WEIGHT] as the references a job carries: a file anywhere (hashed once,
    then found again by its hash), or the name of one in the LoRA folders. A LoRA for another
    architecture is refused here, before anything is queued."""
    if not specs:
        return ()
    from sd3desk.core.loras import LoraLibrary, parse_lora_spec, require_sd3
    from sd3desk.core.settings import lora_dirs

    library = LoraLibrary(lora_dirs(paths, load_settings(paths.settings_file)), paths.hash_cache)
    refs = []
    for spec in specs:
        target, weight = parse_lora_spec(spec)
        path = Path(target).expanduser()
        if not path.exists():  # a name in the LoRA folders
            path = library.find(LoraRef(path.name.removesuffix(".safetensors"), "", weight))
        require_sd3(path)
        refs.append(library.ref(path.resolve(), weight))
    return tuple(refs)


def _model_reference(model: str) -> str:
    """What goes into each image's parameters for --model: a local path made absolute, so a
    re-run from elsewhere finds the same file; a repo id or "test" as given."""
    from sd3desk.inference.models import TEST_MODEL_REFS

    local = model not in TEST_MODEL_REFS and Path(model).exists()
    return str(Path(model).resolve()) if local else model


def _jobs_from_args(args: argparse.Namespace, paths: AppPaths) -> list[GenerationParams]:
    """The validated requests for --count images in jobs of --batch (image k: seed + k)."""
    from sd3desk.inference.models import resolve_model

    # 1. what was given, against the app's own ranges, before touching any model
    explicit = _explicit_params(args) | {"loras": _lora_refs(args.lora, paths)}
    if not 1 <= args.count <= 10_000:
        raise InvalidParamsError([FieldError("count", "must be between 1 and 10000")])
    # (a placeholder picture, so that the fields of starting from one are checked now)
    placeholder: dict[str, Any] = {"source_image": "0" * 64} if args.image is not None else {}
    check(GenerationParams(**explicit, **placeholder))
    # 2. the model (offline, headers only) and its family's defaults and limits; the pictures
    source = resolve_model(args.model, test_model_dir=paths.test_model)
    base = defaults_for(source.family, model=_model_reference(args.model))
    explicit |= _picture_fields(args, paths, explicit, source.max_side)
    params = check(base.replace(**explicit), source.max_side).with_concrete_seed()
    if params.source_image:
        from sd3desk.core.sources import SourceStore

        SourceStore(paths.sources).check(params)
    jobs = []
    for first in range(0, args.count, params.batch_size):
        size = min(params.batch_size, args.count - first)
        jobs.append(params.for_image(first).replace(batch_size=size))
    return jobs


def _settings(args: argparse.Namespace, paths: AppPaths, **changes: Any) -> Settings:
    """The saved settings with this command's --device, --memory and --out applied."""
    settings = load_settings(paths.settings_file)
    if getattr(args, "device", None):
        changes["device"] = Device(args.device)
    if getattr(args, "memory", None):
        changes["memory_plan"] = MemoryPlan(args.memory)
    if getattr(args, "fast", None):
        changes["speed"] = Speed(args.fast)
    if getattr(args, "out", None):
        changes["output_dir"] = str(args.out)
    return dataclasses.replace(settings, **changes)


def _report(outcome: Any) -> int:
    """Failures were printed as they happened (as notices); the exit code says the kind."""
    if outcome.interrupted:
        print("interrupted; no partial files were written", file=sys.stderr)
    return outcome.exit_code()


def _self_test(args: argparse.Namespace, paths: AppPaths) -> int:
    from sd3desk.selftest import main as self_test

    return self_test(args.device, args.report)


def _generate(args: argparse.Namespace, paths: AppPaths) -> int:
    """Generate through the same runner and worker as the window, on a queue in memory."""
    from sd3desk.headless import TerminalProgress, run_queue
    from sd3desk.runtime.runtime import IN_MEMORY, build_runtime

    jobs = _jobs_from_args(args, paths)
    # one worker: image k of --count lands as the k-th file, whatever the number of GPUs
    runtime = build_runtime(paths, _settings(args, paths, gpu_workers=1), database=IN_MEMORY)
    runtime.runner.enqueue_many(jobs)
    outcome = run_queue(runtime, stop_on_failure=True, progress=TerminalProgress(sys.stderr))
    return _report(outcome)


MANIFEST = "manifest.jsonl"


def _batch(args: argparse.Namespace, paths: AppPaths) -> int:
    """A batch file's jobs through the same runner and worker as `generate`, on a queue in
    memory; each job done is a line of the output folder's manifest.jsonl (job index, file,
    seed, key), so a re-run skips the jobs whose image is there and is theirs."""
    from sd3desk.core.batch import job_key, read_batch
    from sd3desk.inference.models import resolve_model

    # 1. the command line's settings, then the file's jobs, every one validated
    singles: dict[str, Any] = {
        "negative_prompt": args.negative,
        "loras": _lora_refs(args.lora, paths),
        **_size_fields(args),
    }
    grid: dict[str, list[Any]] = {}
    for name, values in (("steps", args.steps), ("guidance_scale", args.guidance)):
        if values and len(values) == 1:
            singles[name] = values[0]
        elif values:
            grid[name] = values
    if not 1 <= args.seeds <= 10_000:
        raise InvalidParamsError([FieldError("seeds", "must be between 1 and 10000")])
    source = resolve_model(args.model, test_model_dir=paths.test_model)
    base = defaults_for(source.family, model=_model_reference(args.model)).replace(**singles)
    plan = read_batch(
        args.file,
        base,
        seeds=args.seeds,
        seed_start=args.seed_start,
        grid=grid,
        wildcards=args.wildcards,
        strict=args.strict,
        max_side=source.max_side,
    )
    for bad in plan.bad_lines:
        print(f"skipped {args.file.name} {bad}", file=sys.stderr)
    if args.dry_run:
        print(f"{len(plan.jobs)} jobs from {args.file.name}")
        for index, job in enumerate(plan.jobs[:10]):
            print(
                f"{index:6d} · seed {job.seed} · {job.width}x{job.height} · {job.steps} steps · "
                f"CFG {job.guidance_scale:g} · {job.prompt[:60]!r}"
            )
        return ExitCode.ok
    # 2. this process's share (every process expands the same list: job k is the same job),
    # less what an earlier run made already (its image there, holding this job's request)
    from sd3desk.inference.distributed import Ranks
    from sd3desk.inference.models import ModelKind
    from sd3desk.inference.testmodel import ensure_test_model

    if source.kind is ModelKind.test:  # built before the process group (see ensure_test_model)
        ensure_test_model(source.path, source.test_size or "tiny")
    ranks = Ranks.from_env()
    settings = _settings(args, paths, gpu_workers=1)
    out = Path(settings.output_dir or paths.outputs)
    manifest = out / MANIFEST
    done = _done_jobs(manifest, plan.jobs, job_key, adopt=ranks.main)
    todo = [(i, job) for i, job in enumerate(plan.jobs) if i not in done and ranks.mine(i)]
    where = f" (process {ranks.rank + 1} of {ranks.world})" if ranks.world > 1 else ""
    print(
        f"batch{where}: {len(plan.jobs)} jobs, {len(done)} done before, {len(todo)} to make",
        file=sys.stderr,
    )
    # 3. the rest, each landing in this process's part of the manifest as it finishes
    part = manifest.with_name(f"manifest.part-{ranks.rank}.jsonl") if ranks.world > 1 else manifest
    outcome = None
    if todo:
        outcome = _run_batch(paths, settings, todo, part, ranks.local)
    # 4. every process done: the first merges the parts into the manifest and sums up
    ranks.wait_for_everyone()
    if ranks.world > 1 and ranks.main:
        merged = _merge_manifest(out)
        print(f"batch: {len(merged)} of {len(plan.jobs)} jobs done", file=sys.stderr)
    ranks.close()
    return _report(outcome) if outcome is not None else ExitCode.ok


def _run_batch(
    paths: AppPaths, settings: Settings, todo: list[tuple[int, Any]], part: Path, device: int
) -> Any:
    from sd3desk.core.batch import job_key
    from sd3desk.headless import TerminalProgress, run_queue
    from sd3desk.runtime.runtime import IN_MEMORY, build_runtime

    runtime = build_runtime(paths, settings, database=IN_MEMORY)
    runtime.first_device = device
    queued = runtime.runner.enqueue_many([job for _, job in todo])
    index_of = {job.id: index for job, (index, _) in zip(queued, todo, strict=True)}

    def on_job_changed(event: Any) -> None:
        job = event.job
        if job.state is JobState.finished and job.id in index_of:
            entry = {
                "index": index_of[job.id],
                "file": str(Path(job.outputs[0]).resolve()),
                "seed": job.params.seed,
                "key": job_key(job.params),
            }
            _append_line(part, json.dumps(entry))

    runtime.runner.job_changed.connect(on_job_changed)
    return run_queue(runtime, stop_on_failure=False, progress=TerminalProgress(sys.stderr))


def _manifest_lines(out: Path) -> list[str]:
    """The manifest's lines, and those of parts the processes of a run wrote (a run that died
    before merging them leaves them for the next)."""
    lines: list[str] = []
    for path in [out / MANIFEST, *sorted(out.glob("manifest.part-*.jsonl"))]:
        try:
            lines += path.read_text("utf-8").splitlines()
        except FileNotFoundError:
            continue
    return lines


def _merge_manifest(out: Path) -> dict[int, str]:
    """The manifest rewritten from itself and the parts (one line per job index, the last
    written winning), all or nothing; the parts removed after."""
    from sd3desk.core.atomic import atomic_write_bytes

    entries: dict[int, str] = {}
    for line in _manifest_lines(out):
        try:
            entries[int(json.loads(line)["index"])] = line
        except (ValueError, KeyError, TypeError):
            continue
    text = "".join(entries[i] + "\n" for i in sorted(entries))
    atomic_write_bytes(out / MANIFEST, text.encode("utf-8"))
    for part in out.glob("manifest.part-*.jsonl"):
        part.unlink(missing_ok=True)
    return entries


def _done_jobs(
    manifest: Path, jobs: list[GenerationParams], key: Any, adopt: bool = True
) -> set[int]:
    """Indices of `jobs` made already: those the manifest lists with the same key whose image
    is still there and holds that request (a file replaced or deleted since is made again),
    and those whose image is in the folder but not yet in the manifest (the process stopped
    between saving it and writing the line): adopted, never made twice, and written down when
    `adopt` (one process of a run writes them)."""
    from sd3desk.core.errors import MetadataError
    from sd3desk.core.metadata import read_metadata

    done: set[int] = set()
    listed: set[str] = set()
    for line in _manifest_lines(manifest.parent):
        try:
            entry = json.loads(line)
            index, path = int(entry["index"]), Path(entry["file"])
        except (ValueError, KeyError, TypeError):
            continue  # (a line cut short by a crash)
        if not 0 <= index < len(jobs) or entry.get("key") != key(jobs[index]):
            continue
        try:
            if read_metadata(path).params == jobs[index]:
                done.add(index)
                listed.add(str(path))
        except MetadataError:
            continue
    waiting: dict[str, list[int]] = {}
    for index, job in enumerate(jobs):
        if index not in done:
            waiting.setdefault(key(job), []).append(index)
    for image in sorted(manifest.parent.rglob("*.png")) if waiting else []:
        if str(image.resolve()) in listed:
            continue
        try:
            params = read_metadata(image, fast=True).params
        except MetadataError:
            continue
        indices = waiting.get(key(params))
        if indices:
            index = indices.pop(0)
            done.add(index)
            entry = {"index": index, "file": str(image.resolve()), "seed": params.seed}
            if adopt:
                _append_line(manifest, json.dumps({**entry, "key": key(params)}))
    return done


def _append_line(path: Path, line: str) -> None:
    """One whole line at the end of `path`, on disk before returning."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(line + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _queue(args: argparse.Namespace, paths: AppPaths) -> int:
    from sd3desk.headless import TerminalProgress
    from sd3desk.runtime.runtime import build_runtime

    progress = TerminalProgress(sys.stderr)
    # bad arguments are refused before the queue is opened: nothing is written then
    adding = _jobs_from_args(args, paths) if args.action == "add" else []
    # only `run` takes the data folder's lock: adding, listing and pausing work beside a window
    # or another `queue run` that runs the queue
    owner = "sd3desk queue run" if args.action == "run" else ""
    runtime = build_runtime(paths, _settings(args, paths), owner=owner)
    for notice in runtime.notices.notices:  # what opening the queue found (crash recovery)
        progress.notice(notice)
    runner = runtime.runner
    if args.action == "add":
        for job in runner.enqueue_many(adding, front=args.front):
            print(f"queued job {job.id}")
        return ExitCode.ok
    if args.action == "list":
        snapshot = runner.snapshot()  # every ETA and place computed once
        for job in [*snapshot.running, *snapshot.waiting, *runner.history()]:
            eta = snapshot.etas.get(job.id)
            when = f" · {'~' if eta.estimated else ''}{eta.seconds:.0f} s" if eta else ""
            place = snapshot.places.get(job.id)
            where = f" #{place}" if place else ""
            print(
                f"{job.id:5d} {job.state.value:9s}{where}{when} · seed {job.params.seed} · "
                f"{job.params.width}x{job.params.height} · {job.params.prompt[:60]!r}"
                + (f" · {job.note}" if job.note else "")
                + (f" · {job.error_message}" if job.error_message else "")
            )
        if snapshot.paused:
            print("the queue is paused")
        return ExitCode.ok
    if args.action in ("pause", "resume"):
        runner.set_paused(args.action == "pause")
        print(f"the queue is {'paused' if runner.snapshot().paused else 'running'}")
        return ExitCode.ok
    if runner.snapshot().paused:
        print("the queue is paused; nothing runs until 'sd3desk queue resume'", file=sys.stderr)
        return ExitCode.ok
    from sd3desk.headless import run_queue

    outcome = run_queue(runtime, stop_on_failure=False, progress=progress)
    return _report(outcome)


def _serve(args: argparse.Namespace, paths: AppPaths) -> int:
    """The runtime, its workers and the server, until Ctrl+C."""
    from sd3desk.headless import TerminalProgress, serve
    from sd3desk.runtime.runtime import build_runtime
    from sd3desk.server.config import ServeConfig

    config = ServeConfig(
        host=args.host,
        port=args.port,
        token=args.token,
        cors_origins=tuple(args.cors),
        model=args.model,
    ).check()
    runtime = build_runtime(paths, _settings(args, paths), owner="sd3desk serve")
    return serve(runtime, config, progress=TerminalProgress(sys.stderr), web=not args.no_web)


# ---------------------------------------------------------------- models, make-test-model


def _models(args: argparse.Namespace, paths: AppPaths) -> int:
    from sd3desk.core.params import FAMILY_DEFAULTS
    from sd3desk.core.settings import env_model_dirs
    from sd3desk.inference.discovery import discover_models
    from sd3desk.inference.models import ModelKind, hub_cache_dir

    settings = load_settings(paths.settings_file)
    dirs = [*args.model_dir, *(Path(d) for d in settings.model_dirs), *env_model_dirs()]
    found, problems = discover_models(dirs)
    print(f"Hugging Face cache: {hub_cache_dir()}")
    print(f"model folders: {', '.join(str(d) for d in dirs) or '(none; add with --model-dir)'}")
    if not found:
        print("no SD3 models found. Try 'sd3desk make-test-model DIR' for a tiny random model.")
    for source in found:
        t5 = "with T5" if source.has_t5 else "no T5"
        clips = "" if source.has_clips else ", no CLIP (needs a donor folder)"
        if source.kind is ModelKind.gguf:
            t5, clips = source.quant, ", MMDiT only (VAE and text encoders from an SD3 folder)"
        print(
            f"{source.reference}\n    {FAMILY_DEFAULTS[source.family].label} · "
            f"{source.kind.value} · {t5}{clips} · {source.sizes()}\n    {source.path}"
        )
    for problem in problems:
        print(f"skipped: {problem}", file=sys.stderr)
    return ExitCode.ok


def _make_test_model(args: argparse.Namespace, paths: AppPaths) -> int:
    from sd3desk.inference.testmodel import (
        NOTE,
        write_test_gguf,
        write_test_model,
        write_test_single_file,
    )

    target: Path = args.path
    if target.suffix.lower() == ".safetensors":
        write_test_single_file(target, args.size, clips=not args.no_clips, t5=not args.no_t5)
    elif target.suffix.lower() == ".gguf":
        write_test_gguf(target, args.quant, args.size)
    else:
        if args.no_clips or args.no_t5:
            raise InvalidParamsError(
                [FieldError("path", "--no-clips/--no-t5 apply to a FILE.safetensors target")]
            )
        write_test_model(target, args.size)
    print(target)
    print(NOTE, file=sys.stderr)
    return ExitCode.ok
