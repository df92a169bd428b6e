"""The request form's field table: every GenerationParams field the form edits, how its widget is
made, read, filled and watched. PromptPanel drives all of them from this one table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QEvent, QMimeData, QObject, Qt, Signal
from PySide6.QtWidgets import (
    QApplication,
    QComboBox,
    QDoubleSpinBox,
    QPlainTextEdit,
    QSpinBox,
    QWidget,
)

from sd3desk.core.params import (
    BATCH_MAX,
    BATCH_MIN,
    GUIDANCE_MAX,
    GUIDANCE_MIN,
    HIRES_SCALE_MAX,
    HIRES_SCALE_MIN,
    MASK_BLUR_MAX,
    MASK_PADDING_MAX,
    PROMPT_CHARS_MAX,
    SEED_MAX,
    SHIFT_MAX,
    SHIFT_MIN,
    SIZE_MAX,
    SIZE_MIN,
    SIZE_MULTIPLE,
    SLG_SCALE_MAX,
    STEPS_MAX,
    STEPS_MIN,
    T5_LENGTH_MAX,
    T5_LENGTH_MIN,
    PromptLength,
)
from sd3desk.ui.theme import Tone, tone_html
from sd3desk.ui.widgets import named

_SIZE_TIP = f"{SIZE_MIN}–{SIZE_MAX}, snapped to a multiple of {SIZE_MULTIPLE}"


@dataclass(frozen=True)
class Field:
    """One request field: its GenerationParams name, how the user sees it, and for numbers the
    range (shown in the tooltip), the step and the decimals (None: a whole-number box)."""

    name: str
    title: str  # the accessible name; error messages start with it
    object_name: str
    tip: str
    low: float = 0
    high: float = 0
    decimals: int | None = None
    step: float = 1
    suffix: str = ""
    special: str = ""  # shown instead of the lowest value, when that means "off" or "as…"


FIELDS = (
    Field("model", "Model:", "modelCombo", "The SD3 model that makes the images"),
    Field("prompt", "Prompt:", "promptEdit", "Describe the image…"),
    Field(
        "negative_prompt",
        "Negative prompt:",
        "negativePromptEdit",
        "What to keep out of the image (optional)",
    ),
    # a double spin box: seeds go to 2^32 - 1, beyond QSpinBox's int32
    Field(
        "seed",
        "Seed",
        "seedSpin",
        f"Same seed + same settings = same image (0–{SEED_MAX})",
        0,
        SEED_MAX,
        decimals=0,
    ),
    Field(
        "steps",
        "Steps",
        "stepsSpin",
        f"Denoising steps ({STEPS_MIN}–{STEPS_MAX}); more is slower",
        STEPS_MIN,
        STEPS_MAX,
    ),
    # 2 decimals: other tools' CFG 3.75 must survive a round trip
    Field(
        "guidance_scale",
        "Guidance",
        "guidanceSpin",
        f"Classifier-free guidance ({GUIDANCE_MIN:g}–{GUIDANCE_MAX:g}): how closely the image "
        "follows the prompt. ≤ 1 turns CFG off (faster, negative prompt ignored)",
        GUIDANCE_MIN,
        GUIDANCE_MAX,
        decimals=2,
        step=0.5,
    ),
    Field(
        "width",
        "Width",
        "widthSpin",
        f"Width: {_SIZE_TIP}",
        SIZE_MIN,
        SIZE_MAX,
        step=64,
        suffix=" px",
    ),
    Field(
        "height",
        "Height",
        "heightSpin",
        f"Height: {_SIZE_TIP}",
        SIZE_MIN,
        SIZE_MAX,
        step=64,
        suffix=" px",
    ),
    Field(
        "batch_size",
        "Images per job",
        "batchSpin",
        f"Images per job ({BATCH_MIN}–{BATCH_MAX}); image k uses seed + k",
        BATCH_MIN,
        BATCH_MAX,
    ),
    Field(
        "shift",
        "Shift",
        "shiftSpin",
        f"Flow-matching timestep shift ({SHIFT_MIN:g}–{SHIFT_MAX:g}); 3 for SD3 models",
        SHIFT_MIN,
        SHIFT_MAX,
        decimals=2,
        step=0.5,
    ),
    Field(
        "max_sequence_length",
        "T5 tokens",
        "t5LengthSpin",
        f"How many prompt tokens T5 reads ({T5_LENGTH_MIN}–{T5_LENGTH_MAX})",
        T5_LENGTH_MIN,
        T5_LENGTH_MAX,
    ),
    # starting from a picture (shown while the form has one)
    Field(
        "strength",
        "Strength",
        "strengthSpin",
        "How much of the picture to change (0.01–1): low keeps it, 1 repaints it all",
        0.01,
        1.0,
        decimals=2,
        step=0.05,
    ),
    Field(
        "mask_blur",
        "Mask blur",
        "maskBlurSpin",
        f"Feathers the mask's edge (0–{MASK_BLUR_MAX} px) so the repainted part blends in",
        0,
        MASK_BLUR_MAX,
        suffix=" px",
    ),
    Field(
        "mask_padding",
        "Only masked",
        "maskPaddingSpin",
        "0: repaint at the whole picture's size. More: only the masked area and this many "
        f"pixels around it, at the full size, for finer detail (0–{MASK_PADDING_MAX} px)",
        0,
        MASK_PADDING_MAX,
        suffix=" px",
        special="Whole picture",
    ),
    # under Advanced
    Field(
        "hires_scale",
        "Hires fix",
        "hiresScaleSpin",
        f"1: off. {HIRES_SCALE_MIN:g}–{HIRES_SCALE_MAX:g}: make the image, enlarge it "
        "(Lanczos) and refine it at that size, in one job",
        1.0,
        HIRES_SCALE_MAX,
        decimals=2,
        step=0.25,
        suffix="×",
        special="Off",
    ),
    Field(
        "hires_steps",
        "Hires steps",
        "hiresStepsSpin",
        f"Steps of the hires pass (0: as Steps; up to {STEPS_MAX})",
        0,
        STEPS_MAX,
        special="As Steps",
    ),
    Field(
        "hires_strength",
        "Hires strength",
        "hiresStrengthSpin",
        "How much the hires pass changes the enlarged image (0.01–1)",
        0.01,
        1.0,
        decimals=2,
        step=0.05,
    ),
    Field(
        "slg_scale",
        "Skip-layer guidance",
        "slgSpin",
        f"SD3.5 Medium's skip-layer guidance (0–{SLG_SCALE_MAX:g}; Stability recommends 2.8; "
        "0 is off): steadier anatomy",
        0,
        SLG_SCALE_MAX,
        decimals=1,
        step=0.1,
        special="Off",
    ),
)
TITLES = {f.name: f.title for f in FIELDS} | {
    "source_image": "Source picture:",
    "mask_image": "Mask:",
    "loras": "LoRAs:",
}


class PromptEdit(QPlainTextEdit):
    """A prompt box that never takes in more than PROMPT_CHARS_MAX characters at once: Qt lays
    out a long unbroken line in quadratic time (a pasted 1 MB line froze the window for
    minutes), and no such prompt could run anyway. A paste or drop that would pass the limit
    is refused, and text set from a file is cut at it; `refused` says how long it was."""

    refused = Signal(int, bool)  # the length the text would have had; True: cut, not refused

    def insertFromMimeData(self, source: QMimeData) -> None:
        if source.hasText():
            selected = len(self.textCursor().selectedText())
            length = len(self.toPlainText()) - selected + len(source.text())
            if length > PROMPT_CHARS_MAX:
                self.refused.emit(length, False)
                return
        super().insertFromMimeData(source)

    def set_text(self, text: str) -> None:
        self.setPlainText(text[:PROMPT_CHARS_MAX])
        if len(text) > PROMPT_CHARS_MAX:  # (after: an edit clears the field's message)
            self.refused.emit(len(text), True)


def make_widget(field: Field) -> QWidget:
    """The widget that edits `field`: a combo box for the model, a text box for the prompts, a
    spin box with the field's range for numbers."""
    title = field.title.rstrip(":")
    if field.name == "model":
        combo = named(QComboBox(), field.object_name, title)
        combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(12)
        combo.setToolTip(field.tip)
        return combo
    if field.name in ("prompt", "negative_prompt"):
        edit = named(PromptEdit(), field.object_name, title)
        edit.setPlaceholderText(field.tip)
        edit.setTabChangesFocus(True)
        return edit
    spin: QSpinBox | QDoubleSpinBox
    if field.decimals is None:
        spin = QSpinBox()
        spin.setRange(int(field.low), int(field.high))
        spin.setSingleStep(int(field.step))
    else:
        spin = QDoubleSpinBox()
        spin.setDecimals(field.decimals)
        spin.setRange(field.low, field.high)
        spin.setSingleStep(field.step)
    spin.setSuffix(field.suffix)
    spin.setSpecialValueText(field.special)
    spin.setToolTip(field.tip)
    return named(spin, field.object_name, title)


