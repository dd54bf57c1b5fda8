"""The evaluation harness: search a data set's queries batch by batch and score them as they come.

:func:`evaluate` runs a retriever over a
:class:`~cvretrieval.datasets.RetrievalDataset`; :func:`evaluate_vectors` scores
vectors by exact search, block by block; :func:`evaluate_embedder` scores an
embedder that reads no pixels (``vectors:FILE.npz``). Neither keeps the
rankings: each batch of queries is scored by a :class:`~cvretrieval.scoring.Scorer`
as soon as it is searched, so memory holds one batch of results (bounded by
``max_block`` entries), the per-query numbers and the first 10 results of each
query for reports. The metrics are the pure functions of :mod:`cvretrieval.metrics`
(re-exported here under their old names).

References
----------
.. [1] F. Radenović, A. Iscen, G. Tolias, Y. Avrithis, O. Chum, "Revisiting Oxford
       and Paris: Large-Scale Image Retrieval Benchmarking", CVPR 2018.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .embedders.vectors import _VECTOR_METRICS, _as_matrix, _check_vectors, load_vectors_npz
from .errors import DatasetError
from .metrics import (
    ap_at_k,
    average_precision,
    compute_ap,
    compute_map,
    first_relevant_rank,
    gldv2_map_at_100,
    interpolated_precision,
    ndcg_at_k,
    ns_score,
    precision_at_k,
    recall_at_k,
    recall_levels,
    revisited_metrics,
)
from .metrics.ranking import _check_k
from .scoring import (
    MAP_AT_K,
    NDCG_AT_K,
    PR_AT_K,
    PROTOCOL_LETTER,
    Scorer,
    compute_metrics,
    mean_pr_curve,
)

if TYPE_CHECKING:  # pragma: no cover
    from .datasets import RetrievalDataset

logger = logging.getLogger(__name__)

__all__ = [
    "compute_ap",
    "compute_map",
    "average_precision",
    "ap_at_k",
    "precision_at_k",
    "recall_at_k",
    "first_relevant_rank",
    "ns_score",
    "interpolated_precision",
    "ndcg_at_k",
    "compute_metrics",
    "mean_pr_curve",
    "revisited_metrics",
    "gldv2_map_at_100",
    "evaluate",
    "evaluate_vectors",
    "evaluate_embedder",
    "load_vectors_npz",
    "format_metrics_table",
    "vector_scores",
    "MAP_AT_K",
    "PR_AT_K",
    "NDCG_AT_K",
]

#: results held at once while scoring (rows x ranking length): 32M entries, 256 MB of int64
MAX_BLOCK = 1 << 25


def _accepts_progress(func: Any) -> bool:
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return False
    return "progress" in params


def _resolved(path: str | Path) -> str:
    return str(Path(path).resolve())


def _progress_bar(total: int, progress: bool | None) -> Any:
    from ._progress import progress_bar

    return progress_bar(total=total, unit="query", desc="evaluate", enabled=progress)


def _batch_rows(batch_size: int, width: int, max_block: int) -> int:
    """Queries per batch so that a batch of results holds at most ``max_block`` entries."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return max(1, min(batch_size, max_block // max(1, width)))


def _scorer(dataset: RetrievalDataset, ks: Sequence[int], pr_points: int, ndcg_gain: str) -> Scorer:
    return Scorer(
        dataset.gnd,
        dataset.query_self_index(),
        n_im=len(dataset.imlist),
        ks=ks,
        n_points=pr_points,
        protocols=dataset.protocols or None,
        ndcg_gain=ndcg_gain,
        keep_top=100 if dataset.format == "gldv2" else 0,
    )


def _gldv2_score(scorer: Scorer, dataset: RetrievalDataset) -> float:
    """mAP@100 with ids = file stems (GLDv2 images are ``<id>.jpg``); "" = a distractor."""
    index_ids = [PurePosixPath(p).stem for p in dataset.imlist]
    n_im = len(index_ids)
    self_index = dataset.query_self_index()
    predictions: dict[str, list[str]] = {}
    solution: dict[str, list[str]] = {}
    for q, (top, g) in enumerate(zip(scorer.tops, dataset.gnd, strict=True)):
        qid = PurePosixPath(dataset.qimlist[q]).stem
        predictions[qid] = [index_ids[i] if i < n_im else "" for i in top[:100]]
        solution[qid] = [index_ids[i] for i in g["ok"] if i != self_index[q]]
    return gldv2_map_at_100(predictions, solution)


