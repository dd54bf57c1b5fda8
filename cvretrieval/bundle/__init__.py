"""A bundle on disk: a manifest, a live catalog and immutable segments.

```
photos.cvret/
  manifest.json          the commit point (see :mod:`.manifest`)
  catalog-000001.sqlite  the live catalog (see :mod:`.catalog`)
  embedder-000001/       the fitted embedder (JSON + .npy, checksummed in the manifest)
  whitening-000001/      optional PCA-whitening
  segments/000001/ ...   immutable segments (see :mod:`.segments`)
  lock                   held by the one writer; readers never take it
```
:class:`Bundle` reads a committed bundle; :class:`BundleWriter` is the only way to change
one: it takes the lock (a second writer waits, then fails with one line), removes what a
killed writer left behind, lets the caller write new files, and commits by replacing the
manifest.
"""

from __future__ import annotations

import logging
import re
import shutil
import time
from bisect import bisect_right
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .._files import fsync_path
from ..errors import BundleError
from .catalog import Catalog, CatalogEntry
from .manifest import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    folder_checksums,
    read_manifest,
    write_manifest,
)
from .segments import Segment, SegmentWriter, segment_name

__all__ = ["Bundle", "BundleWriter", "Catalog", "CatalogEntry", "FORMAT", "FORMAT_VERSION",
           "Segment", "SegmentWriter", "folder_checksums", "item_codec", "read_manifest"]

logger = logging.getLogger(__name__)
LOCK_FILE = "lock"
_GENERATED = re.compile(
    r"^(embedder|whitening|catalog|index)-\d{6}(\.sqlite(-wal|-shm|-journal)?|\.bin)?$")


class Bundle:
    """A committed bundle, opened for reading (searching never takes the writer's lock)."""

    def __init__(self, root: Path, manifest: dict[str, Any], items: Any = None) -> None:
        self.root = Path(root)
        self.manifest = manifest
        self.kind = manifest["index"].get("kind", "faiss")
        self.items = items if self.kind == "items" else None
        if self.kind == "items" and items is None:
            self.items = item_codec()
        self.sparse = self.kind in ("sparse", "items")
        self.dim = int(manifest["index"].get("dim", manifest["embedder"]["dim"]))
        self.segments = [
            Segment(self.root / segment_name(s["number"]), number=s["number"], n=s["n"],
                    sparse=self.sparse, dim=self.dim, items=self.items)
            for s in manifest["segments"] if s["n"]
        ]
        self._firsts = [s["first_id"] for s in manifest["segments"] if s["n"]]
        self._catalog: Catalog | None = None

    @classmethod
    def open(cls, root: str | Path) -> Bundle:
        root = Path(root)
        return cls(root, read_manifest(root))

    @property
    def next_id(self) -> int:
        return int(self.manifest["next_id"])

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            self._catalog = Catalog(self.root / self.manifest["catalog"], self.next_id)
        return self._catalog

    def path(self, key: str) -> Path:
        return self.root / key

    def check_embedder_files(self) -> Path:
        """The embedder folder, after checking its files against the manifest's checksums."""
        emb = self.manifest["embedder"]
        folder = self.root / emb["dir"]
        if not folder.is_dir():
            raise BundleError(f"{folder} is missing: the bundle is damaged; rebuild it")
        found = folder_checksums(folder)
        for name, digest in emb["checksums"].items():
            if found.get(name) != digest:
                what = "is missing" if name not in found else "does not match its checksum"
                raise BundleError(f"{folder / name} {what} in the manifest: the embedder was "
                                  "changed or swapped in from another bundle; rebuild it")
        return folder

    def segment_of(self, ids: NDArray[np.int64]) -> NDArray[np.int64]:
        """Index into :attr:`segments` of each id's segment (by id ranges)."""
        return np.asarray([bisect_right(self._firsts, int(i)) - 1 for i in ids], np.int64)

    def rows(self, ids: NDArray[np.int64] | list[int]) -> Any:
        """Stored vectors (dense ``(len(ids), d)``, or CSR rows) of catalog ``ids``; rows
        of ids without a vector are zero. Reads only those rows."""
        ids = np.asarray(ids, np.int64).reshape(-1)
        seg_of = self.segment_of(ids) if len(ids) else np.zeros(0, np.int64)
        if self.items is not None:
            out: list[Any] = []
            for j, i in enumerate(ids.tolist()):
                s = int(seg_of[j])
                pos = self.segments[s].positions(np.array([i]))[0] if s >= 0 else -1
                out.append(self.segments[s].take(np.array([pos]))[0] if pos >= 0 else None)
            return out
        if self.sparse:
            import scipy.sparse as sp

            parts = []
            for j, i in enumerate(ids.tolist()):
                s = int(seg_of[j])
                pos = self.segments[s].positions(np.array([i]))[0] if s >= 0 else -1
                parts.append(self.segments[s].rows()[int(pos)] if pos >= 0
                             else sp.csr_matrix((1, self.dim), dtype=np.float32))
            return (sp.vstack(parts).tocsr() if parts
                    else sp.csr_matrix((0, self.dim), dtype=np.float32))
        dense = np.zeros((len(ids), self.dim), np.float32)
        for s in np.unique(seg_of[seg_of >= 0]).tolist():
            sel = np.flatnonzero(seg_of == s)
            pos = self.segments[s].positions(ids[sel])
            good = pos >= 0
            dense[sel[good]] = self.segments[s].take(pos[good])
        return dense

    def feature_store(self) -> SegmentedStore:
        return SegmentedStore(self)