def read(widget: QWidget) -> Any:
    if isinstance(widget, QPlainTextEdit):
        return widget.toPlainText().strip()
    if isinstance(widget, QComboBox):
        return widget.currentData() or ""
    assert isinstance(widget, QSpinBox | QDoubleSpinBox)
    return widget.value()


def write(widget: QWidget, value: Any) -> None:
    """Show `value`, brought into a spin box's range (Qt raises on values beyond int32)."""
    if isinstance(widget, PromptEdit):
        widget.set_text(value)
    elif isinstance(widget, QSpinBox | QDoubleSpinBox):
        widget.setValue(max(widget.minimum(), min(widget.maximum(), value)))


def change_signal(widget: QWidget) -> Any:
    if isinstance(widget, QPlainTextEdit):
        return widget.textChanged
    if isinstance(widget, QComboBox):
        return widget.currentIndexChanged
    assert isinstance(widget, QSpinBox | QDoubleSpinBox)
    return widget.valueChanged


def snap(value: int) -> int:
    """The nearest size the model accepts (a multiple of 16 within the app's range)."""
    value = round(value / SIZE_MULTIPLE) * SIZE_MULTIPLE
    return max(SIZE_MIN, min(SIZE_MAX, value))


class WheelOnlyWhenFocused(QObject):
    """Scrolling the form over a field scrolls the form; only a focused field takes the wheel
    (so a wheel over the model list never switches models by accident)."""

    def watch(self, widget: QWidget) -> None:
        widget.setFocusPolicy(Qt.FocusPolicy.StrongFocus)  # no focus from the wheel either
        widget.installEventFilter(self)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() != QEvent.Type.Wheel or not isinstance(watched, QWidget):
            return False
        if watched.hasFocus():
            return False
        parent = watched.parentWidget()
        if parent is not None:
            QApplication.sendEvent(parent, event)
        return True


def count_text(length: PromptLength | None) -> str:
    """Token counts per encoder as rich text; red where text will be cut off."""
    if length is None:
        return tone_html(Tone.muted, "Token counts appear once the model is loaded")
    parts = [_part("CLIP", length.clip_tokens, length.clip_limit, length.clip_truncated)]
    if length.t5_tokens is None:
        parts.append(tone_html(Tone.muted, "T5 off"))
    else:
        parts.append(_part("T5", length.t5_tokens, length.t5_limit, length.t5_truncated))
    return " · ".join(parts)


def _part(name: str, count: int, limit: int, truncated: bool) -> str:
    if truncated:
        return tone_html(Tone.error, f"{name} {count}/{limit} — cut off", bold=True)
    return f"{name} {count}/{limit}"
