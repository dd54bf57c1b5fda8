"""Retrieval metrics as pure functions on rankings and ground truth, and :func:`evaluate`.

Two families of functions:

* :func:`compute_ap` and :func:`compute_map` reproduce, signature and semantics,
  revisitop's ``python/evaluate.py`` (the field's reference for AP with junk
  images): ``ranks`` is ``(n_db, n_q)``, column ``i`` is query ``i``'s ranking.
* per-query metrics on one 1-D ranking (best first): :func:`average_precision`,
  :func:`ap_at_k`, :func:`precision_at_k`, :func:`recall_at_k`,
  :func:`first_relevant_rank` and the UKBench :func:`ns_score`.

:func:`compute_metrics` aggregates them over queries and :func:`evaluate` runs a
retriever over a :class:`~cvretrieval.datasets.RetrievalDataset`.

References
----------
.. [1] F. Radenović, A. Iscen, G. Tolias, Y. Avrithis, O. Chum, "Revisiting Oxford
       and Paris: Large-Scale Image Retrieval Benchmarking", CVPR 2018.
.. [2] D. Nistér, H. Stewénius, "Scalable Recognition with a Vocabulary Tree",
       CVPR 2006.
.. [3] T. Weyand, A. Araujo, B. Cao, J. Sim, "Google Landmarks Dataset v2", CVPR 2020
       (mAP@k).
"""

from __future__ import annotations

import inspect
import logging
import math
import time
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from cvretrieval.errors import DatasetError

if TYPE_CHECKING:  # pragma: no cover
    from cvretrieval.datasets import RetrievalDataset

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
    "compute_metrics",
    "evaluate",
    "format_metrics_table",
]

#: cut-offs always reported for mAP@k, on top of the requested ``ks``
MAP_AT_K: tuple[int, ...] = (1, 10, 50, 100)
#: cut-offs always reported for P@k and R@k, on top of the requested ``ks``
PR_AT_K: tuple[int, ...] = (1, 5, 10)


