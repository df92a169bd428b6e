"""One SQLite file (WAL, versioned schema with migrations) holding the job queue and timings."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from sd3desk.core.errors import StoreError

log = logging.getLogger(__name__)

# Each entry migrates the schema from version i to i + 1; never edit a released entry.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        sort_key REAL NOT NULL,
        state TEXT NOT NULL,
        params TEXT NOT NULL,
        created REAL NOT NULL,
        started REAL,
        ended REAL,
        crashes INTEGER NOT NULL DEFAULT 0,
        note TEXT NOT NULL DEFAULT '',
        error_kind TEXT NOT NULL DEFAULT '',
        error_message TEXT NOT NULL DEFAULT '',
        error_advice TEXT NOT NULL DEFAULT '',
        outputs TEXT NOT NULL DEFAULT '[]'
    );
    CREATE INDEX jobs_by_state ON jobs (state, sort_key);
    CREATE TABLE timings (key TEXT PRIMARY KEY, seconds_per_step REAL NOT NULL,
                          samples INTEGER NOT NULL);
    """,
    # 2: the gallery index (rebuildable from the image files at any time)
    """
    CREATE TABLE images (
        id INTEGER PRIMARY KEY,
        path TEXT NOT NULL UNIQUE,
        mtime_ns INTEGER NOT NULL,
        size INTEGER NOT NULL,
        created REAL NOT NULL,
        prompt TEXT NOT NULL,
        negative_prompt TEXT NOT NULL,
        seed INTEGER,
        width INTEGER,
        height INTEGER,
        model_name TEXT NOT NULL,
        model_hash TEXT NOT NULL,
        params TEXT NOT NULL,
        source TEXT NOT NULL,
        favourite INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX images_by_time ON images (created);
    CREATE INDEX images_by_model ON images (model_name, created);
    CREATE VIRTUAL TABLE images_text USING fts5(
        prompt, negative_prompt, content='images', content_rowid='id', prefix='2 3'
    );
    CREATE TRIGGER images_text_insert AFTER INSERT ON images BEGIN
        INSERT INTO images_text (rowid, prompt, negative_prompt)
        VALUES (new.id, new.prompt, new.negative_prompt);
    END;
    CREATE TRIGGER images_text_delete AFTER DELETE ON images BEGIN
        INSERT INTO images_text (images_text, rowid, prompt, negative_prompt)
        VALUES ('delete', old.id, old.prompt, old.negative_prompt);
    END;
    CREATE TRIGGER images_text_update AFTER UPDATE OF prompt, negative_prompt ON images BEGIN
        INSERT INTO images_text (images_text, rowid, prompt, negative_prompt)
        VALUES ('delete', old.id, old.prompt, old.negative_prompt);
        INSERT INTO images_text (rowid, prompt, negative_prompt)
        VALUES (new.id, new.prompt, new.negative_prompt);
    END;
    """,
    # 3: where each job came from (the front door, and the network address that sent it)
    """
    ALTER TABLE jobs ADD COLUMN source TEXT NOT NULL DEFAULT '';
    ALTER TABLE jobs ADD COLUMN client TEXT NOT NULL DEFAULT '';
    """,
    # 4: where a job's images will land (decided before it runs) and whether it got past
    # loading its model (a crash before that is the model's, not the job's)
    """
    ALTER TABLE jobs ADD COLUMN planned TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE jobs ADD COLUMN generating INTEGER NOT NULL DEFAULT 0;
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


class Store:
    """The app's database. Thread rule: use it from the thread that opened it (the GUI thread).

    Every write is committed before the method returns, so a crash loses nothing acknowledged.
    A database that cannot be read is moved aside (never deleted) and a fresh one started;
    `notices` then says so. One that is locked by another program, or cannot be opened, is left
    alone: StoreError says why.
    """

    BUSY_TIMEOUT_S = 5.0  # how long a statement waits for another connection's lock

    def __init__(
        self,
        path: Path | str,
        clock: Callable[[], float] = time.time,
        busy_timeout_s: float | None = None,
    ) -> None:
        self.path = Path(path) if str(path) != ":memory:" else None
        self.clock = clock
        self.busy_timeout_s = self.BUSY_TIMEOUT_S if busy_timeout_s is None else busy_timeout_s
        self.notices: list[str] = []
        self.db: sqlite3.Connection
        # sd3desk never leaves a 0-byte database (the schema is written on creation): one that
        # is empty was cut short (a crash, a full disk, another program), and says so below
        emptied = self.path is not None and self.path.is_file() and not self.path.stat().st_size
        existed = self.path is None or self.path.exists()
        try:
            self.db = self._open(str(path))
        except sqlite3.OperationalError as exc:
            # locked or busy (another program holds it), or not openable: nothing is wrong
            # with the file, so it stays where it is; one this attempt made (empty: a full
            # disk) goes, so the next start does not take it for a queue cut short
            if not existed and self.path is not None:
                for suffix in ("", "-wal", "-shm"):
                    with contextlib.suppress(OSError):
                        Path(str(self.path) + suffix).unlink()
            raise _unavailable(Path(path), exc) from exc
        except sqlite3.DatabaseError as exc:
            if self.path is None:
                raise
            aside = self.path.with_name(f"{self.path.name}.unreadable-{int(clock())}")
            self.path.rename(aside)
            for suffix in ("-wal", "-shm"):
                Path(str(self.path) + suffix).unlink(missing_ok=True)
            self.notices.append(
                f"The queue database could not be read ({exc}); it was moved to {aside} and a "
                "new one started."
            )
            log.warning("moved unreadable database to %s: %s", aside, exc)
            self.db = self._open(str(path))
        if emptied and not self.db.execute("SELECT 1 FROM jobs LIMIT 1").fetchone():
            self.notices.append(
                f"The queue database {self.path} was empty (0 bytes: cut short by a crash, a full "
                "disk or another program); earlier jobs are gone, and a new queue was started."
            )

    def _open(self, path: str) -> sqlite3.Connection:
        if self.path is not None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise unwritable_folder(self.path.parent, exc) from exc
        db = sqlite3.connect(
            path, isolation_level=None, check_same_thread=True, timeout=self.busy_timeout_s
        )
        try:
            db.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL: a committed transaction survives the app being killed.
            db.execute("PRAGMA synchronous=NORMAL")
            if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("integrity check failed")
            self._migrate(db)
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    @classmethod
    def secondary(cls, path: Path | str, clock: Callable[[], float] = time.time) -> Store:
        """Another connection to a database the app already opened (checked, migrated): for
        another thread (SQLite connections stay on the thread that made them). No integrity
        check, which reads the whole file, and no moving aside; waits up to 5 s for a lock."""
        store = cls.__new__(cls)
        store.path = Path(path)
        store.clock = clock
        store.notices = []
        store.db = sqlite3.connect(str(path), isolation_level=None, timeout=5.0)
        store.db.execute("PRAGMA synchronous=NORMAL")
        return store

    @staticmethod
    def _migrate(db: sqlite3.Connection) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(
                f"schema version {version} is newer than this sd3desk ({SCHEMA_VERSION})"
            )
        for step in range(version, SCHEMA_VERSION):
            db.executescript(
                f"BEGIN; {MIGRATIONS[step]}; PRAGMA user_version = {step + 1}; COMMIT;"
            )

    def get_meta(self, key: str, default: str = "") -> str:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def close(self) -> None:
        self.db.close()


def _unavailable(path: Path, exc: sqlite3.OperationalError) -> StoreError:
    if "full" in str(exc):
        return written_not(exc, path)
    if "locked" in str(exc) or "busy" in str(exc):
        return StoreError(
            f"The queue database {path} is locked by another program (another sd3desk?).",
            "Close the other sd3desk that uses this data folder, or use another one with "
            "--data-dir DIR. The queue itself is intact.",
        )
    return StoreError(
        f"The queue database {path} could not be opened: {exc}.",
        "Check that the data folder exists and is writable, or use another one with "
        "--data-dir DIR.",
    )


def written_not(exc: sqlite3.Error, path: Path | None = None) -> StoreError:
    """A failed write to an open queue database, in words (a full disk above all)."""
    where = f" {path}" if path else ""
    if "locked" in str(exc) or "busy" in str(exc):
        return StoreError(
            f"The queue database{where} is busy: another sd3desk is writing to it.",
            "Try again in a moment; nothing was changed.",
        )
    if "full" in str(exc):
        return StoreError(
            f"The queue database{where} cannot be written: the disk is full.",
            "Free some space on the disk that holds the data folder, then start again; the queue "
            "is as it was before this change.",
        )
    return StoreError(
        f"The queue database{where} cannot be written: {exc}.",
        "Check that the data folder is writable, then start again; the queue is as it was "
        "before this change.",
    )


def unwritable_folder(folder: Path, exc: OSError) -> StoreError:
    """The data folder (or one beside it) cannot be made or written."""
    return StoreError(
        f"The data folder {folder} cannot be written: {exc.strerror or exc}.",
        "Choose another folder (the window offers one; on the command line: --data-dir DIR), "
        "or make this one writable.",
    )