def item_codec() -> tuple[Any, Any]:
    """``(pack, unpack)`` of variable-length per-image items (ASMK codes) in a segment."""
    from ..asmk_index import pack_codes, unpack_codes

    def pack(items: list[Any]) -> dict[str, Any]:
        n_bytes = items[0].codes.shape[1] if items else 16
        words, codes, lims = pack_codes(items, n_bytes)
        return {"words": words, "codes": codes, "lims": lims}

    def unpack(arrays: dict[str, Any]) -> list[Any]:
        return unpack_codes(arrays["words"], arrays["codes"], arrays["lims"])

    return pack, unpack


#: catalog ids whose (segment, row) SegmentedStore remembers (a few MB at most)
_LOCATE_MEMO = 100_000


class SegmentedStore:
    """The key points of every segment behind one ``FeatureStore``-like face keyed by
    catalog id (what spatial verification reads)."""

    def __init__(self, bundle: Bundle) -> None:
        from ..featurestore import FeatureStore

        self.bundle = bundle
        self.stores = []
        for seg in bundle.segments:
            if not (seg.features_dir / "featurestore.json").is_file():
                raise BundleError(f"{seg.features_dir} is missing: the manifest says key points "
                                  "are stored; rebuild the bundle with --rerank sv")
            self.stores.append(FeatureStore.open(seg.features_dir))
        first = self.stores[0] if self.stores else None
        self.has_words = bool(first.has_words) if first else False
        self.has_descriptors = bool(first.has_descriptors) if first else False
        self.binary = first.binary if first else None
        self._where: dict[int, tuple[int, int]] = {}

    def __len__(self) -> int:
        return self.bundle.next_id

    def _locate(self, cid: int) -> tuple[Any, int]:
        """The store and row of ``cid``, memoised: verification asks for the key points,
        words and descriptors of each candidate, and a query's expansion asks again."""
        cid = int(cid)
        hit = self._where.get(cid)
        if hit is None:
            s = int(self.bundle.segment_of([cid])[0])
            if s < 0:
                raise KeyError(cid)
            ids = self.bundle.segments[s].ids
            pos = int(np.searchsorted(ids, cid))
            if pos >= len(ids) or int(ids[pos]) != cid:
                raise KeyError(cid)
            if len(self._where) >= _LOCATE_MEMO:
                self._where.clear()
            hit = self._where[cid] = (s, pos)
        return self.stores[hit[0]], hit[1]

    def get_keypoints(self, cid: int) -> Any:
        store, pos = self._locate(cid)
        return store.get_keypoints(pos)

    def get_words(self, cid: int) -> Any:
        store, pos = self._locate(cid)
        return store.get_words(pos)

    def get_descriptors(self, cid: int, *, raw: bool = False) -> Any:
        store, pos = self._locate(cid)
        return store.get_descriptors(pos, raw=raw)

    def get(self, cid: int) -> Any:
        store, pos = self._locate(cid)
        return store.get(pos)


