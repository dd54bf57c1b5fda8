"""Tentative correspondences between two images' key points, for spatial verification.

* :func:`tentative_matches_words`: key points sharing a visual word [1]_, a sorted-array
  intersection in NumPy (no descriptor touched); bursty words [2]_ give no match.
* :func:`tentative_matches_ratio`: exhaustive nearest neighbours of the descriptors with
  Lowe's ratio test [3]_ (Faiss exact k-NN, L2 or Hamming).
* :func:`tentative_matches_words_desc`: the pairs sharing a word, resolved by their
  descriptors: each query key point keeps its nearest candidate key point among those of
  its word(s) when it passes a ratio test against the second nearest *of the same word*
  and the pair is mutual. With a coarse vocabulary (1k words) a word is shared by many key
  points: word matching must drop those bursts (and with them most true matches of a
  degraded copy), descriptor matching keeps the right pair. Query key points may carry
  several words (multiple assignment) to recover matches split by quantisation. Cost:
  one distance per word pair, vectorised.

References
----------
.. [1] J. Philbin et al., "Object retrieval with large vocabularies and fast spatial
       matching", CVPR 2007.
.. [2] H. Jégou, M. Douze, C. Schmid, "On the burstiness of visual elements", CVPR 2009.
.. [3] D. G. Lowe, "Distinctive image features from scale-invariant keypoints", IJCV 2004.
.. [4] H. Jégou, M. Douze, C. Schmid, "Hamming embedding and weak geometric consistency
       for large scale image search", ECCV 2008.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np
from numpy.typing import NDArray

__all__ = [
    "QueryWords",
    "inlier_coverage",
    "pair_distances",
    "query_words",
    "tentative_matches_ratio",
    "tentative_matches_words",
    "tentative_matches_words_desc",
    "tentative_matches_words_desc_many",
]

Matches = NDArray[np.int64]


def _empty_matches() -> Matches:
    return np.zeros((0, 2), np.int64)


# --------------------------------------------------------------------------- word matches


@dataclass(frozen=True)
class QueryWords:
    """The query's words grouped once: word ``uniq[j]`` is held by query key points
    ``order[starts[j]:starts[j] + counts[j]]``."""

    uniq: NDArray[np.int64]
    starts: NDArray[np.int64]
    counts: NDArray[np.int64]
    order: NDArray[np.int64]


def _sorted_words(words: NDArray[np.integer]) -> tuple[NDArray[np.int64], NDArray[np.int64] | None]:
    """``(sorted words, order)``; ``order`` is None when the input was already sorted."""
    w = np.asarray(words).reshape(-1).astype(np.int64, copy=False)
    if w.size > 1 and np.any(w[1:] < w[:-1]):
        order = np.argsort(w, kind="stable")
        return w[order], order
    return w, None


def query_words(words: NDArray[np.integer]) -> QueryWords:
    """Group the query's words once per query: ``(n_q,)``, or ``(n_q, m)`` with ``m`` words
    per key point (multiple assignment; negative entries are ignored)."""
    arr = np.asarray(words)
    m = arr.shape[1] if arr.ndim == 2 else 1
    w, order = _sorted_words(arr)
    n = w.shape[0]
    if order is None:
        order = np.arange(n, dtype=np.int64)
    if m > 1:
        order = order // m
    if n and w[0] < 0:  # unused slots of a multiple assignment
        skip = int(np.searchsorted(w, 0))
        w, order, n = w[skip:], order[skip:], n - skip
    if n == 0:
        z = np.zeros(0, np.int64)
        return QueryWords(z, z, z, order)
    first = np.empty(n, bool)
    first[0] = True
    np.not_equal(w[1:], w[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    counts = np.diff(np.append(starts, n))
    return QueryWords(w[starts], starts, counts, order)


def _match_query(
    q: QueryWords,
    c_words: NDArray[np.integer],
    max_per_word: int | None,
    max_matches: int | None,
) -> Matches:
    """Matches of the grouped query words with one candidate's words (vectorised)."""
    cw, c_order = _sorted_words(c_words)
    nu = q.uniq.shape[0]
    if nu == 0 or cw.shape[0] == 0:
        return _empty_matches()
    pos = np.searchsorted(q.uniq, cw)
    np.minimum(pos, nu - 1, out=pos)
    ci = np.flatnonzero(q.uniq[pos] == cw)  # candidate rows (sorted order) with a shared word
    if ci.size == 0:
        return _empty_matches()
    g = pos[ci]  # query word group of each; non-decreasing because cw is sorted
    first = np.empty(g.shape[0], bool)
    first[0] = True
    np.not_equal(g[1:], g[:-1], out=first[1:])
    run = np.cumsum(first) - 1
    b = np.bincount(run)[run]  # occurrences of the word in the candidate
    a = q.counts[g]  # occurrences in the query
    if max_per_word is not None:
        keep = (a <= max_per_word) & (b <= max_per_word)
        ci, g, a, b = ci[keep], g[keep], a[keep], b[keep]
    if max_matches is not None and a.sum() > max_matches:
        # keep the least ambiguous words first (fewest a x b pairs)
        by = np.argsort(a * b, kind="stable")
        sel = np.sort(by[np.cumsum(a[by]) <= max_matches])
        ci, g, a = ci[sel], g[sel], a[sel]
    total = int(a.sum())
    if total == 0:
        return _empty_matches()
    # each candidate key point pairs with the a query key points of its word
    rep = np.repeat(np.arange(a.shape[0]), a)
    local = np.arange(total) - np.repeat(np.cumsum(a) - a, a)
    out = np.empty((total, 2), np.int64)
    out[:, 0] = q.order[q.starts[g][rep] + local]
    out[:, 1] = ci[rep] if c_order is None else c_order[ci[rep]]
    return out


