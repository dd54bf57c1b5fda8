"""VLAD: aggregating local descriptors into one vector of residuals to a vocabulary.

Each descriptor is assigned to its nearest visual word and the residuals
``x - c_k`` are summed per word; the ``k`` sums, concatenated, form a
``k * d``-dimensional vector [1]_. Three normalisations follow, in this order:

1. **intra-normalisation** [3]_: each word's residual sum is L2-normalised on its
   own, so a burst of similar descriptors falling into one word cannot dominate;
2. **power (signed square-root) normalisation** [2]_: ``sign(v) * |v| ** power``
   element-wise (``power=0.5`` is the signed square root), another damping of bursts;
3. a final **L2** normalisation, so that ranking by inner product is ranking by
   cosine similarity.

With ``intra_norm=False`` and ``power=None`` (or ``1``) the result is the
original VLAD of [1]_: the plain residual sum, L2-normalised.

References
----------
.. [1] H. Jégou, M. Douze, C. Schmid and P. Pérez, "Aggregating local descriptors into a
   compact image representation", CVPR 2010.
.. [2] H. Jégou, F. Perronnin, M. Douze, J. Sánchez, P. Pérez and C. Schmid,
   "Aggregating local image descriptors into compact codes", IEEE TPAMI 34(9), 2012.
.. [3] R. Arandjelović and A. Zisserman, "All about VLAD", CVPR 2013.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .vocabulary import nearest_centers

__all__ = ["residual_sums", "signed_power", "vlad"]

_EPS = 1e-12


def _check_centers(centers: ArrayLike) -> NDArray[np.float32]:
    c = np.asarray(centers, dtype=np.float32)
    if c.ndim != 2 or c.shape[0] < 1 or c.shape[1] < 1:
        raise ValueError(
            f"centers must be a non-empty (k, d) array of visual words, got shape {c.shape}"
        )
    return c


def _check_descriptors(descriptors: ArrayLike, d: int) -> NDArray[np.float32]:
    x = np.asarray(descriptors)
    if x.dtype == np.uint8 and x.size:
        raise ValueError(
            "VLAD needs float descriptors (SIFT, RootSIFT), got uint8 (binary descriptors such "
            "as ORB): use a float detector, or BoVW for binary features"
        )
    x = x.astype(np.float32, copy=False)
    if x.size == 0:
        return np.zeros((0, d), np.float32)
    if x.ndim != 2 or x.shape[1] != d:
        raise ValueError(
            f"descriptors must have shape (n, {d}) to match the centers, got {x.shape}"
        )
    return x


def residual_sums(
    descriptors: ArrayLike, centers: ArrayLike, assignments: ArrayLike | None = None
) -> NDArray[np.float32]:
    """Per-word sums of residuals ``sum_{i: a_i = j} (x_i - c_j)``.

    Parameters
    ----------
    descriptors : (n, d) array_like of float
    centers : (k, d) array_like of float
    assignments : (n,) array_like of int, optional
        Word of each descriptor; default: the nearest centre.

    Returns
    -------
    (k, d) float32 ndarray
        Row ``j`` is zero for a word that received no descriptor.

    Examples
    --------
    >>> residual_sums([[1.0, 1.0], [3.0, 1.0]], [[0.0, 0.0], [2.0, 2.0]], [1, 1]).tolist()
    [[0.0, 0.0], [0.0, -2.0]]
    """
    import scipy.sparse as sp

    c = _check_centers(centers)
    k, d = c.shape
    x = _check_descriptors(descriptors, d)
    n = len(x)
    if n == 0:
        return np.zeros((k, d), np.float32)
    if assignments is None:
        a = nearest_centers(x, c)[0]
    else:
        a = np.asarray(assignments).astype(np.int64, copy=False).ravel()
        if a.shape != (n,):
            raise ValueError(
                f"assignments must have one word id per descriptor ({n}), got {a.shape}"
            )
        if a.min() < 0 or a.max() >= k:
            raise ValueError(
                f"assignments must be word ids in [0, {k}), got values in [{a.min()}, {a.max()}]"
            )
    one_hot = sp.csr_matrix((np.ones(n, np.float64), (a, np.arange(n))), shape=(k, n))
    sums = one_hot @ x.astype(np.float64)  # (k, d): sum of the descriptors of each word
    counts = np.bincount(a, minlength=k).astype(np.float64)
    return (np.asarray(sums) - counts[:, None] * c.astype(np.float64)).astype(np.float32)


def signed_power(x: ArrayLike, power: float | None = 0.5) -> NDArray[np.float32]:
    """Power normalisation ``sign(x) * |x| ** power``, element-wise [2]_.

    Parameters
    ----------
    x : array_like of float
    power : float or None, default 0.5
        ``0 < power``; ``None`` or ``1`` returns ``x`` unchanged (as float32).

    Returns
    -------
    float32 ndarray of the shape of ``x``

    Examples
    --------
    >>> signed_power([-4.0, 0.0, 9.0]).tolist()
    [-2.0, 0.0, 3.0]
    """
    v = np.asarray(x, dtype=np.float32)
    if power is None or power == 1:
        return v.copy()
    if not power > 0:
        raise ValueError(f"power must be positive (0.5 = signed square root), got {power}")
    return (np.sign(v) * np.abs(v) ** np.float32(power)).astype(np.float32)


def vlad(
    descriptors: ArrayLike,
    centers: ArrayLike,
    assignments: ArrayLike | None = None,
    *,
    intra_norm: bool = True,
    power: float | None = 0.5,
    l2: bool = True,
) -> NDArray[np.float32]:
    """VLAD vector of one image's descriptors [1]_, with the normalisations of [2]_ and [3]_.

    Parameters
    ----------
    descriptors : (n, d) array_like of float
        The image's local descriptors (SIFT, RootSIFT); ``n`` may be 0.
    centers : (k, d) array_like of float
        The visual words (e.g. ``KMeansVocabulary.centers_``).
    assignments : (n,) array_like of int, optional
        Word of each descriptor (e.g. ``KMeansVocabulary.assign``); default the
        nearest centre, computed here.
    intra_norm : bool, default True
        L2-normalise each word's residual sum [3]_ (words without descriptors stay zero).
    power : float or None, default 0.5
        Signed power normalisation exponent [2]_; ``None`` or ``1`` disables it.
    l2 : bool, default True
        L2-normalise the whole vector last.

    Returns
    -------
    (k * d,) float32 ndarray
        Word-major: elements ``j*d : (j+1)*d`` belong to word ``j``. All zeros
        when there are no descriptors (or every descriptor sits on its centre).

    References
    ----------
    .. [1] H. Jégou et al., "Aggregating local descriptors into a compact image
       representation", CVPR 2010.
    .. [2] H. Jégou et al., "Aggregating local image descriptors into compact codes",
       IEEE TPAMI 2012.
    .. [3] R. Arandjelović and A. Zisserman, "All about VLAD", CVPR 2013.

    Examples
    --------
    >>> centers = np.array([[0.0, 0.0], [10.0, 10.0]], np.float32)
    >>> vlad([[3.0, 4.0]], centers, intra_norm=False, power=None).tolist()
    [0.6000000238418579, 0.800000011920929, 0.0, 0.0]
    >>> vlad(np.zeros((0, 2)), centers).tolist()
    [0.0, 0.0, 0.0, 0.0]
    """
    if power is not None and power != 1 and not power > 0:
        raise ValueError(f"power must be positive (0.5 = signed square root), got {power}")
    v = residual_sums(descriptors, centers, assignments).astype(np.float64)
    if intra_norm:
        norms = np.linalg.norm(v, axis=1, keepdims=True)
        v = v / np.maximum(norms, _EPS)
    v = v.ravel()
    if power is not None and power != 1:
        v = np.sign(v) * np.abs(v) ** float(power)
    if l2:
        v = v / max(float(np.linalg.norm(v)), _EPS)
    return v.astype(np.float32)
