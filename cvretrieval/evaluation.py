"""Retrieval metrics as pure functions on rankings and ground truth, and :func:`evaluate`.

Two families of functions:

* :func:`compute_ap` and :func:`compute_map` reproduce, signature and semantics,
  revisitop's ``python/evaluate.py`` (the field's reference for AP with junk
  images): ``ranks`` is ``(n_db, n_q)``, column ``i`` is query ``i``'s ranking.
* per-query metrics on one 1-D ranking (best first): :func:`average_precision`,
  :func:`ap_at_k`, :func:`precision_at_k`, :func:`recall_at_k`,
  :func:`first_relevant_rank`, :func:`interpolated_precision` and the UKBench
  :func:`ns_score`.

:func:`compute_metrics` aggregates them over queries, :func:`mean_pr_curve` gives
the mean interpolated precision-recall curve, :func:`revisited_metrics` scores
revisited Oxford/Paris's Easy/Medium/Hard protocols and :func:`gldv2_map_at_100`
is the Google Landmark Retrieval challenge's metric. :func:`evaluate` runs a
retriever over a :class:`~cvretrieval.datasets.RetrievalDataset`;
:func:`evaluate_vectors` scores vectors computed elsewhere (:func:`load_vectors_npz`).

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
import zipfile
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath
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
    "interpolated_precision",
    "compute_metrics",
    "mean_pr_curve",
    "revisited_metrics",
    "gldv2_map_at_100",
    "evaluate",
    "evaluate_vectors",
    "load_vectors_npz",
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


# =========================================================================== PR curve
def _recall_levels(n_points: int) -> NDArray[np.float64]:
    if isinstance(n_points, bool) or int(n_points) != n_points or n_points < 2:
        raise ValueError(
            f"n_points must be an integer >= 2 (11 or 101 are usual), got {n_points!r}"
        )
    return np.linspace(0.0, 1.0, int(n_points))


def _interpolated_from_hits(
    hits: NDArray[np.bool_], nres: int, levels: NDArray[np.float64]
) -> NDArray[np.float64]:
    out = np.zeros(levels.size)
    found = np.flatnonzero(hits)
    if nres == 0 or found.size == 0:
        return out
    n = np.arange(1, found.size + 1, dtype=np.float64)
    precision = n / (found + 1.0)  # precision just after each hit
    best_after = np.maximum.accumulate(precision[::-1])[::-1]  # max precision from hit j on
    # the first hit whose recall (j + 1) / nres reaches the level (tolerant to rounding)
    first = np.ceil(levels * nres - 1e-9).astype(np.int64) - 1
    first = np.maximum(first, 0)
    reached = first < found.size
    out[reached] = best_after[first[reached]]
    return out


def interpolated_precision(
    ranking: ArrayLike, ok: ArrayLike, junk: ArrayLike = (), n_points: int = 11
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Interpolated precision of one ranking at equally spaced recall levels.

    At recall level ``r`` the interpolated precision is the highest precision
    reached at any rank whose recall is at least ``r`` (0 when the ranking never
    reaches ``r``, e.g. a truncated ranking). Junk and -1 padding are removed first.

    Parameters
    ----------
    ranking : (n,) array_like of int
        Gallery indices, best first.
    ok : array_like of int
        Relevant gallery indices.
    junk : array_like of int
        Indices removed before scoring.
    n_points : int
        Number of recall levels ``0, 1/(n_points-1), ..., 1``: 11 (the classic
        11-point curve) or 101.

    Returns
    -------
    recall : (n_points,) ndarray of float64
    precision : (n_points,) ndarray of float64
        All zeros when ``ok`` is empty.

    References
    ----------
    .. [1] C. D. Manning, P. Raghavan, H. Schütze, "Introduction to Information
           Retrieval", Cambridge University Press 2008, section 8.4.

    Examples
    --------
    >>> r, p = interpolated_precision([7, 5, 9, 8], ok=[7, 9], n_points=3)
    >>> r.tolist(), p.tolist()  # hits at ranks 1 and 3: precisions 1 and 2/3
    ([0.0, 0.5, 1.0], [1.0, 1.0, 0.6666666666666666])
    """
    levels = _recall_levels(n_points)
    hits, nres = _hits(ranking, ok, junk)
    return levels, _interpolated_from_hits(hits, nres, levels)


