"""Per-query metrics on one ranking: AP, AP@k, P@k, R@k, first rank, N-S, PR curve, GLDv2.

Each ``*_from_positions`` helper takes the sorted 0-based positions of the
positives in the cleaned ranking (:func:`hit_positions`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .revisitop import as_index_array, cleaned_positions, compute_ap, member

logger = logging.getLogger(__name__)


# =========================================================================== per query
def _check_k(k: int) -> int:
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def _removed(r: NDArray[np.int64], junk: ArrayLike, self_index: int | None) -> NDArray[np.bool_]:
    removed = (r < 0) | member(r, as_index_array(junk))
    if self_index is not None:
        removed |= r == int(self_index)
    return removed


def hit_positions(
    ranking: ArrayLike, ok: ArrayLike, junk: ArrayLike = (), self_index: int | None = None
) -> tuple[NDArray[np.int64], int]:
    """Positions of the positives in the cleaned ranking, and the cleaned ranking's length.

    Junk, ``self_index`` and -1 padding are removed as revisitop removes junk (see
    the module docstring).

    Examples
    --------
    >>> pos, n = hit_positions([5, 7, 9], ok=[7, 9], junk=[5])
    >>> pos.tolist(), n
    ([0, 1], 2)
    """
    r = np.asarray(ranking)
    if r.ndim != 1:
        raise ValueError(f"a ranking must be a 1-D array of gallery indices, got shape {r.shape}")
    r = r.astype(np.int64, copy=False)
    removed = np.flatnonzero(_removed(r, junk, self_index))
    raw = np.flatnonzero(member(r, as_index_array(ok)))
    return cleaned_positions(raw, removed), int(r.size - removed.size)


def ap_from_positions(pos: NDArray[np.int64], nres: int) -> float:
    """AP (:func:`compute_ap`), ``NaN`` when the query has no positive."""
    return math.nan if nres == 0 else compute_ap(pos, nres)


def ap_at_k_from_positions(pos: NDArray[np.int64], nres: int, k: int) -> float:
    """``sum_{hits at i < k} P(i) / min(k, nres)``; ``NaN`` when ``nres == 0``."""
    if nres == 0:
        return math.nan
    h = pos[pos < k]
    if h.size == 0:
        return 0.0
    return float(np.sum(np.arange(1, h.size + 1) / (h + 1.0)) / min(k, nres))


def precision_from_positions(pos: NDArray[np.int64], k: int) -> float:
    return float(np.count_nonzero(pos < k) / k)


def recall_from_positions(pos: NDArray[np.int64], nres: int, k: int) -> float:
    return math.nan if nres == 0 else float(np.count_nonzero(pos < k) / nres)


def first_rank_from_positions(pos: NDArray[np.int64], n_clean: int) -> int:
    return int(pos[0]) + 1 if pos.size else int(n_clean) + 1


def average_precision(ranking: ArrayLike, ok: ArrayLike, junk: ArrayLike = ()) -> float:
    """Average precision of one ranking, exactly revisitop's AP.

    Parameters
    ----------
    ranking : (n,) array_like of int
        Gallery indices, best first (the query's own image already removed when it
        is in the gallery). -1 entries (padding) are ignored.
    ok : array_like of int
        Relevant gallery indices.
    junk : array_like of int
        Gallery indices removed from the ranking before scoring. An index in both
        ``ok`` and ``junk`` is scored as :func:`compute_map` scores it: a
        positive at its position that, as junk, moves later positives up.

    Returns
    -------
    float
        AP; ``NaN`` if ``ok`` is empty.

    Examples
    --------
    >>> average_precision([7, 5, 9, 8], ok=[7, 9])  # hits at ranks 1 and 3
    0.7916666666666666
    >>> average_precision([5, 7, 9], ok=[7, 9], junk=[5])
    1.0
    """
    pos, _ = hit_positions(ranking, ok, junk)
    return ap_from_positions(pos, int(as_index_array(ok).size))


def ap_at_k(ranking: ArrayLike, ok: ArrayLike, k: int, junk: ArrayLike = ()) -> float:
    """AP truncated at ``k`` (the mAP@k of Google Landmarks v2).

    ``sum_{i <= k} P(i) rel(i) / min(k, len(ok))`` on the ranking with junk
    removed; ``NaN`` if ``ok`` is empty.

    Examples
    --------
    >>> ap_at_k([7, 5, 9, 8], ok=[7, 9], k=2)  # (1/1) / min(2, 2)
    0.5
    """
    k = _check_k(k)
    pos, _ = hit_positions(ranking, ok, junk)
    return ap_at_k_from_positions(pos, int(as_index_array(ok).size), k)


def precision_at_k(ranking: ArrayLike, ok: ArrayLike, k: int, junk: ArrayLike = ()) -> float:
    """Fraction of the first ``k`` results (junk removed) that are relevant.

    A ranking shorter than ``k`` still divides by ``k``.

    Examples
    --------
    >>> precision_at_k([7, 5, 9, 8], ok=[7, 9], k=4)
    0.5
    """
    k = _check_k(k)
    return precision_from_positions(hit_positions(ranking, ok, junk)[0], k)


def recall_at_k(ranking: ArrayLike, ok: ArrayLike, k: int, junk: ArrayLike = ()) -> float:
    """Fraction of the relevant images found in the first ``k`` results (junk removed).

    Returns ``NaN`` if ``ok`` is empty.

    Examples
    --------
    >>> recall_at_k([7, 5, 9, 8], ok=[7, 9], k=2)
    0.5
    """
    k = _check_k(k)
    pos, _ = hit_positions(ranking, ok, junk)
    return recall_from_positions(pos, int(as_index_array(ok).size), k)


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
    return first_rank_from_positions(*hit_positions(ranking, ok, junk))


def ns_score(ranking_with_self: ArrayLike, group: ArrayLike, k: int = 4) -> int:
    """UKBench N-S score of one query: group members among the first ``k`` results.

    ``ranking_with_self`` still contains the query's own image; ``group`` is the
    query's positives and its own image; ``k`` is 4 for UKBench (score in 0..4).

    References
    ----------
    .. [1] D. Nistér, H. Stewénius, CVPR 2006.

    Examples
    --------
    >>> ns_score([0, 1, 9, 2, 3], group=[0, 1, 2, 3])
    3
    """
    k = _check_k(k)
    r = np.asarray(ranking_with_self).ravel()[:k].astype(np.int64, copy=False)
    return int(np.count_nonzero(member(r, as_index_array(group))))


# =========================================================================== PR curve
def recall_levels(n_points: int) -> NDArray[np.float64]:
    """``n_points`` equally spaced recall levels from 0 to 1 (a ``ValueError`` below 2)."""
    if isinstance(n_points, bool) or int(n_points) != n_points or n_points < 2:
        raise ValueError(
            f"n_points must be an integer >= 2 (11 or 101 are usual), got {n_points!r}"
        )
    return np.linspace(0.0, 1.0, int(n_points))


def interpolated_from_positions(
    found: NDArray[np.int64], nres: int, levels: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Interpolated precision at ``levels`` from the sorted positions of the hits."""
    out = np.zeros(levels.size)
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
    reaches ``r``). Junk and -1 padding are removed first. ``n_points``: 11 (the
    classic 11-point curve) or 101. All zeros when ``ok`` is empty.

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
    levels = recall_levels(n_points)
    pos, _ = hit_positions(ranking, ok, junk)
    return levels, interpolated_from_positions(pos, int(as_index_array(ok).size), levels)


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
