"""Closed-form linear maps for the Siamese head's skip: PCA and learned whitening (numpy only).

:func:`lw_init` is the supervised learned whitening of Radenović et al. (whiten the
within-class scatter, then rotate onto the principal axes of the whitened data);
:func:`choose_shrinkage` picks its ridge by cross-validation over *held-out training
classes*, so that the choice is made for classes the map has not seen, without looking at
any test class.

References
----------
.. [1] F. Radenović, G. Tolias, O. Chum, "Fine-tuning CNN Image Retrieval with No Human
       Annotation", TPAMI 2018 (section 3.3, learned whitening).
.. [2] O. Ledoit, M. Wolf, "A well-conditioned estimator for large-dimensional covariance
       matrices", J. Multivariate Analysis 2004 (shrinkage towards a scaled identity).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from ..embedders.base import l2_normalize
from .data import class_retrieval_metrics

#: ridges tried by :func:`choose_shrinkage` (relative to the mean within-class eigenvalue)
SHRINKAGE_GRID = (0.1, 0.3, 1.0, 3.0, 10.0)

__all__ = ["SHRINKAGE_GRID", "choose_shrinkage", "lw_init", "pca_init"]


def pca_init(
    X: NDArray[np.floating], out_dim: int
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """A linear map ``W (x - mean)`` onto the top ``out_dim`` principal axes of ``X``.

    When ``out_dim >= d`` the map is the identity (zero-padded rows beyond ``d``) with a
    zero mean: nothing to reduce, nothing to centre. When ``X`` has fewer than
    ``out_dim`` informative directions the remaining rows are zero.

    Parameters
    ----------
    X : (n, d) array
    out_dim : int

    Returns
    -------
    W : (out_dim, d) float32
        Orthonormal rows (the principal axes), or identity.
    mean : (d,) float32

    Examples
    --------
    >>> W, m = pca_init(np.array([[0.0, 0.0], [2.0, 0.0], [4.0, 0.0]]), 1)
    >>> np.abs(W).round(3).tolist(), m.tolist()
    ([[1.0, 0.0]], [2.0, 0.0])
    """
    X = np.asarray(X, np.float64)
    d = X.shape[1]
    if out_dim >= d:
        return np.eye(out_dim, d, dtype=np.float32), np.zeros(d, np.float32)
    mean = X.mean(axis=0)
    _, _, vt = np.linalg.svd(X - mean, full_matrices=False)
    W = np.zeros((out_dim, d), np.float64)
    r = min(out_dim, vt.shape[0])
    W[:r] = vt[:r]
    return W.astype(np.float32), mean.astype(np.float32)


def lw_init(
    X: NDArray[np.floating], y: NDArray[np.integer], out_dim: int, shrinkage: float = 1.0
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Learned whitening [1]_: a linear map ``W (x - mean)`` from labelled vectors.

    The within-class scatter ``Sw`` (what varies between images of one class: pose,
    background, lighting) is whitened, ``(Sw + s·tr(Sw)/d·I)^(-1/2)``, then the whitened
    training vectors are projected on their top ``out_dim`` principal axes. It is closed
    form, so it does not fit the training classes the way a trained MLP does, and it
    carries over to unseen classes (Caltech-101, 26 classes never seen, MobileNet v1
    embeddings: mAP 0.748 → 0.785 with 512 rows and the ridge 3.0 that
    :func:`choose_shrinkage` picked on the 25 training classes;
    ``benchmarks/deep_vs_classical.py``).

    Parameters
    ----------
    X : (n, d) array
        Training vectors (L2-normalised).
    y : (n,) int array
        Their classes; classes with one vector add nothing to ``Sw``.
    out_dim : int
        Rows of ``W`` (at most ``d``; extra rows are zero).
    shrinkage : float, default 1.0
        ``s`` above: the ridge added to ``Sw`` relative to its mean eigenvalue (0: none).

    Returns
    -------
    W : (out_dim, d) float32
        Scaled so that ``|W (x - mean)|`` is on average that of the PCA projection of
        :func:`pca_init` (the MLP's residual adds to it on a like scale).
    mean : (d,) float32

    References
    ----------
    .. [1] F. Radenović, G. Tolias, O. Chum, "Fine-tuning CNN Image Retrieval with No
       Human Annotation", TPAMI 2018 (section 3.3, learned whitening); K. Mikolajczyk,
       J. Matas, "Improving descriptors for fast tree matching by optimal linear
       projection", ICCV 2007.

    Examples
    --------
    >>> X = np.array([[1.0, 0.1], [1.0, -0.1], [-1.0, 0.1], [-1.0, -0.1]])
    >>> W, m = lw_init(X, np.array([0, 0, 1, 1]), 1, shrinkage=0.1)
    >>> bool(abs(W[0, 0]) > 10 * abs(W[0, 1]))  # keeps the axis that separates the classes
    True
    """
    X = np.asarray(X, np.float64)
    y = np.asarray(y)
    n, d = X.shape
    mean = X.mean(axis=0)
    parts = [X[y == c] - X[y == c].mean(axis=0) for c in np.unique(y) if (y == c).sum() > 1]
    if not parts:
        raise ValueError("learned whitening needs a class with 2 or more vectors")
    D = np.concatenate(parts)
    Sw = D.T @ D / len(D)
    ridge = float(shrinkage) * max(float(np.trace(Sw)) / d, 1e-12)
    e, U = np.linalg.eigh(Sw + ridge * np.eye(d))
    P1 = U / np.sqrt(np.maximum(e, 1e-12))
    Z = (X - mean) @ P1
    _, _, vt = np.linalg.svd(Z - Z.mean(axis=0), full_matrices=False)
    r = min(out_dim, vt.shape[0])
    W = np.zeros((out_dim, d), np.float64)
    W[:r] = (P1 @ vt[:r].T).T
    W_pca, _ = pca_init(X, min(out_dim, d))
    target = np.linalg.norm((X - mean) @ W_pca[: min(out_dim, d)].T, axis=1).mean()
    got = np.linalg.norm((X - mean) @ W.T, axis=1).mean()
    if got > 0:
        W *= target / got
    return W.astype(np.float32), mean.astype(np.float32)


