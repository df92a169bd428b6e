"""The models sd3desk offers, found in the background (the Hugging Face cache, the user's model
folders) so no front door waits for a disk scan. Front doors pick from this list; nothing loads a
model from a path the catalog did not check."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, QThreadPool, Signal

from sd3desk.core.params import FAMILY_DEFAULTS, ModelFamily
from sd3desk.runtime.background import Background

if TYPE_CHECKING:  # (the model modules load with the first search, off the GUI thread)
    from sd3desk.inference.models import ModelSource

log = logging.getLogger(__name__)

TEST_REFERENCE = "test"
TEST_LABEL = "Test model (random weights: noise)"


@dataclass(frozen=True)
class ModelEntry:
    """One pickable model."""

    label: str
    reference: str
    family: ModelFamily
    detail: str = ""  # kind and path, for tooltips and the setup dialog

    @property
    def max_side(self) -> int:
        """The largest width or height the model's position embedding allows."""
        return FAMILY_DEFAULTS[self.family].max_side


TEST_ENTRY = ModelEntry(TEST_LABEL, TEST_REFERENCE, ModelFamily.test, "built on first use")


def find_models(model_dirs: tuple[Path, ...]) -> tuple[list[ModelEntry], list[str]]:
    """Every SD3 model on disk, plus problems worth telling the user. Reads headers only."""
    from sd3desk.inference.discovery import discover_models

    sources, problems = discover_models(list(model_dirs))
    return [_entry(s) for s in sources], problems


def _entry(source: ModelSource) -> ModelEntry:
    """A model as the pickers show it: name and family; kind, path and sizes."""
    return ModelEntry(
        f"{source.name} ({source.family.value})",
        source.reference,
        source.family,
        f"{source.kind.value}: {source.path} · {source.sizes()}",
    )


def find_preview_decoder(model_dirs: tuple[Path, ...]) -> Path | None:
    """TAESD3's folder when it is on disk (the Hugging Face cache or a model folder), the one
    the workers will preview with; None otherwise. Reads a few small files."""
    from sd3desk.inference.discovery import find_taesd3

    return find_taesd3(model_dirs)


def check_model(path: str) -> ModelEntry:
    """The model at `path` (a file or folder), checked by its headers only; raises ModelError
    (or RefusedFormatError) saying what is wrong with it."""
    from sd3desk.inference.models import resolve_model

    return _entry(resolve_model(path))


class ModelCatalog(QObject):
    """`refresh()` looks for models on a pool thread; `found` brings (entries, problems) back.
    The test model is always offered last.

    Thread rule: use it from the thread that made it; `found` arrives there.
    """

    found = Signal(object, object)  # list[ModelEntry] (the test model included), list[str]
    preview_decoder_found = Signal(object)  # TAESD3's folder (a Path), or None: not on disk

    def __init__(self, model_dirs: tuple[Path, ...] = (), pool: QThreadPool | None = None):
        super().__init__()
        self.model_dirs = tuple(model_dirs)
        self.entries: list[ModelEntry] = []
        self.chosen: list[ModelEntry] = []  # picked by the user outside the model folders
        self.searched = False
        self._search = Background(self, pool=pool, newest_wins=True)
        self._search.finished.connect(self._on_search_finished)
        self._search.failed.connect(self._on_search_failed)
        self._decoder_search = Background(self, pool=pool, newest_wins=True)
        self._decoder_search.finished.connect(self._on_decoder_search_finished)
        self._decoder_search.failed.connect(self._on_decoder_search_failed)

    def refresh(self) -> None:
        dirs = self.model_dirs
        self._search.submit(lambda: find_models(dirs))

    def look_for_preview_decoder(self) -> None:
        """Whether TAESD3 is on disk, looked up on a pool thread: `preview_decoder_found`."""
        dirs = self.model_dirs
        self._decoder_search.submit(lambda: find_preview_decoder(dirs))

    def entry(self, reference: str) -> ModelEntry | None:
        return next((e for e in self.all_entries() if e.reference == reference), None)

    def family_of(self, reference: str) -> ModelFamily | None:
        entry = self.entry(reference)
        return entry.family if entry else None

    def all_entries(self) -> list[ModelEntry]:
        known = {e.reference for e in self.entries}
        return [*self.entries, *(e for e in self.chosen if e.reference not in known), TEST_ENTRY]

    def include(self, entry: ModelEntry) -> None:
        """Offer a model the user picked by hand (a file or folder outside the model folders,
        `--model`) with the ones found. Clients of the server can then ask for it too."""
        if all(e.reference != entry.reference for e in self.all_entries()):
            self.chosen = [*self.chosen, entry]

    def _on_search_finished(self, _key: object, result: tuple[list[ModelEntry], list[str]]):
        self.entries, problems = result
        self.searched = True
        self.found.emit(self.all_entries(), problems)

    def _on_decoder_search_finished(self, _key: object, folder: Path | None) -> None:
        self.preview_decoder_found.emit(folder)

    def _on_decoder_search_failed(self, _key: object, exc: Exception) -> None:
        # (an unreadable folder: the previews stay linear, nothing else breaks)
        log.warning("looking for the preview decoder failed: %s", exc)
        self.preview_decoder_found.emit(None)

    def _on_search_failed(self, _key: object, exc: Exception) -> None:
        # a broken folder must not stop the app: say so, keep what was found before
        self.searched = True
        self.found.emit(self.all_entries(), [f"looking for models failed: {exc}"])
