"""Queue → Add from file…: the jobs of a batch file (the parser `sd3desk batch` uses), counted
and shown before they are queued."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from sd3desk.core.batch import BatchFileError, BatchPlan, read_batch
from sd3desk.core.params import SEED_MAX, GenerationParams
from sd3desk.ui.widgets import label, named, wrapping_label

BATCH_FILE_FILTER = "Batch files (*.txt *.jsonl *.csv);;All files (*)"
WINDOW_JOBS_MAX = 10_000  # more at once belongs to `sd3desk batch` (no queue rows for them)
SHOWN_JOBS = 12  # the first jobs listed before adding
EXPAND_DELAY_MS = 250  # options are re-expanded this long after the last change


class AddFromFileDialog(QDialog):
    """Expands the file with the chosen seeds and wildcards over `base` (the form's request:
    model, steps, guidance, size for what the file leaves out); `jobs()` after accept()."""

    def __init__(
        self,
        path: Path,
        base: GenerationParams,
        max_side: int | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("addFromFileDialog")
        self.setWindowTitle(f"Add jobs from {path.name}")
        self.path, self._base, self._max_side = path, base, max_side
        self._plan = BatchPlan([])
        self.seeds = named(QSpinBox(), "batchSeedsSpin", "Images per prompt")
        self.seeds.setRange(1, 1000)
        self.seeds.setToolTip("Images of each prompt, each with its own seed")
        self.seed_mode = named(QComboBox(), "batchSeedModeCombo", "Seeds")
        self.seed_mode.addItem("From each prompt's text (the same on every run)", "prompt")
        self.seed_mode.addItem("Counting from", "count")
        self.seed_start = named(QDoubleSpinBox(), "batchSeedStartSpin", "First seed")
        self.seed_start.setDecimals(0)
        self.seed_start.setRange(0, SEED_MAX)
        self.seed_start.setEnabled(False)
        self.wildcards = named(QLineEdit(), "batchWildcardsEdit", "Wildcards folder")
        self.wildcards.setPlaceholderText("a folder of name.txt files for __name__ (optional)")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._choose_wildcards)
        self.summary = wrapping_label("batchSummaryLabel")
        self.preview = named(QPlainTextEdit(), "batchPreviewText", "The first jobs")
        self.preview.setReadOnly(True)
        self.preview.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)

        form = QFormLayout()
        form.addRow(label("&Images per prompt", self.seeds), self.seeds)
        seed_row = QHBoxLayout()
        seed_row.addWidget(self.seed_mode, 1)
        seed_row.addWidget(self.seed_start)
        form.addRow(label("&Seeds", self.seed_mode), seed_row)
        wildcard_row = QHBoxLayout()
        wildcard_row.addWidget(self.wildcards, 1)
        wildcard_row.addWidget(browse)
        form.addRow(label("&Wildcards", self.wildcards), wildcard_row)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.summary)
        layout.addWidget(self.preview, 1)
        layout.addWidget(self.buttons)
        self.resize(640, 420)

        self._timer = QTimer(self, singleShot=True, interval=EXPAND_DELAY_MS)
        self._timer.timeout.connect(self.expand)
        self.seeds.valueChanged.connect(self._timer.start)
        self.seed_start.valueChanged.connect(self._timer.start)
        self.seed_mode.currentIndexChanged.connect(self._on_seed_mode_changed)
        self.wildcards.textChanged.connect(self._timer.start)
        self.expand()

    def jobs(self) -> list[GenerationParams]:
        return list(self._plan.jobs)

    def expand(self) -> None:
        """Read the file with the options as they are now; show the count, the skipped lines
        and the first jobs; OK is enabled only when there is something to add."""
        self._timer.stop()
        counting = self.seed_mode.currentData() == "count"
        folder = self.wildcards.text().strip()
        ok = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        try:
            plan = read_batch(
                self.path,
                self._base,
                seeds=self.seeds.value(),
                seed_start=int(self.seed_start.value()) if counting else None,
                wildcards=Path(folder) if folder else None,
                max_side=self._max_side,
            )
        except BatchFileError as exc:
            self._plan = BatchPlan([])
            self.summary.setText(str(exc))
            self.preview.setPlainText("")
            ok.setText("Add")
            ok.setEnabled(False)
            return
        count = len(plan.jobs)
        too_many = count > WINDOW_JOBS_MAX
        self._plan = BatchPlan([]) if too_many else plan
        skipped = len(plan.bad_lines)
        words = [f"{count:,} job{'s' * (count != 1)} from {self.path.name}"]
        if skipped:
            words.append(f"{skipped} line{'s' * (skipped != 1)} skipped")
        if too_many:
            words.append(f"more than {WINDOW_JOBS_MAX:,} at once: run it with `sd3desk batch`")
        self.summary.setText(" · ".join(words))
        lines = [f"Skipped {bad}" for bad in plan.bad_lines]
        lines += [_describe(n, job) for n, job in enumerate(plan.jobs[:SHOWN_JOBS], start=1)]
        if count > SHOWN_JOBS:
            lines.append(f"… and {count - SHOWN_JOBS:,} more")
        self.preview.setPlainText("\n".join(lines))
        ok.setText(f"Add {count:,} job{'s' * (count != 1)}" if count else "Add")
        ok.setEnabled(bool(count) and not too_many)

    def _on_seed_mode_changed(self, _index: int) -> None:
        self.seed_start.setEnabled(self.seed_mode.currentData() == "count")
        self._timer.start()

    def _choose_wildcards(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Wildcards folder", self.wildcards.text())
        if folder:
            self.wildcards.setText(folder)


def _describe(number: int, job: GenerationParams) -> str:
    prompt = job.prompt if len(job.prompt) <= 80 else job.prompt[:79] + "…"
    return (
        f"{number}. {prompt} — seed {job.seed}, {job.steps} steps, guidance "
        f"{job.guidance_scale:g}, {job.width}×{job.height}"
    )