def choose_shrinkage(
    X: NDArray[np.floating],
    y: NDArray[np.integer],
    out_dim: int,
    grid: Sequence[float] = SHRINKAGE_GRID,
    *,
    folds: int = 5,
    repeats: int = 2,
    random_state: int = 0,
) -> tuple[float, dict[float, float]]:
    """Pick the ridge of :func:`lw_init` by cross-validation over held-out classes.

    The classes are dealt into ``folds`` groups (``repeats`` times, in different random
    orders); for each group the whitening is fitted on the other classes and scored by
    class-retrieval mAP (:func:`cvretrieval.siamese.data.class_retrieval_metrics`, cosine
    similarity) among the images of the held-out classes. The ridge with the best mean
    wins; ties go to the larger ridge (the map closer to plain PCA).

    Parameters
    ----------
    X : (n, d) array
        Training vectors (L2-normalised, as :func:`lw_init` expects).
    y : (n,) int array
        Their classes; at least 4 classes with 2 or more vectors.
    out_dim : int
        Rows of the map, as in :func:`lw_init`.
    grid : sequence of float, default :data:`SHRINKAGE_GRID`
    folds, repeats, random_state : int
        ``folds`` is lowered to ``n_classes // 2`` so that every held-out group has at
        least 2 classes.

    Returns
    -------
    shrinkage : float
    scores : dict
        Mean held-out mAP for every ridge of ``grid``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat(np.arange(8), 10)
    >>> X = np.zeros((80, 4)); X[:, 0] = rng.normal(0, 10, 80)  # one loud nuisance axis
    >>> X[:, 1:] = rng.normal(0, 1, (8, 3))[y] + rng.normal(0, 0.1, (80, 3))
    >>> choose_shrinkage(X, y, 4, grid=(0.001, 1000.0))[0]  # whitening it away wins
    0.001
    """
    X = np.asarray(X, np.float64)
    y = np.asarray(y)
    classes, counts = np.unique(y, return_counts=True)
    classes = classes[counts >= 2]
    if len(classes) < 4:
        raise ValueError(
            f"choosing the shrinkage needs 4 or more classes with 2+ vectors, got {len(classes)}"
        )
    if not grid:
        raise ValueError("the shrinkage grid is empty")
    folds = max(2, min(int(folds), len(classes) // 2))
    rng = np.random.default_rng(random_state)
    splits = []
    for _ in range(max(1, int(repeats))):
        order = rng.permutation(classes)
        splits += [np.isin(y, order[f::folds]) for f in range(folds)]
    scores: dict[float, float] = {}
    for s in grid:
        maps = []
        for held in splits:
            W, mean = lw_init(X[~held], y[~held], out_dim, shrinkage=float(s))
            Z = l2_normalize(((X[held] - mean) @ W.T).astype(np.float32))
            maps.append(class_retrieval_metrics(Z, y[held], Z @ Z.T)["mAP"])
        scores[float(s)] = float(np.mean(maps))
    best = max(scores, key=lambda s: (scores[s], s))
    return best, scores
