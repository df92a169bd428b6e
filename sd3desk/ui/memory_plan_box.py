"""The Models dialog's "How to run it" row: the memory plan, chosen where the model is (the same
setting as File → Settings → Memory plan), so a small GPU's user picks "T5 in 8-bit" or "MMDiT
and T5 in 4-bit" beside the model."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QGroupBox, QHBoxLayout

from sd3desk.core.settings import PLAN_LABELS, MemoryPlan
from sd3desk.ui.widgets import label, named

PLAN_NOTE = (
    "Automatic keeps everything on the GPU in 16-bit when it fits, and otherwise stores T5 (then "
    "the MMDiT) in 8 or 4 bits before it falls back to moving parts in turn. On an 8 GB card "
    "SD3 Medium runs with the MMDiT and T5 in 4-bit; a GGUF file's MMDiT stays as it is."
)


class MemoryPlanBox(QGroupBox):
    """A memory plan combo; `plan_chosen` says the user picked another one."""

    plan_chosen = Signal(object)  # a MemoryPlan

    def __init__(self, plan: MemoryPlan) -> None:
        super().__init__("How to run it")
        self.setObjectName("memoryPlanBox")
        self.combo = named(QComboBox(), "modelsMemoryPlanCombo", "Memory plan")
        for each, text in PLAN_LABELS.items():
            self.combo.addItem(text, each)
        self.combo.setCurrentIndex(self.combo.findData(plan))
        self.combo.setToolTip(PLAN_NOTE)
        self.combo.activated.connect(lambda _: self.plan_chosen.emit(self.combo.currentData()))
        layout = QHBoxLayout(self)  # (one row: the dialog has no height to spare)
        layout.addWidget(label("&Memory plan", self.combo))
        layout.addWidget(self.combo, 1)