def _report(
    scorer: Scorer,
    failed: Sequence[int],
    dataset: RetrievalDataset,
    *,
    config: dict[str, Any],
    k: int,
    seconds: float,
) -> dict[str, Any]:
    """The result dict of :func:`evaluate` from a scorer that has seen every query."""
    metrics, per_query, curve = scorer.result()
    protocols = scorer.protocol_results() if dataset.protocols else {}
    for name, values in protocols.items():
        metrics[f"mAP ({PROTOCOL_LETTER.get(name, name)})"] = values["mAP"]
    for name, values in protocols.items():
        for kappa in (1, 5, 10):
            metrics[f"mP@{kappa} ({PROTOCOL_LETTER.get(name, name)})"] = values[f"mP@{kappa}"]
    if dataset.format == "gldv2":
        metrics["mAP@100 (GLDv2)"] = _gldv2_score(scorer, dataset)
    ds_info: dict[str, Any] = dict(dataset.summary())
    ds_info.update(
        name=dataset.name,
        format=dataset.format,
        root=str(dataset.root),
        protocol=dataset.protocol,
        n_problems=len(dataset.problems),
    )
    result: dict[str, Any] = {
        "config": config,
        "dataset": ds_info,
        "k": k,
        "metrics": metrics,
        "per_query": per_query,
        "failed": [{"query": q, "path": dataset.qimlist[q]} for q in failed],
        "search_seconds": seconds,
        "pr_curve": curve,
    }
    if protocols:
        result["protocols"] = protocols
    return result


def evaluate(
    retriever: Any,
    dataset: RetrievalDataset,
    *,
    k: int | None = None,
    ks: Sequence[int] = (1, 5, 10),
    progress: bool | None = True,
    batch_size: int = 256,
    pr_points: int = 11,
    ndcg_gain: str = "linear",
    max_block: int = MAX_BLOCK,
) -> dict[str, Any]:
    """Run every query of ``dataset`` through ``retriever``, scoring each batch as it comes.

    Catalog images are matched to the data set's gallery by resolved absolute
    path. Gallery images missing from the retriever never appear in the
    rankings; catalog images outside the gallery stay in the rankings as
    non-relevant distractors. Queries that fail (unreadable image) count as AP 0
    and are listed in ``failed``. Rankings are not kept: memory holds one batch
    of results (at most ``max_block`` ids; the batch shrinks for long rankings).

    Parameters
    ----------
    retriever : object
        Has ``paths`` (the catalog's image paths; its ids index this list),
        ``search_many(queries, k, bboxes) -> (D, I, failed)`` with ``I`` an
        ``(m, k)`` int array padded with -1 and ``failed`` the indices (into
        ``queries``) of the queries that could not be run, and ``config() -> dict``
        (a :class:`~cvretrieval.retriever.Retriever`, or
        :class:`~cvretrieval.distractors.WithDistractors`).
    dataset : RetrievalDataset
        The gallery, queries (with their bounding boxes) and ground truth.
    k : int, optional
        Results requested per query; default the whole catalog (full rankings).
        With a smaller ``k`` positives beyond it count as not found.
    ks : sequence of int
        Cut-offs for P@k, R@k and mAP@k (see :func:`compute_metrics`).
    progress : bool or None
        Show a progress bar (when standard error is a terminal; True always, False never).
    batch_size : int
        Most queries per ``search_many`` call.
    pr_points : int
        Recall levels of ``pr_curve`` (11 or 101).
    ndcg_gain : {"linear", "exponential"}
        Gain of ``NDCG@k``, reported when the ground truth has grades.
    max_block : int
        Most result ids held at once (batch rows x k).

    Returns
    -------
    dict
        ``config``, ``dataset`` (summary plus ``name``, ``format``, ``root``,
        ``protocol``, ``n_problems``), ``k``, ``metrics``, ``per_query`` (see
        :func:`compute_metrics`), ``failed`` (list of ``{"query", "path"}``),
        ``search_seconds`` and ``pr_curve`` (``{"recall", "precision"}``, the mean
        interpolated precision of the queries with positives). With protocols
        (revisited Oxford/Paris) ``metrics`` also holds ``mAP (E|M|H)`` and
        ``mP@k (E|M|H)`` for k = 1, 5, 10 (revisitop's numbers) and ``protocols``
        the details; for a ``gldv2`` data set, ``mAP@100 (GLDv2)``.

    Raises
    ------
    DatasetError
        If no gallery image of ``dataset`` is in the retriever's catalog.
    ValueError
        If ``k``, ``batch_size`` or ``pr_points`` is invalid or ``search_many``
        returns a malformed result.
    """
    recall_levels(pr_points)
    catalog = list(retriever.paths)
    n_cat = len(catalog)
    n_im = len(dataset.imlist)
    where = {_resolved(p): i for i, p in enumerate(dataset.image_paths())}
    id2im = np.full(n_cat, n_im, dtype=np.int64)  # n_im = a distractor outside the gallery
    for cid, p in enumerate(catalog):
        id2im[cid] = where.get(_resolved(p), n_im)
    n_matched = len(set(id2im[id2im < n_im].tolist()))
    if n_matched == 0:
        raise DatasetError(
            f"none of the {n_im} gallery images of data set {dataset.name!r} (root "
            f"{str(dataset.root)!r}) is in the retriever's catalog of {n_cat} images; "
            "the retriever was not built on this data set's images: build it on "
            "dataset.image_paths()"
        )
    if n_matched < n_im:
        logger.warning(
            "%d of %d gallery images are not in the retriever; they can never be retrieved",
            n_im - n_matched,
            n_im,
        )
    n_distractors = int(np.count_nonzero(id2im == n_im))
    if n_distractors:
        logger.info(
            "%d catalog images are outside the data set: kept as distractors", n_distractors
        )
    k = _check_k(n_cat if k is None else k)
    step = _batch_rows(batch_size, k, max_block)
    scorer = _scorer(dataset, ks, pr_points, ndcg_gain)
    queries = dataset.query_paths()
    bboxes = dataset.query_bboxes()
    nq = len(queries)
    failed: set[int] = set()
    bar = _progress_bar(nq, progress)
    # this loop shows the progress: silence the retriever's own bar when it has one
    quiet = {"progress": False} if _accepts_progress(retriever.search_many) else {}
    seconds = 0.0
    try:
        for start in range(0, nq, step):
            stop = min(start + step, nq)
            t0 = time.perf_counter()
            _, ids, bad = retriever.search_many(queries[start:stop], k, bboxes[start:stop], **quiet)
            seconds += time.perf_counter() - t0
            ids = np.asarray(ids)
            if ids.ndim != 2 or ids.shape[0] != stop - start:
                raise ValueError(
                    f"search_many returned I of shape {ids.shape} for {stop - start} queries; "
                    "expected (n_queries, k)"
                )
            ids = ids.astype(np.int64, copy=False)
            if ids.size and ids.max() >= n_cat:
                raise ValueError(
                    f"search_many returned id {int(ids.max())} but the catalog has {n_cat} "
                    "images; the index and the catalog disagree"
                )
            bad_set = {start + int(b) for b in bad}
            failed |= bad_set
            for i, row in enumerate(ids):
                scorer.add_ranking(start + i, id2im[row[row >= 0]], failed=start + i in bad_set)
            del ids
            bar.update(stop - start)
            logger.debug("searched and scored queries %d..%d of %d", start, stop, nq)
    finally:
        bar.close()
    if failed:
        logger.warning("%d of %d queries failed and count as AP 0", len(failed), nq)
    return _report(scorer, sorted(failed), dataset, config=retriever.config(), k=k, seconds=seconds)