# =========================================================================== aggregation
def _sorted_ks(ks: Iterable[int], always: Iterable[int]) -> list[int]:
    return sorted({_check_k(k) for k in ks} | set(always))


def _score(
    rankings: Sequence[ArrayLike],
    gnd: Sequence[dict],
    self_index: Sequence[int | None],
    ks: Sequence[int],
    failed: Collection[int],
    n_im: int | None,
    n_points: int,
) -> tuple[dict[str, float | int], list[dict[str, Any]], dict[str, list[float]]]:
    """The per-query loop behind :func:`compute_metrics` and :func:`evaluate`."""
    nq = len(gnd)
    if len(rankings) != nq:
        raise ValueError(f"got {len(rankings)} rankings for {nq} queries; give one per query")
    if len(self_index) != nq:
        raise ValueError(f"self_index has {len(self_index)} entries for {nq} queries")
    levels = _recall_levels(n_points)
    pr_ks = _sorted_ks(ks, PR_AT_K)
    map_ks = _sorted_ks(ks, MAP_AT_K)
    failed_set = {int(q) for q in failed}
    if n_im is not None:
        worst = n_im + 1
    else:
        worst = max((np.asarray(r).size for r in rankings), default=0) + 1

    def as_top(values: NDArray[np.int64]) -> list[int | None]:
        return [None if (n_im is not None and v >= n_im) else int(v) for v in values[:10]]

    per_query: list[dict[str, Any]] = []
    aps: list[float] = []
    ap_k: dict[int, list[float]] = {k: [] for k in map_ks}
    prec: dict[int, list[float]] = {k: [] for k in pr_ks}
    rec: dict[int, list[float]] = {k: [] for k in pr_ks}
    first_ranks: list[int] = []
    ns_all: list[int] = []
    curve_sum = np.zeros(levels.size)
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
        if is_failed:
            clean = raw_no_self = np.zeros(0, np.int64)
        else:
            clean = _clean_ranking(raw, ok, junk, s)
            raw_no_self = _clean_ranking(raw, (), (), s)
        hits = _member(clean, ok)
        nres = int(ok.size)
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
            curve_sum += _interpolated_from_hits(hits, nres, levels)
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
        entry["top"] = as_top(clean)
        entry["top_raw"] = as_top(raw_no_self)
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
    curve = {
        "recall": [float(x) for x in levels],
        "precision": [float(x) for x in (curve_sum / n_eval if n_eval else curve_sum)],
    }
    return metrics, per_query, curve


