"""Query expansion and database-side augmentation: pure functions on numpy arrays.

Names follow Faiss: ``xq`` query vectors ``(nq, d)``, ``xb`` database vectors
``(nb, d)``, and a k-NN result ``D, I`` (``(n, k)`` scores and positions in ``xb``,
best first; ``I = -1`` marks a missing result and is ignored). All vectors are
meant to be L2-normalised (every cvretrieval embedder's output), so that an inner
product is a cosine similarity; with ``metric="l2"`` squared distances are turned
into similarities by ``sim = 1 - D / 2``, exact for unit vectors.

* **Average query expansion** (AQE) [1]_: the new query is the mean of the query
  and its top ``k`` results, L2-normalised; one searches again with it.
* **alpha query expansion** (αQE) [2]_: a weighted mean, weight ``sim ** alpha`` for
  each of the top ``k`` (similarities clipped at 0) and 1 for the query itself;
  ``alpha = 0`` is AQE, a large ``alpha`` trusts only the closest results.
* **Database-side augmentation** (DBA) [3]_: every database vector is replaced,
  offline, by the (weighted) mean of itself and its ``k`` nearest database
  neighbours (αDBA of [2]_ with ``alpha``), then the index is rebuilt. Queries are
  best expanded against the augmented vectors.

References
----------
.. [1] O. Chum, J. Philbin, J. Sivic, M. Isard and A. Zisserman, "Total recall: automatic
   query expansion with a generative feature model for object retrieval", ICCV 2007.
.. [2] F. Radenović, G. Tolias and O. Chum, "Fine-tuning CNN image retrieval with no human
   annotation", IEEE TPAMI 41(7), 2019 (arXiv 2018).
.. [3] R. Arandjelović and A. Zisserman, "Three things everyone should know to improve
   object retrieval", CVPR 2012.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "alpha_query_expansion",
    "average_query_expansion",
    "database_augmentation",
    "exact_knn",
    "requery",
]

logger = logging.getLogger(__name__)

_METRICS = ("ip", "l2")


def _matrix(x: ArrayLike, name: str) -> NDArray[np.float64]:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (n, d) array, got shape {a.shape}")
    return a


def _check_k(k: int) -> int:
    if int(k) != k or int(k) < 0:
        raise ValueError(f"k must be a non-negative integer (0 = no expansion), got {k!r}")
    return int(k)


def _knn_arrays(
    I: ArrayLike, D: ArrayLike | None, n: int, nb: int, k: int, what: str  # noqa: E741
) -> tuple[NDArray[np.int64], NDArray[np.float64] | None]:
    ids = np.asarray(I)
    if ids.ndim == 1:
        ids = ids[None, :]
    if ids.ndim != 2 or ids.shape[0] != n:
        raise ValueError(f"I must have one row per {what} ({n}), got shape {ids.shape}")
    ids = ids.astype(np.int64, copy=False)
    if ids.size and ids.max() >= nb:
        raise ValueError(
            f"I holds position {ids.max()} but xb has only {nb} vectors: I must index rows of xb "
            "(index positions, not catalog ids)"
        )
    if ids.shape[1] < k:
        logger.debug("only %d neighbours available for k=%d; using them all", ids.shape[1], k)
    if D is None:
        return ids, None
    dist = np.asarray(D, dtype=np.float64)
    if dist.ndim == 1:
        dist = dist[None, :]
    if dist.shape != ids.shape:
        raise ValueError(
            f"D has shape {dist.shape} but I has {ids.shape}: pass the same search's D, I"
        )
    return ids, dist


def _similarity(D: NDArray[np.float64], metric: str) -> NDArray[np.float64]:
    if metric not in _METRICS:
        raise ValueError(f"metric must be one of {_METRICS}, got {metric!r}")
    return D if metric == "ip" else 1.0 - D / 2.0


def _weights(sim: NDArray[np.float64], alpha: float | None) -> NDArray[np.float64]:
    if alpha is None:
        return np.ones_like(sim)
    if not float(alpha) >= 0:
        raise ValueError(f"alpha must be >= 0 (0 = plain average), got {alpha}")
    sim = np.where(np.isfinite(sim), sim, 0.0)
    return np.clip(sim, 0.0, None) ** float(alpha)  # numpy: 0 ** 0 == 1, so alpha=0 is AQE


def _l2(x: NDArray[np.float64]) -> NDArray[np.float32]:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-12), dtype=np.float32)


def _expand(
    x0: NDArray[np.float64],
    xb: NDArray[np.float64],
    ids: NDArray[np.int64],
    w: NDArray[np.float64],
) -> NDArray[np.float32]:
    """``L2(x0 + sum_j w_j xb[ids_j])``; ``ids == -1`` contributes nothing."""
    valid = ids >= 0
    w = np.where(valid, w, 0.0)
    gathered = xb[np.where(valid, ids, 0)]  # (n, k, d)
    return _l2(x0 + np.einsum("nk,nkd->nd", w, gathered))


def _expansion_inputs(
    xq: ArrayLike, xb: ArrayLike, I: ArrayLike, D: ArrayLike | None, k: int  # noqa: E741
) -> tuple[
    NDArray[np.float64], NDArray[np.float64], NDArray[np.int64], NDArray[np.float64] | None
]:
    """Checked queries, database, and the top ``k`` of ``I`` (and ``D``) for query expansion."""
    q = _matrix(xq, "xq")
    b = _matrix(xb, "xb")
    if q.shape[1] != b.shape[1]:
        raise ValueError(f"xq has dimension {q.shape[1]} but xb {b.shape[1]}")
    k = _check_k(k)
    ids, dist = _knn_arrays(I, D, len(q), len(b), k, "query")
    return q, b, ids[:, :k], None if dist is None else dist[:, :k]


def alpha_query_expansion(
    xq: ArrayLike,
    xb: ArrayLike,
    I: ArrayLike,  # noqa: E741 - Faiss's name
    D: ArrayLike,
    k: int = 5,
    alpha: float = 3.0,
    *,
    metric: str = "ip",
) -> NDArray[np.float32]:
    """αQE [2]_: queries re-weighted by their top ``k`` results, weights ``sim ** alpha``.

    Parameters
    ----------
    xq : (nq, d) array_like of float
        The original queries (L2-normalised).
    xb : (nb, d) array_like of float
        The database vectors the search ran on.
    I : (nq, k') array_like of int
        Positions in ``xb`` of each query's results, best first (``-1`` = none).
    D : (nq, k') array_like of float
        Their scores, as returned with ``I`` (inner products; squared L2 with ``metric="l2"``).
    k : int, default 5
        Results used; ``0`` returns the queries themselves, L2-normalised.
    alpha : float, default 3.0
        ``>= 0``; similarities are clipped at 0 before the power.
    metric : {'ip', 'l2'}, default 'ip'

    Returns
    -------
    (nq, d) float32 ndarray
        ``L2(xq + sum_j max(sim_j, 0) ** alpha * xb[I_j])``.

    References
    ----------
    .. [2] F. Radenović, G. Tolias and O. Chum, "Fine-tuning CNN image retrieval with no
       human annotation", TPAMI 2019.

    Examples
    --------
    >>> xb = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> out = alpha_query_expansion([[1.0, 0.0]], xb, [[1, 0]], [[0.5, 1.0]], k=1, alpha=1)
    >>> np.round(out.astype(float), 4).tolist()
    [[0.8944, 0.4472]]
    """
    q, b, ids, dist = _expansion_inputs(xq, xb, I, D, k)
    assert dist is not None
    return _expand(q, b, ids, _weights(_similarity(dist, metric), alpha))


def average_query_expansion(
    xq: ArrayLike,
    xb: ArrayLike,
    I: ArrayLike,  # noqa: E741 - Faiss's name
    k: int = 5,
) -> NDArray[np.float32]:
    """AQE [1]_: each query becomes the L2-normalised mean of itself and its top ``k`` results.

    Parameters
    ----------
    xq : (nq, d) array_like of float
    xb : (nb, d) array_like of float
    I : (nq, k') array_like of int
        Positions in ``xb`` of each query's results, best first (``-1`` = none).
    k : int, default 5
        Results averaged in; ``0`` returns the queries themselves, L2-normalised.

    Returns
    -------
    (nq, d) float32 ndarray

    References
    ----------
    .. [1] O. Chum et al., "Total recall: automatic query expansion with a generative
       feature model for object retrieval", ICCV 2007.

    Examples
    --------
    >>> xb = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> out = average_query_expansion([[1.0, 0.0]], xb, [[1, 0]], k=1)
    >>> np.round(out.astype(float), 4).tolist()
    [[0.7071, 0.7071]]
    """
    q, b, ids, _ = _expansion_inputs(xq, xb, I, None, k)
    return _expand(q, b, ids, np.ones(ids.shape, np.float64))


def exact_knn(
    xq: ArrayLike, xb: ArrayLike, k: int, *, metric: str = "ip"
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Brute-force k-NN with Faiss (``faiss.knn``): ``D, I`` of shape ``(nq, min(k, nb))``.

    Inner products, best first (``metric="ip"``), or squared L2 distances (``"l2"``).
    """
    import faiss

    if metric not in _METRICS:
        raise ValueError(f"metric must be one of {_METRICS}, got {metric!r}")
    q = np.ascontiguousarray(_matrix(xq, "xq"), dtype=np.float32)
    b = np.ascontiguousarray(_matrix(xb, "xb"), dtype=np.float32)
    kk = min(int(k), len(b))
    if kk < 1 or len(q) == 0:
        return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
    m = faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2
    D, I = faiss.knn(q, b, kk, metric=m)  # noqa: E741 - Faiss's name
    return D.astype(np.float32), I.astype(np.int64)


def database_augmentation(
    xb: ArrayLike,
    I: ArrayLike | None = None,  # noqa: E741 - Faiss's name
    D: ArrayLike | None = None,
    *,
    k: int = 5,
    alpha: float | None = None,
    metric: str = "ip",
) -> NDArray[np.float32]:
    """DBA [3]_ / αDBA [2]_: each database vector averaged with its ``k`` nearest neighbours.

    Parameters
    ----------
    xb : (nb, d) array_like of float
        The database vectors (L2-normalised).
    I : (nb, k') array_like of int, optional
        Neighbours of each database vector among ``xb`` (e.g. ``index.search(xb, k + 1)``),
        best first. The vector itself, wherever it appears, is skipped (it always has
        weight 1), and the first ``k`` others are used. Default: exact k-NN computed
        here with Faiss (``exact_knn``), which any index-agnostic caller can replace.
    D : (nb, k') array_like of float, optional
        The scores returned with ``I``; needed when ``alpha`` is given and ``I`` is.
    k : int, default 5
        Neighbours averaged in; ``0`` returns ``xb`` L2-normalised.
    alpha : float or None, default None
        ``None``: plain mean (DBA of [3]_); a number: weights ``max(sim, 0) ** alpha``
        (αDBA of [2]_).
    metric : {'ip', 'l2'}, default 'ip'
        How to read ``D``.

    Returns
    -------
    (nb, d) float32 ndarray
        The augmented database vectors, L2-normalised; rebuild the index with them.

    References
    ----------
    .. [2] F. Radenović et al., TPAMI 2019.
    .. [3] R. Arandjelović and A. Zisserman, "Three things everyone should know to improve
       object retrieval", CVPR 2012.
    """
    b = _matrix(xb, "xb")
    nb = len(b)
    k = _check_k(k)
    if k == 0 or nb == 0:
        return _l2(b)
    if I is None:
        D, I = exact_knn(b, b, k + 1, metric=metric)  # noqa: E741
    elif alpha is not None and D is None:
        raise ValueError("alpha-weighted DBA needs the scores D that came with I")
    ids, dist = _knn_arrays(I, D, nb, nb, k, "database vector")
    # drop self-matches (wherever they are), keep the first k remaining neighbours
    keep = (ids >= 0) & (ids != np.arange(nb)[:, None])
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]
    sel_ids = np.take_along_axis(np.where(keep, ids, -1), order, axis=1)
    if alpha is None:
        w = np.ones(sel_ids.shape, np.float64)
    else:
        assert dist is not None
        w = _weights(_similarity(np.take_along_axis(dist, order, axis=1), metric), alpha)
    return _expand(b, b, sel_ids, w)


def requery(
    search: Callable[[NDArray[np.float32], int], tuple[ArrayLike, ArrayLike]],
    xq: ArrayLike,
    xb: ArrayLike,
    k: int,
    *,
    qe_k: int = 5,
    alpha: float | None = None,
    metric: str = "ip",
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Search, expand the queries (AQE, or αQE when ``alpha`` is given), search again.

    Parameters
    ----------
    search : callable ``(xq, k) -> (D, I)``
        E.g. a Faiss index's or :class:`cvretrieval.index.Index`'s ``search``; ``I``
        must be positions in ``xb``.
    xq : (nq, d) array_like of float
    xb : (nb, d) array_like of float
        The vectors the index holds, in index order.
    k : int
        Results wanted from the second search.
    qe_k : int, default 5
        Top results of the first search used to expand each query.
    alpha : float or None, default None
        ``None``: AQE [1]_; a number: αQE [2]_.
    metric : {'ip', 'l2'}, default 'ip'

    Returns
    -------
    D, I : (nq, k) ndarrays
        The second search's result.
    """
    q = np.ascontiguousarray(_matrix(xq, "xq"), dtype=np.float32)
    qe_k = _check_k(qe_k)
    if qe_k == 0:
        D, I = search(q, int(k))  # noqa: E741
        return np.asarray(D, np.float32), np.asarray(I, np.int64)
    D1, I1 = search(q, qe_k)
    if alpha is None:
        q2 = average_query_expansion(q, xb, I1, k=qe_k)
    else:
        q2 = alpha_query_expansion(q, xb, I1, D1, k=qe_k, alpha=alpha, metric=metric)
    D, I = search(q2, int(k))  # noqa: E741
    return np.asarray(D, np.float32), np.asarray(I, np.int64)
