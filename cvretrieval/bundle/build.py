"""Writing a bundle's content: streamed segments, index shards, compaction.

Functions only; :class:`cvretrieval.retriever.Retriever` composes them with the pipeline
inside a :class:`~cvretrieval.bundle.BundleWriter`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .catalog import Catalog, CatalogEntry
from .segments import Segment, SegmentWriter

logger = logging.getLogger(__name__)

#: images per segment of sparse rows or items while streaming, and at most this many
#: bytes (bounds the memory of holding one segment's rows)
SEGMENT_SIZE = 50_000
SEGMENT_BYTES = 512 << 20
#: vectors sampled from the segments to train an IVF/PQ index, and at most this many bytes
TRAIN_SAMPLE = 200_000
TRAIN_BYTES = 256 << 20
#: rows buffered before one append to the open segment, and at most this many bytes of
#: dense rows (8,100-d HOG: 258 rows)
APPEND_BLOCK = 1024
APPEND_BYTES = 8 << 20


def entry_for(item: Any, path: str, id_: int, segment: int | None,
              no_features: bool = False) -> CatalogEntry:
    """The catalog row of one pipeline item."""
    if item.error is not None:
        return CatalogEntry(id=id_, path=path, status="failed", error=item.error)
    h, w = (item.shape or (None, None))[:2]
    status = "nofeatures" if no_features else "ok"
    return CatalogEntry(id=id_, path=path, sha1=item.sha1, n_bytes=item.n_bytes, width=w,
                        height=h, status=status, segment=segment,
                        error="no features found in the image" if no_features else None)


def write_segments(
    new_segment: Callable[[], tuple[int, SegmentWriter]],
    catalog: Catalog,
    items: Iterable[Any],
    paths: Sequence[str],
    first_id: int,
    *,
    store: Callable[[Path], Any] | None = None,
    has_features: Callable[[Any], bool] | None = None,
    segment_size: int = SEGMENT_SIZE,
    block: int = APPEND_BLOCK,
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Stream pipeline ``items`` (in input order) into new segments and catalog rows.

    ``items[j]`` is the image ``paths[j]`` and gets catalog id ``first_id + j``.
    ``store(features_dir)`` opens a key-point store writer for each segment (spatial
    verification). Rows reach the segment ``block`` at a time (at most ``APPEND_BYTES``
    of them): one append of 1,024 rows instead of 1,024 appends of one, the main
    process's largest per-image cost on tiny images. Returns the manifest records of the
    segments and the failures.
    """
    records: list[dict[str, Any]] = []
    failures: list[dict[str, str]] = []
    writer: SegmentWriter | None = None
    kp_writer: Any = None
    number = -1
    pending: list[CatalogEntry] = []
    buf_ids: list[int] = []
    buf_rows: list[Any] = []

    def flush() -> None:
        if buf_ids:
            assert writer is not None
            writer.append(np.asarray(buf_ids, np.int64), _stack_rows(buf_rows, writer))
            buf_ids.clear()
            buf_rows.clear()

    def close() -> None:
        nonlocal writer, kp_writer
        if writer is None:
            return
        flush()
        writer.close()
        if kp_writer is not None:
            kp_writer.close()
        catalog.insert(pending)
        pending.clear()
        records.append({"number": number, "n": writer.n, "first_id": max(writer.first_id, 0),
                        "last_id": writer.last_id})
        writer, kp_writer = None, None

    for j, item in enumerate(items):
        cid = first_id + j
        path = paths[j]
        if item.position != j:
            raise RuntimeError(f"pipeline item {item.position} arrived at position {j}")
        no_feats = (item.error is None and has_features is not None
                    and not has_features(item.value))
        if item.error is not None or no_feats:
            failures.append({"path": path, "error": item.error or
                             "no features found in the image: it is not indexed"})
            pending.append(entry_for(item, path, cid, None, no_feats))
            if len(pending) >= 10_000 and writer is None:
                catalog.insert(pending)
                pending.clear()
            continue
        if writer is None:
            number, writer = new_segment()
            kp_writer = store(writer.directory / "features") if store is not None else None
        buf_ids.append(cid)
        buf_rows.append(item.value)
        if kp_writer is not None:
            kp_writer.append(item.keypoints, words=item.words)
        item.value = item.keypoints = item.words = None
        pending.append(entry_for(item, path, cid, number))
        if len(buf_ids) >= min(block, max(1, APPEND_BYTES // (4 * writer.dim))):
            flush()
        # dense rows stream to disk, so one segment holds them all (one shard, loaded as
        # it is); sparse rows and items are held until the segment closes: bounded
        if writer.sparse and writer.n + len(buf_ids) >= min(
                segment_size, max(1, SEGMENT_BYTES // (4 * writer.dim))):
            close()
    close()
    catalog.insert(pending)
    return records, failures


def _stack_rows(rows: list[Any], writer: SegmentWriter) -> Any:
    """One block of rows as the writer takes them: a list of items, a CSR matrix or a
    dense ``(n, dim)`` array."""
    if writer.items is not None:
        return list(rows)
    if writer.sparse:
        import scipy.sparse as sp

        return sp.vstack(rows, format="csr")
    return np.stack([np.asarray(r, np.float32).reshape(-1) for r in rows])


def train_rows(n: int, dim: int) -> int:
    """Rows :func:`train_sample` draws when asked for ``n`` vectors of dimension ``dim``:
    at most :data:`TRAIN_BYTES` of float32 (8,285 of 8,100-d HOG vectors).

    >>> train_rows(200_000, 8100), train_rows(200_000, 128)
    (8285, 200000)
    """
    return max(1, min(n, TRAIN_BYTES // (4 * dim)))


def train_sample(segments: Sequence[Segment], n: int, random_state: int | None) -> Any:
    """Up to ``n`` rows drawn at random from the segments (for index training)."""
    total = sum(s.n for s in segments)
    if total == 0:
        return None
    n = train_rows(n, segments[0].dim)
    rng = np.random.default_rng(random_state)
    take = np.sort(rng.choice(total, size=min(n, total), replace=False))
    parts, start = [], 0
    for s in segments:
        mine = take[(take >= start) & (take < start + s.n)] - start
        if len(mine):
            rows = s.take(mine)
            parts.append(rows if s.sparse else np.ascontiguousarray(rows))
        start += s.n
    if segments[0].items is not None:
        return [item for part in parts for item in part]
    if segments[0].sparse:
        import scipy.sparse as sp

        return sp.vstack(parts).tocsr()
    return np.concatenate(parts)


def exact_knn(segments: Sequence[Segment], X: NDArray[np.float32], k: int,
              metric: str, removed: NDArray[np.int64] | None = None,
              ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Exact k nearest stored vectors of ``X`` over every segment, block by block
    (faiss-contrib style), leaving out the ids ``removed``; ``I`` holds catalog ids."""
    import faiss

    n = X.shape[0]
    sign = 1.0 if metric == "ip" else -1.0
    bestD = np.full((n, 0), -np.inf, np.float32)
    bestI = np.zeros((n, 0), np.int64)
    gone = np.zeros(0, np.int64) if removed is None else removed
    for _, ids, rows in iter_live_blocks(segments, gone):
        kk = min(k, len(ids))
        if metric == "ip":
            D, P = faiss.knn(X, rows, kk, metric=faiss.METRIC_INNER_PRODUCT)
        else:
            D, P = faiss.knn(X, rows, kk)
        D = sign * D
        candD = np.concatenate([bestD, D], axis=1)
        candI = np.concatenate([bestI, ids[P]], axis=1)
        order = np.argsort(-candD, axis=1, kind="stable")[:, :k]
        bestD = np.take_along_axis(candD, order, 1)
        bestI = np.take_along_axis(candI, order, 1)
    return sign * bestD, bestI


def augment(segments: Sequence[Segment], rows_of: Callable[[NDArray[np.int64]], Any],
            X: NDArray[np.float32], k: int, metric: str) -> NDArray[np.float32]:
    """Database-side augmentation of the block ``X`` (already stored in ``segments``):
    each vector averaged with its ``k`` nearest stored vectors. The neighbours of the
    block are fetched, then DBA runs on the block plus them, which holds every
    vector's true nearest neighbours."""
    from ..rerank.qe import database_augmentation

    _, I = exact_knn(segments, X, k + 1, metric)  # noqa: E741
    others = np.unique(I[I >= 0])
    both = np.concatenate([X, np.asarray(rows_of(others), np.float32)])
    return database_augmentation(both, k=k, metric=metric)[: len(X)]


def shards_are_vectors(template: Any, transformed: bool) -> bool:
    """Whether an index shard would only repeat the segment's vectors (an exact ``Flat``
    index over untransformed rows): such a bundle writes no ``index.bin`` and fills the
    index from ``vectors.npy`` when it loads (:func:`shard_from_vectors`), which halves
    its bytes on disk and saves writing every vector twice."""
    return not transformed and getattr(template, "factory_", None) == "Flat"


def shard_from_vectors(
    segment: Segment,
    template: Any,
    transform: Callable[[NDArray[np.float32]], NDArray[np.float32]] | None = None,
) -> Any:
    """The index shard of ``segment``: an empty copy of the trained ``template`` filled
    with the segment's stored vectors block by block (``transform``, DBA, maps each block
    first). Saved as ``index.bin``, or built when loading when there is no such file."""
    shard = template.empty_copy()
    for ids, rows in segment.iter_blocks():
        shard.add_with_ids(transform(rows) if transform is not None else rows, ids)
    return shard


def load_shards(bundle: Any, segments: Sequence[Segment], index_class: Any,
                index: Any = None) -> Any:
    """The shards of ``segments`` merged into ``index`` (default: the first shard as it
    is, so an HNSW graph is not built again; an empty copy of the template when there
    are no segments). Exact Flat bundles fill each shard from the segment's vectors."""
    from ..errors import BundleError

    record = bundle.manifest["index"]
    template = None
    if record.get("shards") == "vectors" or not segments:
        template = index_class.load(bundle.root / record["template"])
    for seg in segments:
        if record.get("shards") == "vectors":
            shard = shard_from_vectors(seg, template)
        else:
            shard = index_class.load(seg.shard_path)
        if shard.ntotal != seg.n:
            raise BundleError(f"{seg.shard_path} holds {shard.ntotal} vectors, the manifest "
                              f"says {seg.n}: the bundle is damaged; rebuild it")
        if index is None:
            index = shard
        else:
            index.merge_from(shard)
    return index if index is not None else template.empty_copy()


def build_shards(
    segments: Sequence[Segment],
    template: Any,
    *,
    transform: Callable[[NDArray[np.float32]], NDArray[np.float32]] | None = None,
    only: set[int] | None = None,
) -> None:
    """Write each segment's index shard (``index.bin``): an empty copy of the trained
    ``template`` filled block by block; ``transform`` (DBA) maps each block first.
    Nothing is written when the shard would repeat the vectors
    (:func:`shards_are_vectors`)."""
    if shards_are_vectors(template, transform is not None):
        return
    for s in segments:
        if only is not None and s.number not in only:
            continue
        shard_from_vectors(s, template, transform).save(s.shard_path)


def iter_live_blocks(segments: Sequence[Segment], removed: NDArray[np.int64],
                     block: int | None = None) -> Iterator[tuple[int, NDArray[np.int64], Any]]:
    """``(segment index, ids, rows)`` of every stored vector not removed."""
    for si, s in enumerate(segments):
        for ids, rows in s.iter_blocks(block):
            keep = ~np.isin(ids, removed)
            if keep.all():
                yield si, ids, rows
            elif keep.any():
                picked = np.flatnonzero(keep)
                yield si, ids[keep], ([rows[int(i)] for i in picked]
                                      if isinstance(rows, list) else rows[picked])