def tentative_matches_words(
    q_words: NDArray[np.integer],
    c_words: NDArray[np.integer],
    *,
    max_per_word: int | None = 5,
    max_matches: int | None = None,
) -> Matches:
    """Tentative correspondences between two images: key points with the same visual word.

    Parameters
    ----------
    q_words : (n_q,) int ndarray
        Visual word of each query key point.
    c_words : (n_c,) int ndarray
        Visual word of each candidate key point (sorted input is used as is, faster).
    max_per_word : int or None, default 5
        Burstiness limit [3]_: a word occurring more than this many times in either
        image gives no match. Every other shared word gives all its ``a x b`` pairs.
        ``None``: no limit.
    max_matches : int or None, default None
        Keep at most this many matches, taking whole words with the fewest pairs first.

    Returns
    -------
    matches : (M, 2) int64 ndarray
        Rows ``(i, j)``: query key point ``i`` and candidate key point ``j`` share a word.
        Grouped by word in increasing word order.

    Examples
    --------
    >>> q, c = np.array([3, 1, 3, 7]), np.array([7, 3, 9])
    >>> sorted(map(tuple, tentative_matches_words(q, c).tolist()))
    [(0, 1), (2, 1), (3, 0)]
    >>> tentative_matches_words(q, c, max_per_word=1).tolist()   # word 3 is a burst
    [[3, 0]]
    """
    _check_limit(max_per_word, "max_per_word")
    _check_limit(max_matches, "max_matches")
    return _match_query(query_words(q_words), c_words, max_per_word, max_matches)


def _check_limit(value: int | None, name: str) -> None:
    if value is not None and int(value) < 1:
        raise ValueError(f"{name} must be a positive integer or None, got {value}")


# --------------------------------------------------------------------------- ratio matches


