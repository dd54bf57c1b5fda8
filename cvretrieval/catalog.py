"""The catalog of a bundle: every image it was asked to index, as a SQLite table.

Row ``id`` is the image's catalog id (what searches return); ``status`` is ``ok`` for
images in the index and ``failed`` (with ``error``) for images that could not be read.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import BundleError

SCHEMA = """
CREATE TABLE images (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL,
    sha1 TEXT,
    n_bytes INTEGER,
    width INTEGER,
    height INTEGER,
    status TEXT NOT NULL,
    error TEXT
)
"""


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


class Catalog:
    """An in-memory list of :class:`CatalogEntry`, saved to and loaded from SQLite."""

    def __init__(self, entries: Iterable[CatalogEntry] = ()) -> None:
        self.entries: list[CatalogEntry] = list(entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[CatalogEntry]:
        return iter(self.entries)

    def __getitem__(self, i: int) -> CatalogEntry:
        return self.entries[i]

    def append(self, **fields: object) -> CatalogEntry:
        entry = CatalogEntry(id=len(self.entries), **fields)  # type: ignore[arg-type]
        self.entries.append(entry)
        return entry

    @property
    def paths(self) -> list[str]:
        return [e.path for e in self.entries]

    def failed(self) -> list[CatalogEntry]:
        return [e for e in self.entries if e.status != "ok"]

    def save(self, path: str | Path) -> None:
        path = Path(path)
        if path.exists():
            path.unlink()
        con = sqlite3.connect(path)
        try:
            con.execute(SCHEMA)
            con.executemany(
                "INSERT INTO images VALUES "
                "(:id, :path, :sha1, :n_bytes, :width, :height, :status, :error)",
                (asdict(e) for e in self.entries),
            )
            con.commit()
        finally:
            con.close()

    @classmethod
    def load(cls, path: str | Path) -> Catalog:
        path = Path(path)
        if not path.is_file():
            raise BundleError(f"{path} is missing: the bundle has no catalog")
        try:
            con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                rows = con.execute(
                    "SELECT id, path, sha1, n_bytes, width, height, status, error "
                    "FROM images ORDER BY id"
                ).fetchall()
            finally:
                con.close()
        except sqlite3.DatabaseError as exc:
            raise BundleError(f"{path} is not a readable catalog ({exc})") from None
        entries = [CatalogEntry(*row) for row in rows]
        if [e.id for e in entries] != list(range(len(entries))):
            raise BundleError(f"{path}: catalog ids are not 0..{len(entries) - 1}")
        return cls(entries)