def _gnd_and_self(
    dataset_or_gnd: RetrievalDataset | Sequence[dict],
    self_index: Sequence[int | None] | None,
) -> tuple[Any, Sequence[dict], Sequence[int | None], int | None]:
    dataset: Any = dataset_or_gnd if hasattr(dataset_or_gnd, "gnd") else None
    gnd: Sequence[dict] = dataset.gnd if dataset is not None else dataset_or_gnd  # type: ignore[assignment]
    if self_index is None:
        self_index = dataset.query_self_index() if dataset is not None else [None] * len(gnd)
    n_im = len(dataset.imlist) if dataset is not None else None
    return dataset, gnd, self_index, n_im


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
        query has no positives), ``ns``, ``n_ok``, ``failed``, ``top``: the
        first 10 gallery indices of the cleaned ranking (``None`` for a result
        outside the data set's gallery), and ``top_raw``: the same before junk
        removal (the query's own image still removed), so that a report can
        show the junk.

    References
    ----------
    .. [1] F. Radenović et al., "Revisiting Oxford and Paris", CVPR 2018.
    .. [2] D. Nistér, H. Stewénius, "Scalable Recognition with a Vocabulary Tree",
           CVPR 2006.
    """
    _, gnd, self_index, n_im = _gnd_and_self(dataset_or_gnd, self_index)
    metrics, per_query, _ = _score(rankings, gnd, self_index, ks, failed, n_im, 11)
    return metrics, per_query


def mean_pr_curve(
    rankings: Sequence[ArrayLike],
    dataset_or_gnd: RetrievalDataset | Sequence[dict],
    self_index: Sequence[int | None] | None = None,
    n_points: int = 11,
    *,
    failed: Collection[int] = (),
) -> dict[str, list[float]]:
    """Mean interpolated precision-recall curve over the queries with positives.

    Each ranking is cleaned as in :func:`compute_metrics` (the query's own image,
    its junk and -1 padding removed; failed queries have precision 0), its
    interpolated precision computed at ``n_points`` recall levels by
    :func:`interpolated_precision`, and the curves averaged.

    Returns
    -------
    dict
        ``{"recall": [0, ..., 1], "precision": [...]}`` (``n_points`` floats each).
    """
    _, gnd, self_index, n_im = _gnd_and_self(dataset_or_gnd, self_index)
    return _score(rankings, gnd, self_index, (), failed, n_im, n_points)[2]


#: short names of the revisited protocols in metric keys, as revisitop prints them
_PROTOCOL_LETTER = {"easy": "E", "medium": "M", "hard": "H"}


def revisited_metrics(
    rankings: Sequence[ArrayLike],
    protocols: Mapping[str, Sequence[dict]],
    self_index: Sequence[int | None] | None = None,
    kappas: Sequence[int] = (1, 5, 10),
) -> dict[str, dict[str, Any]]:
    """mAP and mP@k of every protocol, with :func:`compute_map` exactly as revisitop.

    Rankings of different lengths are padded with -1; a query's own image (when
    it is in the gallery) is removed from its positives and treated as junk.

    Parameters
    ----------
    rankings : sequence of (n_i,) array_like of int, length n_q
        Per query, gallery indices best first.
    protocols : dict of str to sequence of dict
        Name to ground truth, e.g. ``dataset.protocols`` (``easy``, ``medium``,
        ``hard``).
    self_index : sequence of int or None, optional
        Gallery index of each query's own image.
    kappas : sequence of int
        Cut-offs of revisitop's mP@k.

    Returns
    -------
    dict
        Per protocol: ``mAP``, ``mP@k`` for each kappa, ``n_queries_evaluated``
        and ``ap`` (per-query AP, ``None`` for a query without positives).

    References
    ----------
    .. [1] F. Radenović et al., "Revisiting Oxford and Paris", CVPR 2018
           (``revisitop/python/example_evaluate.py``).
    """
    nq = len(rankings)
    if self_index is None:
        self_index = [None] * nq
    rows = [np.asarray(r, dtype=np.int64).ravel() for r in rankings]
    ranks = np.full((max((r.size for r in rows), default=0), nq), -1, dtype=np.int64)
    for i, r in enumerate(rows):
        ranks[: r.size, i] = r
    out: dict[str, dict[str, Any]] = {}
    for name, gnd in protocols.items():
        if len(gnd) != nq:
            raise ValueError(f"protocol {name!r} has {len(gnd)} queries for {nq} rankings")
        gnd_t = []
        for g, s in zip(gnd, self_index, strict=True):
            ok = _as_index_array(g["ok"])
            junk = _as_index_array(g.get("junk", ()))
            if s is not None:
                ok = ok[ok != int(s)]
                junk = np.append(junk[junk != int(s)], int(s))
            gnd_t.append({"ok": ok, "junk": junk})
        m, aps, pr, _ = compute_map(ranks, gnd_t, kappas)
        entry: dict[str, Any] = {"mAP": 0.0 if math.isnan(m) else float(m)}
        for kappa, value in zip(kappas, pr, strict=True):
            entry[f"mP@{int(kappa)}"] = 0.0 if math.isnan(value) else float(value)
        entry["n_queries_evaluated"] = int(np.count_nonzero(~np.isnan(aps)))
        entry["ap"] = [None if math.isnan(a) else float(a) for a in aps]
        out[name] = entry
    return out


def gldv2_map_at_100(
    predictions: Mapping[str, Sequence[str]],
    solution: Mapping[str, Sequence[str]],
    max_predictions: int = 100,
) -> float:
    """The Google Landmark Retrieval challenge's mAP@100 (Kaggle's metric, exactly).

    For each query with a non-empty solution: ``AP = sum_{k <= 100} P(k) rel(k) /
    min(n_relevant, 100)``, where a prediction repeated earlier in the list is
    skipped (it is not relevant again, but still takes its rank). Queries with a
    solution but no prediction score 0. The mean is over the queries with a
    non-empty solution; predictions for other queries (the challenge's
    ``Ignored`` non-landmark images) are ignored.

    Parameters
    ----------
    predictions : mapping of str to sequence of str
        Query id to predicted index ids, best first.
    solution : mapping of str to sequence of str
        Query id to its relevant index ids.
    max_predictions : int
        Cut-off (100 for the challenge).

    Returns
    -------
    float
        In [0, 1]; 0.0 if no query has a solution.

    References
    ----------
    .. [1] T. Weyand et al., "Google Landmarks Dataset v2", CVPR 2020; the
           challenge's ``MeanAveragePrecision`` in ``tensorflow/models``
           ``research/delf/delf/python/landmark_recognition/metrics.py`` (computed
           the same way).

    Examples
    --------
    >>> gldv2_map_at_100({"q": ["a", "x", "b"]}, {"q": ["a", "b"]})  # (1/1 + 2/3) / 2
    0.8333333333333333
    """
    k = _check_k(max_predictions)
    queries = [q for q, sol in solution.items() if len(sol) > 0]
    if not queries:
        logger.warning("no query has a solution: mAP@%d is reported as 0", k)
        return 0.0
    total = 0.0
    for q in queries:
        relevant = set(solution[q])
        seen: set[str] = set()
        n_correct = 0
        ap = 0.0
        for i, item in enumerate(list(predictions.get(q, ()))[:k]):
            if item in seen:
                continue
            seen.add(item)
            if item in relevant:
                n_correct += 1
                ap += n_correct / (i + 1)
        total += ap / min(len(relevant), k)
    return total / len(queries)


# =========================================================================== evaluate
def _accepts_progress(func: Any) -> bool:
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return False
    return "progress" in params


def _resolved(path: str | Path) -> str:
    return str(Path(path).resolve())


def _gldv2_score(
    rankings: Sequence[NDArray[np.int64]],
    dataset: RetrievalDataset,
    self_index: Sequence[int | None],
) -> float:
    """mAP@100 of the rankings with ids = file stems (GLDv2 images are ``<id>.jpg``)."""
    index_ids = [PurePosixPath(p).stem for p in dataset.imlist]
    n_im = len(index_ids)
    predictions: dict[str, list[str]] = {}
    solution: dict[str, list[str]] = {}
    for q, (ranking, g) in enumerate(zip(rankings, dataset.gnd, strict=True)):
        qid = PurePosixPath(dataset.qimlist[q]).stem
        r = _clean_ranking(ranking, (), (), self_index[q])[:100]
        predictions[qid] = [index_ids[i] if i < n_im else "" for i in r]  # "" = a distractor
        solution[qid] = [index_ids[i] for i in g["ok"] if i != self_index[q]]
    return gldv2_map_at_100(predictions, solution)


def _report(
    rankings: list[NDArray[np.int64]],
    failed: Collection[int],
    dataset: RetrievalDataset,
    *,
    config: dict[str, Any],
    k: int,
    ks: Sequence[int],
    seconds: float,
    pr_points: int,
) -> dict[str, Any]:
    """Score rankings of gallery indices (``len(imlist)`` = a distractor) into a result dict."""
    self_index = dataset.query_self_index()
    failed = sorted({int(q) for q in failed})
    metrics, per_query, curve = _score(
        rankings, dataset.gnd, self_index, ks, failed, len(dataset.imlist), pr_points
    )
    failed_set = set(failed)
    scored = [np.zeros(0, np.int64) if q in failed_set else r for q, r in enumerate(rankings)]
    protocols: dict[str, dict[str, Any]] = {}
    if dataset.protocols:
        protocols = revisited_metrics(scored, dataset.protocols, self_index, (1, 5, 10))
        for name, values in protocols.items():
            tag = _PROTOCOL_LETTER.get(name, name)
            metrics[f"mAP ({tag})"] = values["mAP"]
        for name, values in protocols.items():
            tag = _PROTOCOL_LETTER.get(name, name)
            for kappa in (1, 5, 10):
                metrics[f"mP@{kappa} ({tag})"] = values[f"mP@{kappa}"]
    if dataset.format == "gldv2":
        metrics["mAP@100 (GLDv2)"] = _gldv2_score(scored, dataset, self_index)
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
    pr_points : int
        Recall levels of ``pr_curve`` (11 or 101).

    Returns
    -------
    dict
        ``config``, ``dataset`` (summary plus ``name``, ``format``, ``root``,
        ``protocol``, ``n_problems``), ``k``, ``metrics``, ``per_query`` (see
        :func:`compute_metrics`; with ``top`` and ``top_raw``), ``failed`` (list
        of ``{"query", "path"}``), ``search_seconds`` and ``pr_curve``
        (``{"recall", "precision"}``: the mean interpolated precision of the
        queries with positives, computed on the full cleaned rankings, see
        :func:`mean_pr_curve`). When the data set has protocols (revisited
        Oxford/Paris), ``metrics`` also holds ``mAP (E)``, ``mAP (M)``,
        ``mAP (H)`` and ``mP@k (E|M|H)`` for k = 1, 5, 10 (revisitop's numbers),
        and ``protocols`` the per-protocol details (:func:`revisited_metrics`).
        For a ``gldv2`` data set ``metrics`` also holds ``mAP@100 (GLDv2)``
        (:func:`gldv2_map_at_100`).

    Raises
    ------
    DatasetError
        If no gallery image of ``dataset`` is in the retriever's catalog.
    ValueError
        If ``k``, ``batch_size`` or ``pr_points`` is invalid or ``search_many``
        returns a malformed result.

    References
    ----------
    .. [1] F. Radenović et al., "Revisiting Oxford and Paris", CVPR 2018.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    _recall_levels(pr_points)
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
    return _report(
        rankings,
        failed,
        dataset,
        config=retriever.config(),
        k=k,
        ks=ks,
        seconds=seconds,
        pr_points=pr_points,
    )


# =========================================================================== precomputed vectors
_VECTOR_METRICS = ("ip", "l2")


def _as_matrix(x: Any, name: str) -> NDArray[np.float32]:
    a = np.asarray(x)
    if a.ndim != 2:
        raise DatasetError(f"{name} must be a 2-D (n, d) array of vectors, got shape {a.shape}")
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise DatasetError(f"{name} must hold numbers, got dtype {a.dtype}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    bad = ~np.isfinite(a).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise DatasetError(
            f"{name} has {rows.size} row(s) with NaN or infinite values (first: row {rows[0]}); "
            "fix the vectors"
        )
    return a


def _check_vectors(
    gallery: NDArray[np.float32], queries: NDArray[np.float32], dataset: RetrievalDataset
) -> None:
    if gallery.shape[0] != len(dataset.imlist):
        raise DatasetError(
            f"gallery has {gallery.shape[0]} vectors but data set {dataset.name!r} has "
            f"{len(dataset.imlist)} gallery images; give one row per imlist entry, in imlist order"
        )
    if queries.shape[0] != len(dataset.qimlist):
        raise DatasetError(
            f"queries has {queries.shape[0]} vectors but data set {dataset.name!r} has "
            f"{len(dataset.qimlist)} queries; give one row per qimlist entry, in qimlist order"
        )
    if gallery.shape[1] != queries.shape[1]:
        raise DatasetError(
            f"gallery vectors have dimension {gallery.shape[1]} but query vectors "
            f"{queries.shape[1]}; both must come from the same model"
        )


def load_vectors_npz(
    path: str | Path, dataset: RetrievalDataset | None = None
) -> tuple[NDArray[np.float32], NDArray[np.float32], str | None]:
    """Read precomputed vectors from an ``.npz`` file (no pickle).

    The file holds ``gallery`` ``(n, d)`` (row ``i`` = ``dataset.imlist[i]``),
    ``queries`` ``(m, d)`` (row ``j`` = ``dataset.qimlist[j]``) and optionally
    ``metric`` (``"ip"`` or ``"l2"``), e.g. written by
    ``np.savez("vecs.npz", gallery=G, queries=Q, metric="ip")``.

    Parameters
    ----------
    path : path-like
        The ``.npz`` file.
    dataset : RetrievalDataset, optional
        When given, the row counts are checked against it.

    Returns
    -------
    gallery : (n, d) ndarray of float32
    queries : (m, d) ndarray of float32
    metric : {"ip", "l2"} or None
        ``None`` when the file does not say.

    Raises
    ------
    DatasetError
        Missing or unreadable file, a missing key, a wrong shape, non-finite
        values, an unknown metric, or counts that do not match ``dataset``.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"vector file {str(path)!r} does not exist; check the path")
    try:
        loaded = np.load(path, allow_pickle=False)
        if not hasattr(loaded, "files"):
            raise DatasetError(
                f"{path} is a single .npy array; write an .npz with "
                "np.savez(path, gallery=..., queries=...)"
            )
        with loaded as npz:
            keys = set(npz.files)
            missing = [key for key in ("gallery", "queries") if key not in keys]
            if missing:
                raise DatasetError(
                    f"{path} has no {' or '.join(missing)} array (keys: {sorted(keys)}); write it "
                    "with np.savez(path, gallery=..., queries=...)"
                )
            extra = sorted(keys - {"gallery", "queries", "metric"})
            if extra:
                logger.warning("%s: ignoring arrays %s", path, extra)
            gallery = _as_matrix(npz["gallery"], "gallery")
            queries = _as_matrix(npz["queries"], "queries")
            metric = None
            if "metric" in keys:
                value = npz["metric"]
                if value.shape != () or value.dtype.kind not in "US":
                    raise DatasetError(f"{path}: 'metric' must be the string 'ip' or 'l2'")
                metric = str(value.item().decode() if value.dtype.kind == "S" else value.item())
                metric = metric.strip().lower()
                if metric not in _VECTOR_METRICS:
                    raise DatasetError(f"{path}: unknown metric {metric!r}; use 'ip' or 'l2'")
    except DatasetError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DatasetError(f"cannot read vectors from {path} ({exc})") from None
    if gallery.shape[1] != queries.shape[1]:
        raise DatasetError(
            f"{path}: gallery vectors have dimension {gallery.shape[1]} but query vectors "
            f"{queries.shape[1]}; both must come from the same model"
        )
    if dataset is not None:
        _check_vectors(gallery, queries, dataset)
    return gallery, queries, metric


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
) -> dict[str, Any]:
    """Score precomputed vectors (from any framework) on ``dataset`` by exact search.

    Parameters
    ----------
    gallery : (n_images, d) array_like
        One vector per ``dataset.imlist`` entry, in that order.
    queries : (n_queries, d) array_like
        One vector per ``dataset.qimlist`` entry, in that order (already cropped
        to the query boxes, if the protocol uses them).
    dataset : RetrievalDataset
    metric : {"ip", "l2"}
        ``"ip"``: inner product, higher first (L2-normalise the vectors first
        for cosine similarity); ``"l2"``: Euclidean distance, smaller first.
        ``None`` means ``"ip"``.
    k : int, optional
        Results per query; default all gallery images (full rankings).
    ks, pr_points
        As in :func:`evaluate`.
    source : str, optional
        Where the vectors came from (e.g. the ``.npz`` path), for ``config``.
    batch_size : int
        Queries per Faiss search call.

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
    import faiss

    metric = "ip" if metric is None else str(metric).lower()
    if metric not in _VECTOR_METRICS:
        raise ValueError(f"metric must be 'ip' or 'l2', got {metric!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    _recall_levels(pr_points)
    xb = _as_matrix(gallery, "gallery")
    xq = _as_matrix(queries, "queries")
    _check_vectors(xb, xq, dataset)
    n, d = xb.shape
    k = n if k is None else min(_check_k(k), n)
    index = faiss.IndexFlatIP(d) if metric == "ip" else faiss.IndexFlatL2(d)
    index.add(xb)
    rankings: list[NDArray[np.int64]] = []
    t0 = time.perf_counter()
    for start in range(0, xq.shape[0], batch_size):
        _, ids = index.search(xq[start : start + batch_size], k)
        rankings.extend(row[row >= 0].astype(np.int64) for row in ids)
    seconds = time.perf_counter() - t0
    config = {"vectors": source or "arrays", "metric": metric, "dim": int(d), "index": "Flat"}
    return _report(
        rankings, (), dataset, config=config, k=k, ks=ks, seconds=seconds, pr_points=pr_points
    )


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
