"""Triplet and contrastive losses on Euclidean distances (needs PyTorch).

References
----------
.. [1] R. Hadsell, S. Chopra, Y. LeCun, "Dimensionality Reduction by Learning an
       Invariant Mapping", CVPR 2006.
.. [2] F. Schroff, D. Kalenichenko, J. Philbin, "FaceNet: A Unified Embedding for Face
       Recognition and Clustering", CVPR 2015.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._torch import torch
from .mining import mine_triplets, pairwise_distances

#: losses accepted by :func:`batch_loss`
LOSSES = ("triplet", "contrastive")


def triplet_loss(d_ap: Any, d_an: Any, margin: float = 0.2) -> Any:
    """Mean hinge ``max(0, d(a, p) - d(a, n) + margin)`` over triplets.

    Parameters
    ----------
    d_ap, d_an : (m,) float tensors
        Euclidean distances anchor-positive and anchor-negative.
    margin : float

    Returns
    -------
    scalar tensor (0 when ``m == 0``)

    Examples
    --------
    >>> d_ap, d_an = torch.tensor([1.0, 0.1]), torch.tensor([1.5, 1.0])
    >>> round(float(triplet_loss(d_ap, d_an, margin=0.6)), 6)  # (0.1 + 0) / 2
    0.05
    """
    if d_ap.numel() == 0:
        return d_ap.sum()
    return torch.relu(d_ap - d_an + margin).mean()


def contrastive_loss(d: Any, same: Any, margin: float = 0.5) -> Any:
    """Mean of ``½ d²`` over similar pairs and ``½ max(0, margin - d)²`` over dissimilar ones.

    Parameters
    ----------
    d : (m,) float tensor
        Euclidean distances of the pairs.
    same : (m,) bool or {0, 1} tensor
        1 for a pair of the same class.
    margin : float
        Dissimilar pairs farther apart than this cost nothing.

    Returns
    -------
    scalar tensor (0 when ``m == 0``)

    References
    ----------
    .. [1] Hadsell, Chopra & LeCun, CVPR 2006, eq. (4).

    Examples
    --------
    >>> d, same = torch.tensor([0.2, 0.3]), torch.tensor([1, 0])
    >>> round(float(contrastive_loss(d, same, margin=0.5)), 6)  # (0.5*0.2² + 0.5*0.2²) / 2
    0.02
    """
    if d.numel() == 0:
        return d.sum()
    same = same.to(d.dtype)
    return 0.5 * (same * d.pow(2) + (1.0 - same) * torch.relu(margin - d).pow(2)).mean()


def batch_loss(
    embeddings: Any,
    labels: Any,
    loss: str = "triplet",
    margin: float = 0.2,
    mining: str = "batch-hard",
    rng: np.random.Generator | int | None = None,
) -> tuple[Any, dict[str, float]]:
    """The loss of one P×K batch after mining.

    Triplet loss: on the mined triplets ``(a, p, n)``. Contrastive loss: on the mined
    pairs, each triplet giving one similar pair ``(a, p)`` and one dissimilar pair
    ``(a, n)`` (so ``batch-hard`` means the farthest positive and the closest negative
    of every anchor).

    Parameters
    ----------
    embeddings : (n, d) float tensor
    labels : (n,) int tensor or array
    loss : {'triplet', 'contrastive'}
    margin : float
    mining : {'batch-hard', 'semi-hard', 'random'}
    rng : numpy Generator or seed (``random`` mining)

    Returns
    -------
    loss : scalar tensor
    stats : dict
        ``triplets`` (how many were mined) and ``active`` (fraction with a non-zero loss).
    """
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
    dist = pairwise_distances(embeddings)
    a, p, n = mine_triplets(dist, labels, mining, rng)
    d_ap, d_an = dist[a, p], dist[a, n]
    if loss == "triplet":
        value = triplet_loss(d_ap, d_an, margin)
        active = (d_ap - d_an + margin > 0).float()
    else:
        d = torch.cat([d_ap, d_an])
        same = torch.cat([torch.ones_like(d_ap), torch.zeros_like(d_an)])
        value = contrastive_loss(d, same, margin)
        active = torch.cat([(d_ap > 0).float(), (d_an < margin).float()])
    frac = float(active.mean()) if active.numel() else 0.0
    return value, {"triplets": int(a.numel()), "active": frac}
