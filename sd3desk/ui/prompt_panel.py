"""The request form: prompts with token counts, LoRAs, seed, steps, guidance, size, batch and
model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QImage, QKeySequence, QShortcut
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
    QVBoxLayout,
    QWidget,
)

from sd3desk.core.errors import FieldError
from sd3desk.core.params import (
    PROMPT_CHARS_MAX,
    SIZE_PRESETS,
    SLG_LAYERS,
    GenerationParams,
    ModelFamily,
    PromptLength,
)
from sd3desk.ui.form_fields import (
    FIELDS,
    TITLES,
    PromptEdit,
    WheelOnlyWhenFocused,
    change_signal,
    count_text,
    make_widget,
    read,
    snap,
    write,
)
from sd3desk.ui.lora_list import LoraList, rows_from_state
from sd3desk.ui.source_well import SourceWell
from sd3desk.ui.theme import Tone, tone_style
from sd3desk.ui.widgets import label, named, tool_button, wrapping_label

CUSTOM = "Custom"
GUIDANCE_SLIDER_MAX = 20.0  # the slider shows 0-20; the spin box takes up to GUIDANCE_MAX


class PromptPanel(QWidget):
    """Edits one GenerationParams. Holds no business logic: validation happens in core
    (`params.validate`) and the window shows the errors here with `show_errors`."""

    generate_requested = Signal()
    cancel_requested = Signal()
    prompt_edited = Signal()  # prompt, negative prompt or T5 length changed: recount tokens
    form_changed = Signal()  # anything changed (400 ms after the last change): save the form
    model_changed = Signal(str)  # the picked model's reference
    setup_requested = Signal()  # "Add a model…"
    turbo_toggled = Signal(bool)  # the user says the SD3.5 Large model is (not) Turbo

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.last_seed: int | None = None
        self._model_before = ""

        # 1. one widget and one error label per field of the table
        self.widgets = {field.name: make_widget(field) for field in FIELDS}
        self._errors = {field.name: self._error_label(f"{field.name}Error") for field in FIELDS}
        w = self.widgets
        self.model_combo = cast(QComboBox, w["model"])
        self.prompt, self.negative = (cast(PromptEdit, w[k]) for k in ("prompt", "negative_prompt"))
        self.seed, self.guidance, self.shift = (
            cast(QDoubleSpinBox, w[k]) for k in ("seed", "guidance_scale", "shift")
        )
        self.steps, self.width_spin, self.height_spin, self.batch, self.t5_length = (
            cast(QSpinBox, w[k])
            for k in ("steps", "width", "height", "batch_size", "max_sequence_length")
        )
        self.strength, self.hires_scale, self.hires_strength, self.slg = (
            cast(QDoubleSpinBox, w[k])
            for k in ("strength", "hires_scale", "hires_strength", "slg_scale")
        )
        self.mask_blur, self.mask_padding, self.hires_steps = (
            cast(QSpinBox, w[k]) for k in ("mask_blur", "mask_padding", "hires_steps")
        )
        # the source picture: the window stores pictures and sets them here; `load_picture`
        # (set by the window) finds a stored one by its digest when settings are loaded
        self.well = SourceWell()
        # the LoRAs: the window gives the list its library (lora_list.set_library)
        self.lora_list = LoraList()
        self._errors["loras"] = self._error_label("lorasError")
        self.load_picture: Callable[[str], QImage | None] | None = None
        self.strength_slider = named(
            QSlider(Qt.Orientation.Horizontal), "strengthSlider", "Strength slider"
        )
        self.strength_slider.setRange(1, 100)
        self.strength_slider.setToolTip(self.strength.toolTip())
        # 2. the helpers around them
        self.turbo = named(QCheckBox("Turbo"), "turboCheck")
        self.turbo.setToolTip(
            "SD3.5 Large Turbo (4 steps, guidance off): found from the file or repo name; "
            "tick or clear it where the name is wrong"
        )
        self.turbo.hide()
        self.setup_button = tool_button("Add…", "modelSetupButton", "Add a model")
        self.setup_button.setToolTip("Find, download or add a model")
        self.prompt_count = self._note("promptTokens", count_text(None))
        self.negative_count = self._note("negativeTokens", "")
        self.cfg_note = self._note(
            "cfgNote", "Guidance ≤ 1 turns CFG off: the negative prompt has no effect."
        )
        self.random_seed = named(QCheckBox("Random"), "randomSeedCheck")
        self.random_seed.setChecked(True)
        self.random_seed.setToolTip("Pick a new seed for every job")
        self.reuse_seed = tool_button("Last", "reuseSeedButton", "Reuse last seed")
        self.reuse_seed.setToolTip("Reuse the seed of the last image")
        self.reuse_seed.setEnabled(False)
        self.guidance_slider = named(
            QSlider(Qt.Orientation.Horizontal), "guidanceSlider", "Guidance scale slider"
        )
        self.guidance_slider.setRange(0, int(GUIDANCE_SLIDER_MAX * 10))
        self.guidance_slider.setToolTip(self.guidance.toolTip())
        self.aspect = named(QComboBox(), "aspectCombo", "Aspect ratio")
        for preset in SIZE_PRESETS:
            self.aspect.addItem(f"{preset.name}  ({preset.width}×{preset.height})", preset.name)
        self.aspect.addItem(CUSTOM, CUSTOM)
        self.aspect.setToolTip("Sizes around one megapixel, the size SD3 was trained at")
        self.size_note = named(QLabel(), "sizeNote")
        self.generate_button = named(QPushButton("Generate"), "generateButton")
        self.generate_button.setDefault(True)
        self.generate_button.setToolTip("Add a job to the queue (Ctrl+Enter)")
        self.cancel_button = named(QPushButton("Cancel"), "cancelButton")
        self.cancel_button.setToolTip("Stop the running job (Esc)")
        self.cancel_button.setEnabled(False)
        self.form_error = self._error_label("formError")

        self._lay_out()
        self._connect()
        self.set_params(GenerationParams(prompt=""))
        self._update_picture_rows()

    def _note(self, name: str, text: str) -> QLabel:
        note = wrapping_label(name, text)
        note.setTextFormat(Qt.TextFormat.RichText)
        font = note.font()
        font.setPointSizeF(font.pointSizeF() * 0.9)
        note.setFont(font)
        return note

    def _error_label(self, name: str) -> QLabel:
        error = wrapping_label(name)
        error.setStyleSheet(tone_style(Tone.error))
        # at the top: a form row may be taller than one line of text, and the message belongs
        # right under its field
        error.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        error.hide()
        return error

    def _lay_out(self) -> None:
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        model_row = QHBoxLayout()
        model_row.addWidget(self.model_combo, 1)
        model_row.addWidget(self.turbo)
        model_row.addWidget(self.setup_button)
        layout.addLayout(model_row)
        layout.addWidget(self._errors["model"])
        for field, title, below, stretch in (
            ("prompt", "&Prompt", [self.prompt_count], 3),
            ("negative_prompt", "&Negative prompt", [self.negative_count, self.cfg_note], 1),
        ):
            layout.addWidget(label(title, self.widgets[field]))
            layout.addWidget(self.widgets[field], stretch)
            for widget in [*below, self._errors[field]]:
                layout.addWidget(widget)
        layout.addWidget(self.lora_list)
        layout.addWidget(self._errors["loras"])

        def row(form: QFormLayout, title: str, *widgets: QWidget) -> None:
            """A labelled row (the first widget stretches), then the errors of its fields."""
            line = QHBoxLayout()
            for k, widget in enumerate(widgets):
                line.addWidget(widget, 1 if k == 0 else 0)
            form.addRow(label(title, widgets[-1] if widgets[-1] in fields else widgets[0]), line)
            for widget in widgets:
                if widget in fields:
                    form.addRow("", self._errors[fields[widget]])

        fields = {widget: name for name, widget in self.widgets.items()}
        layout.addWidget(self.well)
        self._picture_box = named(QWidget(), "pictureBox")
        pictures = QFormLayout(self._picture_box)
        pictures.setContentsMargins(0, 0, 0, 0)
        pictures.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        row(pictures, "St&rength", self.strength_slider, self.strength)
        self._mask_box = named(QWidget(), "maskBox")
        masks = QFormLayout(self._mask_box)
        masks.setContentsMargins(0, 0, 0, 0)
        masks.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        row(masks, "Mask &blur", self.mask_blur)
        row(masks, "&Only masked", self.mask_padding)
        pictures.addRow(self._mask_box)
        layout.addWidget(self._picture_box)
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        row(form, "&Seed", self.seed, self.random_seed, self.reuse_seed)
        row(form, "S&teps", self.steps)
        row(form, "&Guidance", self.guidance_slider, self.guidance)
        form.addRow(label("&Aspect", self.aspect), self.aspect)
        size = QGridLayout()
        size.addWidget(self.width_spin, 0, 0)
        size.addWidget(QLabel("×"), 0, 1)
        size.addWidget(self.height_spin, 0, 2)
        size.setColumnStretch(0, 1)
        size.setColumnStretch(2, 1)
        form.addRow(label("Si&ze", self.width_spin), size)
        for below in (self.size_note, self._errors["width"], self._errors["height"]):
            form.addRow("", below)
        row(form, "&Images", self.batch)
        layout.addLayout(form)

        self.advanced = tool_button("Advanced", "advancedToggle")
        self.advanced.setCheckable(True)
        self.advanced.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.advanced.setAutoRaise(True)
        self.advanced.setToolTip(
            "Timestep shift, the T5 token limit, the hires fix and skip-layer guidance"
        )
        self._advanced_box = named(QWidget(), "advancedBox")
        inner = QFormLayout(self._advanced_box)
        inner.setContentsMargins(0, 0, 0, 0)
        row(inner, "S&hift", self.shift)
        row(inner, "T5 to&kens", self.t5_length)
        row(inner, "Hires &fix", self.hires_scale)
        row(inner, "Hires ste&ps", self.hires_steps)
        row(inner, "Hires stre&ngth", self.hires_strength)
        self._slg_label = label("Skip-&layer guidance", self.slg)
        inner.addRow(self._slg_label, self.slg)
        inner.addRow("", self._errors["slg_scale"])
        self._advanced_fields = (
            self.shift,
            self.t5_length,
            self.hires_scale,
            self.hires_steps,
            self.hires_strength,
            self.slg,
        )
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
        self.turbo.clicked.connect(self.turbo_toggled)  # (clicked: the user's, not set_family's)
        for edited in (self.prompt.textChanged, self.negative.textChanged):
            edited.connect(self.prompt_edited)
        for name in ("prompt", "negative_prompt"):
            cast(PromptEdit, self.widgets[name]).refused.connect(
                lambda length, cut, name=name: self._on_text_refused(name, length, cut)
            )
        self.t5_length.valueChanged.connect(self.prompt_edited)
        self.random_seed.toggled.connect(lambda on: self.seed.setEnabled(not on))
        self.reuse_seed.clicked.connect(self.reuse_last_seed)
        self.guidance.valueChanged.connect(self._on_guidance_changed)
        self.guidance_slider.valueChanged.connect(lambda v: self.guidance.setValue(v / 10))
        self.aspect.currentIndexChanged.connect(self._on_aspect_changed)
        for spin in (self.width_spin, self.height_spin):
            spin.editingFinished.connect(self._on_size_edited)
            spin.valueChanged.connect(self._update_size_note)
        self.strength.valueChanged.connect(self._on_strength_changed)
        self.strength_slider.valueChanged.connect(lambda v: self.strength.setValue(v / 100))
        self.well.cleared.connect(self.clear_source)
        self.model_combo.currentIndexChanged.connect(self._on_model_index_changed)
        # every field: saving the form, clearing its error; the wheel only when focused
        self._changed = QTimer(self, singleShot=True, interval=400)
        self._changed.timeout.connect(self.form_changed)
        self.random_seed.toggled.connect(lambda *_: self._changed.start())
        self._wheel_filter = WheelOnlyWhenFocused(self)
        for name, widget in self.widgets.items():
            changed = change_signal(widget)
            changed.connect(lambda *_: self._changed.start())
            changed.connect(lambda *_, error=self._errors[name]: error.hide())
            if not isinstance(widget, QPlainTextEdit):
                self._wheel_filter.watch(widget)
        for widget in (self.guidance_slider, self.aspect, self.strength_slider):
            self._wheel_filter.watch(widget)
        self.lora_list.changed.connect(self._changed.start)
        self.lora_list.changed.connect(self._errors["loras"].hide)

    # ------------------------------------------------------------------ the form <-> params

    def params(self) -> GenerationParams:
        """The request as typed (unvalidated; `seed=None` when random)."""
        values = {name: read(widget) for name, widget in self.widgets.items()}
        values["seed"] = None if self.random_seed.isChecked() else int(values["seed"])
        values["guidance_scale"] = round(values["guidance_scale"], 2)
        for name in ("strength", "hires_scale", "hires_strength", "slg_scale"):
            values[name] = round(values[name], 2)
        values["source_image"] = self.well.digest
        values["loras"] = self.lora_list.refs()
        return GenerationParams(**values)

    def set_params(
        self, params: GenerationParams, keep_model: bool = False, keep: tuple[str, ...] = ()
    ) -> None:
        """Fill the form; a concrete seed turns "random" off so the image can be re-made.
        Fields named in `keep` (not in the file that `params` came from) keep the form's own
        values. Values outside a field's range are brought to its nearest end."""
        # the model first: picking it may apply its family's defaults, which the values
        # below must then override
        if params.model and not keep_model:
            self.select_model(params.model)
        if "seed" not in keep:
            self.random_seed.setChecked(params.seed is None)
        for name, widget in self.widgets.items():
            value = getattr(params, name)
            if name in ("model", "width", "height", *keep) or value is None:
                continue
            write(widget, value)
        if "width" not in keep and "height" not in keep:
            self.set_size(params.width, params.height)
        self._set_source(params.source_image)
        if "loras" not in keep:
            self.lora_list.set_refs(params.loras)

    # ------------------------------------------------------------------ the source picture

    def set_source(self, digest: str, picture: QImage, name: str) -> None:
        """Start from `picture` (stored as `digest`); the form shows its strength row."""
        self.well.set_source(digest, picture, name)
        self._update_picture_rows()
        self._changed.start()

    def clear_source(self) -> None:
        self.well.clear()
        self._update_picture_rows()
        self._changed.start()

    def set_masked(self, masked: bool) -> None:
        """Whether a mask is painted: inpainting, with its blur and padding rows."""
        self.well.set_masked(masked)
        self._update_picture_rows()

    def set_family(self, family: ModelFamily | None) -> None:
        """The picked model's family: Turbo's box for SD3.5 Large models, skip-layer guidance
        where it acts."""
        large = (ModelFamily.sd35_large, ModelFamily.sd35_large_turbo)
        self.turbo.setVisible(family in large)
        self.turbo.setChecked(family is ModelFamily.sd35_large_turbo)
        self.set_slg_available(family in SLG_LAYERS)

    def set_slg_available(self, available: bool) -> None:
        """Skip-layer guidance is shown only for families it works on (SD3.5 Medium)."""
        for widget in (self._slg_label, self.slg):
            widget.setVisible(available)

    def _set_source(self, digest: str) -> None:
        if digest == self.well.digest:
            return
        picture = self.load_picture(digest) if digest and self.load_picture else None
        if picture is None:
            self.clear_source()
            if digest:
                message = f"the picture {digest[:12]}… is no longer stored; pick it again"
                self.show_errors([FieldError("source_image", message)])
        else:
            self.set_source(digest, picture, "the stored picture")

    def _update_picture_rows(self) -> None:
        has = bool(self.well.digest)
        self._picture_box.setVisible(has)
        self._mask_box.setVisible(has and self.well.masked)

    def set_size(self, width: int, height: int) -> None:
        for spin, value in ((self.width_spin, width), (self.height_spin, height)):
            spin.blockSignals(True)
            write(spin, value)
            spin.blockSignals(False)
        self._match_preset()
        self._update_size_note()

    def apply_defaults(self, params: GenerationParams) -> None:
        """A model family's recommended steps, guidance, shift, skip-layer guidance and size
        (prompts untouched)."""
        for spin, value in (
            (self.steps, params.steps),
            (self.guidance, params.guidance_scale),
            (self.shift, params.shift),
            (self.slg, params.slg_scale),
        ):
            write(spin, value)
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
        for text, reference in models:
            self.model_combo.addItem(text, reference)
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
            shown = self._errors.get(error.field)
            if shown is None:
                general.append(str(error))
                continue
            shown.setText(f"{TITLES[error.field]} {error.message}")
            shown.show()
            first = first or self.widgets.get(error.field, self.lora_list)
        if general:
            self.form_error.setText("\n".join(general))
            self.form_error.show()
        if first is not None:
            if first in self._advanced_fields:
                self.advanced.setChecked(True)
            first.setFocus()

    def clear_errors(self) -> None:
        for shown in self._errors.values():
            shown.hide()
        self.form_error.hide()

    def set_token_counts(self, prompt: PromptLength | None, negative: PromptLength | None) -> None:
        """Live counts per encoder; red when text will be cut off. None: no model loaded yet."""
        self.prompt_count.setText(count_text(prompt))
        self.negative_count.setText(count_text(negative))

    def set_running(self, running: bool) -> None:
        self.cancel_button.setEnabled(running)

    # ------------------------------------------------------------------ form state (restore)

    def state(self) -> dict[str, Any]:
        data = self.params().to_dict()
        data["seed"] = int(self.seed.value())
        data["random_seed"] = self.random_seed.isChecked()
        data["last_seed"] = self.last_seed
        data["advanced"] = self.advanced.isChecked()
        data["lora_rows"] = self.lora_list.state()  # unticked ones too
        return data

    def restore(self, data: dict[str, Any]) -> None:
        random_seed = bool(data.get("random_seed", True))
        params = GenerationParams.from_dict(
            {k: v for k, v in data.items() if k not in ("random_seed", "last_seed", "advanced")}
        )
        rows = rows_from_state(data["lora_rows"]) if "lora_rows" in data else None
        self.set_params(params, keep=("loras",) if rows is not None else ())
        if rows is not None:
            self.lora_list.restore(rows)
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

    def _on_text_refused(self, name: str, length: int, cut: bool) -> None:
        if cut:
            message = f"was {length:,} characters; only the first {PROMPT_CHARS_MAX:,} were loaded"
        else:
            message = (
                f"would be {length:,} characters with that paste, over the limit of "
                f"{PROMPT_CHARS_MAX:,}; nothing was pasted"
            )
        self.show_errors([FieldError(name, message)])

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
        for spin in (self.width_spin, self.height_spin):
            if spin.value() != snap(spin.value()):
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
        self.well.set_size(width, height)

    def _on_strength_changed(self, value: float) -> None:
        self.strength_slider.blockSignals(True)
        self.strength_slider.setValue(round(value * 100))
        self.strength_slider.blockSignals(False)
