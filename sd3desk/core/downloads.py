"""Plan and run the download of an SD3 diffusers model from Hugging Face into its standard cache."""

from __future__ import annotations

import inspect
import os
import re
import shutil
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sd3desk.core.atomic import atomic_write_bytes
from sd3desk.core.errors import SD3DeskError
from sd3desk.core.params import SD3_PIPELINE

# huggingface_hub is imported inside the functions: importing it costs a noticeable fraction of a
# second, and the window must open before anything heavy loads.

DEFAULT_REPO = "stabilityai/stable-diffusion-3-medium-diffusers"
# The tiny SD3 autoencoder (TAESD3, MIT licence) that makes previews look like the image, and the
# files of it diffusers' AutoencoderTiny loads (the repo also holds the original .pth weights).
PREVIEW_DECODER_REPO = "madebyollin/taesd3"
PREVIEW_DECODER_FILES = ("config.json", "diffusion_pytorch_model.safetensors")
MODEL_INDEX = "model_index.json"
T5_ENCODER = "text_encoder_3"
COMPONENTS = frozenset(
    {
        "scheduler",
        "text_encoder",
        "text_encoder_2",
        T5_ENCODER,
        "tokenizer",
        "tokenizer_2",
        "tokenizer_3",
        "transformer",
        "vae",
    }
)
# What diffusers reads from a component folder: configs, safetensors weights and their shard
# indexes, tokenizer vocabularies. An allow-list also leaves out pickles (.bin, .pt, .ckpt, .pth),
# ONNX and Flax exports, pictures and docs, whatever new names they come under.
_KEEP_SUFFIXES = (".json", ".safetensors", ".txt", ".model")
# A precision variant in a diffusers or transformers file name: model.fp16.safetensors,
# model.fp16-00001-of-00002.safetensors, model.safetensors.index.bf16.json.
_VARIANT = re.compile(r"\.(?:fp|bf|int|nf)\d+[a-z0-9_]*(?=[.-]|$)", re.IGNORECASE)
_TRUE = {"1", "ON", "YES", "TRUE"}

ProgressCallback = Callable[[int, int, str], None]


class DownloadError(SD3DeskError):
    """Planning or fetching a model from Hugging Face failed; `advice` says what to do next."""


class DownloadCancelled(SD3DeskError):
    """The user cancelled a download; finished files stay in the cache for the next attempt."""

    def __init__(self, repo_id: str) -> None:
        super().__init__(
            f"download of {repo_id} cancelled",
            "files finished so far are kept: download again to resume",
        )
        self.repo_id = repo_id


class _Cancelled(BaseException):
    """Raised from huggingface_hub's progress bar to stop the file in flight.

    A BaseException, so that no `except Exception` inside huggingface_hub can swallow it.
    """


@dataclass(frozen=True)
class DownloadPlan:
    """What downloading a repo would fetch, how much of it is already cached, and the room left."""

    repo_id: str
    revision: str  # the commit hash, so every file comes from the same commit
    files: tuple[tuple[str, int], ...]  # (path, size) of every file of the model, cached or not
    total_bytes: int
    already_bytes: int  # complete in the cache already: a resumed download skips them
    needed_bytes: int  # total_bytes - already_bytes
    free_bytes: int  # on the disk holding the cache, when planned

    @property
    def fits(self) -> bool:
        """Whether the bytes still to fetch fit in the free space of the cache's disk."""
        return self.needed_bytes <= self.free_bytes


# ------------------------------------------------------------------ planning


