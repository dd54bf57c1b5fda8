"""Normalised discounted cumulative gain on graded relevance.

References
----------
.. [1] K. Järvelin, J. Kekäläinen, "Cumulated gain-based evaluation of IR
       techniques", ACM TOIS 2002.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .ranking import _check_k, _removed
from .revisitop import cleaned_positions

NDCG_GAINS = ("linear", "exponential")


# =========================================================================== NDCG
def graded_arrays(
    graded: Any, self_index: int | None = None
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """``[[gallery_index, grade], ...]`` (or a mapping index -> grade) as two arrays.

    The query's own image is left out; grades must be finite and non-negative.
    """
    if isinstance(graded, Mapping):
        pairs = list(graded.items())
    else:
        pairs = [tuple(p) for p in (graded if graded is not None else [])]
    if any(len(p) != 2 for p in pairs):
        raise ValueError("graded relevance must be [gallery_index, grade] pairs")
    idx = np.array([int(p[0]) for p in pairs], dtype=np.int64)
    grades = np.array([float(p[1]) for p in pairs], dtype=np.float64)
    if grades.size and (not np.isfinite(grades).all() or grades.min() < 0):
        raise ValueError("grades must be finite and >= 0")
    if self_index is not None:
        keep = idx != int(self_index)
        idx, grades = idx[keep], grades[keep]
    return idx, grades


def _gain(grades: NDArray[np.float64], gain: str) -> NDArray[np.float64]:
    if gain == "linear":
        return grades
    if gain == "exponential":
        return np.exp2(grades) - 1.0
    raise ValueError(f"gain must be one of {', '.join(NDCG_GAINS)}, got {gain!r}")


def dcg_from_positions(
    positions: NDArray[np.int64], grades: NDArray[np.float64], k: int, gain: str = "linear"
) -> float:
    """NDCG@k from the cleaned 0-based positions of the graded images (``>= k``: not in the top k).

    ``DCG@k = sum_{p < k} gain(grade) / log2(p + 2)``, divided by the DCG of the
    grades sorted best first; ``NaN`` when no grade is positive.
    """
    k = _check_k(k)
    g = _gain(np.asarray(grades, dtype=np.float64), gain)
    ideal_g = np.sort(g)[::-1][:k]
    ideal = float(np.sum(ideal_g / np.log2(np.arange(ideal_g.size) + 2.0)))
    if ideal <= 0:
        return math.nan
    pos = np.asarray(positions, dtype=np.int64)
    top = pos < k
    return float(np.sum(g[top] / np.log2(pos[top] + 2.0)) / ideal)


def ndcg_at_k(
    ranking: ArrayLike,
    graded: Any,
    k: int,
    gain: str = "linear",
    *,
    junk: ArrayLike = (),
    self_index: int | None = None,
) -> float:
    """Normalised discounted cumulative gain of one ranking at cut-off ``k``.

    Parameters
    ----------
    ranking : (n,) array_like of int
        Gallery indices, best first; -1 padding, ``junk`` and ``self_index`` (the
        query's own image) are removed first, as for every other metric.
    graded : sequence of [gallery_index, grade] or mapping
        Graded relevance (grade >= 0; unlisted images have grade 0).
    k : int
        Cut-off.
    gain : {"linear", "exponential"}
        ``grade`` or ``2 ** grade - 1``.

    Returns
    -------
    float
        In [0, 1]; ``NaN`` when no image has a positive grade.

    References
    ----------
    .. [1] K. Järvelin, J. Kekäläinen, ACM TOIS 2002.

    Examples
    --------
    >>> round(ndcg_at_k([3, 1, 2], [[1, 2], [2, 1]], k=3), 6)  # (2/log2(3) + 1/2) / (2 + 1/log2(3))
    0.669672
    """
    idx, grades = graded_arrays(graded, self_index)
    r = np.asarray(ranking)
    if r.ndim != 1:
        raise ValueError(f"a ranking must be a 1-D array of gallery indices, got shape {r.shape}")
    r = r.astype(np.int64, copy=False)
    removed = np.flatnonzero(_removed(r, junk, self_index))
    raw = np.full(idx.size, r.size + k, dtype=np.int64)  # absent: never in the top k
    if r.size and idx.size:
        values, first = np.unique(r, return_index=True)  # a repeated index counts where first seen
        at = np.minimum(np.searchsorted(values, idx), values.size - 1)
        present = values[at] == idx
        raw[present] = first[at[present]]
    order = np.argsort(raw, kind="stable")
    pos = np.empty_like(raw)
    pos[order] = cleaned_positions(raw[order], removed)
    return dcg_from_positions(pos, grades, k, gain)
