"""One LoRA of the request form: on or off, its weight, remove; it says while its file is read
and when the LoRA cannot be used."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from html import escape

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QSizePolicy,
    QStyle,
    QWidget,
)

from sd3desk.core.loras import WEIGHT_MAX, WEIGHT_MIN, WHOLE_HASH, LoraRef
from sd3desk.core.modelhash import LORA_SHORT
from sd3desk.ui.theme import Tone, tone_style
from sd3desk.ui.widgets import named, tool_button

NAME_MIN_WIDTH = 60  # px: a long name is shortened in the middle down to this


class RowStatus(Enum):
    """What is known of a row's LoRA; the value is what the row says."""

    reading = "reading…"  # its file is hashed, or an imported image's LoRA is looked for
    ready = ""
    missing = "not found"
    unusable = "cannot use"


@dataclass(frozen=True)
class LoraSource:
    """Which LoRA a row means and what is known of it: `hash` is whole once read (short or ""
    as another tool's image says it), `path` is "" until the file is found, `detail` is the
    description when ready and why not otherwise."""

    name: str
    hash: str = ""
    path: str = ""
    status: RowStatus = RowStatus.reading
    detail: str = ""

    @property
    def hashing(self) -> bool:
        """A file just added and not hashed yet: nothing a request could name it by."""
        return self.status is RowStatus.reading and bool(self.path) and not self.hash

    @property
    def usable(self) -> bool:
        """Whether a request may carry it (a short hash is resolved when the job is queued)."""
        return self.status is RowStatus.ready or (
            self.status is RowStatus.reading and not self.hashing
        )


class _NameBox(QCheckBox):
    """The row's checkbox, its text (the LoRA's name) shortened in the middle to fit: the form
    is narrow and LoRA file names are long."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._full = text
        # its width comes from the row, not from the text (else a long name widens the form)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.setMinimumWidth(NAME_MIN_WIDTH)

    def set_full_text(self, text: str) -> None:
        self._full = text
        self._elide()

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._elide()

    def _elide(self) -> None:
        style = self.style()
        indicator = style.pixelMetric(QStyle.PixelMetric.PM_IndicatorWidth, None, self)
        spacing = style.pixelMetric(QStyle.PixelMetric.PM_CheckBoxLabelSpacing, None, self)
        room = max(0, self.width() - indicator - spacing - 4)
        text = self.fontMetrics().elidedText(self._full, Qt.TextElideMode.ElideMiddle, room)
        text = text.replace("&", "&&")  # a name's "&" is not a mnemonic
        if text != self.text():
            self.setText(text)


class LoraRow(QWidget):
    """A LoRA in the form. Holds what the list tells it (`set_source`) and the user's tick and
    weight; `ref()` is what a request carries."""

    changed = Signal()  # ticked, unticked or its weight edited
    remove_requested = Signal()

    def __init__(
        self,
        source: LoraSource,
        weight: float = 1.0,
        enabled: bool = True,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("loraRow")
        self.source = source
        self.check = named(_NameBox(source.name), "loraEnabledCheck", source.name)
        self.check.setChecked(enabled)
        self.status = named(QLabel(), "loraStatus")
        self.weight = named(QDoubleSpinBox(), "loraWeightSpin", f"Weight of {source.name}")
        self.weight.setRange(WEIGHT_MIN, WEIGHT_MAX)
        self.weight.setDecimals(2)
        self.weight.setSingleStep(0.05)
        # (a file may say anything: the box brings a number into range, not NaN)
        self.weight.setValue(weight if math.isfinite(weight) else 1.0)
        self.weight.setToolTip(
            f"How strongly the LoRA acts ({WEIGHT_MIN:g} to {WEIGHT_MAX:g}): 1 as trained, "
            "0 not at all; a negative weight inverts a slider LoRA"
        )
        self.remove = tool_button("", "loraRemoveButton", f"Remove {source.name}")
        self.remove.setIcon(self.style().standardIcon(QStyle.StandardPixmap.SP_LineEditClearButton))
        self.remove.setAutoRaise(True)
        self.remove.setToolTip("Take this LoRA out of the form")
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(4)
        row.addWidget(self.check, 1)
        row.addWidget(self.status)
        row.addWidget(self.weight)
        row.addWidget(self.remove)
        self.check.toggled.connect(self._on_check_toggled)
        self.weight.valueChanged.connect(lambda _value: self.changed.emit())
        self.remove.clicked.connect(self.remove_requested)
        self.set_source(source)

    @property
    def enabled(self) -> bool:
        return self.check.isChecked()

    def set_source(self, source: LoraSource) -> None:
        """Show what is now known of the LoRA (its file read, found, or not)."""
        self.source = source
        self.check.set_full_text(source.name)
        self.check.setAccessibleName(source.name)
        self.weight.setAccessibleName(f"Weight of {source.name}")
        self.remove.setAccessibleName(f"Remove {source.name}")
        status = source.status
        text = status.value
        if status is RowStatus.reading:
            text = "hashing…" if source.hashing else "finding…"
        self.status.setText(text)
        self.status.setVisible(bool(text))
        self.status.setStyleSheet(tone_style(Tone.error if self._problem else Tone.muted))
        self._restyle()
        self.check.setToolTip(self._tip())
        self.status.setToolTip(self.check.toolTip())

    @property
    def _problem(self) -> bool:
        return self.source.status in (RowStatus.missing, RowStatus.unusable)

    def _restyle(self) -> None:
        """The name in the error tone when the LoRA cannot be used, muted when unticked."""
        tone = Tone.error if self._problem else None if self.enabled else Tone.muted
        self.check.setStyleSheet(tone_style(tone) if tone else "")

    def _on_check_toggled(self, _on: bool) -> None:
        self._restyle()
        self.changed.emit()

    def _tip(self) -> str:
        """Rich text, so that a long path or message wraps in the tooltip."""
        s = self.source
        lines = [f"<b>{escape(s.name)}</b>"]
        if s.status is RowStatus.reading:
            lines.append(
                "Reading the file…" if s.hashing else "Looking for it in the LoRA folders…"
            )
        elif s.detail:
            lines += [escape(line) for line in s.detail.splitlines()]
        if s.hash and s.status is not RowStatus.ready:
            shown = s.hash[:LORA_SHORT] if len(s.hash) == WHOLE_HASH else s.hash
            lines.append(f"Hash: {shown}")
        lines.append("Untick to leave it out of the next jobs")
        return "<br>".join(lines)

    def ref(self) -> LoraRef:
        return LoraRef(self.source.name, self.source.hash, round(self.weight.value(), 2))

    def state(self) -> dict[str, object]:
        """What the saved form keeps of the row."""
        s = self.source
        return {
            "name": s.name,
            "hash": s.hash,
            "weight": round(self.weight.value(), 2),
            "enabled": self.enabled,
            "path": s.path,
        }
