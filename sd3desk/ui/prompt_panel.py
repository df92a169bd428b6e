"""The request form: prompts with token counts, seed, steps, guidance, size, batch and model."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QEvent, QObject, Qt, QTimer, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QAbstractSpinBox,
    QApplication,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSlider,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from sd3desk.core.errors import FieldError
from sd3desk.core.params import (
    BATCH_MAX,
    BATCH_MIN,
    GUIDANCE_MAX,
    GUIDANCE_MIN,
    SEED_MAX,
    SHIFT_MAX,
    SHIFT_MIN,
    SIZE_MAX,
    SIZE_MIN,
    SIZE_MULTIPLE,
    SIZE_PRESETS,
    STEPS_MAX,
    STEPS_MIN,
    T5_LENGTH_MAX,
    T5_LENGTH_MIN,
    GenerationParams,
    PromptLength,
)

CUSTOM = "Custom"
GUIDANCE_SLIDER_MAX = 20.0  # the slider shows 0-20; the spin box takes up to GUIDANCE_MAX
ERROR_STYLE = "color: #d9534f;"


def snap(value: int) -> int:
    """The nearest size the model accepts (a multiple of 16 within the app's range)."""
    value = round(value / SIZE_MULTIPLE) * SIZE_MULTIPLE
    return max(SIZE_MIN, min(SIZE_MAX, value))


class PromptPanel(QWidget):
    """Edits one GenerationParams. Holds no business logic: validation happens in core
    (`params.validate`) and the window shows the errors here with `show_errors`."""

    generate_requested = Signal()
    cancel_requested = Signal()
    prompt_edited = Signal()  # prompt, negative prompt or T5 length changed: recount tokens
    form_changed = Signal()  # anything changed: save the form
    model_changed = Signal(str)  # the picked model's reference
    setup_requested = Signal()  # "Add a model…"

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.last_seed: int | None = None
        self._errors: dict[str, QLabel] = {}
        self._model_before = ""

        # 1. model
        self.model_combo = QComboBox(objectName="modelCombo", accessibleName="Model")
        self.model_combo.setToolTip("The SD3 model that makes the images")
        self.model_combo.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.model_combo.setMinimumContentsLength(12)
        self.setup_button = QToolButton(text="Add…", objectName="modelSetupButton")
        self.setup_button.setToolTip("Find, download or add a model")
        self.setup_button.setAccessibleName("Add a model")

        # 2. prompts
        self.prompt = QPlainTextEdit(objectName="promptEdit", accessibleName="Prompt")
        self.prompt.setPlaceholderText("Describe the image…")
        self.prompt.setTabChangesFocus(True)
        self.prompt_count = QLabel(objectName="promptTokens", text=_count_text(None))
        self.negative = QPlainTextEdit(objectName="negativePromptEdit")
        self.negative.setAccessibleName("Negative prompt")
        self.negative.setPlaceholderText("What to keep out of the image (optional)")
        self.negative.setTabChangesFocus(True)
        self.negative_count = QLabel(objectName="negativeTokens")
        self.cfg_note = QLabel(
            "Guidance ≤ 1 turns CFG off: the negative prompt has no effect.",
            objectName="cfgNote",
            wordWrap=True,
        )
        for label in (self.prompt_count, self.negative_count, self.cfg_note):
            label.setTextFormat(Qt.TextFormat.RichText)
            font = label.font()
            font.setPointSizeF(font.pointSizeF() * 0.9)
            label.setFont(font)

        # 3. seed: a double spin box because seeds go to 2^32 - 1, beyond QSpinBox's int32
        self.seed = QDoubleSpinBox(objectName="seedSpin", accessibleName="Seed", decimals=0)
        self.seed.setRange(0, SEED_MAX)
        self.seed.setToolTip(f"Same seed + same settings = same image (0–{SEED_MAX})")
        self.random_seed = QCheckBox("Random", objectName="randomSeedCheck", checked=True)
        self.random_seed.setToolTip("Pick a new seed for every job")
        self.reuse_seed = QToolButton(text="Last", objectName="reuseSeedButton")
        self.reuse_seed.setToolTip("Reuse the seed of the last image")
        self.reuse_seed.setAccessibleName("Reuse last seed")
        self.reuse_seed.setEnabled(False)

        # 4. steps, guidance
        self.steps = QSpinBox(objectName="stepsSpin", accessibleName="Steps")
        self.steps.setRange(STEPS_MIN, STEPS_MAX)
        self.steps.setToolTip(f"Denoising steps ({STEPS_MIN}–{STEPS_MAX}); more is slower")
        self.guidance = QDoubleSpinBox(objectName="guidanceSpin", accessibleName="Guidance scale")
        self.guidance.setRange(GUIDANCE_MIN, GUIDANCE_MAX)
        self.guidance.setSingleStep(0.5)
        self.guidance.setDecimals(2)  # other tools' CFG 3.75 must survive a round trip
        self.guidance.setToolTip(
            f"Classifier-free guidance ({GUIDANCE_MIN:g}–{GUIDANCE_MAX:g}): how closely the image "
            "follows the prompt. ≤ 1 turns CFG off (faster, negative prompt ignored)"
        )
        self.guidance_slider = QSlider(Qt.Orientation.Horizontal, objectName="guidanceSlider")
        self.guidance_slider.setRange(0, int(GUIDANCE_SLIDER_MAX * 10))
        self.guidance_slider.setAccessibleName("Guidance scale slider")
        self.guidance_slider.setToolTip(self.guidance.toolTip())

        # 5. size
        self.aspect = QComboBox(objectName="aspectCombo", accessibleName="Aspect ratio")
        for preset in SIZE_PRESETS:
            self.aspect.addItem(f"{preset.name}  ({preset.width}×{preset.height})", preset.name)
        self.aspect.addItem(CUSTOM, CUSTOM)
        self.aspect.setToolTip("Sizes around one megapixel, the size SD3 was trained at")
        self.width_spin = self._size_spin("widthSpin", "Width")
        self.height_spin = self._size_spin("heightSpin", "Height")
        self.size_note = QLabel(objectName="sizeNote")

        # 6. batch and the advanced fields
        self.batch = QSpinBox(objectName="batchSpin", accessibleName="Images per job")
        self.batch.setRange(BATCH_MIN, BATCH_MAX)
        self.batch.setToolTip(f"Images per job ({BATCH_MIN}–{BATCH_MAX}); image k uses seed + k")
        self.shift = QDoubleSpinBox(objectName="shiftSpin", accessibleName="Shift")
        self.shift.setRange(SHIFT_MIN, SHIFT_MAX)
        self.shift.setSingleStep(0.5)
        self.shift.setToolTip(
            f"Flow-matching timestep shift ({SHIFT_MIN:g}–{SHIFT_MAX:g}); 3 for SD3 models"
        )
        self.t5_length = QSpinBox(objectName="t5LengthSpin", accessibleName="T5 token limit")
        self.t5_length.setRange(T5_LENGTH_MIN, T5_LENGTH_MAX)
        self.t5_length.setToolTip(
            f"How many prompt tokens T5 reads ({T5_LENGTH_MIN}–{T5_LENGTH_MAX})"
        )

        # 7. actions
        self.generate_button = QPushButton("Generate", objectName="generateButton", default=True)
        self.generate_button.setToolTip("Add a job to the queue (Ctrl+Enter)")
        self.cancel_button = QPushButton("Cancel", objectName="cancelButton")
        self.cancel_button.setToolTip("Stop the running job (Esc)")
        self.cancel_button.setEnabled(False)
        self.form_error = QLabel(objectName="formError", wordWrap=True)
        self.form_error.setStyleSheet(ERROR_STYLE)
        self.form_error.hide()

        self._lay_out()
        self._connect()
        self._wheel_filter = _WheelOnlyWhenFocused(self)
        for field in (
            self.model_combo,
            self.seed,
            self.steps,
            self.guidance,
            self.guidance_slider,
            self.aspect,
            self.width_spin,
            self.height_spin,
            self.batch,
            self.shift,
            self.t5_length,
        ):
            field.setFocusPolicy(Qt.FocusPolicy.StrongFocus)  # no focus from the wheel
            field.installEventFilter(self._wheel_filter)
        self.set_params(GenerationParams(prompt=""))

    def _size_spin(self, name: str, label: str) -> QSpinBox:
        spin = QSpinBox(objectName=name, accessibleName=label, suffix=" px")
        spin.setRange(SIZE_MIN, SIZE_MAX)
        spin.setSingleStep(64)
        spin.setToolTip(f"{label}: {SIZE_MIN}–{SIZE_MAX}, snapped to a multiple of {SIZE_MULTIPLE}")
        return spin

    def _error_label(self, field: str) -> QLabel:
        label = QLabel(objectName=f"{field}Error", wordWrap=True)
        label.setStyleSheet(ERROR_STYLE)
        label.hide()
        self._errors[field] = label
        return label

    def _lay_out(self) -> None:
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        model_row = QHBoxLayout()
        model_row.addWidget(self.model_combo, 1)
        model_row.addWidget(self.setup_button)
        layout.addLayout(model_row)
        layout.addWidget(self._error_label("model"))

        layout.addWidget(QLabel("&Prompt", buddy=self.prompt))
        layout.addWidget(self.prompt, 3)
        layout.addWidget(self.prompt_count)
        layout.addWidget(self._error_label("prompt"))
        layout.addWidget(QLabel("&Negative prompt", buddy=self.negative))
        layout.addWidget(self.negative, 1)
        layout.addWidget(self.negative_count)
        layout.addWidget(self.cfg_note)
        layout.addWidget(self._error_label("negative_prompt"))

        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        seed_row = QHBoxLayout()
        seed_row.addWidget(self.seed, 1)
        seed_row.addWidget(self.random_seed)
        seed_row.addWidget(self.reuse_seed)
        form.addRow(QLabel("&Seed", buddy=self.seed), seed_row)
        form.addRow("", self._error_label("seed"))
        form.addRow("S&teps", self.steps)
        form.addRow("", self._error_label("steps"))
        guidance_row = QHBoxLayout()
        guidance_row.addWidget(self.guidance_slider, 1)
        guidance_row.addWidget(self.guidance)
        form.addRow(QLabel("&Guidance", buddy=self.guidance), guidance_row)
        form.addRow("", self._error_label("guidance_scale"))
        form.addRow("&Aspect", self.aspect)
        size_row = QGridLayout()
        size_row.addWidget(self.width_spin, 0, 0)
        size_row.addWidget(QLabel("×"), 0, 1)
        size_row.addWidget(self.height_spin, 0, 2)
        size_row.setColumnStretch(0, 1)
        size_row.setColumnStretch(2, 1)
        form.addRow(QLabel("Si&ze", buddy=self.width_spin), size_row)
        form.addRow("", self.size_note)
        form.addRow("", self._error_label("width"))
        form.addRow("", self._error_label("height"))
        form.addRow("&Images", self.batch)
        form.addRow("", self._error_label("batch_size"))
        layout.addLayout(form)

        self.advanced = QToolButton(text="Advanced", objectName="advancedToggle", checkable=True)
        self.advanced.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.advanced.setArrowType(Qt.ArrowType.RightArrow)
        self.advanced.setAutoRaise(True)
        self.advanced.setToolTip("Timestep shift and the T5 token limit")
        self._advanced_box = QWidget(objectName="advancedBox")
        inner = QFormLayout(self._advanced_box)
        inner.setContentsMargins(0, 0, 0, 0)
        inner.addRow("S&hift", self.shift)
        inner.addRow("", self._error_label("shift"))
        inner.addRow("T5 to&kens", self.t5_length)
        inner.addRow("", self._error_label("max_sequence_length"))
        self._advanced_fields = (self.shift, self.t5_length)
        self.advanced.toggled.connect(self._show_advanced)
        self._show_advanced(False)
        layout.addWidget(self.advanced)
        layout.addWidget(self._advanced_box)

        layout.addWidget(self.form_error)
        buttons = QHBoxLayout()
        buttons.addWidget(self.generate_button, 1)
        buttons.addWidget(self.cancel_button)
        layout.addLayout(buttons)

    def _show_advanced(self, shown: bool) -> None:
        self._advanced_box.setVisible(shown)
        self.advanced.setArrowType(Qt.ArrowType.DownArrow if shown else Qt.ArrowType.RightArrow)

    def _connect(self) -> None:
        self.generate_button.clicked.connect(self.generate_requested)
        self.cancel_button.clicked.connect(self.cancel_requested)
        for keys in ("Ctrl+Return", "Ctrl+Enter"):
            shortcut = QShortcut(QKeySequence(keys), self)
            shortcut.setContext(Qt.ShortcutContext.WindowShortcut)
            shortcut.activated.connect(self.generate_requested)
        escape = QShortcut(QKeySequence(Qt.Key.Key_Escape), self)
        escape.setContext(Qt.ShortcutContext.WindowShortcut)
        escape.activated.connect(self._on_escape)
        self.setup_button.clicked.connect(self.setup_requested)

        self.prompt.textChanged.connect(self.prompt_edited)
        self.negative.textChanged.connect(self.prompt_edited)
        self.t5_length.valueChanged.connect(self.prompt_edited)
        self.random_seed.toggled.connect(lambda on: self.seed.setEnabled(not on))
        self.reuse_seed.clicked.connect(self.reuse_last_seed)
        self.guidance.valueChanged.connect(self._on_guidance_changed)
        self.guidance_slider.valueChanged.connect(lambda v: self.guidance.setValue(v / 10))
        self.aspect.currentIndexChanged.connect(self._on_aspect_changed)
        for spin in (self.width_spin, self.height_spin):
            spin.editingFinished.connect(self._on_size_edited)
            spin.valueChanged.connect(self._update_size_note)
        self.model_combo.currentIndexChanged.connect(self._on_model_index_changed)

        self._changed = QTimer(self, singleShot=True, interval=400)
        self._changed.timeout.connect(self.form_changed)
        for signal in (
            self.prompt.textChanged,
            self.negative.textChanged,
            self.seed.valueChanged,
            self.random_seed.toggled,
            self.steps.valueChanged,
            self.guidance.valueChanged,
            self.width_spin.valueChanged,
            self.height_spin.valueChanged,
            self.batch.valueChanged,
            self.shift.valueChanged,
            self.t5_length.valueChanged,
            self.model_combo.currentIndexChanged,
        ):
            signal.connect(lambda *_: self._changed.start())
        for widget in self._errors_sources():
            _connect_any_change(widget, self._clear_error_for(widget))

    # ------------------------------------------------------------------ the form <-> params

    def params(self) -> GenerationParams:
        """The request as typed (unvalidated; `seed=None` when random)."""
        return GenerationParams(
            prompt=self.prompt.toPlainText().strip(),
            negative_prompt=self.negative.toPlainText().strip(),
            seed=None if self.random_seed.isChecked() else int(self.seed.value()),
            steps=self.steps.value(),
            guidance_scale=round(self.guidance.value(), 2),
            width=self.width_spin.value(),
            height=self.height_spin.value(),
            batch_size=self.batch.value(),
            shift=self.shift.value(),
            max_sequence_length=self.t5_length.value(),
            model=self.model_reference(),
        )

    def set_params(self, params: GenerationParams, keep_model: bool = False) -> None:
        """Fill the form; a concrete seed turns "random" off so the image can be re-made.
        Values outside a field's range (another tool's file) are brought to its nearest end."""
        # the model first: picking it may apply its family's defaults, which the values
        # below must then override
        if params.model and not keep_model:
            self.select_model(params.model)
        self.prompt.setPlainText(params.prompt)
        self.negative.setPlainText(params.negative_prompt)
        self.random_seed.setChecked(params.seed is None)
        if params.seed is not None:
            _set(self.seed, params.seed)
        _set(self.steps, params.steps)
        _set(self.guidance, params.guidance_scale)
        _set(self.batch, params.batch_size)
        _set(self.shift, params.shift)
        _set(self.t5_length, params.max_sequence_length)
        self.set_size(params.width, params.height)

    def set_size(self, width: int, height: int) -> None:
        for spin, value in ((self.width_spin, width), (self.height_spin, height)):
            spin.blockSignals(True)
            _set(spin, value)
            spin.blockSignals(False)
        self._match_preset()
        self._update_size_note()

    def apply_defaults(self, params: GenerationParams) -> None:
        """A model family's recommended steps, guidance, shift and size (prompts untouched)."""
        self.steps.setValue(params.steps)
        self.guidance.setValue(params.guidance_scale)
        self.shift.setValue(params.shift)
        self.set_size(params.width, params.height)

    def use_seed(self, seed: int) -> None:
        self.random_seed.setChecked(False)
        self.seed.setValue(seed)

    def set_last_seed(self, seed: int) -> None:
        self.last_seed = seed
        self.reuse_seed.setEnabled(True)
        self.reuse_seed.setToolTip(f"Reuse the seed of the last image ({seed})")

    def reuse_last_seed(self) -> None:
        if self.last_seed is not None:
            self.use_seed(self.last_seed)

    # ------------------------------------------------------------------ models

    def set_models(self, models: list[tuple[str, str]], current: str = "") -> None:
        """`models` are (label, reference) pairs; keeps the current pick when still offered."""
        current = current or self.model_reference()
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        if not current:  # nothing picked yet: say so rather than load the first model found
            self.model_combo.addItem("Pick a model…", "")
        for label, reference in models:
            self.model_combo.addItem(label, reference)
            self.model_combo.setItemData(
                self.model_combo.count() - 1, reference, Qt.ItemDataRole.ToolTipRole
            )
        self.model_combo.blockSignals(False)
        if current:
            self.select_model(current)
        self._on_model_index_changed(self.model_combo.currentIndex())

    def select_model(self, reference: str) -> None:
        index = self.model_combo.findData(reference)
        if index < 0:  # a model from an imported image, or one not found any more: keep it
            self.model_combo.addItem(f"{reference} (not found)", reference)
            index = self.model_combo.count() - 1
        self.model_combo.setCurrentIndex(index)

    def model_reference(self) -> str:
        return self.model_combo.currentData() or ""

    def _on_model_index_changed(self, _index: int) -> None:
        reference = self.model_reference()
        if reference != self._model_before:
            self._model_before = reference
            self.model_changed.emit(reference)

    # ------------------------------------------------------------------ feedback

    def show_errors(self, errors: list[FieldError]) -> None:
        """Each error next to its field; the first bad field gets the focus."""
        self.clear_errors()
        general: list[str] = []
        first: QWidget | None = None
        for error in errors:
            label = self._errors.get(error.field)
            if label is None:
                general.append(str(error))
                continue
            label.setText(f"{_FIELD_NAMES.get(error.field, error.field)} {error.message}")
            label.show()
            first = first or self._field_widget(error.field)
        if general:
            self.form_error.setText("\n".join(general))
            self.form_error.show()
        if first is not None:
            if first in self._advanced_fields:
                self.advanced.setChecked(True)
            first.setFocus()

    def clear_errors(self) -> None:
        for label in self._errors.values():
            label.hide()
        self.form_error.hide()

    def set_token_counts(self, prompt: PromptLength | None, negative: PromptLength | None) -> None:
        """Live counts per encoder; red when text will be cut off. None: no model loaded yet."""
        self.prompt_count.setText(_count_text(prompt))
        self.negative_count.setText(_count_text(negative))

    def set_running(self, running: bool) -> None:
        self.cancel_button.setEnabled(running)

    # ------------------------------------------------------------------ form state (restore)

    def state(self) -> dict[str, Any]:
        data = self.params().to_dict()
        data["seed"] = int(self.seed.value())
        data["random_seed"] = self.random_seed.isChecked()
        data["last_seed"] = self.last_seed
        data["advanced"] = self.advanced.isChecked()
        return data

    def restore(self, data: dict[str, Any]) -> None:
        random_seed = bool(data.get("random_seed", True))
        params = GenerationParams.from_dict(
            {k: v for k, v in data.items() if k not in ("random_seed", "last_seed", "advanced")}
        )
        self.set_params(params)
        self.random_seed.setChecked(random_seed)
        if isinstance(data.get("last_seed"), int):
            self.set_last_seed(data["last_seed"])
        self.advanced.setChecked(bool(data.get("advanced", False)))

    # ------------------------------------------------------------------ private slots

    def _on_escape(self) -> None:
        """Esc cancels the running job, except in a text box of its own (the gallery's search,
        where Esc means "clear")."""
        focus = QApplication.focusWidget()
        if isinstance(focus, QLineEdit) and not isinstance(focus.parent(), QAbstractSpinBox):
            focus.clear()
            return
        self.cancel_requested.emit()

    def _on_guidance_changed(self, value: float) -> None:
        # blocked: the slider's own change must not round the box's value (3.75 stays 3.75)
        self.guidance_slider.blockSignals(True)
        self.guidance_slider.setValue(round(min(value, GUIDANCE_SLIDER_MAX) * 10))
        self.guidance_slider.blockSignals(False)
        self.cfg_note.setVisible(value <= 1.0)

    def _on_aspect_changed(self, _index: int) -> None:
        name = self.aspect.currentData()
        for preset in SIZE_PRESETS:
            if preset.name == name:
                self.set_size(preset.width, preset.height)
                return

    def _on_size_edited(self) -> None:
        spin = self.sender()
        if isinstance(spin, QSpinBox) and spin.value() != snap(spin.value()):
            spin.setValue(snap(spin.value()))
        self._match_preset()

    def _match_preset(self) -> None:
        width, height = self.width_spin.value(), self.height_spin.value()
        name = next(
            (p.name for p in SIZE_PRESETS if (p.width, p.height) == (width, height)), CUSTOM
        )
        self.aspect.blockSignals(True)
        self.aspect.setCurrentIndex(self.aspect.findData(name))
        self.aspect.blockSignals(False)

    def _update_size_note(self) -> None:
        width, height = self.width_spin.value(), self.height_spin.value()
        self.size_note.setText(f"{width * height / 1e6:.2f} megapixels")

    def _errors_sources(self) -> list[QWidget]:
        return [self._field_widget(f) for f in self._errors if self._field_widget(f) is not None]

    def _field_widget(self, field: str) -> QWidget | None:
        return {
            "model": self.model_combo,
            "prompt": self.prompt,
            "negative_prompt": self.negative,
            "seed": self.seed,
            "steps": self.steps,
            "guidance_scale": self.guidance,
            "width": self.width_spin,
            "height": self.height_spin,
            "batch_size": self.batch,
            "shift": self.shift,
            "max_sequence_length": self.t5_length,
        }.get(field)

    def _clear_error_for(self, widget: QWidget):
        fields = [f for f in self._errors if self._field_widget(f) is widget]
        return lambda *_: [self._errors[f].hide() for f in fields]


_FIELD_NAMES = {
    "model": "Model:",
    "prompt": "Prompt:",
    "negative_prompt": "Negative prompt:",
    "seed": "Seed",
    "steps": "Steps",
    "guidance_scale": "Guidance",
    "width": "Width",
    "height": "Height",
    "batch_size": "Images per job",
    "shift": "Shift",
    "max_sequence_length": "T5 tokens",
}


def _set(spin: Any, value: float) -> None:
    """Set a spin box to `value` brought into its range (Qt raises on values beyond int32)."""
    spin.setValue(max(spin.minimum(), min(spin.maximum(), value)))


class _WheelOnlyWhenFocused(QObject):
    """Scrolling the form over a field scrolls the form; only a focused field takes the wheel
    (so a wheel over the model list never switches models by accident)."""

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.Wheel and not watched.hasFocus():
            parent = watched.parentWidget()
            if parent is not None:
                QApplication.sendEvent(parent, event)
            return True
        return False


def _connect_any_change(widget: QWidget, slot) -> None:
    for name in ("textChanged", "valueChanged", "currentIndexChanged"):
        signal = getattr(widget, name, None)
        if signal is not None:
            signal.connect(slot)
            return


def _count_text(length: PromptLength | None) -> str:
    if length is None:
        return "<span style='color: gray'>Token counts appear once the model is loaded</span>"
    parts = [_part("CLIP", length.clip_tokens, length.clip_limit, length.clip_truncated)]
    if length.t5_tokens is None:
        parts.append("<span style='color: gray'>T5 off</span>")
    else:
        parts.append(_part("T5", length.t5_tokens, length.t5_limit, length.t5_truncated))
    return " · ".join(parts)


def _part(name: str, count: int, limit: int, truncated: bool) -> str:
    if truncated:
        return f"<b style='color: #d9534f'>{name} {count}/{limit} — cut off</b>"
    return f"{name} {count}/{limit}"