# =========================================================================== revisitop
def compute_ap(ranks: ArrayLike, nres: int) -> float:
    """Average precision from the 0-based ranks of the retrieved positives.

    The area under the precision-recall curve by the trapezoidal rule: the
    ``j``-th positive (0-based) at rank ``r`` adds ``(p0 + p1) / 2 / nres`` with
    ``p0 = j / r`` (1 when ``r == 0``) and ``p1 = (j + 1) / (r + 1)``.

    Parameters
    ----------
    ranks : (n_found,) array_like of int
        Sorted 0-based positions of the positives in the ranking (junk removed).
    nres : int
        Number of positives of the query (positives never found count as 0).

    Returns
    -------
    float
        AP in [0, 1].

    Raises
    ------
    ValueError
        If ``nres <= 0`` (revisitop divides by zero there).

    References
    ----------
    .. [1] F. Radenović et al., "Revisiting Oxford and Paris: Large-Scale Image
           Retrieval Benchmarking", CVPR 2018 (``revisitop/python/evaluate.py``).

    Examples
    --------
    >>> compute_ap([0, 2], 2)  # positives at ranks 1 and 3 of the list
    0.7916666666666666
    """
    if nres <= 0:
        raise ValueError(f"nres must be the positive number of relevant images, got {nres}")
    r = np.asarray(ranks, dtype=np.float64).ravel()
    if r.size == 0:
        return 0.0
    j = np.arange(r.size, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        p0 = np.where(r == 0, 1.0, j / r)
    p1 = (j + 1.0) / (r + 1.0)
    return float(np.sum(p0 + p1) / 2.0 / nres)


def _as_index_array(values: Any) -> NDArray[np.int64]:
    a = np.asarray(values if values is not None else [])
    if a.size == 0:
        return np.zeros(0, dtype=np.int64)
    return a.astype(np.int64, copy=False).ravel()


def _member(values: NDArray[np.int64], test: NDArray[np.int64]) -> NDArray[np.bool_]:
    """``np.isin(values, test)`` for integer arrays, by a lookup table when indices are small."""
    if values.size == 0 or test.size == 0:
        return np.zeros(values.shape, dtype=bool)
    lo = min(int(values.min()), int(test.min()))
    hi = max(int(values.max()), int(test.max()))
    if lo >= -1 and hi < 8 * (values.size + test.size) + (1 << 20):
        table = np.zeros(hi + 2, dtype=bool)
        table[test + 1] = True  # shifted by one so that -1 padding has a slot
        return table[values + 1]
    return np.isin(values, test)


def compute_map(
    ranks: ArrayLike, gnd: Sequence[dict], kappas: Sequence[int] = (1, 5, 10)
) -> tuple[float, NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Mean average precision and precision at ``kappas``, exactly as revisitop.

    Junk images are removed by decreasing each positive's position by the number
    of junk images ranked before it. Queries without positives get AP ``NaN`` and
    are left out of the means.

    Parameters
    ----------
    ranks : (n_db, n_q) array_like of int
        Column ``i`` is query ``i``'s ranking of gallery indices, best first. It may
        be truncated (or padded with -1): positives never found add nothing to the
        AP, whose denominator stays ``len(ok)``.
    gnd : sequence of dict, length n_q
        Per query ``"ok"`` (relevant gallery indices) and optionally ``"junk"``.
    kappas : sequence of int
        Cut-offs of the precision.

    Returns
    -------
    map : float
        Mean AP over the queries with positives (``NaN`` if there are none).
    aps : (n_q,) ndarray of float64
        AP per query, ``NaN`` for queries without positives.
    pr : (len(kappas),) ndarray of float64
        Mean of ``prs`` over the queries with positives.
    prs : (n_q, len(kappas)) ndarray of float64
        revisitop's precision at ``kappa`` (kept as is, quirk included): on the
        1-based positions ``pos`` of the positives, ``kq = min(max(pos), kappa)``
        and ``prs = (pos <= kq).sum() / kq``. It is 0 for a query none of whose
        positives is in a truncated ranking (revisitop would crash on
        ``max([])``), ``NaN`` for a query without positives.

    Raises
    ------
    ValueError
        If ``ranks`` is not 2-D or has not one column per query.

    References
    ----------
    .. [1] F. Radenović et al., "Revisiting Oxford and Paris: Large-Scale Image
           Retrieval Benchmarking", CVPR 2018 (``revisitop/python/evaluate.py``).

    Examples
    --------
    >>> ranks = np.array([[3], [0], [1], [2]])  # one query, ranking 3, 0, 1, 2
    >>> m, aps, pr, prs = compute_map(ranks, [{"ok": [3, 1], "junk": [0]}], kappas=[1])
    >>> round(m, 6)  # 0 is junk: the positives sit at 0-based ranks 0 and 1
    1.0
    """
    ranks = np.asarray(ranks)
    if ranks.ndim != 2:
        raise ValueError(
            f"ranks must be 2-D (n_db, n_q), got shape {ranks.shape}; stack one column per query"
        )
    nq = len(gnd)
    if ranks.shape[1] != nq:
        raise ValueError(
            f"ranks has {ranks.shape[1]} columns but gnd has {nq} queries; ranks must be "
            "(n_db, n_q) (transpose a (n_q, n_db) array)"
        )
    kappas = [int(k) for k in kappas]
    aps = np.zeros(nq)
    prs = np.zeros((nq, len(kappas)))
    pr = np.zeros(len(kappas))
    total = 0.0
    nempty = 0
    positions = np.arange(ranks.shape[0])
    for i in range(nq):
        ok = _as_index_array(gnd[i]["ok"])
        if ok.size == 0:
            aps[i] = np.nan
            prs[i, :] = np.nan
            nempty += 1
            continue
        junk = _as_index_array(gnd[i].get("junk", ()))
        col = ranks[:, i].astype(np.int64, copy=False)
        pos = positions[_member(col, ok)]
        if junk.size:
            jpos = positions[_member(col, junk)]
            # number of junk ranked strictly before each positive
            pos = pos - np.searchsorted(jpos, pos, side="left")
        ap = compute_ap(pos, ok.size)
        total += ap
        aps[i] = ap
        pos1 = pos + 1
        for j, kappa in enumerate(kappas):
            if pos1.size == 0:
                prs[i, j] = 0.0
            else:
                kq = min(int(pos1.max()), kappa)
                prs[i, j] = (pos1 <= kq).sum() / kq
        pr += prs[i, :]
    n_eval = nq - nempty
    if n_eval == 0:
        logger.warning("no query has positives: mAP is undefined (NaN)")
        return float("nan"), aps, np.full(len(kappas), np.nan), prs
    return total / n_eval, aps, pr / n_eval, prs


# =========================================================================== per query
def _clean_ranking(
    ranking: ArrayLike,
    ok: ArrayLike = (),
    junk: ArrayLike = (),
    self_index: int | None = None,
) -> NDArray[np.int64]:
    """Drop -1 padding, junk (except indices also in ``ok``) and the query's own image."""
    r = np.asarray(ranking)
    if r.ndim != 1:
        raise ValueError(f"a ranking must be a 1-D array of gallery indices, got shape {r.shape}")
    r = r.astype(np.int64, copy=False)
    keep = r >= 0
    junk_a = _as_index_array(junk)
    junk_eff = junk_a[~_member(junk_a, _as_index_array(ok))]
    if junk_eff.size:
        keep &= ~_member(r, junk_eff)
    if self_index is not None:
        keep &= r != int(self_index)
    return r[keep]


def _hits(ranking: ArrayLike, ok: ArrayLike, junk: ArrayLike) -> tuple[NDArray[np.bool_], int]:
    ok_a = _as_index_array(ok)
    clean = _clean_ranking(ranking, ok_a, junk)
    return _member(clean, ok_a), int(ok_a.size)


def _check_k(k: int) -> int:
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def _ap_from_hits(hits: NDArray[np.bool_], nres: int) -> float:
    if nres == 0:
        return math.nan
    return compute_ap(np.flatnonzero(hits), nres)


def _ap_at_k_from_hits(hits: NDArray[np.bool_], nres: int, k: int) -> float:
    if nres == 0:
        return math.nan
    h = hits[:k]
    if not h.any():
        return 0.0
    precision = np.cumsum(h) / np.arange(1, h.size + 1)
    return float(np.sum(precision[h]) / min(k, nres))


def _precision_from_hits(hits: NDArray[np.bool_], k: int) -> float:
    return float(np.count_nonzero(hits[:k]) / k)


def _recall_from_hits(hits: NDArray[np.bool_], nres: int, k: int) -> float:
    if nres == 0:
        return math.nan
    return float(np.count_nonzero(hits[:k]) / nres)


def _first_rank_from_hits(hits: NDArray[np.bool_]) -> int:
    found = np.flatnonzero(hits)
    return int(found[0]) + 1 if found.size else int(hits.size) + 1


def average_precision(ranking: ArrayLike, ok: ArrayLike, junk: ArrayLike = ()) -> float:
    """Average precision of one ranking (revisitop's AP).

    Parameters
    ----------
    ranking : (n,) array_like of int
        Gallery indices, best first (the query's own image already removed when it
        is in the gallery). -1 entries (padding) are ignored.
    ok : array_like of int
        Relevant gallery indices.
    junk : array_like of int
        Gallery indices removed from the ranking before scoring (an index in both
        ``ok`` and ``junk`` counts as ``ok``, as in revisitop).

    Returns
    -------
    float
        AP in [0, 1]; ``NaN`` if ``ok`` is empty.

    References
    ----------
    .. [1] F. Radenović et al., "Revisiting Oxford and Paris", CVPR 2018.

    Examples
    --------
    >>> average_precision([7, 5, 9, 8], ok=[7, 9])  # hits at ranks 1 and 3
    0.7916666666666666
    >>> average_precision([5, 7, 9], ok=[7, 9], junk=[5])
    1.0
    """
    hits, nres = _hits(ranking, ok, junk)
    return _ap_from_hits(hits, nres)


def ap_at_k(ranking: ArrayLike, ok: ArrayLike, k: int, junk: ArrayLike = ()) -> float:
    """AP truncated at ``k`` (the mAP@k of Google Landmarks v2).

    ``sum_{i <= k} P(i) rel(i) / min(k, len(ok))`` on the ranking with junk removed.

    Parameters
    ----------
    ranking : (n,) array_like of int
        Gallery indices, best first.
    ok : array_like of int
        Relevant gallery indices.
    k : int
        Cut-off (>= 1).
    junk : array_like of int
        Indices removed before scoring.

    Returns
    -------
    float
        In [0, 1]; ``NaN`` if ``ok`` is empty.

    References
    ----------
    .. [1] T. Weyand et al., "Google Landmarks Dataset v2", CVPR 2020.

    Examples
    --------
    >>> ap_at_k([7, 5, 9, 8], ok=[7, 9], k=2)  # (1/1) / min(2, 2)
    0.5
    """
    k = _check_k(k)
    hits, nres = _hits(ranking, ok, junk)
    return _ap_at_k_from_hits(hits, nres, k)


def precision_at_k(ranking: ArrayLike, ok: ArrayLike, k: int, junk: ArrayLike = ()) -> float:
    """Fraction of the first ``k`` results (junk removed) that are relevant.

    A ranking shorter than ``k`` still divides by ``k``.

    Examples
    --------
    >>> precision_at_k([7, 5, 9, 8], ok=[7, 9], k=4)
    0.5
    """
    k = _check_k(k)
    hits, _ = _hits(ranking, ok, junk)
    return _precision_from_hits(hits, k)


def recall_at_k(ranking: ArrayLike, ok: ArrayLike, k: int, junk: ArrayLike = ()) -> float:
    """Fraction of the relevant images found in the first ``k`` results (junk removed).

    Returns ``NaN`` if ``ok`` is empty.

    Examples
    --------
    >>> recall_at_k([7, 5, 9, 8], ok=[7, 9], k=2)
    0.5
    """
    k = _check_k(k)
    hits, nres = _hits(ranking, ok, junk)
    return _recall_from_hits(hits, nres, k)


def first_relevant_rank(ranking: ArrayLike, ok: ArrayLike, junk: ArrayLike = ()) -> int:
    """1-based rank of the first relevant result after junk removal.

    If no relevant image is in the ranking, ``len(ranking) + 1`` (after junk
    removal): one past the end, never ``NaN``.

    Examples
    --------
    >>> first_relevant_rank([5, 8, 9], ok=[9], junk=[5])
    2
    >>> first_relevant_rank([5, 8], ok=[9])
    3
    """
    hits, _ = _hits(ranking, ok, junk)
    return _first_rank_from_hits(hits)


def ns_score(ranking_with_self: ArrayLike, group: ArrayLike, k: int = 4) -> int:
    """UKBench N-S score of one query: group members among the first ``k`` results.

    Parameters
    ----------
    ranking_with_self : (n,) array_like of int
        The ranking that still contains the query's own image.
    group : array_like of int
        The query's group: its positives and its own image.
    k : int
        Cut-off, 4 for UKBench (so the score is in 0..4).

    Returns
    -------
    int

    References
    ----------
    .. [1] D. Nistér, H. Stewénius, "Scalable Recognition with a Vocabulary Tree",
           CVPR 2006.

    Examples
    --------
    >>> ns_score([0, 1, 9, 2, 3], group=[0, 1, 2, 3])
    3
    """
    k = _check_k(k)
    r = np.asarray(ranking_with_self).ravel()[:k].astype(np.int64, copy=False)
    return int(np.count_nonzero(_member(r, _as_index_array(group))))


# =========================================================================== aggregation
def _sorted_ks(ks: Iterable[int], always: Iterable[int]) -> list[int]:
    return sorted({_check_k(k) for k in ks} | set(always))


def compute_metrics(
    rankings: Sequence[ArrayLike],
    dataset_or_gnd: RetrievalDataset | Sequence[dict],
    self_index: Sequence[int | None] | None = None,
    ks: Sequence[int] = (1, 5, 10),
    *,
    failed: Collection[int] = (),
) -> tuple[dict[str, float | int], list[dict[str, Any]]]:
    """All metrics of a set of rankings, summary and per query.

    The N-S score is computed on each raw ranking (which may contain the query's
    own image); every other metric on the ranking with the query's own image,
    its junk and -1 padding removed. If a query's own image is listed in its
    ``ok``, it is dropped from ``ok``.

    Parameters
    ----------
    rankings : sequence of (n_i,) array_like of int, length n_q
        Per query, gallery indices best first (full or truncated rankings).
    dataset_or_gnd : RetrievalDataset or sequence of dict
        The ground truth (``gnd``), per query ``"ok"`` and optionally ``"junk"``.
    self_index : sequence of int or None, length n_q, optional
        Gallery index of each query's own image, ``None`` if it is not in the
        gallery. Default: ``dataset.query_self_index()`` for a data set, else no
        query is in the gallery.
    ks : sequence of int
        Cut-offs of P@k and R@k (1, 5 and 10 are always reported) and extra
        cut-offs of mAP@k (1, 10, 50, 100 are always reported).
    failed : collection of int
        Queries that could not be run: AP, P, R and N-S are 0 and ``first_rank``
        is one past the gallery size.

    Returns
    -------
    metrics : dict
        ``mAP``, ``mAP@k``, ``P@k``, ``R@k``, ``mean_rank``, ``median_rank`` (means
        over the ``n_queries_evaluated`` queries with positives), ``ns_score``
        (mean over all queries), ``n_queries``, ``n_queries_evaluated``,
        ``n_failed``; plain Python numbers, never ``NaN`` (0.0 when no query has
        positives).
    per_query : list of dict
        ``query``, ``ap``, ``P@k``, ``R@k``, ``first_rank`` (``None`` when the
        query has no positives), ``ns``, ``n_ok``, ``failed`` and ``top``: the
        first 10 gallery indices of the cleaned ranking (``None`` for a result
        outside the data set's gallery).

    References
    ----------
    .. [1] F. Radenović et al., "Revisiting Oxford and Paris", CVPR 2018.
    .. [2] D. Nistér, H. Stewénius, "Scalable Recognition with a Vocabulary Tree",
           CVPR 2006.
    """
    dataset: Any = dataset_or_gnd if hasattr(dataset_or_gnd, "gnd") else None
    gnd: Sequence[dict] = dataset.gnd if dataset is not None else dataset_or_gnd  # type: ignore[assignment]
    nq = len(gnd)
    if len(rankings) != nq:
        raise ValueError(f"got {len(rankings)} rankings for {nq} queries; give one per query")
    if self_index is None:
        self_index = dataset.query_self_index() if dataset is not None else [None] * nq
    if len(self_index) != nq:
        raise ValueError(f"self_index has {len(self_index)} entries for {nq} queries")
    pr_ks = _sorted_ks(ks, PR_AT_K)
    map_ks = _sorted_ks(ks, MAP_AT_K)
    failed_set = {int(q) for q in failed}
    n_im = len(dataset.imlist) if dataset is not None else None
    if n_im is not None:
        worst = n_im + 1
    else:
        worst = max((np.asarray(r).size for r in rankings), default=0) + 1

    per_query: list[dict[str, Any]] = []
    aps: list[float] = []
    ap_k: dict[int, list[float]] = {k: [] for k in map_ks}
    prec: dict[int, list[float]] = {k: [] for k in pr_ks}
    rec: dict[int, list[float]] = {k: [] for k in pr_ks}
    first_ranks: list[int] = []
    ns_all: list[int] = []
    for q in range(nq):
        raw = np.asarray(rankings[q])
        if raw.ndim != 1:
            raise ValueError(f"ranking of query {q} must be 1-D, got shape {raw.shape}")
        raw = raw.astype(np.int64, copy=False)
        s = self_index[q]
        ok = _as_index_array(gnd[q]["ok"])
        if s is not None:
            ok = ok[ok != int(s)]
        junk = _as_index_array(gnd[q].get("junk", ()))
        is_failed = q in failed_set
        group = ok if s is None else np.append(ok, int(s))
        ns = 0 if is_failed else ns_score(raw, group, k=4)
        clean = _clean_ranking(raw, ok, junk, s) if not is_failed else np.zeros(0, np.int64)
        hits = _member(clean, ok)
        nres = int(ok.size)
        top: list[int | None] = [
            None if (n_im is not None and v >= n_im) else int(v) for v in clean[:10]
        ]
        entry: dict[str, Any] = {"query": q, "n_ok": nres, "ns": ns, "failed": is_failed}
        ns_all.append(ns)
        if nres == 0:
            entry["ap"] = None
            entry["first_rank"] = None
            for k in pr_ks:
                entry[f"P@{k}"] = _precision_from_hits(hits, k)
                entry[f"R@{k}"] = None
        else:
            ap = _ap_from_hits(hits, nres)
            fr = worst if is_failed else _first_rank_from_hits(hits)
            aps.append(ap)
            first_ranks.append(fr)
            for k in map_ks:
                ap_k[k].append(_ap_at_k_from_hits(hits, nres, k))
            entry["ap"] = ap
            entry["first_rank"] = fr
            for k in pr_ks:
                p, r = _precision_from_hits(hits, k), _recall_from_hits(hits, nres, k)
                prec[k].append(p)
                rec[k].append(r)
                entry[f"P@{k}"] = p
                entry[f"R@{k}"] = r
        entry["top"] = top
        per_query.append(entry)

    n_eval = len(aps)
    if n_eval == 0:
        logger.warning("no query has positives: ranking metrics are reported as 0")

    def mean(values: list[float] | list[int]) -> float:
        return float(np.mean(values)) if values else 0.0

    metrics: dict[str, float | int] = {"mAP": mean(aps)}
    for k in map_ks:
        metrics[f"mAP@{k}"] = mean(ap_k[k])
    for k in pr_ks:
        metrics[f"P@{k}"] = mean(prec[k])
    for k in pr_ks:
        metrics[f"R@{k}"] = mean(rec[k])
    metrics["mean_rank"] = mean(first_ranks)
    metrics["median_rank"] = float(np.median(first_ranks)) if first_ranks else 0.0
    metrics["ns_score"] = mean(ns_all)
    metrics["n_queries"] = nq
    metrics["n_queries_evaluated"] = n_eval
    metrics["n_failed"] = len(failed_set & set(range(nq)))
    return metrics, per_query


# =========================================================================== evaluate
def _accepts_progress(func: Any) -> bool:
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return False
    return "progress" in params


def _resolved(path: str | Path) -> str:
    return str(Path(path).resolve())


def evaluate(
    retriever: Any,
    dataset: RetrievalDataset,
    *,
    k: int | None = None,
    ks: Sequence[int] = (1, 5, 10),
    progress: bool | None = True,
    batch_size: int = 256,
) -> dict[str, Any]:
    """Run every query of ``dataset`` through ``retriever`` and score the rankings.

    Catalog images are matched to the data set's gallery by resolved absolute
    path. Gallery images missing from the retriever never appear in the
    rankings; catalog images outside the gallery stay in the rankings as
    non-relevant distractors. Queries that fail (unreadable image) count as AP 0
    and are listed in ``failed``.

    Parameters
    ----------
    retriever : object
        Has ``paths`` (the catalog's image paths; its ids index this list),
        ``search_many(queries, k, bboxes) -> (D, I, failed)`` with ``I`` an
        ``(m, k)`` int array padded with -1 and ``failed`` the indices (into
        ``queries``) of the queries that could not be run, and ``config() -> dict``.
    dataset : RetrievalDataset
        The gallery, queries (with their bounding boxes) and ground truth.
    k : int, optional
        Results requested per query; default the whole catalog (full rankings).
        With a smaller ``k`` positives beyond it count as not found.
    ks : sequence of int
        Cut-offs for P@k, R@k and mAP@k (see :func:`compute_metrics`).
    progress : bool or None
        Show a progress bar (tqdm, when installed and stderr is a terminal);
        ``False`` silences it, ``None`` means the same as ``True`` (automatic).
    batch_size : int
        Queries per ``search_many`` call.

    Returns
    -------
    dict
        ``config``, ``dataset`` (summary plus ``name``, ``format``, ``root``),
        ``k``, ``metrics``, ``per_query``, ``failed`` (list of ``{"query", "path"}``)
        and ``search_seconds``.

    Raises
    ------
    DatasetError
        If no gallery image of ``dataset`` is in the retriever's catalog.
    ValueError
        If ``k`` or ``batch_size`` is not positive or ``search_many`` returns a
        malformed result.

    References
    ----------
    .. [1] F. Radenović et al., "Revisiting Oxford and Paris", CVPR 2018.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
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
    if k is None:
        k = n_cat
    k = _check_k(k)

    queries = dataset.query_paths()
    bboxes = dataset.query_bboxes()
    nq = len(queries)
    rankings: list[NDArray[np.int64]] = []
    failed: set[int] = set()
    bar = None
    if progress is not False:
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=nq, unit="query", desc="evaluate", disable=None)
        except ImportError:  # pragma: no cover - tqdm is optional
            bar = None
    # this loop shows the progress: silence the retriever's own bar when it has one
    quiet = {"progress": False} if _accepts_progress(retriever.search_many) else {}
    t0 = time.perf_counter()
    try:
        for start in range(0, nq, batch_size):
            stop = min(start + batch_size, nq)
            _, ids, bad = retriever.search_many(queries[start:stop], k, bboxes[start:stop], **quiet)
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
            for row in ids:
                rankings.append(id2im[row[row >= 0]])
            failed.update(start + int(b) for b in bad)
            if bar is not None:
                bar.update(stop - start)
            logger.debug("searched queries %d..%d of %d", start, stop, nq)
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - t0
    if failed:
        logger.warning("%d of %d queries failed and count as AP 0", len(failed), nq)

    metrics, per_query = compute_metrics(
        rankings, dataset, dataset.query_self_index(), ks, failed=failed
    )
    ds_info: dict[str, Any] = dict(dataset.summary())
    ds_info.update(name=dataset.name, format=dataset.format, root=str(dataset.root))
    return {
        "config": retriever.config(),
        "dataset": ds_info,
        "k": k,
        "metrics": metrics,
        "per_query": per_query,
        "failed": [{"query": q, "path": dataset.qimlist[q]} for q in sorted(failed)],
        "search_seconds": seconds,
    }


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
