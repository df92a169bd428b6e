"""The `sd3desk` command line: generate, models, make-test-model. Imports torch only when needed."""

from __future__ import annotations

import argparse
import logging
import math
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sd3desk import __version__
from sd3desk.errors import (
    FieldError,
    GenerationCancelled,
    InvalidParamsError,
    ModelError,
    SD3DeskError,
)
from sd3desk.params import (
    SEED_MAX,
    SIZE_PRESETS,
    GenerationParams,
    check,
    defaults_for,
    size_for_aspect,
)
from sd3desk.settings import AppPaths, Device, MemoryPlan, load_settings

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_MODEL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
log = logging.getLogger("sd3desk")


class _Parser(argparse.ArgumentParser):
    """argparse, with our exit code for bad arguments (2) and no traceback."""

    def error(self, message: str) -> Any:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


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
        "The desktop window is not part of this version yet; use 'generate'.",
    )
    parser.add_argument("--version", action="version", version=f"sd3desk {__version__}")
    parser.add_argument("--data-dir", type=Path, help="keep settings, cache and outputs under DIR")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    gen = commands.add_parser("generate", help="make images from a prompt and save them as PNG")
    gen.add_argument(
        "--model",
        required=True,
        help="a .safetensors file, a diffusers folder, "
        "a Hugging Face repo id (from the local cache), or 'test'",
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
        + ", ".join(p.name for p in SIZE_PRESETS if ":" in p.name and " " not in p.name),
    )
    gen.add_argument("--count", type=int, default=1, help="how many images (default 1)")
    gen.add_argument("--batch", type=int, default=1, help="images per pass, 1-16 (default 1)")
    gen.add_argument("--shift", type=float, help="scheduler shift, 0.1-20 (model default)")
    gen.add_argument("--t5-length", type=int, help="T5 max sequence length, 1-512 (default 256)")
    gen.add_argument("--out", type=Path, help="output folder (default: your Pictures/sd3desk)")
    gen.add_argument("--device", choices=[d.value for d in Device], help="default: auto")
    gen.add_argument("--memory", choices=[m.value for m in MemoryPlan], help="default: auto")

    models = commands.add_parser("models", help="list the SD3 models sd3desk can find")
    models.add_argument(
        "--model-dir", type=Path, action="append", default=[], help="also look in DIR (repeatable)"
    )

    make = commands.add_parser(
        "make-test-model",
        help="write the tiny random test model "
        "(images are noise; for trying the app and for tests)",
    )
    make.add_argument(
        "path",
        type=Path,
        help="a folder (diffusers layout) or a FILE.safetensors (single-file checkpoint)",
    )
    make.add_argument("--size", choices=("tiny", "small", "medium"), default="tiny")
    make.add_argument("--no-clips", action="store_true", help="single file: leave out CLIP-L/G")
    make.add_argument("--no-t5", action="store_true", help="single file: leave out T5")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    paths = AppPaths.default(args.data_dir)
    if args.command is None:
        parser.print_help()
        return EXIT_OK
    handlers = {"generate": _generate, "models": _models, "make-test-model": _make_test_model}
    try:
        return handlers[args.command](args, paths)
    except InvalidParamsError as exc:
        for error in exc.errors:
            print(f"sd3desk {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except ModelError as exc:
        _print_error(exc, args.verbose)
        return EXIT_MODEL
    except (GenerationCancelled, KeyboardInterrupt):
        print("\ninterrupted; no partial files were written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except SD3DeskError as exc:
        _print_error(exc, args.verbose)
        return EXIT_ERROR


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
    }
    if args.aspect:
        if args.width or args.height:
            raise InvalidParamsError(
                [FieldError("aspect", "give --aspect or --width/--height, not both")]
            )
        values["width"], values["height"] = size_for_aspect(args.aspect)
    for name, attr in (
        ("steps", "steps"),
        ("guidance_scale", "guidance"),
        ("width", "width"),
        ("height", "height"),
        ("shift", "shift"),
        ("max_sequence_length", "t5_length"),
    ):
        if getattr(args, attr) is not None:
            values[name] = getattr(args, attr)
    values["batch_size"] = args.batch
    return values


def _generate(args: argparse.Namespace, paths: AppPaths) -> int:
    from sd3desk.inference.models import default_model_dirs, resolve_model

    # 1. validate what was given against the app's own ranges before touching any model
    explicit = _explicit_params(args)
    if not 1 <= args.count <= 10_000:
        raise InvalidParamsError([FieldError("count", "must be between 1 and 10000")])
    check(GenerationParams(**explicit))
    # 2. find the model (offline, headers only), then fill in its family's defaults
    settings = load_settings(paths.settings_file)
    model_dirs = tuple(Path(d) for d in settings.model_dirs) + tuple(default_model_dirs())
    source = resolve_model(args.model, test_model_dir=paths.cache / "test-model")
    base = defaults_for(source.family, model=args.model)
    params = check(base.replace(**explicit), source.max_side).with_concrete_seed()
    out_dir = args.out or Path(settings.output_dir or paths.outputs)
    # 3. load, then generate in passes of --batch images; Ctrl+C cancels within one step
    from sd3desk.inference.engine import Engine
    from sd3desk.metadata import ImageMetadata
    from sd3desk.outputs import save_generated

    engine = Engine(
        Device(args.device) if args.device else settings.device,
        cache_dir=paths.cache,
        model_dirs=model_dirs,
    )
    cancel = threading.Event()
    denoising = threading.Event()  # set while Ctrl+C should stop at the next step
    previous = signal.signal(signal.SIGINT, lambda *_: _on_interrupt(cancel, denoising))
    progress = _Progress(sys.stderr)
    try:
        loaded = engine.load(
            source,
            MemoryPlan(args.memory) if args.memory else settings.memory_plan,
            on_stage=progress.stage,
        )
        progress.note(f"model: {loaded.describe()}")
        for notice in loaded.notices:
            progress.note(f"note: {notice}")
        for warning in engine.prompt_length(params.prompt, params.max_sequence_length).warnings():
            progress.note(f"warning: {warning}")
        if params.negative_prompt and not params.uses_cfg:
            progress.note("note: guidance <= 1 turns CFG off, so the negative prompt has no effect")
        passes = math.ceil(args.count / params.batch_size)
        for n in range(passes):
            remaining = args.count - n * params.batch_size
            job = params.for_image(n * params.batch_size).replace(
                batch_size=min(params.batch_size, remaining)
            )
            progress.start(n + 1, passes, job.seed)
            denoising.set()
            try:
                result = engine.generate(job, on_step=progress.step, cancel=cancel)
            finally:
                denoising.clear()
            for image, image_params in zip(result.images, result.params, strict=True):
                path = save_generated(image, ImageMetadata(image_params, result.model), out_dir)
                progress.clear()
                print(path, flush=True)
    except GenerationCancelled:
        progress.clear()
        raise
    finally:
        signal.signal(signal.SIGINT, previous)
    return EXIT_OK


def _on_interrupt(cancel: threading.Event, denoising: threading.Event) -> None:
    """Ctrl+C while denoising stops at the end of the step; at any other time, or a second
    time, at once (a save cut short leaves no file: writes are atomic)."""
    if cancel.is_set() or not denoising.is_set():
        cancel.set()
        raise KeyboardInterrupt
    cancel.set()


class _Progress:
    """Stage lines and a one-line step bar on stderr (redrawn in place on a terminal)."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.prefix = ""

    def note(self, text: str) -> None:
        self.clear()
        print(text, file=self.stream, flush=True)

    def stage(self, stage: Any) -> None:
        self.note(f"[{stage.index}/{stage.total}] {stage.text}")

    def start(self, index: int, total: int, seed: int | None) -> None:
        self.prefix = f"image pass {index}/{total} (seed {seed})" if total > 1 else f"seed {seed}"

    def step(self, info: Any) -> None:
        width = 24
        done = round(width * info.step / info.total)
        rate = info.elapsed_s / info.step
        left = rate * (info.total - info.step)
        line = (
            f"{self.prefix} [{'#' * done}{'.' * (width - done)}] {info.step}/{info.total} "
            f"· {rate:.2f} s/step · {left:.0f} s left"
        )
        if self.tty:
            print("\r" + line, end="", file=self.stream, flush=True)
        elif info.step == info.total:
            print(line, file=self.stream, flush=True)

    def clear(self) -> None:
        if self.tty:
            print("\r\033[K", end="", file=self.stream, flush=True)


# ---------------------------------------------------------------- models, make-test-model


def _models(args: argparse.Namespace, paths: AppPaths) -> int:
    from sd3desk.inference.models import default_model_dirs, discover_models, hub_cache_dir
    from sd3desk.params import FAMILY_DEFAULTS

    settings = load_settings(paths.settings_file)
    dirs = [*args.model_dir, *(Path(d) for d in settings.model_dirs), *default_model_dirs()]
    found, problems = discover_models(dirs)
    print(f"Hugging Face cache: {hub_cache_dir()}")
    print(f"model folders: {', '.join(str(d) for d in dirs) or '(none; add with --model-dir)'}")
    if not found:
        print("no SD3 models found. Try 'sd3desk make-test-model DIR' for a tiny random model.")
    for source in found:
        t5 = "with T5" if source.has_t5 else "no T5"
        clips = "" if source.has_clips else ", no CLIP (needs a donor folder)"
        size = source.size_bytes() / 1024**3
        print(
            f"{source.reference}\n    {FAMILY_DEFAULTS[source.family].label} · "
            f"{source.kind.value} · {t5}{clips} · {size:.2f} GB\n    {source.path}"
        )
    for problem in problems:
        print(f"skipped: {problem}", file=sys.stderr)
    return EXIT_OK


def _make_test_model(args: argparse.Namespace, paths: AppPaths) -> int:
    from sd3desk.inference.testmodel import NOTE, write_test_model, write_test_single_file

    target: Path = args.path
    if target.suffix.lower() == ".safetensors":
        write_test_single_file(target, args.size, clips=not args.no_clips, t5=not args.no_t5)
    else:
        if args.no_clips or args.no_t5:
            raise InvalidParamsError(
                [FieldError("path", "--no-clips/--no-t5 apply to a FILE.safetensors target")]
            )
        write_test_model(target, args.size)
    print(target)
    print(NOTE, file=sys.stderr)
    return EXIT_OK
