"""The window's non-widget model: the picked model and its family's defaults, when to preload it,
the settings, and the form and layout that survive a restart. The window shows; this decides."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from PySide6.QtCore import QByteArray, QObject, QSettings, QThreadPool, QTimer, Signal

from sd3desk.core.atomic import atomic_write_bytes
from sd3desk.core.errors import FieldError, InvalidParamsError, SD3DeskError
from sd3desk.core.jobs import Job
from sd3desk.core.params import GenerationParams, ModelFamily, defaults_for, validate
from sd3desk.core.settings import Settings, save_settings
from sd3desk.runtime.catalog import ModelEntry
from sd3desk.runtime.notices import diagnostics
from sd3desk.runtime.runtime import Runtime

LAYOUT_VERSION = 1
PRELOAD_DELAY_MS = 500  # a pick must settle this long before its model loads
FORM_SAVE_DELAY_MS = 1000
# How long closing the window waits for a worker inside an import or a model load; then the
# process ends without it (nothing is lost: see app.main)
SHUTDOWN_WAIT_S = 2.0


class Session(QObject):
    """What one window works with besides its widgets.

    Thread rule: GUI thread only (it owns timers and talks to the runtime's Qt objects).
    """

    models_listed = Signal(object, str)  # list[ModelEntry], the reference to keep picked
    defaults_suggested = Signal(object)  # GenerationParams: a new family's recommended values
    settings_changed = Signal(object)  # Settings, saved and applied
    family_changed = Signal(object)  # the picked model's ModelFamily, once known (or None)
    engine_note = Signal(str)  # what the session asked the engine to do ("Loading X…")
    setup_needed = Signal()  # first run: no model anywhere, nothing queued

    def __init__(self, runtime: Runtime, model_override: str = "", verbose: bool = False):
        super().__init__()
        self.runtime = runtime
        self.model_override = model_override  # --model
        self.verbose = verbose
        self._picked = ""
        self._family: ModelFamily | None = None  # of the picked model, once the catalog knows
        self._restoring = False
        self._models_listed = False
        self._started = self._stopped = False
        self.stuck = False  # a worker was still busy (an import, a load) when the window closed
        self._pending_form: dict[str, Any] | None = None
        self._preload_timer = QTimer(self, singleShot=True, interval=PRELOAD_DELAY_MS)
        self._preload_timer.timeout.connect(self.preload_picked_model)
        self._form_timer = QTimer(self, singleShot=True, interval=FORM_SAVE_DELAY_MS)
        self._form_timer.timeout.connect(self._write_pending_form)
        runtime.catalog.found.connect(self._on_catalog_found)

    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    @property
    def picked_model(self) -> str:
        return self._picked

    @property
    def stopped(self) -> bool:
        return self._stopped

    # ------------------------------------------------------------------ life

    def start(self) -> None:
        """The background work, once the window is on screen: the log file, the workers and
        the model search (whose first result preloads the picked model)."""
        if self._started or self._stopped:
            return
        self._started = True
        from sd3desk.core.logs import setup_logging

        try:
            setup_logging(self.runtime.paths.log_file, self.verbose)
        except OSError as exc:  # an unusable log folder must not keep the app from working
            self.runtime.notices.warning(
                f"The log file cannot be written ({exc})", f"check {self.runtime.paths.logs}"
            )
        self.runtime.start_workers()
        self.runtime.catalog.refresh()

    def shutdown(self) -> None:
        """Save what is pending; running jobs go back to the front of the queue."""
        if self._stopped:
            return
        self._stopped = True
        self._write_pending_form()
        started = time.monotonic()
        stopped = self.runtime.stop(SHUTDOWN_WAIT_S)
        # background work (a model or decoder search, thumbnails) finishes within what is left
        # of the wait; past it, the process must end without it (app.main: `stuck`)
        left = max(0.0, SHUTDOWN_WAIT_S - (time.monotonic() - started))
        idle = QThreadPool.globalInstance().waitForDone(int(left * 1000))
        self.stuck = not (stopped and idle)

    # ------------------------------------------------------------------ models

    def pick_model(self, reference: str) -> None:
        """The form's model changed. A model of another family brings that family's defaults
        (not while a saved form is restored: its values belong to its model); the model loads
        once the pick settles."""
        if not reference or reference == self._picked:
            return
        self._picked = reference
        if self.runtime.catalog.searched:  # (before, the first search result offers it)
            self._offer(reference)
        family = self.family_of(reference)
        if self._restoring:
            self._family = None  # known once the catalog is (see _on_catalog_found)
        else:
            if family is not None and family != self._family:
                self.defaults_suggested.emit(defaults_for(family))
            self._family = family
        self.family_changed.emit(family)
        if self.runtime.catalog.searched:  # before that, the first search result starts it
            self._preload_timer.start()
        if reference != self.settings.last_model:
            self._save_settings(dataclasses.replace(self.settings, last_model=reference))

    def family_of(self, reference: str) -> ModelFamily | None:
        """The model's family: the user's word where given (Turbo or not), else as found."""
        told = self.settings.model_families.get(reference)
        if told in {f.value for f in ModelFamily}:
            return ModelFamily(told)
        return self.runtime.catalog.family_of(reference)

    def set_turbo(self, reference: str, turbo: bool) -> None:
        """The user says whether an SD3.5 Large model is Turbo: remembered, and its defaults
        (4 steps without guidance, or 28 with 3.5) go into the form."""
        family = ModelFamily.sd35_large_turbo if turbo else ModelFamily.sd35_large
        if self.family_of(reference) is family:
            return
        told = {**self.settings.model_families, reference: family.value}
        self._save_settings(dataclasses.replace(self.settings, model_families=told))
        self._family = family
        self.defaults_suggested.emit(defaults_for(family))
        self.family_changed.emit(family)

    def _offer(self, reference: str) -> None:
        """A model picked outside the catalog (`--model`, a file from the Models dialog) joins
        it, so every front door (the server too) may use it; headers only, no weights read."""
        from sd3desk.runtime.catalog import check_model

        if self.runtime.catalog.entry(reference) is None:
            # not a model (any more): a job for it fails with the reason
            with contextlib.suppress(SD3DeskError):
                self.runtime.catalog.include(check_model(reference))

    def preload_picked_model(self) -> None:
        if self._picked and not self._stopped:
            self.engine_note.emit(f"Loading {self._picked} in the background…")
            self.runtime.runner.preload(self._picked)

    @contextlib.contextmanager
    def restoring(self) -> Iterator[None]:
        """Around filling the form from saved values (the form file, a job, an image)."""
        self._restoring = True
        try:
            yield
        finally:
            self._restoring = False

    def _on_catalog_found(self, entries: list[ModelEntry], problems: list[str]) -> None:
        if self._stopped:  # a search started before the window closed
            return
        first = not self._models_listed
        self._models_listed = True
        current = self._picked or self.model_override or self.settings.last_model
        if current:
            self._offer(current)
            entries = self.runtime.catalog.all_entries()
        with self.restoring():  # keeping (or restoring) the pick is not a new pick: no defaults
            self.models_listed.emit(entries, current)
        if self._family is None:  # the restored form's model: switching within it keeps values
            self._family = self.family_of(self._picked)
        self.family_changed.emit(self.family_of(self._picked))
        if first and self._picked:
            # Only now: the model search and the engine's torch import both import many modules,
            # and run together they stalled the GUI thread for ~200 ms (bench/gui_latency.py).
            self.engine_note.emit("Starting the engine in the background…")
            self.runtime.runner.preload(self._picked)
        for problem in problems:
            self.runtime.notices.warning(problem)
        nothing = not self.runtime.catalog.entries and not self._picked
        if nothing and not self.runtime.runner.snapshot().waiting:
            QTimer.singleShot(0, self.setup_needed.emit)  # first run: help the user get a model

    # ------------------------------------------------------------------ requests

    def submit(self, params: GenerationParams) -> Job:
        """Validate a request from the form (a model is required, the model's own size limit
        applies, its LoRAs must be found) and queue it; raises InvalidParamsError naming every
        bad field."""
        params, errors = self._checked(params)
        if errors:
            raise InvalidParamsError(errors)
        return self.runtime.runner.enqueue(params)

    def submit_many(self, requests: list[GenerationParams]) -> list[Job]:
        """Queue several requests (a batch file's) in one transaction, each checked as `submit`
        checks one; raises InvalidParamsError for the first bad one before queueing any."""
        checked = []
        for params in requests:
            params, errors = self._checked(params)
            if errors:
                raise InvalidParamsError(errors)
            checked.append(params)
        return self.runtime.runner.enqueue_many(checked)

    def with_lora_hashes(self, params: GenerationParams) -> GenerationParams:
        """`params` with each LoRA named by its file's whole hash: an imported image's short
        hash (or none) is matched in the LoRA folders, on this thread. The form's own rows carry
        whole hashes already, so this hashes files only for a fresh import (once: cached).
        InvalidParamsError under "loras" names a LoRA that is not there."""
        if all(ref.resolved for ref in params.loras):
            return params
        return params.replace(loras=self.runtime.loras.resolve_request(params.loras))

    def _checked(self, params: GenerationParams) -> tuple[GenerationParams, list[FieldError]]:
        """The request with its LoRAs resolved, and every problem with it."""
        try:
            resolved = self.with_lora_hashes(params)
        except InvalidParamsError as exc:  # the other fields' problems are said too
            return params, exc.errors + self._errors(params.replace(loras=()))
        return resolved, self._errors(resolved)

    def _errors(self, params: GenerationParams) -> list[FieldError]:
        entry = self.runtime.catalog.entry(params.model)
        errors = validate(params, entry.max_side if entry else None)
        if not params.model:
            errors.insert(0, FieldError("model", "pick a model first (Add… finds or makes one)"))
        if not errors and params.source_image:
            try:
                self.runtime.sources.check(params)
            except InvalidParamsError as exc:
                errors += exc.errors
        return errors

    # ------------------------------------------------------------------ settings

    def add_gallery_folder(self, folder: Path) -> None:
        """Show the images in `folder` in the gallery too (saved in the settings)."""
        text = str(folder.resolve())
        if text not in self.settings.gallery_dirs:
            dirs = (*self.settings.gallery_dirs, text)
            self.apply_settings(dataclasses.replace(self.settings, gallery_dirs=dirs))

    def apply_settings(self, settings: Settings) -> None:
        """Save and apply edited settings; a change of device, plan or T5 reloads the model now."""
        old = self.settings
        if self._save_settings(settings):
            self.engine_note.emit("Settings changed: reloading the model…")
            self.preload_picked_model()
        if settings.output_dir != old.output_dir or settings.gpu_workers != old.gpu_workers:
            self.runtime.notices.info(
                "The new output folder and number of GPU workers apply after a restart"
            )
        self.settings_changed.emit(settings)

    def _save_settings(self, settings: Settings) -> bool:
        """Apply and save; returns whether the loaded model must be reloaded for them."""
        reload = self.runtime.apply_settings(settings)
        try:
            save_settings(settings, self.runtime.paths.settings_file)
        except OSError as exc:
            self.runtime.notices.error(f"Settings could not be saved: {exc}", "check the folder")
        return reload

    # ------------------------------------------------------------------ the form and the layout

    def form_edited(self, state: dict[str, Any]) -> None:
        """The form changed: saved a moment later (a crash loses at most that moment)."""
        self._pending_form = state
        self._form_timer.start()

    def save_form(self, state: dict[str, Any]) -> None:
        self._pending_form = state
        self._write_pending_form()

    def _write_pending_form(self) -> None:
        state, self._pending_form = self._pending_form, None
        if state is None:
            return
        try:
            atomic_write_bytes(self.runtime.paths.form_file, json.dumps(state, indent=1).encode())
        except OSError as exc:
            self.runtime.notices.warning(f"The form could not be saved ({exc})")

    def restore_form(self, fill: Callable[[dict[str, Any]], None]) -> None:
        """Hand the form as last saved to `fill` (nothing on a first run). A file that cannot
        be read or holds values the form refuses becomes a notice; the form keeps its values."""
        try:
            data = json.loads(self.runtime.paths.form_file.read_text("utf-8"))
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            with self.restoring():
                fill(data)
        except FileNotFoundError:
            pass
        except (
            OSError,
            ValueError,
            OverflowError,
            TypeError,
            AttributeError,
            InvalidParamsError,
        ) as exc:
            self.runtime.notices.warning(f"The saved form could not be restored ({exc})")

    def _layout_store(self) -> QSettings:
        return QSettings(str(self.runtime.paths.window_file), QSettings.Format.IniFormat)

    def load_layout(self) -> tuple[QByteArray, QByteArray] | None:
        """The window's geometry and dock state as last saved (None: first run or old format)."""
        store = self._layout_store()
        if store.value("layout_version", 0, int) != LAYOUT_VERSION:
            return None
        geometry, state = store.value("geometry"), store.value("state")
        if isinstance(geometry, QByteArray) and isinstance(state, QByteArray):
            return geometry, state
        return None

    def save_layout(self, geometry: QByteArray, state: QByteArray) -> None:
        store = self._layout_store()
        store.setValue("layout_version", LAYOUT_VERSION)
        store.setValue("geometry", geometry)
        store.setValue("state", state)
        store.sync()

    # ------------------------------------------------------------------ diagnostics

    def diagnostics(self, engine_status: str) -> str:
        s = self.settings
        return diagnostics(
            {
                "device setting": s.device.value,
                "memory plan": s.memory_plan.value,
                "T5": "on" if s.use_t5 else "off",
                "engine": engine_status,
                "data folder": str(self.runtime.paths.data),
                "output folder": str(self.runtime.out_dir),
            },
            self.runtime.paths.log_file,
        )
