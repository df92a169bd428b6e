"""The queue: jobs with state, position and ETA; reorder, cancel, duplicate, pause."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QListView,
    QMenu,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from sd3desk.core.jobs import Job, JobState
from sd3desk.ui.queue_model import QueueModel
from sd3desk.ui.widgets import named


class QueuePanel(QWidget):
    """Shows the QueueModel and turns clicks into requests. The window connects the requests
    to the runtime's Runner (the only thing that changes the queue)."""

    cancel_requested = Signal(int)
    duplicate_requested = Signal(int)
    pause_toggled = Signal(bool)
    stop_after_current_requested = Signal()
    clear_finished_requested = Signal()
    settings_requested = Signal(object)  # a Job whose settings go back into the form

    def __init__(self, model: QueueModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = model
        self.view = named(QListView(), "queueView", "Job queue")
        self.view.setModel(model)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.view.setDragDropMode(QAbstractItemView.DragDropMode.InternalMove)
        self.view.setDefaultDropAction(Qt.DropAction.MoveAction)
        self.view.setDropIndicatorShown(True)
        self.view.setAlternatingRowColors(True)
        # every row is three lines: uniform sizes spare the view measuring each row on every
        # change; a long line is elided (the tooltip has it all)
        self.view.setUniformItemSizes(True)
        self.view.setWordWrap(False)
        self.view.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.view.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.view.customContextMenuRequested.connect(self._on_view_context_menu)

        self.pause = self._action(
            "Pause", "pauseAction", "Keep waiting jobs waiting (remembered after a restart)"
        )
        self.pause.setCheckable(True)
        self.pause.toggled.connect(self._on_pause_toggled)
        self.stop_after = self._action(
            "Stop after current",
            "stopAfterAction",
            "Let the running job finish, then pause the queue",
        )
        self.stop_after.triggered.connect(self.stop_after_current_requested)
        self.cancel = self._action(
            "Cancel job", "cancelJobAction", "Cancel the selected jobs (Delete)"
        )
        self.cancel.setShortcut(QKeySequence.StandardKey.Delete)
        self.cancel.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        self.cancel.triggered.connect(self._for_selected(self.cancel_requested, active=True))
        self.duplicate = self._action(
            "Duplicate", "duplicateJobAction", "Queue the selected jobs again"
        )
        self.duplicate.triggered.connect(self._for_selected(self.duplicate_requested))
        self.to_form = self._action(
            "Load settings", "jobSettingsAction", "Put the job's settings into the form"
        )
        self.to_form.triggered.connect(self._load_settings)
        self.clear = self._action(
            "Clear finished",
            "clearFinishedAction",
            "Remove finished, failed and cancelled jobs from the list",
        )
        self.clear.triggered.connect(self.clear_finished_requested)
        self.addAction(self.cancel)

        buttons = QHBoxLayout()
        buttons.setSpacing(2)
        for action in (self.pause, self.stop_after, self.cancel, self.duplicate, self.clear):
            button = QToolButton()
            button.setDefaultAction(action)
            button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
            buttons.addWidget(button)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(buttons)
        layout.addWidget(self.view, 1)
        self.view.selectionModel().selectionChanged.connect(self._update_actions)
        for changed in (model.dataChanged, model.layoutChanged, model.rowsRemoved):
            changed.connect(self._update_actions)
        self._update_actions()

    def _action(self, text: str, name: str, tip: str) -> QAction:
        action = QAction(text, self)
        action.setObjectName(name)
        action.setToolTip(tip)
        return action

    def set_paused(self, paused: bool) -> None:
        self.pause.blockSignals(True)
        self.pause.setChecked(paused)
        self.pause.setText("Resume" if paused else "Pause")
        self.pause.blockSignals(False)

    def selected(self) -> list[Job]:
        rows = sorted(i.row() for i in self.view.selectionModel().selectedIndexes())
        return [job for row in rows if (job := self.model.job_at(row)) is not None]

    def _on_pause_toggled(self, paused: bool) -> None:
        self.pause.setText("Resume" if paused else "Pause")
        self.pause_toggled.emit(paused)

    def _for_selected(self, signal, active: bool = False):
        def emit() -> None:
            for job in self.selected():
                if not active or job.state in (JobState.queued, JobState.running):
                    signal.emit(job.id)

        return emit

    def _load_settings(self) -> None:
        jobs = self.selected()
        if jobs:
            self.settings_requested.emit(jobs[0])

    def _update_actions(self) -> None:
        jobs = self.selected()
        self.cancel.setEnabled(any(j.state in (JobState.queued, JobState.running) for j in jobs))
        self.duplicate.setEnabled(bool(jobs))
        self.to_form.setEnabled(bool(jobs))

    def _on_view_context_menu(self, position) -> None:
        index = self.view.indexAt(position)
        if not index.isValid():
            return
        if not self.view.selectionModel().isSelected(index):
            self.view.setCurrentIndex(index)
        menu = QMenu(self)
        for action in (self.cancel, self.duplicate, self.to_form):
            menu.addAction(action)
        menu.addSeparator()
        menu.addAction(self.clear)
        menu.exec(self.view.viewport().mapToGlobal(position))