def plan_download(
    repo_id: str,
    *,
    token: str | None = None,
    with_t5: bool = True,
    cache_dir: str | Path | None = None,
    endpoint: str | None = None,
) -> DownloadPlan:
    """Ask Hugging Face which files make up `repo_id` and measure them against the cache."""
    repo_id = repo_id.strip()
    token, endpoint = _clean_token(token), _endpoint(endpoint)
    info = _repo_info(repo_id, token, endpoint)
    siblings = info.siblings or []
    if not any(s.rfilename == MODEL_INDEX for s in siblings):
        raise DownloadError(
            f"{repo_id} is not an SD3 diffusers model: it has no {MODEL_INDEX}",
            f"choose a repo laid out for diffusers, such as {DEFAULT_REPO}",
        )
    with _hub_errors(repo_id, endpoint, token):
        pipeline = _pipeline_class(repo_id, info.sha, token, endpoint)
    if pipeline != SD3_PIPELINE:
        raise DownloadError(
            f"{repo_id} is a {pipeline or 'diffusers'} model, not Stable Diffusion 3",
            f"choose an SD3 repo, such as {DEFAULT_REPO}",
        )

    chosen = select_files([(s.rfilename, s.size or 0) for s in siblings], with_t5=with_t5)
    return _measured_plan(repo_id, info, chosen, cache_dir)


def plan_files_download(
    repo_id: str,
    files: tuple[str, ...],
    *,
    token: str | None = None,
    cache_dir: str | Path | None = None,
    endpoint: str | None = None,
) -> DownloadPlan:
    """Plan fetching the named `files` of a repo that is no SD3 pipeline (the preview decoder);
    a file the repo does not have is a DownloadError."""
    repo_id = repo_id.strip()
    token, endpoint = _clean_token(token), _endpoint(endpoint)
    info = _repo_info(repo_id, token, endpoint)
    sizes = {s.rfilename: s.size or 0 for s in info.siblings or []}
    missing = [path for path in files if path not in sizes]
    if missing:
        raise DownloadError(
            f"{repo_id} has no {', '.join(missing)}", "the repo may have been reorganised"
        )
    return _measured_plan(repo_id, info, [(path, sizes[path]) for path in files], cache_dir)


def _repo_info(repo_id: str, token: str | None, endpoint: str) -> Any:
    """The Hub's file list of `repo_id` at its current revision (online only)."""
    from huggingface_hub import HfApi

    _refuse_offline()
    with _hub_errors(repo_id, endpoint, token):
        info = HfApi(endpoint=endpoint, token=token).model_info(
            repo_id, files_metadata=True, token=token
        )
    if not info.sha:
        raise DownloadError(f"Hugging Face did not say which revision of {repo_id} is current")
    return info


def _measured_plan(
    repo_id: str, info: Any, chosen: list[tuple[str, int]], cache_dir: str | Path | None
) -> DownloadPlan:
    """The plan of `chosen` files at `info`'s revision, measured against the cache and disk."""
    siblings = info.siblings or []
    etags = {s.rfilename: (s.lfs.sha256 if s.lfs else s.blob_id) for s in siblings}
    cache = _cache_root(cache_dir)
    storage = cache / _repo_folder(repo_id)
    total = sum(size for _, size in chosen)
    already = sum(
        size for path, size in chosen if _is_cached(storage, info.sha, path, etags.get(path))
    )
    return DownloadPlan(
        repo_id=repo_id,
        revision=info.sha,
        files=tuple(chosen),
        total_bytes=total,
        already_bytes=already,
        needed_bytes=total - already,
        free_bytes=_free_bytes(cache),
    )


def select_files(files: list[tuple[str, int]], *, with_t5: bool = True) -> list[tuple[str, int]]:
    """The (path, size) pairs of a repo listing that a diffusers SD3 pipeline loads, by path."""

    def wanted(path: str) -> bool:
        folder, _, name = path.rpartition("/")
        if path == MODEL_INDEX:
            return True
        # Without T5 its 9 GB of weights stay behind, but tokenizer_3 (a few MB) is kept:
        # prompts are still measured in T5 tokens.
        return (
            folder in COMPONENTS
            and name.lower().endswith(_KEEP_SUFFIXES)
            and (with_t5 or folder != T5_ENCODER)
        )

    def variant(path: str) -> bool:
        return _VARIANT.search(path.rpartition("/")[2]) is not None

    kept = [(path, size) for path, size in files if wanted(path)]
    # Precision variants duplicate the full weights and the app loads the plain ones, so a
    # variant is only worth fetching in a folder that has no plain weights.
    plain = {p.rpartition("/")[0] for p, _ in kept if p.endswith(".safetensors") and not variant(p)}
    return sorted((p, s) for p, s in kept if not (variant(p) and p.rpartition("/")[0] in plain))


