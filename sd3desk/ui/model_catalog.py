"""The models the picker offers, found in the background (the Hugging Face cache, the user's
model folders) so the window never waits for a disk scan."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

from sd3desk.core.params import ModelFamily

TEST_REFERENCE = "test"
TEST_LABEL = "Test model (random weights: noise)"


@dataclass(frozen=True)
class ModelEntry:
    """One pickable model."""

    label: str
    reference: str
    family: ModelFamily
    detail: str = ""  # kind and path, for tooltips and the setup dialog


TEST_ENTRY = ModelEntry(TEST_LABEL, TEST_REFERENCE, ModelFamily.test, "built on first use")


def find_models(model_dirs: tuple[Path, ...]) -> tuple[list[ModelEntry], list[str]]:
    """Every SD3 model on disk, plus problems worth telling the user. Reads headers only."""
    from sd3desk.inference.discovery import discover_models

    sources, problems = discover_models(list(model_dirs))
    entries = [
        ModelEntry(
            f"{s.name} ({s.family.value})", s.reference, s.family, f"{s.kind.value}: {s.path}"
        )
        for s in sources
    ]
    return entries, problems


class _Signals(QObject):
    found = Signal(int, object, object)


class _Find(QRunnable):
    def __init__(self, ticket: int, model_dirs: tuple[Path, ...], signals: _Signals) -> None:
        super().__init__()
        self.ticket, self.model_dirs, self.signals = ticket, model_dirs, signals

    def run(self) -> None:
        try:
            entries, problems = find_models(self.model_dirs)
        except Exception as exc:  # a broken folder must not stop the app
            entries, problems = [], [f"looking for models failed: {exc}"]
        self.signals.found.emit(self.ticket, entries, problems)


class ModelCatalog(QObject):
    """`refresh()` looks for models on a pool thread; `found` brings (entries, problems) back
    to the GUI thread. The test model is always offered last."""

    found = Signal(object, object)

    def __init__(self, model_dirs: tuple[Path, ...] = (), pool: QThreadPool | None = None):
        super().__init__()
        self.model_dirs = tuple(model_dirs)
        self.entries: list[ModelEntry] = []
        self.searched = False
        self._ticket = 0
        self.pool = pool or QThreadPool.globalInstance()
        self._signals = _Signals()
        self._signals.found.connect(self._on_found)

    def refresh(self) -> None:
        self._ticket += 1
        self.pool.start(_Find(self._ticket, self.model_dirs, self._signals))

    def family_of(self, reference: str) -> ModelFamily | None:
        return next((e.family for e in self.all_entries() if e.reference == reference), None)

    def all_entries(self) -> list[ModelEntry]:
        return [*self.entries, TEST_ENTRY]

    def _on_found(self, ticket: int, entries: list[ModelEntry], problems: list[str]) -> None:
        if ticket != self._ticket:  # an older search finishing after a newer one began
            return
        self.entries = entries
        self.searched = True
        self.found.emit(self.all_entries(), problems)
