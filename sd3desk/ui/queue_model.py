"""A list model over the job queue: running and waiting jobs with ETAs, then recent ones."""

from __future__ import annotations

import time
from typing import Any

from PySide6.QtCore import QAbstractListModel, QMimeData, QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtGui import QColor

from sd3desk.core.jobs import DONE, Eta, Job, JobQueue, JobState

JOB_ROLE = Qt.ItemDataRole.UserRole + 1
MIME = "application/x-sd3desk-job-ids"
DONE_SHOWN = 200  # recent finished jobs kept in the list; the rest stay in the database
ETA_REFRESH_S = 1.0

_STATE_WORDS = {
    JobState.queued: "waiting",
    JobState.running: "running",
    JobState.finished: "done",
    JobState.failed: "failed",
    JobState.cancelled: "cancelled",
}


def format_seconds(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


class QueueModel(QAbstractListModel):
    """Rows are Jobs from `queue.jobs()`. `refresh(progress)` reloads them (the queue is small:
    waiting jobs plus at most DONE_SHOWN recent ones). Waiting jobs can be dragged to reorder.

    Thread rule: GUI thread only, like the JobQueue it reads.
    """

    def __init__(self, queue: JobQueue) -> None:
        super().__init__()
        self.queue = queue
        self._jobs: list[Job] = []
        self._etas: dict[int, Eta] = {}
        self._places: dict[int, int] = {}  # job id -> 1 for the next waiting job
        self._etas_at = 0.0
        self._progress: dict[int, int] = {}
        self._rates: dict[str, float] = {}
        self.refresh()

    def refresh(
        self, progress: dict[int, int] | None = None, rates: dict[str, float] | None = None
    ) -> None:
        """Reload the jobs; `progress` is steps done per running job, `rates` the runner's
        live seconds per step (see JobQueue.etas)."""
        self._progress = dict(progress or {})
        self._rates = dict(rates or {})
        jobs = self.queue.jobs()
        active = [j for j in jobs if j.state not in DONE]
        done = [j for j in jobs if j.state in DONE][:DONE_SHOWN]
        self.beginResetModel()
        self._jobs = active + done
        waiting = (j for j in active if j.state is JobState.queued)
        self._places = {job.id: place for place, job in enumerate(waiting, start=1)}
        self._etas = self.queue.etas(self._progress, self._rates)
        self._etas_at = time.monotonic()
        self.endResetModel()

    def update_progress(self, job_id: int, step: int, rates: dict[str, float] | None = None):
        """A step landed: refresh that row's text; the ETAs of every row at most once a second
        (they cost a few queries)."""
        self._progress[job_id] = step
        active = [row for row, job in enumerate(self._jobs) if job.state not in DONE]
        first_rate = rates is not None and not set(rates) <= set(self._rates)
        due = time.monotonic() - self._etas_at >= ETA_REFRESH_S
        if rates is not None and (first_rate or due) and active:
            self._rates = dict(rates)
            self._etas = self.queue.etas(self._progress, self._rates)
            self._etas_at = time.monotonic()
            self.dataChanged.emit(
                self.index(active[0]), self.index(active[-1]), [Qt.ItemDataRole.DisplayRole]
            )
            return
        row = self.row_of(job_id)
        if row >= 0:
            index = self.index(row)
            self.dataChanged.emit(index, index, [Qt.ItemDataRole.DisplayRole])

    def job_at(self, row: int) -> Job | None:
        return self._jobs[row] if 0 <= row < len(self._jobs) else None

    def row_of(self, job_id: int) -> int:
        return next((row for row, job in enumerate(self._jobs) if job.id == job_id), -1)

    # ------------------------------------------------------------------ Qt model API

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._jobs)

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = 0) -> Any:
        job = self.job_at(index.row())
        if job is None:
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return self._text(job)
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(job)
        if role == Qt.ItemDataRole.ForegroundRole:
            if job.state is JobState.failed:
                return QColor("#d9534f")
            if job.state in DONE:
                return QColor("gray")
            return None
        if role == JOB_ROLE:
            return job
        if role == Qt.ItemDataRole.AccessibleTextRole:
            return self._text(job).replace("\n", ", ")
        return None

    def flags(self, index: QModelIndex | QPersistentModelIndex) -> Qt.ItemFlag:
        flags = Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemIsEnabled
        if not index.isValid():
            return flags | Qt.ItemFlag.ItemIsDropEnabled
        job = self.job_at(index.row())
        if job is not None and job.state is JobState.queued:
            flags |= Qt.ItemFlag.ItemIsDragEnabled
        return flags

    def supportedDropActions(self) -> Qt.DropAction:
        return Qt.DropAction.MoveAction

    def mimeTypes(self) -> list[str]:
        return [MIME]

    def mimeData(self, indexes: list[QModelIndex]) -> QMimeData:
        data = QMimeData()
        ids = [str(job.id) for i in indexes if (job := self.job_at(i.row())) is not None]
        data.setData(MIME, ",".join(ids).encode())
        return data

    def dropMimeData(self, data: QMimeData, action, row: int, column: int, parent) -> bool:
        """Move the dragged waiting jobs to where they were dropped among the waiting jobs."""
        if not data.hasFormat(MIME) or action != Qt.DropAction.MoveAction:
            return False
        dragged = {int(t) for t in bytes(data.data(MIME).data()).decode().split(",") if t}
        if row < 0:
            row = parent.row() if parent.isValid() else len(self._jobs)
        # in list order, whatever order they were selected in; a job that started running
        # during the drag (the runner keeps going) stays where it is
        ids = [j.id for j in self._jobs if j.id in dragged and j.state is JobState.queued]
        # the new place among the other waiting jobs = how many of them sit above the drop
        target = sum(
            1 for j in self._jobs[:row] if j.state is JobState.queued and j.id not in dragged
        )
        self.queue.place(ids, target)
        self.refresh(self._progress, self._rates)
        return False  # we moved the rows ourselves; the view must not remove anything

    # ------------------------------------------------------------------ text

    def _text(self, job: Job) -> str:
        p = job.params
        prompt = p.prompt if len(p.prompt) <= 60 else p.prompt[:57] + "…"
        status = _STATE_WORDS[job.state]
        if job.state is JobState.running:
            step = self._progress.get(job.id, 0)
            status += f" · step {step}/{p.steps}"
        elif job.state is JobState.queued:
            status += f" · {_ordinal(self._places[job.id])}"
        eta = self._etas.get(job.id)
        if eta is not None and job.state not in DONE:
            status += f" · {'~' if eta.estimated else ''}{format_seconds(eta.seconds)} left"
        if job.note and job.state is JobState.queued:
            status += f" · {job.note}"
        if job.state is JobState.failed:
            status += f" · {job.error_message}"
        images = f" · {p.batch_size} images" if p.batch_size > 1 else ""
        return (
            f"#{job.id} {status}\n{prompt or '(no prompt)'}\n"
            f"{p.width}×{p.height} · {p.steps} steps · seed {p.seed}{images}"
        )

    def _tooltip(self, job: Job) -> str:
        lines = [job.params.prompt or "(no prompt)"]
        if job.params.negative_prompt:
            lines.append(f"Negative: {job.params.negative_prompt}")
        lines.append(f"Model: {job.params.model}")
        if job.error_message:
            lines.append(f"Error: {job.error_message}")
        if job.error_advice:
            lines.append(f"Advice: {job.error_advice}")
        if job.note:
            lines.append(job.note)
        return "\n".join(lines)
