"""Immutable segments of a bundle: the vectors (or sparse rows) and ids of one batch of
images, the index shard built from them, and optionally their key points.

A segment folder is written once, then named by a committed manifest; it is never
changed afterwards (a removal is a catalog status; compaction writes a new segment).

```
segments/000007/
  ids.npy        (n,) int64, increasing catalog ids
  vectors.npy    (n, d) float32 (dense embedders), or
  rows.npz       CSR rows (data, indices, indptr, shape) of sparse embedders, or
  items.npz      variable-length per-image items (ASMK codes: words, codes, lims)
  index.bin      the index shard over these rows (written after training; not for an
                 exact Flat index, which is filled from vectors.npy when loaded)
  features/      key points for spatial verification (a FeatureStore), optional
```
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .._npyfile import GrowingNpy
from ..errors import BundleError

IDS_FILE, VECTORS_FILE, ROWS_FILE, ITEMS_FILE, SHARD_FILE, FEATURES_DIR = (
    "ids.npy", "vectors.npy", "rows.npz", "items.npz", "index.bin", "features")
#: what a segment stores per image: a dense row, a sparse row, or a variable-length item
#: (an embedder whose result is not a vector, e.g. ASMK's codes: flat arrays + ``lims``)
KINDS = ("dense", "sparse", "items")


def segment_name(number: int) -> str:
    """``7 -> "segments/000007"``."""
    return f"segments/{int(number):06d}"


class SegmentWriter:
    """Append rows (dense float32 or sparse CSR) and their ids to a new segment folder."""

    def __init__(self, directory: Path, *, sparse: bool, dim: int, items: Any = None) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=False)
        self.sparse = sparse or items is not None
        self.items = items  # (pack, unpack) functions of variable-length items, or None
        self.dim = int(dim)
        self._ids = GrowingNpy(self.directory / IDS_FILE, np.dtype(np.int64), ())
        self._vectors = None if self.sparse else GrowingNpy(
            self.directory / VECTORS_FILE, np.dtype(np.float32), (self.dim,))
        self._rows: list[Any] = []
        self.n = 0
        self.first_id = -1
        self.last_id = -1

    def append(self, ids: NDArray[np.int64], rows: Any) -> None:
        ids = np.asarray(ids, np.int64)
        if len(ids) == 0:
            return
        if ids[0] <= self.last_id or np.any(np.diff(ids) <= 0):
            raise ValueError("segment ids must increase")
        if self.items is not None:
            self._rows.extend(rows)
        elif self.sparse:
            self._rows.append(rows.tocsr().astype(np.float32))
        else:
            assert self._vectors is not None
            self._vectors.write(np.asarray(rows, np.float32).reshape(len(ids), self.dim))
        self._ids.write(ids)
        if self.n == 0:
            self.first_id = int(ids[0])
        self.n += len(ids)
        self.last_id = int(ids[-1])

    def close(self) -> None:
        self._ids.finish()
        if self._vectors is not None:
            self._vectors.finish()
        if self.items is not None:
            arrays = self.items[0](self._rows)
            with open(self.directory / ITEMS_FILE, "wb") as f:
                np.savez(f, **arrays)
            self._rows = []
        elif self.sparse:
            import scipy.sparse as sp

            rows = (sp.vstack(self._rows).tocsr() if self._rows
                    else sp.csr_matrix((0, self.dim), dtype=np.float32))
            sp.save_npz(self.directory / ROWS_FILE, rows, compressed=False)
            self._rows = []


class Segment:
    """A committed segment, read lazily (memory-mapped vectors)."""

    def __init__(self, directory: Path, *, number: int, n: int, sparse: bool, dim: int,
                 items: Any = None) -> None:
        self.directory = Path(directory)
        self.number = int(number)
        self.n = int(n)
        self.items = items
        self.sparse = sparse or items is not None
        self.dim = int(dim)
        self._ids: NDArray[np.int64] | None = None
        self._rows: Any = None

    def _fail(self, name: str, why: str) -> BundleError:
        return BundleError(f"{self.directory / name} {why}: the bundle is damaged; rebuild it "
                           "with `cvret index` (or restore it from a copy)")

    @property
    def ids(self) -> NDArray[np.int64]:
        if self._ids is None:
            try:
                ids = np.load(self.directory / IDS_FILE, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError, EOFError) as exc:
                raise self._fail(IDS_FILE, f"cannot be read ({exc})") from None
            if ids.dtype != np.int64 or ids.ndim != 1 or len(ids) != self.n:
                raise self._fail(IDS_FILE, f"holds {ids.dtype} {ids.shape}, expected int64 "
                                 f"({self.n},)")
            if self.n and np.any(np.diff(ids) <= 0):
                raise self._fail(IDS_FILE, "holds repeated or unsorted ids")
            self._ids = np.asarray(ids)
        return self._ids

    def rows(self) -> Any:
        """All rows: a memory-mapped (n, d) float32 array, or a CSR matrix."""
        if self._rows is None and self.items is not None:
            try:
                with np.load(self.directory / ITEMS_FILE, allow_pickle=False) as z:
                    rows = self.items[1]({k: z[k] for k in z.files})
            except (OSError, ValueError, KeyError, EOFError) as exc:
                raise self._fail(ITEMS_FILE, f"cannot be read ({exc})") from None
            if len(rows) != self.n:
                raise self._fail(ITEMS_FILE, f"holds {len(rows)} items, expected {self.n}")
            self._rows = rows
        if self._rows is None:
            if self.sparse:
                import scipy.sparse as sp

                try:
                    rows = sp.load_npz(self.directory / ROWS_FILE).tocsr()
                except (OSError, ValueError, KeyError, EOFError) as exc:
                    raise self._fail(ROWS_FILE, f"cannot be read ({exc})") from None
            else:
                try:
                    rows = np.load(self.directory / VECTORS_FILE, mmap_mode="r",
                                   allow_pickle=False)
                except (OSError, ValueError, EOFError) as exc:
                    raise self._fail(VECTORS_FILE, f"cannot be read ({exc})") from None
                if rows.dtype != np.float32:
                    raise self._fail(VECTORS_FILE, f"holds {rows.dtype}, expected float32")
            if rows.shape != (self.n, self.dim):
                raise self._fail(ROWS_FILE if self.sparse else VECTORS_FILE,
                                 f"has shape {rows.shape}, expected {(self.n, self.dim)}")
            self._rows = rows
        return self._rows

    def positions(self, ids: NDArray[np.int64]) -> NDArray[np.int64]:
        """Row positions of ``ids`` in this segment (-1 where absent)."""
        ids = np.asarray(ids, np.int64)
        pos = np.searchsorted(self.ids, ids)
        pos = np.clip(pos, 0, max(self.n - 1, 0))
        ok = (self.n > 0) & (self.ids[pos] == ids) if self.n else np.zeros(len(ids), bool)
        return np.where(ok, pos, -1)

    @property
    def shard_path(self) -> Path:
        return self.directory / SHARD_FILE

    @property
    def features_dir(self) -> Path:
        return self.directory / FEATURES_DIR

    def iter_blocks(self, block: int | None = None) -> Any:
        """``(ids, rows)`` blocks of at most ``block`` rows (default: 32 MB of float32)."""
        block = block or max(1, (32 << 20) // (4 * max(self.dim, 1)))
        rows = self.rows()
        # dense rows through take(): plain file reads, not the memory map, whose pages a
        # scan of a 1M-row segment would leave mapped into this process (1.3 GB of RSS at
        # 1M x 324 floats) while the index it feeds is being built
        dense = not (self.sparse or self.items is not None)
        for start in range(0, self.n, block):
            stop = min(start + block, self.n)
            yield (np.asarray(self.ids[start:stop]),
                   self.take(np.arange(start, stop)) if dense else rows[start:stop])

    def take(self, positions: NDArray[np.int64]) -> Any:
        """Rows at ``positions`` (a list for items). Dense rows are read with file reads
        (one per run of consecutive positions), not through the memory map: a random
        sample of one row in twelve of a 3.2-GB segment (100k x 8,100 floats) left
        nearly all of it resident through the kernel's read-around."""
        rows = self.rows()
        if self.items is not None:
            return [rows[int(i)] for i in positions]
        if self.sparse:
            return rows[positions]
        pos = np.asarray(positions, np.int64).reshape(-1)
        out = np.empty((len(pos), self.dim), np.float32)
        if not len(pos):
            return out
        if pos.min() < 0 or pos.max() >= self.n:
            raise IndexError(f"row positions must be in [0, {self.n}), got {pos.min()} to "
                             f"{pos.max()}")
        ordered = bool(np.all(np.diff(pos) > 0))  # a block of a scan: read in place
        order = None if ordered else np.argsort(pos, kind="stable")
        srt = pos if order is None else pos[order]
        cuts = np.flatnonzero(np.diff(srt) != 1) + 1
        starts, stops = np.r_[0, cuts], np.r_[cuts, len(srt)]
        got = out if order is None else np.empty_like(out)
        row_bytes = 4 * self.dim
        fd = os.open(self.directory / VECTORS_FILE, os.O_RDONLY)
        try:
            for a, b in zip(starts.tolist(), stops.tolist(), strict=True):
                view = memoryview(got[a:b]).cast("B")
                done, where = 0, rows.offset + int(srt[a]) * row_bytes
                while done < len(view):  # a read may return less than asked
                    n = os.preadv(fd, [view[done:]], where + done)
                    if n <= 0:
                        raise self._fail(VECTORS_FILE, "is shorter than its header says")
                    done += n
        finally:
            os.close(fd)
        if order is not None:
            out[order] = got
        return out