# =========================================================================== vectors
def vector_scores(
    xq: NDArray[np.float32],
    xb: NDArray[np.float32],
    metric: str = "ip",
    xb_norms: NDArray[np.float32] | None = None,
) -> NDArray[np.float32]:
    """Scores of queries against a gallery, higher better: inner product, or ``-squared L2``.

    Examples
    --------
    >>> vector_scores(np.eye(2, dtype=np.float32), np.eye(2, dtype=np.float32), "l2").tolist()
    [[-0.0, -2.0], [-2.0, -0.0]]
    """
    s = xq @ xb.T
    if metric == "l2":
        nb = (xb * xb).sum(1) if xb_norms is None else xb_norms
        s = -(((xq * xq).sum(1)[:, None] - 2 * s) + nb[None, :])
    return np.ascontiguousarray(s, dtype=np.float32)


def evaluate_vectors(
    gallery: ArrayLike,
    queries: ArrayLike,
    dataset: RetrievalDataset,
    *,
    metric: str | None = "ip",
    k: int | None = None,
    ks: Sequence[int] = (1, 5, 10),
    pr_points: int = 11,
    source: str | None = None,
    batch_size: int = 1024,
    ndcg_gain: str = "linear",
    max_block: int = 1 << 24,
    progress: bool | None = False,
) -> dict[str, Any]:
    """Score precomputed vectors (from any framework) on ``dataset`` by exact search.

    Queries are scored block by block against the whole gallery; the positions of
    each query's positives, junk and own image are counted from the sorted scores
    (higher inner product or smaller L2 distance first, ties to the smaller
    gallery index), so no ranking is ever kept and memory holds one block of
    scores (at most ``max_block`` floats).

    Parameters
    ----------
    gallery : (n_images, d) array_like
        One vector per ``dataset.imlist`` entry, in that order.
    queries : (n_queries, d) array_like
        One vector per ``dataset.qimlist`` entry, in that order (already cropped
        to the query boxes, if the protocol uses them).
    dataset : RetrievalDataset
    metric : {"ip", "l2"}
        ``"ip"``: inner product (L2-normalise the vectors first for cosine
        similarity); ``"l2"``: Euclidean distance. ``None`` means ``"ip"``.
    k : int, optional
        Rankings truncated to ``k`` results; default all gallery images.
    ks, pr_points, ndcg_gain
        As in :func:`evaluate`.
    source : str, optional
        Where the vectors came from (e.g. the ``.npz`` path), for ``config``.
    batch_size : int
        Most queries per block.
    max_block : int
        Most scores held at once (block rows x gallery size).

    Returns
    -------
    dict
        The same keys as :func:`evaluate`; ``config`` is ``{"vectors", "metric",
        "dim", "index": "Flat"}`` and ``failed`` is empty.

    Raises
    ------
    DatasetError
        Shapes that do not match the data set, or non-finite values.
    ValueError
        Unknown ``metric``, invalid ``k`` or ``batch_size``.

    Examples
    --------
    >>> from cvretrieval.datasets import RetrievalDataset
    >>> ds = RetrievalDataset(".", ["a", "b"], ["q"], [{"ok": [1]}])
    >>> r = evaluate_vectors([[1, 0], [0, 1]], [[0.1, 0.9]], ds)
    >>> r["metrics"]["mAP"], r["per_query"][0]["top"]
    (1.0, [1, 0])
    """
    metric = "ip" if metric is None else str(metric).lower()
    if metric not in _VECTOR_METRICS:
        raise ValueError(f"metric must be 'ip' or 'l2', got {metric!r}")
    recall_levels(pr_points)
    xb = _as_matrix(gallery, "gallery")
    xq = _as_matrix(queries, "queries")
    _check_vectors(xb, xq, dataset)
    n, d = xb.shape
    k = n if k is None else min(_check_k(k), n)
    step = _batch_rows(batch_size, n, max_block)
    scorer = _scorer(dataset, ks, pr_points, ndcg_gain)
    nb = (xb * xb).sum(1) if metric == "l2" else None
    bar = _progress_bar(xq.shape[0], progress)
    t0 = time.perf_counter()
    try:
        for start in range(0, xq.shape[0], step):
            block = xq[start : start + step]
            scorer.add_scores(start, vector_scores(block, xb, metric, nb), k=k)
            bar.update(block.shape[0])
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    config = {"vectors": source or "arrays", "metric": metric, "dim": int(d), "index": "Flat"}
    return _report(scorer, [], dataset, config=config, k=k, seconds=seconds)