def tentative_matches_ratio(
    q_desc: NDArray[Any],
    c_desc: NDArray[Any],
    *,
    ratio: float = 0.8,
    binary: bool | None = None,
) -> Matches:
    """Tentative correspondences by exhaustive nearest neighbours and Lowe's ratio test [4]_.

    Parameters
    ----------
    q_desc : (n_q, D) ndarray
        Query descriptors: float (L2 distance) or uint8 packed bits (Hamming).
    c_desc : (n_c, D) ndarray
        Candidate descriptors of the same kind.
    ratio : float, default 0.8
        A query descriptor matches its nearest candidate descriptor when
        ``d1 < ratio * d2`` (``d1``, ``d2``: distances to the nearest and second nearest).
    binary : bool or None, default None
        Hamming distances on packed bits; ``None``: when ``q_desc`` is uint8 (see Notes).

    Returns
    -------
    matches : (M, 2) int64 ndarray
        ``(i, j)``: query descriptor ``i`` and its nearest candidate descriptor ``j``.
        Empty when the candidate has fewer than 2 descriptors (no ratio test possible).

    Notes
    -----
    With ``binary=None`` a uint8 array is taken as packed bits (ORB, AKAZE, BRISK);
    pass ``binary=False`` for SIFT stored as uint8 values.
    """
    if not 0.0 < float(ratio) <= 1.0:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    q = np.asarray(q_desc)
    c = np.asarray(c_desc)
    if q.ndim != 2 or c.ndim != 2 or (q.size and c.size and q.shape[1] != c.shape[1]):
        raise ValueError(f"descriptors must be 2-D with equal widths, got {q.shape} and {c.shape}")
    if len(q) == 0 or len(c) < 2:
        return _empty_matches()
    if binary is None:
        binary = q.dtype == np.uint8
    if binary:
        dh, nn = faiss.knn_hamming(
            np.ascontiguousarray(q, np.uint8), np.ascontiguousarray(c, np.uint8), 2
        )
        dist = dh.astype(np.float64)
        good = dist[:, 0] < ratio * dist[:, 1]
    else:
        d2, nn = faiss.knn(
            np.ascontiguousarray(q, np.float32), np.ascontiguousarray(c, np.float32), 2
        )
        good = d2[:, 0] < (ratio * ratio) * d2[:, 1]  # squared L2 distances
    qi = np.flatnonzero(good)
    return np.stack([qi, nn[qi, 0]], axis=1).astype(np.int64)




# --------------------------------------------------------------------------- word + descriptor

#: bits set in each byte value
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], np.uint8)


def pair_distances(
    q_desc: NDArray[Any], c_desc: NDArray[Any], pairs: Matches, binary: bool
) -> NDArray[np.float32]:
    """Distance of each pair ``(i, j)``: squared L2 of float (or uint8-quantised)
    descriptors, or Hamming of packed-bit ones (a popcount table over the XOR), ``(M,)``
    float32."""
    a, b = q_desc[pairs[:, 0]], c_desc[pairs[:, 1]]
    if binary:
        return _POPCOUNT[np.bitwise_xor(a, b)].sum(axis=1, dtype=np.int32).astype(np.float32)
    if a.dtype == np.uint8 and b.dtype == np.uint8:  # quantised values: int16, half the memory
        di = a.astype(np.int16)
        di -= b
        return np.einsum("ij,ij->i", di, di, dtype=np.int32).astype(np.float32)
    df = a.astype(np.float32, copy=False) - b.astype(np.float32, copy=False)
    return np.einsum("ij,ij->i", df, df).astype(np.float32, copy=False)


