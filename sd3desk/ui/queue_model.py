"""A list model over the runner's queue snapshots: running and waiting jobs with their place and
ETA, then recent ones. It never reads the database: every row comes from the runner's events."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from PySide6.QtCore import (
    QAbstractListModel,
    QMimeData,
    QModelIndex,
    QPersistentModelIndex,
    Qt,
    Signal,
)
from PySide6.QtGui import QColor

from sd3desk.core.jobs import DONE, Job, JobState
from sd3desk.core.words import duration, ordinal
from sd3desk.runtime.events import QueueSnapshot, StepProgress
from sd3desk.ui.theme import Tone

JOB_ROLE = Qt.ItemDataRole.UserRole + 1
MIME = "application/x-sd3desk-job-ids"
ETA_REFRESH_S = 1.0  # while a job runs, ETAs are redrawn at most this often

_STATE_WORDS = {
    JobState.queued: "waiting",
    JobState.running: "running",
    JobState.finished: "done",
    JobState.failed: "failed",
    JobState.cancelled: "cancelled",
}


# Jobs that came through another door than this window say so (and from which address).
_SOURCE_WORDS = {"web": "from the web page", "a1111": "from an A1111 client", "api": "from the API"}


class QueueModel(QAbstractListModel):
    """Rows are the jobs of the latest QueueSnapshot: running, waiting in order, then done.

    `show(snapshot)` moves, inserts and removes rows as the snapshot says (never a reset), so
    the view keeps its selection and scroll position while jobs run. Dropping dragged jobs asks
    for a move with `place_requested`; the runner makes it and the next snapshot shows it.

    Thread rule: GUI thread only.
    """

    place_requested = Signal(object, int)  # job ids in order, 0-based index among waiting jobs

    def __init__(self, snapshot: QueueSnapshot) -> None:
        super().__init__()
        self._jobs: list[Job] = []
        # job id -> what its row's text was made from, and that text
        self._shown: dict[int, tuple[tuple, str]] = {}
        self._snapshot = QueueSnapshot()
        self._etas_at = 0.0
        self.show(snapshot)

    @property
    def snapshot(self) -> QueueSnapshot:
        return self._snapshot

    def show(self, snapshot: QueueSnapshot) -> None:
        """Bring the rows in line with `snapshot`: gone jobs removed, new ones inserted, the
        rest moved into the new order, changed ones redrawn."""
        self._snapshot = snapshot
        self._etas_at = time.monotonic()
        wanted = list(snapshot.jobs)
        wanted_ids = {job.id for job in wanted}
        # 1. remove rows of jobs that are gone (cleared), bottom up
        for row in range(len(self._jobs) - 1, -1, -1):
            if self._jobs[row].id not in wanted_ids:
                self.beginRemoveRows(QModelIndex(), row, row)
                del self._jobs[row]
                self.endRemoveRows()
        # 2. insert rows for new jobs at the end, then 3. move every row where it belongs
        known = {job.id for job in self._jobs}
        new = [job for job in wanted if job.id not in known]
        if new:
            first = len(self._jobs)
            self.beginInsertRows(QModelIndex(), first, first + len(new) - 1)
            self._jobs += new
            self.endInsertRows()
        if [job.id for job in self._jobs] != [job.id for job in wanted]:
            self._reorder(wanted)
        else:
            self._jobs = wanted
        self._shown = {job.id: shown for job in wanted if (shown := self._shown.get(job.id))}
        self._redraw(range(len(self._jobs)))

    def _redraw(self, rows: range) -> None:
        """Redraw the rows whose text changed, and only those: a view lays out every row it
        is told about, so telling it about all of them on every change cost ~1 ms per row."""
        changed = []
        for row in rows:
            job = self._jobs[row]
            looks = self._looks(job)
            before = self._shown.get(job.id)
            if before is not None and before[0] == looks:
                continue  # the same job object in the same place, step and ETA: same text
            text = self._text(job)
            self._shown[job.id] = (looks, text)
            if before is None or before[1] != text:
                changed.append(row)
        start = None
        for k, row in enumerate(changed):  # contiguous runs, one signal each
            start = row if start is None else start
            if k + 1 == len(changed) or changed[k + 1] != row + 1:
                self.dataChanged.emit(self.index(start), self.index(row))
                start = None

    def _reorder(self, wanted: list[Job]) -> None:
        """A layout change that keeps persistent indexes (selection, current row) on their jobs."""
        self.layoutAboutToBeChanged.emit()
        new_row = {job.id: row for row, job in enumerate(wanted)}
        old_ids = [job.id for job in self._jobs]
        persistent = self.persistentIndexList()
        moved = [self.index(new_row[old_ids[index.row()]]) for index in persistent]
        self._jobs = wanted
        self.changePersistentIndexList(persistent, moved)
        self.layoutChanged.emit()

    def step(self, event: StepProgress, snapshot: QueueSnapshot) -> None:
        """A step landed: redraw that row; every active row's ETA at most once a second."""
        due = time.monotonic() - self._etas_at >= ETA_REFRESH_S
        first_rate = set(snapshot.live_rates) - set(self._snapshot.live_rates)
        self._snapshot = snapshot
        active = [row for row, job in enumerate(self._jobs) if job.state not in DONE]
        if (due or first_rate) and active:
            self._etas_at = time.monotonic()
            self._redraw(range(active[0], active[-1] + 1))
            return
        row = self.row_of(event.job_id)
        if row >= 0:
            self._redraw(range(row, row + 1))

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
            shown = self._shown.get(job.id)
            return shown[1] if shown else self._text(job)
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(job)
        if role == Qt.ItemDataRole.ForegroundRole:
            if job.state is JobState.failed:
                return QColor(Tone.error.value)
            return QColor(Tone.muted.value) if job.state in DONE else None
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

    def mimeData(self, indexes: Sequence[QModelIndex]) -> QMimeData:
        data = QMimeData()
        ids = [str(job.id) for i in indexes if (job := self.job_at(i.row())) is not None]
        data.setData(MIME, ",".join(ids).encode())
        return data

    def dropMimeData(
        self,
        data: QMimeData,
        action: Qt.DropAction,
        row: int,
        column: int,
        parent: QModelIndex | QPersistentModelIndex,
    ) -> bool:
        """Ask to move the dragged waiting jobs to where they were dropped among the others."""
        if not data.hasFormat(MIME) or action != Qt.DropAction.MoveAction:
            return False
        text = bytes(data.data(MIME).data()).decode()
        dragged = {int(t) for t in text.split(",") if t}
        if row < 0:
            row = parent.row() if parent.isValid() else len(self._jobs)
        # in list order, whatever order they were selected in; a job that started running
        # during the drag (the runner keeps going) stays where it is
        ids = [j.id for j in self._jobs if j.id in dragged and j.state is JobState.queued]
        # the new place among the other waiting jobs = how many of them sit above the drop
        target = sum(
            1 for j in self._jobs[:row] if j.state is JobState.queued and j.id not in dragged
        )
        self.place_requested.emit(ids, target)
        return False  # the runner moves them; the view must not remove anything itself

    # ------------------------------------------------------------------ text

    def _looks(self, job: Job) -> tuple:
        """What a row's text is made of, cheap to compare: a burst of enqueues redraws only
        the new rows instead of formatting every row's text again on each one."""
        snapshot = self._snapshot
        eta = snapshot.etas.get(job.id)
        seconds = None if eta is None else (round(eta.seconds), eta.estimated)
        return (job, snapshot.progress.get(job.id), snapshot.places.get(job.id), seconds)

    def _text(self, job: Job) -> str:
        p = job.params
        prompt = p.prompt if len(p.prompt) <= 60 else p.prompt[:57] + "…"
        status = _STATE_WORDS[job.state]
        if job.state is JobState.running:
            status += f" · step {self._snapshot.progress.get(job.id, 0)}/{p.steps}"
        elif job.state is JobState.queued:
            status += f" · {ordinal(self._snapshot.places.get(job.id, 0))}"
        eta = self._snapshot.etas.get(job.id)
        if eta is not None and job.state not in DONE:
            status += f" · {'~' if eta.estimated else ''}{duration(eta.seconds)} left"
        if job.note and job.state is JobState.queued:
            status += f" · {job.note}"
        if job.source in _SOURCE_WORDS:
            status += f" · {_SOURCE_WORDS[job.source]}" + (f" {job.client}" if job.client else "")
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
