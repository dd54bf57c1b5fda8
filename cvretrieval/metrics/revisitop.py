"""revisitop's AP and mAP (``python/evaluate.py``), exactly, and junk removal by positions.

References
----------
.. [1] F. Radenović, A. Iscen, G. Tolias, Y. Avrithis, O. Chum, "Revisiting Oxford
       and Paris: Large-Scale Image Retrieval Benchmarking", CVPR 2018.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

logger = logging.getLogger(__name__)


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
    .. [1] F. Radenović et al., CVPR 2018 (``revisitop/python/evaluate.py``).

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


def as_index_array(values: Any) -> NDArray[np.int64]:
    """``values`` (a list, an array or ``None``) as a flat int64 array."""
    a = np.asarray(values if values is not None else [])
    if a.size == 0:
        return np.zeros(0, dtype=np.int64)
    return a.astype(np.int64, copy=False).ravel()


def member(values: NDArray[np.int64], test: NDArray[np.int64]) -> NDArray[np.bool_]:
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


def cleaned_positions(raw_positions: ArrayLike, removed_positions: ArrayLike) -> NDArray[np.int64]:
    """Positions after removal: each raw position minus the removed entries strictly before it.

    Parameters
    ----------
    raw_positions : (m,) array_like of int
        Sorted 0-based positions in the raw ranking (e.g. of the positives).
    removed_positions : (r,) array_like of int
        Sorted 0-based positions of the removed entries (junk, the query itself, padding).

    Examples
    --------
    >>> cleaned_positions([1, 3], [0, 2]).tolist()  # x j a j b -> a, b at 0 and 1
    [0, 1]
    """
    p = np.asarray(raw_positions, dtype=np.int64)
    rem = np.asarray(removed_positions, dtype=np.int64)
    if rem.size == 0:
        return p
    return p - np.searchsorted(rem, p, side="left")


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
        revisitop's precision at ``kappa`` (quirk included, see
        :func:`revisitop_precision`); ``NaN`` for a query without positives.

    Raises
    ------
    ValueError
        If ``ranks`` is not 2-D or has not one column per query.

    References
    ----------
    .. [1] F. Radenović et al., CVPR 2018 (``revisitop/python/evaluate.py``).

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
    for i in range(nq):
        ok = as_index_array(gnd[i]["ok"])
        if ok.size == 0:
            aps[i] = np.nan
            prs[i, :] = np.nan
            nempty += 1
            continue
        junk = as_index_array(gnd[i].get("junk", ()))
        col = ranks[:, i].astype(np.int64, copy=False)
        pos = np.flatnonzero(member(col, ok))
        if junk.size:
            pos = cleaned_positions(pos, np.flatnonzero(member(col, junk)))
        ap = compute_ap(pos, ok.size)
        total += ap
        aps[i] = ap
        prs[i, :] = revisitop_precision(pos, kappas)
        pr += prs[i, :]
    n_eval = nq - nempty
    if n_eval == 0:
        logger.warning("no query has positives: mAP is undefined (NaN)")
        return float("nan"), aps, np.full(len(kappas), np.nan), prs
    return total / n_eval, aps, pr / n_eval, prs


def revisitop_precision(positions: ArrayLike, kappas: Sequence[int]) -> NDArray[np.float64]:
    """revisitop's precision at each kappa from the 0-based positions of the positives found.

    On the 1-based positions ``pos``: ``kq = min(max(pos), kappa)`` and the
    precision is ``(pos <= kq).sum() / kq`` (revisitop's quirk, kept as is); 0
    when no positive was found (where revisitop would crash on ``max([])``).

    Examples
    --------
    >>> revisitop_precision([1, 4], [1, 5, 10]).tolist()  # plain P@10 would be 0.2
    [0.0, 0.4, 0.4]
    """
    pos1 = np.asarray(positions, dtype=np.int64) + 1
    out = np.zeros(len(kappas))
    if pos1.size:
        top = int(pos1.max())
        for j, kappa in enumerate(kappas):
            kq = min(top, int(kappa))
            out[j] = (pos1 <= kq).sum() / kq
    return out


def revisited_metrics(
    rankings: Sequence[ArrayLike],
    protocols: Mapping[str, Sequence[dict]],
    self_index: Sequence[int | None] | None = None,
    kappas: Sequence[int] = (1, 5, 10),
) -> dict[str, dict[str, Any]]:
    """mAP and mP@k of every protocol, with :func:`compute_map` exactly as revisitop.

    Rankings of different lengths are padded with -1; a query's own image (when
    it is in the gallery) is removed from its positives and treated as junk.
    Returns, per protocol, ``mAP``, ``mP@k`` for each kappa,
    ``n_queries_evaluated`` and ``ap`` (``None`` for a query without positives).
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
            ok = as_index_array(g["ok"])
            junk = as_index_array(g.get("junk", ()))
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
