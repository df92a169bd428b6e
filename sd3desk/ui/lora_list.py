"""The request form's LoRAs: a row per LoRA and an "Add LoRA…" menu of the LoRAs in the LoRA
folders. Files are only read on a thread pool: the folder scan, the hashes, and the search for
the LoRAs an imported image names."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PySide6.QtCore import QPoint, Qt, QThreadPool, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QMenu,
    QVBoxLayout,
    QWidget,
)

from sd3desk.core.errors import FieldError, SD3DeskError
from sd3desk.core.loras import (
    LORA_MAX,
    LoraInfo,
    LoraKind,
    LoraLibrary,
    LoraNotFoundError,
    LoraRef,
    require_sd3,
)
from sd3desk.core.modelhash import LORA_SHORT
from sd3desk.runtime.background import Background
from sd3desk.ui.form_fields import WheelOnlyWhenFocused
from sd3desk.ui.lora_row import LoraRow, LoraSource, RowStatus
from sd3desk.ui.theme import Tone, tone_style
from sd3desk.ui.widgets import label, named, tool_button, wrapping_label

MENU_NAME_WIDTH = 260  # px: longer LoRA names are shortened in the middle in the menu
ADD_TIP = "Apply a LoRA to the next jobs: from your LoRA folders or any .safetensors file"


def read_lora(library: LoraLibrary, source: LoraSource) -> LoraSource:
    """`source` once its file is read (on the pool: it hashes files): its own file when it has a
    path and no hash yet, else the file the LoRA folders hold with its name and hash."""
    try:
        path = (
            Path(source.path) if source.hashing else library.find(LoraRef(source.name, source.hash))
        )
        info = require_sd3(path)  # (an imported name may now be a LoRA for another model)
        ref = library.ref(path)
    except LoraNotFoundError as exc:
        return LoraSource(source.name, source.hash, "", RowStatus.missing, exc.message)
    except SD3DeskError as exc:  # another architecture, damaged or unreadable
        return LoraSource(source.name, source.hash, source.path, RowStatus.unusable, exc.message)
    except OSError as exc:  # (find and ref say why in SD3DeskErrors; this is a stat's)
        detail = f"the file cannot be read: {exc.strerror or exc}"
        return LoraSource(source.name, source.hash, source.path, RowStatus.unusable, detail)
    return LoraSource(ref.name, ref.hash, str(path), RowStatus.ready, f"{info.describe()}\n{path}")


def rows_from_state(value: Any) -> list[tuple[LoraSource, float, bool]]:
    """The saved form's LoRA rows (see LoraRow.state); ValueError when malformed."""
    if not isinstance(value, list):
        raise ValueError("its LoRAs are not a list")
    rows = []
    for entry in value[:LORA_MAX]:
        if not isinstance(entry, dict):
            raise ValueError("its LoRAs are not a list of LoRAs")
        name, digest, path = entry.get("name"), entry.get("hash", ""), entry.get("path", "")
        weight, enabled = entry.get("weight", 1.0), entry.get("enabled", True)
        if not all(isinstance(v, str) for v in (name, digest, path)) or not name:
            raise ValueError("holds a LoRA without a name")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise ValueError(f"gives the LoRA {name} a weight that is not a number")
        if not isinstance(enabled, bool):
            raise ValueError(f"does not say whether the LoRA {name} is on")
        # a known hash is looked for again (the file may have moved); a file still being
        # hashed when the form was saved is hashed again
        rows.append((LoraSource(name, digest, "" if digest else path), float(weight), enabled))
    return rows


