"""Typed errors shared by the engine and the front ends; each carries words for the user."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class ExitCode(IntEnum):
    """What every sd3desk command (and the window) exits with."""

    ok = 0
    error = 1  # a job or a check failed; the message says why
    usage = 2  # invalid arguments: the message names the field and its range; nothing written
    model = 3  # the model cannot be found, read or loaded
    busy = 4  # another sd3desk runs this data folder's queue (the message names it)
    interrupted = 130  # Ctrl+C: no partial files were written


class SD3DeskError(Exception):
    """Base class: `message` says what happened, `advice` what the user can do about it."""

    def __init__(self, message: str, advice: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.advice = advice

    def __str__(self) -> str:
        return f"{self.message}\n{self.advice}" if self.advice else self.message


@dataclass(frozen=True)
class FieldError:
    """One invalid field of a request, named as the user sees it, with the allowed range."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class InvalidParamsError(SD3DeskError):
    """A request failed validation; `errors` lists every bad field."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(str(e) for e in self.errors))


class ModelError(SD3DeskError):
    """A model cannot be found, read or loaded. `path` names the file or folder at fault."""

    def __init__(self, message: str, advice: str = "", path: str | None = None) -> None:
        super().__init__(message, advice)
        self.path = path


class RefusedFormatError(ModelError):
    """A model file in a format we do not load: pickle-based (it could run code), or one whose
    weights the loaders would read wrong (fp8 "scaled")."""


class LoraError(ModelError):
    """A LoRA cannot be used: not found, for another model, or in a form not read here. The
    job fails; the model stays loaded."""


class OutOfMemoryError(SD3DeskError):
    """The device ran out of memory; memory has been freed and the advice names lighter options."""


class GenerationCancelled(SD3DeskError):
    """The user cancelled a generation; nothing was written."""

    def __init__(self, step: int = 0) -> None:
        super().__init__(f"cancelled at step {step}")
        self.step = step


class StorageError(SD3DeskError):
    """An image could not be written: the disk is full, or the folder is read-only."""


class StoreError(SD3DeskError):
    """The queue database is locked by another program or cannot be opened (it is left as is)."""


class FolderBusyError(SD3DeskError):
    """Another sd3desk runs this data folder's queue; this process may add jobs, not run them."""


class MetadataError(SD3DeskError):
    """An image's embedded parameters could not be read (missing, malformed or hostile file)."""