def evaluate_embedder(
    embedder: Any, dataset: RetrievalDataset, *, metric: str | None = None, **options: Any
) -> dict[str, Any]:
    """Score an embedder that reads no pixels (``takes_paths``, e.g. ``vectors:FILE.npz``).

    Its ``vectors_for(dataset)`` gives the gallery and query vectors, scored by
    :func:`evaluate_vectors` (``options`` are passed on); ``metric`` is used when
    the embedder does not say.
    """
    if not getattr(embedder, "takes_paths", False):
        raise TypeError(
            f"{type(embedder).__name__} embeds images: build a Retriever with it and call evaluate"
        )
    gallery, queries, own_metric = embedder.vectors_for(dataset)
    source = str(getattr(embedder, "path", "") or type(embedder).__name__)
    result = evaluate_vectors(
        gallery, queries, dataset, metric=own_metric or metric, source=source, **options
    )
    result["config"]["embedder"] = embedder.spec()
    return result


def format_metrics_table(metrics: dict[str, Any]) -> str:
    """A two-column aligned text table of the scalar entries of ``metrics``.

    Floats are shown with 4 decimals, integers as they are; other entries are
    skipped.

    Examples
    --------
    >>> print(format_metrics_table({"mAP": 0.5, "n_queries": 3}))
    metric     value
    ---------  ------
    mAP        0.5000
    n_queries  3
    """
    rows: list[tuple[str, str]] = []
    for key, value in metrics.items():
        if isinstance(value, (bool, np.bool_)):
            continue
        if isinstance(value, (int, np.integer)):
            rows.append((str(key), str(int(value))))
        elif isinstance(value, (float, np.floating)):
            rows.append((str(key), f"{float(value):.4f}"))
    w1 = max([len("metric")] + [len(a) for a, _ in rows])
    w2 = max([len("value")] + [len(b) for _, b in rows])
    lines = [f"{'metric':<{w1}}  {'value':<{w2}}".rstrip(), f"{'-' * w1}  {'-' * w2}"]
    lines += [f"{a:<{w1}}  {b}" for a, b in rows]
    return "\n".join(lines)
