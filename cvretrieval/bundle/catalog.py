"""The live catalog of a bundle: one SQLite row per image it was asked to index.

Row ``id`` is the image's catalog id (what the index stores and searches return).
``status`` is ``ok`` (indexed), ``failed`` (could not be read; ``error`` says why),
``nofeatures`` (read, but the embedder found nothing to describe it) or ``removed``.
Rows are inserted as images are added (never rewritten as a whole file); the database
runs in WAL mode, so readers never block the one writer. Rows whose id is not below the
committed manifest's ``next_id`` belong to a writer that was killed before it committed:
readers ignore them and the next writer deletes them (:meth:`Catalog.drop_from`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from ..errors import BundleError

SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL,
    sha1 TEXT,
    n_bytes INTEGER,
    width INTEGER,
    height INTEGER,
    status TEXT NOT NULL,
    error TEXT,
    segment INTEGER
);
CREATE INDEX IF NOT EXISTS images_path ON images (path);
"""
STATUSES = ("ok", "failed", "nofeatures", "removed")
_COLUMNS = "id, path, sha1, n_bytes, width, height, status, error, segment"


@dataclass
class CatalogEntry:
    """One image of the catalog."""

    id: int
    path: str
    sha1: str | None = None
    n_bytes: int | None = None
    width: int | None = None
    height: int | None = None
    status: str = "ok"
    error: str | None = None
    segment: int | None = None

    def to_dict(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class Catalog:
    """A bundle's ``catalog.sqlite``, limited to the committed ids ``[0, next_id)``.

    Open it read-only (searching) or for writing (the bundle's writer, under its lock).
    Lookups go through SQL, so nothing here grows with the collection in memory.
    """

    def __init__(self, path: str | Path, next_id: int, *, write: bool = False) -> None:
        self.path = Path(path)
        self.next_id = int(next_id)
        self.write = write
        try:
            if write:
                self._con = sqlite3.connect(self.path, timeout=60, check_same_thread=False)
                self._con.execute("PRAGMA journal_mode=WAL")
                self._con.execute("PRAGMA synchronous=FULL")
                self._con.executescript(SCHEMA)
            else:
                if not self.path.is_file():
                    raise BundleError(f"{self.path} is missing: the bundle has no catalog; "
                                      "rebuild it with `cvret index`")
                self._con = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=60,
                                            check_same_thread=False)
            self._con.execute("SELECT id, path, status, segment FROM images LIMIT 1").fetchall()
        except sqlite3.DatabaseError as exc:
            raise BundleError(f"{self.path} is not a readable catalog ({exc}): rebuild the "
                              "bundle with `cvret index`") from None

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _query(self, sql: str, args: Sequence[object] = ()) -> list[tuple]:
        try:
            return self._con.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as exc:
            raise BundleError(f"{self.path} cannot be read ({exc})") from None

    # --- reading ----------------------------------------------------------------------
    def __len__(self) -> int:
        return self.next_id

    def count(self, status: str | None = None) -> int:
        if status is None:
            return int(self._query("SELECT COUNT(*) FROM images WHERE id < ?",
                                   (self.next_id,))[0][0])
        return int(self._query("SELECT COUNT(*) FROM images WHERE id < ? AND status = ?",
                               (self.next_id, status))[0][0])

    def counts(self, first: int = 0) -> dict[str, int]:
        """Rows per status among ids ``first`` to ``next_id - 1``, every status present
        (one scan of that id range, not one per status)."""
        found = dict(self._query(
            "SELECT status, COUNT(*) FROM images WHERE id >= ? AND id < ? GROUP BY status",
            (int(first), self.next_id)))
        return {s: int(found.get(s, 0)) for s in STATUSES}

    def entries(self, ids: Iterable[int]) -> list[CatalogEntry | None]:
        """The entries of ``ids`` in that order (``None`` for unknown ids)."""
        ids = [int(i) for i in ids]
        found: dict[int, CatalogEntry] = {}
        for start in range(0, len(ids), 500):
            chunk = [i for i in ids[start:start + 500] if 0 <= i < self.next_id]
            if not chunk:
                continue
            marks = ",".join("?" * len(chunk))
            for row in self._query(f"SELECT {_COLUMNS} FROM images WHERE id IN ({marks})", chunk):
                found[row[0]] = CatalogEntry(*row)
        return [found.get(i) for i in ids]

    def __getitem__(self, i: int) -> CatalogEntry:
        entry = self.entries([i])[0]
        if entry is None:
            raise IndexError(f"catalog id {i} is not in {self.path}")
        return entry

    def paths_of(self, ids: Iterable[int]) -> list[str | None]:
        return [e.path if e is not None else None for e in self.entries(ids)]

    def ids_of(self, paths: Iterable[str], *, status: str | None = None) -> dict[str, int]:
        """``{path: id}`` for the given paths that are in the catalog (latest id wins)."""
        paths = list(dict.fromkeys(str(p) for p in paths))
        out: dict[str, int] = {}
        extra = " AND status = ?" if status else ""
        for start in range(0, len(paths), 500):
            chunk = paths[start:start + 500]
            marks = ",".join("?" * len(chunk))
            args: list[object] = [*chunk, self.next_id] + ([status] if status else [])
            for pid, path in self._query(
                f"SELECT id, path FROM images WHERE path IN ({marks}) AND id < ?{extra} "
                "ORDER BY id", args
            ):
                out[path] = int(pid)
        return out

    def iter_entries(self, status: str | None = None,
                     batch: int = 10_000) -> Iterator[CatalogEntry]:
        """Every committed entry in id order, read in batches."""
        last = -1
        extra = " AND status = ?" if status else ""
        while True:
            args: list[object] = [last, self.next_id] + ([status] if status else [])
            rows = self._query(f"SELECT {_COLUMNS} FROM images WHERE id > ? AND id < ?{extra} "
                               f"ORDER BY id LIMIT {int(batch)}", args)
            if not rows:
                return
            for row in rows:
                yield CatalogEntry(*row)
            last = rows[-1][0]

    def __iter__(self) -> Iterator[CatalogEntry]:
        return self.iter_entries()

    def ids_with_status(self, status: str) -> NDArray[np.int64]:
        rows = self._query("SELECT id FROM images WHERE id < ? AND status = ? ORDER BY id",
                           (self.next_id, status))
        return np.fromiter((r[0] for r in rows), np.int64, count=len(rows))

    def live_paths(self) -> dict[str, int]:
        """``{path: id}`` of every image not removed (what ``add`` must not add twice)."""
        rows = self._query("SELECT path, id FROM images WHERE id < ? AND status != 'removed'",
                           (self.next_id,))
        return {p: int(i) for p, i in rows}

    # --- writing (the bundle's writer only) ----------------------------------------------
    def _write(self, sql: str, rows: Iterable[Sequence[object]] | Sequence[object],
               many: bool = False) -> int:
        if not self.write:
            raise BundleError(f"{self.path} is open read-only")
        with self._con:
            cur = self._con.executemany(sql, rows) if many else self._con.execute(sql, rows)
        return int(cur.rowcount)

    def drop_from(self, first_id: int) -> int:
        """Delete rows with ``id >= first_id`` (left by a killed writer)."""
        return self._write("DELETE FROM images WHERE id >= ?", (int(first_id),))

    def insert(self, entries: Iterable[CatalogEntry]) -> None:
        for e in entries:
            if e.status not in STATUSES:
                raise ValueError(f"unknown catalog status {e.status!r}")
        self._write(f"INSERT INTO images ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(e.id, e.path, e.sha1, e.n_bytes, e.width, e.height, e.status, e.error,
                      e.segment) for e in entries], many=True)

    def mark_removed(self, ids: Iterable[int]) -> int:
        return self._write("UPDATE images SET status = 'removed' WHERE id = ? AND id < ?",
                           [(int(i), self.next_id) for i in ids], many=True)

    def set_segment(self, ids: Iterable[int], segment: int) -> None:
        self._write("UPDATE images SET segment = ? WHERE id = ?",
                    [(int(segment), int(i)) for i in ids], many=True)

    def copy_to(self, target: Path) -> None:
        """A consistent copy of the whole database (SQLite's online backup)."""
        dst = sqlite3.connect(target)
        try:
            self._con.backup(dst)
        finally:
            dst.close()
