"""Settings: output folder, device, memory plan, T5, previews, performance (fast mode), theme,
model, LoRA and gallery folders, GPU workers, serving."""

from __future__ import annotations

import dataclasses

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from sd3desk.core.settings import (
    PLAN_LABELS,
    SPEED_LABELS,
    SPEED_NOTE,
    Device,
    Settings,
    Theme,
)
from sd3desk.ui.widgets import label, named, wrapping_label

_DEVICE_WORDS = {
    Device.auto: "Automatic (CUDA, then Apple GPU, then CPU)",
    Device.cuda: "NVIDIA GPU (CUDA)",
    Device.mps: "Apple GPU (MPS)",
    Device.cpu: "CPU (slow; for trying only)",
}


class SettingsDialog(QDialog):
    """Edits a copy of Settings; `result_settings()` gives the edited one after accept()."""

    def __init__(
        self,
        settings: Settings,
        default_output: str,
        parent: QWidget | None = None,
        lora_folder: str = "",
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.setObjectName("settingsDialog")
        self._settings = settings
        self.output = named(QLineEdit(settings.output_dir), "outputDirEdit", "Output folder")
        self.output.setPlaceholderText(default_output)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._choose_output)
        self.device = self._combo("deviceCombo", _DEVICE_WORDS, settings.device)
        self.plan = self._combo("memoryPlanCombo", PLAN_LABELS, settings.memory_plan)
        self.plan.setToolTip(
            "Which parts stay in 16-bit and which are stored smaller (8-bit, 4-bit, fp8) or "
            "moved to the GPU part by part; Automatic takes the fastest that fits"
        )
        self.speed = self._combo("speedCombo", SPEED_LABELS, settings.speed)
        self.speed.setToolTip(SPEED_NOTE)
        self.use_t5 = named(
            QCheckBox("Use the T5 text encoder (better prompt following; ~9 GB more memory)"),
            "useT5Check",
        )
        self.use_t5.setChecked(settings.use_t5)
        self.preview_decoder = named(
            QCheckBox("Previews that look like the image (TAESD3, once downloaded in Models)"),
            "previewDecoderCheck",
        )
        self.preview_decoder.setChecked(settings.preview_decoder)
        self.preview_decoder.setToolTip(
            "Decodes each step's preview with the tiny SD3 autoencoder (~10 MB, File → Models) "
            "instead of a colour approximation; images are the same either way. From the next "
            "job on, without reloading the model"
        )
        self.theme = self._combo(
            "themeCombo",
            {Theme.system: "System", Theme.light: "Light", Theme.dark: "Dark"},
            settings.theme,
        )
        self.model_dirs, model_dirs_box = self._folder_list(
            "modelDirsList", "Model folders", settings.model_dirs, "A folder with SD3 models"
        )
        self.lora_dirs, lora_dirs_box = self._folder_list(
            "loraDirsList",
            "LoRA folders",
            settings.lora_dirs,
            "A folder with LoRAs",
            fixed=lora_folder,
        )
        self.lora_dirs.setToolTip(
            "Where the form's “Add LoRA…” looks for LoRA .safetensors files (and subfolders, a "
            "few levels deep); the data folder's own is always searched first"
        )
        self.gallery_dirs, gallery_dirs_box = self._folder_list(
            "galleryDirsList",
            "Gallery folders",
            settings.gallery_dirs,
            "A folder of images to show in the gallery",
        )
        self.gallery_dirs.setToolTip(
            "Shown in the gallery besides the output folder: a batch's --out folder, or "
            "another program's outputs (their parameters are read too)"
        )
        self.workers = named(QSpinBox(), "gpuWorkersSpin", "GPU workers")
        self.workers.setRange(1, 8)
        self.workers.setValue(settings.gpu_workers)
        self.workers.setToolTip("One worker per NVIDIA GPU (cuda:0, cuda:1, …); 1–8")

        form = QFormLayout()
        out_row = QHBoxLayout()
        out_row.addWidget(self.output, 1)
        out_row.addWidget(browse)
        form.addRow(label("&Output folder", self.output), out_row)
        form.addRow("&Device", self.device)
        form.addRow("&Memory plan", self.plan)
        form.addRow("", self.use_t5)
        form.addRow("", self.preview_decoder)
        form.addRow(label("&Performance", self.speed), self.speed)
        form.addRow("&Theme", self.theme)
        form.addRow(label("Model &folders", self.model_dirs), model_dirs_box)
        form.addRow(label("Lo&RA folders", self.lora_dirs), lora_dirs_box)
        form.addRow(label("Ga&llery folders", self.gallery_dirs), gallery_dirs_box)
        form.addRow("&GPU workers", self.workers)
        serve = self._serve_box(settings)
        note = wrapping_label(
            "settingsNote",
            "Device, memory plan, T5 and performance apply at once (the model reloads); the "
            "output folder "
            "and the number of GPU workers at the next start.",
        )
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(serve)
        layout.addWidget(note)
        layout.addWidget(buttons)
        self.resize(620, self.sizeHint().height())

    def _serve_box(self, settings: Settings) -> QGroupBox:
        box = named(QGroupBox("Serve on this computer"), "serveBox")
        box.setCheckable(True)
        box.setChecked(settings.serve)
        box.setToolTip(
            "A web page and the AUTOMATIC1111 and sd3desk APIs on this queue, for browsers and "
            "apps such as Open WebUI or SillyTavern"
        )
        self.serve = box
        self.serve_host = named(QLineEdit(settings.serve_host), "serveHostEdit", "Address")
        self.serve_host.setToolTip(
            "127.0.0.1: this computer only. 0.0.0.0: every network it is on (needs a token)"
        )
        self.serve_port = named(QSpinBox(), "servePortSpin", "Port")
        self.serve_port.setRange(1, 65535)
        self.serve_port.setValue(settings.serve_port)
        self.serve_token = named(QLineEdit(settings.serve_token), "serveTokenEdit", "Token")
        self.serve_token.setEchoMode(QLineEdit.EchoMode.PasswordEchoOnEdit)
        self.serve_token.setPlaceholderText("none on 127.0.0.1; made for you on other addresses")
        grid = QFormLayout(box)
        row = QHBoxLayout()
        row.addWidget(self.serve_host, 1)
        row.addWidget(label("&Port", self.serve_port))
        row.addWidget(self.serve_port)
        grid.addRow(label("&Address", self.serve_host), row)
        grid.addRow(label("To&ken", self.serve_token), self.serve_token)
        grid.addRow(
            "",
            wrapping_label(
                "serveNote",
                "Clients send the token as “Authorization: Bearer …” or as the password of HTTP "
                "Basic (any user name); a browser asks for it. A token made for you shows "
                "when you point at “Serving at …” in the status bar.",
            ),
        )
        return box

    @staticmethod
    def _combo(name: str, words: dict, current) -> QComboBox:
        combo = named(QComboBox(), name)
        for value, text in words.items():
            combo.addItem(text, value)
        combo.setCurrentIndex(combo.findData(current))
        return combo

    def _choose_output(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Output folder", self.output.text())
        if folder:
            self.output.setText(folder)

    def _folder_list(
        self, name: str, title: str, folders: tuple[str, ...], question: str, fixed: str = ""
    ) -> tuple[QListWidget, QHBoxLayout]:
        """A list of folders with Add… and Remove buttons beside it (the dialog stays short
        enough for a laptop's screen); `fixed`, a folder always used, is listed first and can
        be neither selected nor removed."""
        folder_list = named(QListWidget(), name, title)
        if fixed:
            item = QListWidgetItem(f"{fixed}  (sd3desk's own)")
            item.setToolTip(f"{fixed}: sd3desk's own folder, always searched")
            item.setData(Qt.ItemDataRole.UserRole, fixed)
            item.setFlags(Qt.ItemFlag.NoItemFlags)  # shown greyed out: not an editable entry
            folder_list.addItem(item)
        folder_list.addItems(list(folders))
        folder_list.setMaximumHeight(72)
        folder_list.setSelectionMode(QListWidget.SelectionMode.ExtendedSelection)

        def add() -> None:
            folder = QFileDialog.getExistingDirectory(self, question)
            known = self._folders(folder_list) + ((fixed,) if fixed else ())
            if folder and folder not in known:
                folder_list.addItem(folder)

        def remove() -> None:
            for item in folder_list.selectedItems():
                folder_list.takeItem(folder_list.row(item))

        add_button, remove_button = QPushButton("Add…"), QPushButton("Remove")
        add_button.clicked.connect(add)
        remove_button.clicked.connect(remove)
        buttons = QVBoxLayout()
        buttons.addWidget(add_button)
        buttons.addWidget(remove_button)
        buttons.addStretch(1)
        box = QHBoxLayout()
        box.addWidget(folder_list, 1)
        box.addLayout(buttons)
        return folder_list, box

    @staticmethod
    def _folders(folder_list: QListWidget) -> tuple[str, ...]:
        """The folders the user listed (not a fixed one)."""
        items = (folder_list.item(i) for i in range(folder_list.count()))
        return tuple(item.text() for item in items if item.data(Qt.ItemDataRole.UserRole) is None)

    def result_settings(self) -> Settings:
        return dataclasses.replace(
            self._settings,
            output_dir=self.output.text().strip(),
            device=self.device.currentData(),
            memory_plan=self.plan.currentData(),
            use_t5=self.use_t5.isChecked(),
            preview_decoder=self.preview_decoder.isChecked(),
            speed=self.speed.currentData(),
            theme=self.theme.currentData(),
            model_dirs=self._folders(self.model_dirs),
            lora_dirs=self._folders(self.lora_dirs),
            gallery_dirs=self._folders(self.gallery_dirs),
            gpu_workers=self.workers.value(),
            serve=self.serve.isChecked(),
            serve_host=self.serve_host.text().strip() or "127.0.0.1",
            serve_port=self.serve_port.value(),
            serve_token=self.serve_token.text().strip(),
        )