def _best_per(
    key: NDArray[np.int64], d: NDArray[np.float32], by_d: NDArray[np.int64]
) -> tuple[NDArray[np.int64], NDArray[np.float32], NDArray[Any]]:
    """For each distinct ``key``: the row of its smallest ``d``, that distance, the second
    smallest (``inf`` when alone); ``by_d`` is ``argsort(d)``, shared between calls."""
    o = by_d[np.argsort(key[by_d], kind="stable")]
    ks, ds = key[o], d[o]
    first = np.empty(ks.shape[0], bool)
    first[0] = True
    np.not_equal(ks[1:], ks[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    counts = np.diff(np.append(starts, ks.shape[0]))
    second = np.where(counts > 1, ds[np.minimum(starts + 1, ks.shape[0] - 1)], np.inf)
    return o[starts], ds[starts], second


def _match_many(
    q: QueryWords, c_words: list[NDArray[np.integer]], max_per_word: int | None,
    max_pairs: int | None,
) -> tuple[Matches, NDArray[np.int64]]:
    """Word pairs of the query with several candidates at once: ``(i, global j)`` rows
    (``j`` indexes the concatenated candidates) and the candidate of each row."""
    lens = np.array([len(w) for w in c_words], np.int64)
    if q.uniq.shape[0] == 0 or lens.sum() == 0:
        return _empty_matches(), np.zeros(0, np.int64)
    cw = np.concatenate([np.asarray(w).reshape(-1) for w in c_words]).astype(np.int64)
    owner = np.repeat(np.arange(len(c_words), dtype=np.int64), lens)
    # runs of one word in one candidate must be contiguous: true when every candidate's
    # words are sorted (a FeatureStore keeps them so); else sort by candidate, then word
    step_ok = (cw[1:] >= cw[:-1]) | (owner[1:] != owner[:-1])
    o = np.arange(cw.shape[0]) if step_ok.all() else np.lexsort((cw, owner))
    cws, own = cw[o], owner[o]
    pos = np.minimum(np.searchsorted(q.uniq, cws), q.uniq.shape[0] - 1)
    ci = np.flatnonzero(q.uniq[pos] == cws)
    if ci.size == 0:
        return _empty_matches(), np.zeros(0, np.int64)
    g, ow = pos[ci], own[ci]  # runs of equal (candidate, word) are contiguous
    first = np.empty(g.shape[0], bool)
    first[0] = True
    first[1:] = (g[1:] != g[:-1]) | (ow[1:] != ow[:-1])
    run = np.cumsum(first) - 1
    b = np.bincount(run)[run]  # occurrences of the word in that candidate
    a = q.counts[g]
    if max_per_word is not None:
        keep = (a <= max_per_word) & (b <= max_per_word)
        ci, g, a, b, ow = ci[keep], g[keep], a[keep], b[keep], ow[keep]
    cap = None if max_pairs is None else int(max_pairs) * len(c_words)
    if cap is not None and a.sum() > cap:  # the least ambiguous words first
        by = np.argsort(a * b, kind="stable")
        sel = np.sort(by[np.cumsum(a[by]) <= cap])
        ci, g, a, ow = ci[sel], g[sel], a[sel], ow[sel]
    total = int(a.sum())
    rep = np.repeat(np.arange(a.shape[0]), a)
    local = np.arange(total) - np.repeat(np.cumsum(a) - a, a)
    out = np.empty((total, 2), np.int64)
    out[:, 0] = q.order[q.starts[g][rep] + local]
    out[:, 1] = o[ci[rep]]
    return out, ow[rep]


def tentative_matches_words_desc_many(
    q_words: NDArray[np.integer] | QueryWords,
    c_words: list[NDArray[np.integer]],
    q_desc: NDArray[Any],
    c_desc: list[NDArray[Any]],
    *,
    ratio: float = 0.85,
    max_per_word: int | None = 50,
    max_pairs: int | None = 20_000,
    binary: bool | None = None,
) -> list[Matches]:
    """:func:`tentative_matches_words_desc` with several candidates in one vectorised
    pass (one list entry each); ``max_pairs`` caps the pairs of all candidates together
    at ``max_pairs * len(c_words)``."""
    if not 0.0 < float(ratio) <= 1.0:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    q = q_words if isinstance(q_words, QueryWords) else query_words(q_words)
    pairs, owner = _match_many(q, c_words, max_per_word, max_pairs)
    n_c = len(c_words)
    if pairs.shape[0] == 0:
        return [_empty_matches() for _ in range(n_c)]
    qd = np.asarray(q_desc)
    if binary is None:
        binary = qd.dtype == np.uint8
    cd = np.concatenate([np.asarray(c) for c in c_desc])
    d = pair_distances(qd, cd, pairs, bool(binary))
    n_q = max(int(pairs[:, 0].max()) + 1, 1)
    by_d = np.argsort(d, kind="stable")
    best_q, d1, d2 = _best_per(owner * n_q + pairs[:, 0], d, by_d)  # per query point, candidate
    r = float(ratio) if binary else float(ratio) ** 2  # squared L2 distances
    best_q = best_q[d1 < r * d2]
    best_c = _best_per(pairs[:, 1], d, by_d)[0]  # mutual: also the candidate point's nearest
    keep = np.intersect1d(best_q, best_c, assume_unique=True)
    keep = keep[np.lexsort((pairs[keep, 0], owner[keep]))]  # by candidate, then query row
    starts = np.concatenate([[0], np.cumsum([len(w) for w in c_words])])
    pk, ok = pairs[keep], owner[keep]
    pk[:, 1] -= starts[ok]
    bounds = np.searchsorted(ok, np.arange(n_c + 1))
    return [pk[bounds[k] : bounds[k + 1]] for k in range(n_c)]


def tentative_matches_words_desc(
    q_words: NDArray[np.integer] | QueryWords,
    c_words: NDArray[np.integer],
    q_desc: NDArray[Any],
    c_desc: NDArray[Any],
    *,
    ratio: float = 0.85,
    max_per_word: int | None = 50,
    max_pairs: int | None = 20_000,
    binary: bool | None = None,
) -> Matches:
    """Word pairs resolved by descriptors: one match per key point, mutual, ratio-tested.

    Parameters
    ----------
    q_words : (n_q,) or (n_q, m) int ndarray, or QueryWords
        The query key points' word(s) (``m`` words each with multiple assignment; -1:
        none), or their grouping by :func:`query_words` computed once per query.
    c_words : (n_c,) int ndarray
        The candidate key points' words.
    q_desc, c_desc : (n_q, D), (n_c, D) ndarray
        Float descriptors (squared L2) or uint8 packed bits (Hamming).
    ratio : float, default 0.85
        A query key point keeps its nearest candidate key point among those sharing one
        of its words when ``d1 < ratio * d2`` (``d2``: the second nearest of the same
        words; a point with one candidate passes). The pair must also be the nearest of
        the candidate key point's pairs (mutual).
    max_per_word : int or None, default 50
        Words occurring more often than this in either image are skipped (their pairs
        would cost more than they give).
    max_pairs : int or None, default 20000
        Cap on the pairs whose distance is computed (the least ambiguous words first).
    binary : bool or None
        Hamming distances; ``None``: when ``q_desc`` is uint8.

    Returns
    -------
    matches : (M, 2) int64 ndarray
        ``(query row, candidate row)`` by increasing query row, each row at most once on
        either side.

    Examples
    --------
    >>> qw, cw = np.array([1, 1, 2]), np.array([1, 1, 1, 2])
    >>> qd = np.array([[0.0], [5.0], [9.0]], np.float32)
    >>> cd = np.array([[5.1], [0.1], [2.5], [9.0]], np.float32)
    >>> tentative_matches_words_desc(qw, cw, qd, cd).tolist()
    [[0, 1], [1, 0], [2, 3]]
    """
    return tentative_matches_words_desc_many(
        q_words, [c_words], q_desc, [c_desc], ratio=ratio, max_per_word=max_per_word,
        max_pairs=max_pairs, binary=binary,
    )[0]


def _descriptor_scale(store: Any) -> float | None:
    """The one quantisation scale of a store's float descriptors (1.0 when unscaled), or
    None when unknown: a bundle's segments (``store.stores``) may each have their own,
    and then the de-quantised float descriptors are compared instead."""
    parts = getattr(store, "stores", None) or [store]
    scales = set()
    for part in parts:
        info = getattr(part, "info", None)
        if not isinstance(info, dict):
            return None
        scales.add(float((info.get("descriptors") or {}).get("scale") or 1.0))
    return scales.pop() if len(scales) == 1 else None


def _distinct_inliers(good: Matches, n_q: int, n_c: int) -> int:
    """``min(#distinct query rows, #distinct candidate rows)`` of the inlier matches."""
    if good.shape[0] == 0:
        return 0
    seen_q = np.zeros(n_q, bool)
    seen_q[good[:, 0]] = True
    seen_c = np.zeros(n_c, bool)
    seen_c[good[:, 1]] = True
    return int(min(np.count_nonzero(seen_q), np.count_nonzero(seen_c)))


def inlier_coverage(keypoints: NDArray[np.floating], rows: NDArray[np.integer]) -> float:
    """Area of the convex hull of ``keypoints[rows]`` (an image's inlier key points) over
    that of all its ``keypoints``, in [0, 1]; 0 for fewer than 3 points or a flat hull.

    Examples
    --------
    >>> kp = np.array([[0, 0], [10, 0], [10, 10], [0, 10], [5, 5]], np.float32)
    >>> inlier_coverage(kp, [0, 1, 2, 3])
    1.0
    >>> inlier_coverage(kp, [0, 1, 4])
    0.25
    """
    import cv2

    kp = np.ascontiguousarray(np.asarray(keypoints, np.float32).reshape(-1, 2))
    rows = np.unique(np.asarray(rows, np.int64))
    if rows.shape[0] < 3 or kp.shape[0] < 3:
        return 0.0
    full = cv2.contourArea(cv2.convexHull(kp))
    if full <= 0:
        return 0.0
    return float(min(1.0, cv2.contourArea(cv2.convexHull(kp[rows])) / full))
