"""What every route of the server works with: the runtime (through thread-safe calls only), the
bridge to its events, the limits, the models it offers and the files it may serve."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from sd3desk.core.errors import FieldError, InvalidParamsError
from sd3desk.core.gallery import GalleryIndex
from sd3desk.core.jobs import Job
from sd3desk.core.loras import LoraInfo
from sd3desk.core.params import GenerationParams, validate
from sd3desk.core.store import Store
from sd3desk.runtime.catalog import ModelEntry
from sd3desk.runtime.runtime import Runtime
from sd3desk.server.bridge import RuntimeBridge
from sd3desk.server.config import ServeConfig

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp"})


class LimitExceeded(Exception):
    """A request over one of the server's limits; `status` is 413 or 429."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class Door:
    """The server's view of the runtime.

    Thread rule: any thread. It calls only the Runner's commands (carried onto the runtime's
    thread), its snapshot, the catalog's current list and its own per-thread database
    connections; it never touches the runtime's Qt objects otherwise.
    """

    def __init__(self, runtime: Runtime, bridge: RuntimeBridge, config: ServeConfig) -> None:
        self.runtime = runtime
        self.runner = runtime.runner
        self.bridge = bridge
        self.config = config
        self.out_dir = runtime.out_dir.resolve()
        self._lock = threading.Lock()
        self._model = config.model or runtime.settings.last_model
        self._local = threading.local()

    # ------------------------------------------------------------------ models

    def models(self) -> list[ModelEntry]:
        """The models this server offers: what the catalog found (the test model included)."""
        return self.runtime.catalog.all_entries()

    def find_model(self, name: str) -> ModelEntry | None:
        """A catalog model by its reference, label or file name; nothing else is ever loaded."""
        name = name.strip()
        for entry in self.models():
            file_name = Path(entry.reference).name
            if name in (entry.reference, entry.label, file_name, Path(file_name).stem):
                return entry
        return None

    @property
    def default_model(self) -> ModelEntry | None:
        """The model for requests that name none: the one set last (A1111 `options`), else the
        server's `--model`, else the last one used, else the first one found."""
        with self._lock:
            chosen = self._model
        entry = self.find_model(chosen) if chosen else None
        return entry or next(iter(self.runtime.catalog.entries), None)

    def set_default_model(self, entry: ModelEntry) -> None:
        with self._lock:
            self._model = entry.reference
        self.runner.preload(entry.reference)

    def model_for(self, name: str, field: str = "model") -> ModelEntry:
        """The named model, or the default one; raises InvalidParamsError naming `field`."""
        entry = self.find_model(name) if name else self.default_model
        if entry is None:
            message = (
                f"{name!r} is not one of the models this server offers (see its model list)"
                if name
                else "this server has no model yet; name one from its model list"
            )
            raise InvalidParamsError([FieldError(field, message)])
        return entry

    # ------------------------------------------------------------------ jobs

    def _with_loras(self, params: GenerationParams) -> GenerationParams:
        """`params` with each LoRA found in the LoRA folders by its name or hash (a request
        may name one by its file name alone) and checked to be an SD3 LoRA; InvalidParamsError
        naming "loras" otherwise. Hashes files the first time: call it off the event loop."""
        if not params.loras:
            return params
        return params.replace(loras=self.runtime.loras.resolve_request(params.loras))

    def loras(self) -> list[LoraInfo]:
        """The LoRAs in the LoRA folders (headers only)."""
        return self.runtime.loras.scan()

    def submit(
        self,
        requests: Sequence[GenerationParams],
        entry: ModelEntry,
        source: str,
        client: str,
        front: bool = False,
    ) -> list[Job]:
        """Validate every request against `entry`'s limits and the server's, then queue them
        in one go (all or none). Raises InvalidParamsError or LimitExceeded."""
        requests = [self._with_loras(p) for p in requests]
        images = sum(p.batch_size for p in requests)
        if images > self.config.max_images_per_request:
            raise LimitExceeded(
                413,
                f"{images} images in one request; this server takes at most "
                f"{self.config.max_images_per_request}",
            )
        for params in requests:
            errors = validate(params, entry.max_side)
            if errors:
                raise InvalidParamsError(errors)
            if params.source_image:
                self.runtime.sources.check(params)
        waiting = sum(1 for job in self.runner.snapshot().waiting if job.client == client)
        if client and waiting + len(requests) > self.config.max_waiting_per_client:
            raise LimitExceeded(
                429,
                f"{client} already has {waiting} jobs waiting; at most "
                f"{self.config.max_waiting_per_client} may wait per client",
            )
        model = [p.replace(model=entry.reference) for p in requests]
        return self.runner.enqueue_many(model, front=front, source=source, client=client)

    # ------------------------------------------------------------------ files

    def store_picture(self, text: str, field: str) -> str:
        """A picture a client sent (base64, with or without a "data:image/...;base64," prefix;
        or the SHA-256 of one stored already, as a job's parameters name it) into the data
        folder's store; its digest. InvalidParamsError naming `field` otherwise."""
        import base64
        import binascii
        import re

        text = text.strip()
        if re.fullmatch(r"[0-9a-f]{64}", text) and text in self.runtime.sources:
            return text
        if text.startswith("data:"):
            text = text.partition(",")[2]
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidParamsError(
                [FieldError(field, "is neither base64 picture data nor a stored picture's sha256")]
            ) from None
        return self.runtime.sources.put(data, field)

    def gallery(self) -> GalleryIndex:
        """The gallery index on this thread's own connection (SQLite stays on one thread)."""
        index = getattr(self._local, "gallery", None)
        if index is None:
            store = Store.secondary(self.runtime.paths.database)
            index = self._local.gallery = GalleryIndex(store, self.out_dir)
        return index

    def output_file(self, path: str | Path, folders: list[Path] | None = None) -> Path | None:
        """`path` (absolute, or relative to the output folder) when it is an image file inside
        the output folder (or one of `folders`), after following links; None for anything
        else."""
        candidate = Path(path)
        if not candidate.is_absolute():
            candidate = self.out_dir / candidate
        try:
            resolved = candidate.resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        inside = any(resolved.is_relative_to(f) for f in folders or [self.out_dir])
        if not inside or resolved.suffix.lower() not in IMAGE_SUFFIXES:
            return None
        return resolved if resolved.is_file() else None

    def gallery_file(self, path: str | Path) -> Path | None:
        """`path` when it is an image file inside one of the gallery's folders (the output
        folder and those the user added to the gallery)."""
        folders = [self.out_dir, *(Path(f).resolve() for f in self.runtime.settings.gallery_dirs)]
        return self.output_file(path, folders)

    def relative(self, path: str | Path) -> str:
        """An output file's path inside the output folder, as URLs carry it."""
        return Path(path).resolve().relative_to(self.out_dir).as_posix()