def _pipeline_class(repo_id: str, revision: str, token: str | None, endpoint: str) -> str:
    """The `_class_name` in a repo's model_index.json, read without touching the cache."""
    from huggingface_hub import get_session, hf_hub_url
    from huggingface_hub.utils import build_hf_headers, hf_raise_for_status

    # Fetching this small file now also tells, before any big download starts, whether the token
    # is accepted and the licence of a gated repo was agreed to (the listing is public for those).
    url = hf_hub_url(repo_id, MODEL_INDEX, revision=revision, endpoint=endpoint)
    response = get_session().get(url, headers=build_hf_headers(token=token), timeout=30)
    hf_raise_for_status(response)
    try:
        name = response.json().get("_class_name")
    except (ValueError, AttributeError):
        name = None
    return name if isinstance(name, str) else ""


# ------------------------------------------------------------------ downloading


def download(
    plan: DownloadPlan,
    *,
    token: str | None = None,
    cache_dir: str | Path | None = None,
    endpoint: str | None = None,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> Path:
    """Fetch the planned files into the Hugging Face cache and return the snapshot folder.

    Blocks until done: run it off the UI thread. `on_progress(done_bytes, total_bytes, file)`
    is called per chunk, not on the UI thread (hand it over with a signal). Setting `cancel`
    stops the download with DownloadCancelled; raises DownloadError for anything else.
    """
    from huggingface_hub import hf_hub_download

    token = _clean_token(token)
    endpoint = _endpoint(endpoint)
    _refuse_offline()
    cache = _cache_root(cache_dir)
    free = _free_bytes(cache)
    if plan.needed_bytes > free:
        raise DownloadError(
            f"not enough disk space for {plan.repo_id}: it needs {format_bytes(plan.needed_bytes)} "
            f"but only {format_bytes(free)} is free at {cache}",
            "free some space, or point HF_HUB_CACHE at a bigger disk",
        )
    snapshot = cache / _repo_folder(plan.repo_id) / "snapshots" / plan.revision
    existed = snapshot.exists()
    before = _entries(snapshot)
    progress = _Progress(plan.total_bytes, on_progress, cancel)
    extra: dict[str, Any] = {}
    if "tqdm_class" in inspect.signature(hf_hub_download).parameters:
        extra["tqdm_class"] = _bar_class(progress)
    # The app only recognises folders holding model_index.json, so it comes last: a download cut
    # short at any point never looks like a model.
    ordered = sorted(plan.files, key=lambda file: file[0] == MODEL_INDEX)
    try:
        with _hub_errors(plan.repo_id, endpoint, token, cache):
            for path, size in ordered:
                progress.start(path)
                hf_hub_download(
                    plan.repo_id,
                    path,
                    revision=plan.revision,
                    token=token,
                    cache_dir=cache,
                    endpoint=endpoint,
                    **extra,
                )
                progress.finish(size)
        # Given a commit hash, hf_hub_download records no branch; without refs/main the app's
        # snapshot_download(local_files_only=True) would not find the model.
        atomic_write_bytes(
            cache / _repo_folder(plan.repo_id) / "refs" / "main", plan.revision.encode()
        )
    except _Cancelled:
        _remove_new_entries(snapshot, before, existed)
        raise DownloadCancelled(plan.repo_id) from None
    except BaseException:
        _remove_new_entries(snapshot, before, existed)
        raise
    return snapshot


class _Progress:
    """Adds bytes up across files, reports them and stops the download when cancel is set."""

    def __init__(
        self, total: int, on_progress: ProgressCallback | None, cancel: threading.Event | None
    ) -> None:
        self.total = total
        self.on_progress = on_progress
        self.cancel = cancel
        self.finished = 0
        self.current = 0
        self.file = ""

    def start(self, path: str) -> None:
        """A new file begins (it may turn out to be cached already)."""
        self.file = path
        self.current = 0
        self.report()

    def begin_bar(self, initial: int) -> None:
        """huggingface_hub opened a bar for the file in flight, `initial` bytes already on disk."""
        self.current = initial
        self.report()

    def advance(self, n: int) -> None:
        """`n` more bytes of the file in flight (negative when a resume had to start over)."""
        self.current = max(0, self.current + n)
        self.report()

    def finish(self, size: int) -> None:
        """The file in flight is complete."""
        self.finished += size
        self.current = 0
        self.report()

    def report(self) -> None:
        if self.on_progress is not None:
            self.on_progress(min(self.finished + self.current, self.total), self.total, self.file)
        # Checked after reporting, so a callback that sets the event stops at once.
        self.check()

    def check(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise _Cancelled


def _bar_class(progress: _Progress) -> type:
    """A huggingface_hub progress bar class that feeds `progress` instead of drawing."""
    from huggingface_hub.utils import tqdm as hf_tqdm

    class _Bar(hf_tqdm):
        """Silent bar: huggingface_hub calls `update` per chunk, which is where cancel can act."""

        # tqdm starts its monitor thread on creating any bar, even a disabled one.
        monitor_interval = 0

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True  # a desktop app has no terminal to draw on
            super().__init__(*args, **kwargs)
            progress.begin_bar(int(kwargs.get("initial") or 0))

        def update(self, n: float | None = 1) -> bool | None:
            # tqdm counts nothing while disabled, so the bytes are counted in `progress`.
            progress.advance(int(n or 0))
            return None

        # Having these makes huggingface_hub's Xet downloads report through this one bar.
        def update_transfer(self, n: float | None = 1) -> None:
            progress.check()

        def set_transfer_postfix_str(self, *args: Any, **kwargs: Any) -> None:
            pass

    return _Bar


def _entries(folder: Path) -> set[str]:
    """Every file, link and folder under `folder`, relative to it."""
    found: set[str] = set()
    for root, dirs, files in os.walk(folder):
        rel = os.path.relpath(root, folder)
        found.update(os.path.normpath(os.path.join(rel, name)) for name in (*dirs, *files))
    return found


def _remove_new_entries(snapshot: Path, before: set[str], existed: bool) -> None:
    """Remove what this run added under the snapshot, so no partial model is ever visible.

    Blobs stay in the cache, so the next attempt links them again instead of fetching them.
    """
    if not snapshot.exists():
        return
    for root, dirs, files in os.walk(snapshot, topdown=False):
        rel = os.path.relpath(root, snapshot)
        for name in files:
            if os.path.normpath(os.path.join(rel, name)) not in before:
                Path(root, name).unlink(missing_ok=True)
        for name in dirs:
            path = Path(root, name)
            if os.path.normpath(os.path.join(rel, name)) in before:
                continue
            if path.is_symlink():
                path.unlink()
            else:
                with suppress(OSError):  # not empty: it holds entries from earlier runs
                    path.rmdir()
    if not existed:
        with suppress(OSError):
            snapshot.rmdir()


# ------------------------------------------------------------------ errors


@contextmanager
def _hub_errors(
    repo_id: str, endpoint: str, token: str | None, cache: Path | None = None
) -> Iterator[None]:
    """Turn huggingface_hub and network exceptions into DownloadError in the user's words."""
    try:
        yield
    except SD3DeskError:
        raise
    except Exception as exc:
        mapped = _translate(exc, repo_id, endpoint, token, cache)
        if mapped is None:
            raise
        raise mapped from exc


def _translate(
    exc: Exception, repo_id: str, endpoint: str, token: str | None, cache: Path | None
) -> DownloadError | None:
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    licence = f"{endpoint}/{repo_id}"
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(exc, OfflineModeIsEnabled):
        return _offline_error()
    if isinstance(exc, GatedRepoError):
        return DownloadError(
            f"{repo_id} is gated: its licence must be accepted before it can be downloaded",
            f"open {licence}, log in, accept the licence, then enter a read token of that account"
            + ("" if token else " (no token was given)"),
        )
    if isinstance(exc, RepositoryNotFoundError):
        return DownloadError(
            f"{repo_id} was not found on Hugging Face",
            "check the name (owner/name, as in the address of its page); "
            "a private repo also needs a token that can read it",
        )
    if isinstance(exc, (RevisionNotFoundError, RemoteEntryNotFoundError)):
        return DownloadError(
            f"the files of {repo_id} changed on Hugging Face since the download was planned",
            "start the download again",
        )
    if isinstance(exc, HfHubHTTPError) and status in (401, 403):
        return DownloadError(
            f"Hugging Face refused the token (HTTP {status})",
            "check that it was pasted whole, or create a read token at "
            f"{endpoint}/settings/tokens (a fine-grained token also needs access to "
            "public gated repos)",
        )
    if isinstance(exc, HfHubHTTPError):
        return DownloadError(
            f"Hugging Face answered with an error (HTTP {status})", "try again later"
        )
    if isinstance(exc, HFValidationError):
        return DownloadError(
            f"{repo_id!r} is not a valid Hugging Face repo name",
            f"write it as owner/name, such as {DEFAULT_REPO}",
        )
    if isinstance(exc, (LocalEntryNotFoundError, *_network_errors())):
        return DownloadError(
            f"cannot reach Hugging Face at {endpoint}; models already on disk still work offline",
            "check the internet connection (and any proxy or firewall), then try again",
        )
    if isinstance(exc, OSError) and cache is not None:
        return DownloadError(
            f"cannot write the download to {cache}: {exc}",
            "check the free space and permissions of that folder",
        )
    return None


def _network_errors() -> tuple[type[BaseException], ...]:
    """Connection failure types of the HTTP libraries in use (huggingface_hub changed library)."""
    kinds: list[type[BaseException]] = [ConnectionError, TimeoutError]
    # Only a library that is loaded can have raised, so nothing is imported here.
    for module, name in (
        ("httpx2", "TransportError"),
        ("httpx", "TransportError"),
        ("requests", "ConnectionError"),
        ("requests", "Timeout"),
    ):
        kind = getattr(sys.modules.get(module), name, None)
        if isinstance(kind, type) and issubclass(kind, BaseException):
            kinds.append(kind)
    return tuple(kinds)


def _offline_error() -> DownloadError:
    return DownloadError(
        "downloads from Hugging Face are switched off (HF_HUB_OFFLINE is set)",
        "unset HF_HUB_OFFLINE to download; models already on disk still work offline",
    )


def _refuse_offline() -> None:
    from huggingface_hub import constants

    # huggingface_hub reads the variable once at import; the environment may have changed since.
    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    if env.upper() in _TRUE or constants.is_offline_mode():
        raise _offline_error()


# ------------------------------------------------------------------ cache helpers


def _clean_token(token: str | None) -> str | None:
    """None for an empty field, so huggingface_hub falls back to a saved login."""
    token = (token or "").strip()
    return token or None


def _endpoint(endpoint: str | None) -> str:
    from huggingface_hub import constants

    return (endpoint or constants.ENDPOINT).rstrip("/")


def _cache_root(cache_dir: str | Path | None) -> Path:
    """The cache folder as hf_hub_download resolves it."""
    from huggingface_hub import constants

    return Path(cache_dir or constants.HF_HUB_CACHE).expanduser().resolve()


def _repo_folder(repo_id: str) -> str:
    """The repo's folder in the cache, named as huggingface_hub names it."""
    from huggingface_hub.file_download import repo_folder_name

    return repo_folder_name(repo_id=repo_id, repo_type="model")


def _is_cached(storage: Path, revision: str, path: str, etag: str | None) -> bool:
    """Whether a file is complete in the cache: linked in the snapshot, or its blob present."""
    if (storage / "snapshots" / revision / path).exists():
        return True
    return bool(etag) and (storage / "blobs" / str(etag)).is_file()


def _free_bytes(folder: Path) -> int:
    """Free space on the disk that holds `folder`, which need not exist yet."""
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def format_bytes(n: int) -> str:
    """A download size as people read it: GB (decimal, as disks are sold) from 0.1 GB, else MB."""
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"