class BundleWriter:
    """The one writer of a bundle folder (a context manager).

    Entering takes the folder's lock (waiting up to ``timeout`` seconds for another
    writer), reads the committed manifest (``None`` for a new bundle) and removes what
    no manifest names (files of a killed writer). :meth:`commit` replaces the manifest;
    leaving without committing removes what this writer wrote.
    """

    def __init__(self, root: str | Path, *, timeout: float = 3600.0, create: bool = True) -> None:
        self.root = Path(root)
        self.timeout = float(timeout)
        self.create = create
        self.manifest: dict[str, Any] | None = None
        self._lock: Any = None
        self._committed = False

    def __enter__(self) -> BundleWriter:
        import filelock

        if self.root.exists() and not self.root.is_dir():
            raise BundleError(f"{self.root} is a file: choose a folder for the bundle")
        if self.root.is_dir() and not (self.root / MANIFEST).is_file():
            stray = [p.name for p in self.root.iterdir()
                     if p.name not in (LOCK_FILE, "segments") and not _GENERATED.match(p.name)
                     and not p.name.startswith(f".{MANIFEST}.tmp")]
            if stray:
                raise BundleError(f"{self.root} exists and is not a cvretrieval bundle (it holds "
                                  f"{stray[0]!r}): choose another output path")
        if not self.root.exists():
            if not self.create:
                raise BundleError(f"{self.root} does not exist: build it first with `cvret index`")
            self.root.mkdir(parents=True)
        lock = filelock.FileLock(str(self.root / LOCK_FILE))
        t0 = time.monotonic()
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            logger.warning("%s: another process is writing to this bundle; waiting for it",
                           self.root)
            try:
                lock.acquire(timeout=max(self.timeout - (time.monotonic() - t0), 0))
            except filelock.Timeout:
                raise BundleError(
                    f"{self.root} is being written by another process (its lock was held for "
                    f"{self.timeout:.0f} s): wait for it to finish, then run this again"
                ) from None
        self._lock = lock
        try:
            self.manifest = read_manifest(self.root) if (self.root / MANIFEST).is_file() else None
            if self.manifest is None and not self.create:
                raise BundleError(f"{self.root} has no manifest.json: build it first with "
                                  "`cvret index`")
            self.collect_garbage()
        except BaseException:
            lock.release()
            raise
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if not self._committed:
                self.collect_garbage()
        finally:
            self._lock.release()

    # --- what the committed manifest names ---------------------------------------------
    @property
    def next_id(self) -> int:
        return int(self.manifest["next_id"]) if self.manifest else 0

    def _named(self) -> set[str]:
        m = self.manifest
        if m is None:
            return set()
        names = {m["embedder"]["dir"], m["catalog"]}
        if m["index"].get("template"):
            names.add(str(m["index"]["template"]))
        if m["options"].get("whitening"):
            names.add(str(m["options"]["whitening"]))
        return names

    def collect_garbage(self) -> None:
        """Remove every file no committed manifest names, and catalog rows past next_id."""
        named = self._named()
        for p in self.root.iterdir():
            base = re.sub(r"-(wal|shm|journal)$", "", p.name)
            if _GENERATED.match(p.name) and base not in named:
                _remove(p)
            elif p.name.startswith(f".{MANIFEST}.tmp"):
                _remove(p)
        seg_root = self.root / "segments"
        keep = {segment_name(s["number"]).split("/")[1]
                for s in (self.manifest or {}).get("segments", [])}
        if seg_root.is_dir():
            for p in seg_root.iterdir():
                if p.name not in keep:
                    _remove(p)
        if self.manifest is not None:
            cat = self.root / self.manifest["catalog"]
            if cat.is_file():
                with Catalog(cat, self.next_id, write=True) as c:
                    dropped = c.drop_from(self.next_id)
                if dropped:
                    logger.info("%s: removed %d catalog rows of an unfinished write", self.root,
                                dropped)

    def new_name(self, prefix: str, suffix: str = "") -> str:
        """A fresh generation-numbered name, e.g. ``embedder-000004``."""
        n = 1 + max([int(m.group(1)) for p in self.root.iterdir()
                     if (m := re.match(rf"^{prefix}-(\d{{6}})", p.name))] or [0])
        return f"{prefix}-{n:06d}{suffix}"

    def new_segment_number(self) -> int:
        """The next free segment number (its folder does not exist yet)."""
        seg_root = self.root / "segments"
        seg_root.mkdir(exist_ok=True)
        used = [int(p.name) for p in seg_root.iterdir() if p.name.isdigit()]
        return 1 + max(used or [0])

    def new_segment(self, *, sparse: bool, dim: int,
                    items: Any = None) -> tuple[int, SegmentWriter]:
        number = self.new_segment_number()
        return number, SegmentWriter(self.root / segment_name(number), sparse=sparse, dim=dim,
                                     items=items)

    def commit(self, manifest: dict[str, Any]) -> None:
        """Make ``manifest`` (and every file it names) the bundle's content, atomically."""
        manifest = {**manifest, "format": FORMAT, "format_version": FORMAT_VERSION,
                    "generation": int((self.manifest or {}).get("generation", 0)) + 1,
                    "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        fsync_tree(self.root)
        write_manifest(self.root, manifest)
        self.manifest = read_manifest(self.root)
        self._committed = True
        self.collect_garbage()
        self._committed = False


def fsync_tree(root: Path) -> None:
    """Flush every file and folder under ``root`` to the disk (before a commit)."""
    import os

    for folder, _dirs, files in os.walk(root):
        for name in files:
            fsync_path(Path(folder) / name)
        fsync_path(Path(folder))


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)