class LoraList(QWidget):
    """The LoRAs section of the form. The window gives it the runtime's LoRA library
    (`set_library`); until then rows wait to be read.

    Thread rule: GUI thread only; the pool only reads files and returns values.
    """

    changed = Signal()  # a row added, removed, read, ticked or its weight edited

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("loraList")
        self.library: LoraLibrary | None = None
        self.folder: Path | None = None  # the data folder's own LoRA folder
        self.found: list[LoraInfo] | None = None  # the last scan's (None: none yet)
        self.rows: list[LoraRow] = []
        self._serial = 0
        self._keys: dict[int, LoraRow] = {}
        # the scan: the newest wins (each menu opening starts one)
        self._scan = Background(self, newest_wins=True)
        self._scan.finished.connect(self._on_scan_finished)
        self._scan.failed.connect(lambda _key, _exc: self._on_scan_finished(None, []))
        # one file read at a time: hashing is disk-bound, and the hash cache is one JSON file
        # that two hashes at once would each rewrite
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(1)
        self._reads = Background(self, pool=self._pool)
        self._reads.finished.connect(self._on_read_finished)
        self._reads.failed.connect(self._on_read_failed)
        self._wheel_filter = WheelOnlyWhenFocused(self)  # as the form's other boxes

        self.menu = named(QMenu(self), "loraMenu")
        self.menu.setToolTipsVisible(True)
        self.menu.aboutToShow.connect(self._on_menu_about_to_show)
        self.add_button = tool_button("Add LoRA…", "addLoraButton", "Add a LoRA")
        # (popped up by hand, not setMenu: a tool button's menu arrow overlaps its text)
        self.add_button.clicked.connect(self._on_add_button_clicked)
        self.add_button.setToolTip(ADD_TIP)
        self.setFocusProxy(self.add_button)
        self.note = wrapping_label("loraNote")
        self.note.hide()
        header = QHBoxLayout()
        header.addWidget(label("&LoRAs", self.add_button), 1)
        header.addWidget(self.add_button)
        self._rows = QVBoxLayout()
        self._rows.setContentsMargins(0, 0, 0, 0)
        self._rows.setSpacing(2)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addLayout(header)
        layout.addLayout(self._rows)
        layout.addWidget(self.note)
        self._fill_menu()

    # ------------------------------------------------------------------ set up

    def set_library(self, library: LoraLibrary, folder: Path) -> None:
        """Where LoRAs are found; `folder` is the one "Open the LoRA folder" opens (made if
        missing). Rows that wait are read now, and the menu's list is made ready."""
        self.library, self.folder = library, folder
        self._scan.submit(library.scan, "scan")
        for row in self.rows:
            if row.source.status is RowStatus.reading:
                self._read(row)

    def rescan(self) -> None:
        """Look in the LoRA folders again (they changed, or files were added): the menu's list,
        and the rows whose LoRA was not found or could not be used."""
        if self.library is None:
            return
        library = self.library
        self._scan.submit(library.scan, "scan")
        for row in self.rows:
            if row.source.status in (RowStatus.missing, RowStatus.unusable):
                row.set_source(LoraSource(row.source.name, row.source.hash, row.source.path))
                self._read(row)

    # ------------------------------------------------------------------ the rows

    def add_file(self, path: Path) -> LoraRow | None:
        """Add the LoRA in `path` (hashed on the pool); the file already listed is selected
        instead, and nothing is added past LORA_MAX."""
        path = Path(path).absolute()
        for row in self.rows:
            if row.source.path and Path(row.source.path).absolute() == path:
                self._select(row, f"{row.source.name} is in the list already")
                return None
        if len(self.rows) >= LORA_MAX:
            self._say(f"At most {LORA_MAX} LoRAs per job", Tone.error)
            return None
        self._say("")
        row = self._add(LoraSource(path.stem, "", str(path)))
        self.changed.emit()
        return row

    def refs(self) -> tuple[LoraRef, ...]:
        """The ticked LoRAs a request can carry, in order (a LoRA not found is left out, and
        `problems` says why)."""
        return tuple(row.ref() for row in self.rows if row.enabled and row.source.usable)

    def problems(self) -> list[FieldError]:
        """Why a ticked LoRA cannot go into a request now, under the field "loras"."""
        errors = []
        for row in (r for r in self.rows if r.enabled):
            s = row.source
            if s.hashing:
                message = f"{s.name} is still being read; press Generate again in a moment"
            elif s.status is RowStatus.missing:
                hashed = f" (hash {s.hash[:LORA_SHORT]})" if s.hash else ""
                message = (
                    f"{s.name}{hashed} is not in your LoRA folders: put the file there "
                    "(File → Settings lists them), or untick or remove it"
                )
            elif s.status is RowStatus.unusable:
                message = f"{s.name}: {s.detail}"
            else:
                continue
            errors.append(FieldError("loras", message))
        return errors

    def set_refs(self, refs: Sequence[LoraRef]) -> None:
        """The LoRAs of a loaded request (an image, a job), all ticked; each is looked for in
        the LoRA folders on the pool (an imported image's short hash becomes its file's)."""
        self.restore([(LoraSource(r.name, r.hash), r.weight, True) for r in refs[:LORA_MAX]])
        if len(refs) > LORA_MAX:
            self._say(f"Only the first {LORA_MAX} LoRAs were loaded", Tone.warning)

    def restore(self, rows: Sequence[tuple[LoraSource, float, bool]]) -> None:
        """Replace the rows (the saved form's, or a loaded request's)."""
        if not rows and not self.rows:
            return
        for row in list(self.rows):
            self._remove(row)
        self._say("")
        for source, weight, enabled in rows:
            self._add(source, weight, enabled)
        self.changed.emit()

    def state(self) -> list[dict[str, object]]:
        """Every row, unticked ones too, for the saved form."""
        return [row.state() for row in self.rows]

    def _add(self, source: LoraSource, weight: float = 1.0, enabled: bool = True) -> LoraRow:
        row = LoraRow(source, weight, enabled)
        row.changed.connect(self.changed)
        row.remove_requested.connect(lambda: self._on_row_remove_requested(row))
        self._wheel_filter.watch(row.weight)
        before = self.rows[-1].remove if self.rows else self.add_button
        self.rows.append(row)
        self._rows.addWidget(row)
        # Tab goes through the rows right after the button (not after the whole form)
        for first, second in (
            (before, row.check),
            (row.check, row.weight),
            (row.weight, row.remove),
        ):
            QWidget.setTabOrder(first, second)
        self._update_button()
        if source.status is RowStatus.reading:
            self._read(row)
        return row

    def _remove(self, row: LoraRow) -> None:
        self.rows.remove(row)
        self._keys = {k: r for k, r in self._keys.items() if r is not row}
        self._rows.removeWidget(row)
        row.deleteLater()
        self._update_button()

    def _read(self, row: LoraRow) -> None:
        if self.library is None:
            return  # read once the window sets the library
        self._serial += 1
        self._keys[self._serial] = row
        library, source = self.library, row.source
        self._reads.submit(lambda: read_lora(library, source), self._serial)

    def _on_read_finished(self, key: int, source: LoraSource) -> None:
        row = self._keys.pop(key, None)
        if row is None or row not in self.rows:
            return  # removed (or the form replaced) while it was read
        fresh = row.source.hashing  # a file the user just added, not a loaded request's
        twin = next(
            (r for r in self.rows if r is not row and source.hash and r.source.hash == source.hash),
            None,
        )
        if source.status is RowStatus.ready and twin is not None:
            self._remove(row)  # the same tensors under another path: one row is enough
            self._select(twin, f"{source.name} is the same LoRA as {twin.source.name}")
        elif fresh and source.status is not RowStatus.ready:
            self._remove(row)  # a file for another model, or unreadable: say so, add nothing
            self._say(source.detail, Tone.error)
        else:
            row.set_source(source)
        self.changed.emit()

    def _on_read_failed(self, key: int, exc: BaseException) -> None:
        row = self._keys.get(key)
        if row is not None:
            s = row.source
            self._on_read_finished(
                key, LoraSource(s.name, s.hash, s.path, RowStatus.unusable, str(exc))
            )

    def _on_row_remove_requested(self, row: LoraRow) -> None:
        if row in self.rows:
            self._remove(row)
            self._say("")
            self.changed.emit()

    def _select(self, row: LoraRow, message: str) -> None:
        row.weight.setFocus()
        row.weight.selectAll()
        self._say(message, Tone.muted)

    def _say(self, message: str, tone: Tone = Tone.muted) -> None:
        self.note.setText(message)
        self.note.setStyleSheet(tone_style(tone))
        self.note.setVisible(bool(message))

    def _update_button(self) -> None:
        full = len(self.rows) >= LORA_MAX
        self.add_button.setEnabled(not full)
        self.add_button.setToolTip(
            f"At most {LORA_MAX} LoRAs per job: remove one to add another" if full else ADD_TIP
        )

    # ------------------------------------------------------------------ the menu

    def _on_menu_about_to_show(self) -> None:
        # a scan each time, so a file just put into a folder is there; the last scan's list
        # shows meanwhile, and the menu updates in place when this one is done
        if self.library is not None:
            self._scan.submit(self.library.scan, "scan")
        self._fill_menu()

    def _on_scan_finished(self, _key: object, found: list[LoraInfo] | None) -> None:
        found = found if found is not None else []
        if found != self.found:  # (an open menu that changes may move on the screen)
            self.found = found
            self._fill_menu()

    def _on_add_button_clicked(self) -> None:
        button = self.add_button
        self.menu.popup(button.mapToGlobal(QPoint(0, button.height())))

    def _fill_menu(self) -> None:
        menu = self.menu
        # An open menu (a scan came back) gets its new actions first, then the old ones out:
        # clear() would close it.
        old = menu.actions() if menu.isVisible() else []
        if not old:
            menu.clear()
        listed = {Path(row.source.path).absolute() for row in self.rows if row.source.path}
        if self.library is None or self.found is None:
            menu.addAction("Looking in the LoRA folders…").setEnabled(False)
        elif not self.found:
            empty = menu.addAction("No LoRAs in your LoRA folders yet")
            empty.setEnabled(False)
            empty.setToolTip("\n".join(str(f) for f in self.library.folders))
        metrics = menu.fontMetrics()
        for info in self.found or []:
            # a long name shortened (its path is the tooltip). No tab before the description:
            # QMenu adds up the widths of tab columns item by item (a 3-item menu was 1,000 px)
            name = metrics.elidedText(info.name, Qt.TextElideMode.ElideMiddle, MENU_NAME_WIDTH)
            action = menu.addAction(f"{name.replace('&', '&&')} — {info.describe()}")
            action.setData(str(info.path))
            action.setToolTip(str(info.path))
            action.setEnabled(info.kind is LoraKind.sd3)
            if info.path.absolute() in listed:
                action.setCheckable(True)
                action.setChecked(True)
            action.triggered.connect(lambda _on=False, path=info.path: self.add_file(path))
        menu.addSeparator()
        menu.addAction("Open a LoRA &file…", self._open_file)
        menu.addAction("Open the LoRA &folder", self.open_folder)
        menu.addAction("&Rescan", self.rescan)
        for action in old:
            menu.removeAction(action)
            action.deleteLater()

    def _open_file(self) -> None:
        start = str(self.folder) if self.folder and self.folder.is_dir() else ""
        path, _ = QFileDialog.getOpenFileName(
            self, "Add a LoRA", start, "LoRA files (*.safetensors)"
        )
        if path:
            self.add_file(Path(path))

    def open_folder(self) -> None:
        """Show the data folder's LoRA folder (made first), to put LoRA files into."""
        if self.folder is None:
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self._say(f"{self.folder} cannot be made: {exc.strerror or exc}", Tone.error)
            return
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.folder)))
