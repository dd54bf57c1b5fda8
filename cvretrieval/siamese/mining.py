"""P×K batches and triplet mining on a batch's distance matrix (needs PyTorch).

A P×K batch holds ``P`` classes with ``K`` images each, so that every anchor has
``K - 1`` positives and ``(P - 1) K`` negatives in the batch. Mining picks, for each
anchor, which positive and which negative enter the loss; the choice is made on
detached distances and returns indices, so the loss is then computed (with gradients)
on exactly the chosen pairs.

References
----------
.. [1] A. Hermans, L. Beyer, B. Leibe, "In Defense of the Triplet Loss for Person
       Re-Identification", arXiv:1703.07737, 2017 (P×K batches, batch-hard mining).
.. [2] F. Schroff, D. Kalenichenko, J. Philbin, "FaceNet: A Unified Embedding for Face
       Recognition and Clustering", CVPR 2015 (semi-hard mining).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._torch import torch

#: mining strategies accepted by :func:`mine_triplets`
MINING = ("batch-hard", "semi-hard", "random")

Triplets = tuple[Any, Any, Any]  # (anchors, positives, negatives): (m,) int64 tensors


def pairwise_distances(x: Any, squared: bool = False, eps: float = 1e-12) -> Any:
    """Euclidean distances between the rows of ``x``.

    Parameters
    ----------
    x : (n, d) float tensor
    squared : bool, default False
        Return squared distances.
    eps : float
        Squared distances are clamped to at least ``eps`` before the square root, so
        the gradient stays finite on identical rows; the diagonal is exactly 0.

    Returns
    -------
    (n, n) float tensor

    Examples
    --------
    >>> pairwise_distances(torch.tensor([[0.0, 0.0], [3.0, 4.0]])).tolist()
    [[0.0, 5.0], [5.0, 0.0]]
    """
    sq = (x * x).sum(dim=1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)).clamp_min(0.0)
    eye = torch.eye(x.shape[0], dtype=torch.bool, device=x.device)
    d2 = d2.masked_fill(eye, 0.0)
    if squared:
        return d2
    return torch.sqrt(d2.clamp_min(eps)).masked_fill(eye, 0.0)


def _masks(labels: Any) -> tuple[Any, Any]:
    labels = torch.as_tensor(labels)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(labels.shape[0], dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same


def batch_hard(dist: Any, labels: Any) -> Triplets:
    """For each anchor, its farthest positive and its closest negative in the batch.

    Parameters
    ----------
    dist : (n, n) float tensor
        Distances between the batch's embeddings (only their order matters).
    labels : (n,) int tensor or array
        Class of each embedding.

    Returns
    -------
    anchors, positives, negatives : (m,) int64 tensors
        One triplet per anchor that has at least one positive and one negative.

    References
    ----------
    .. [1] Hermans, Beyer & Leibe, "In Defense of the Triplet Loss", 2017.
    """
    dist = dist.detach()
    pos, neg = _masks(labels)
    valid = pos.any(dim=1) & neg.any(dim=1)
    inf = torch.finfo(dist.dtype).max
    p = dist.masked_fill(~pos, -inf).argmax(dim=1)
    n = dist.masked_fill(~neg, inf).argmin(dim=1)
    a = torch.nonzero(valid).flatten()
    return a, p[a], n[a]


def semi_hard(dist: Any, labels: Any) -> Triplets:
    """Every anchor-positive pair with its semi-hard negative.

    The negative is the closest one that is farther than the positive
    (``d(a, n) > d(a, p)``); when no negative is farther, the farthest negative
    (the least violating one), as in TensorFlow's ``triplet_semihard_loss``.

    Parameters
    ----------
    dist : (n, n) float tensor
    labels : (n,) int tensor or array

    Returns
    -------
    anchors, positives, negatives : (m,) int64 tensors
        One triplet per ordered positive pair whose anchor has a negative.

    References
    ----------
    .. [1] Schroff, Kalenichenko & Philbin, "FaceNet", CVPR 2015.
    """
    dist = dist.detach()
    pos, neg = _masks(labels)
    a, p = torch.nonzero(pos & neg.any(dim=1, keepdim=True), as_tuple=True)
    if a.numel() == 0:
        return a, p, a.clone()
    d_ap = dist[a, p][:, None]  # (m, 1)
    d_an = dist[a]  # (m, n)
    is_neg = neg[a]
    inf = torch.finfo(dist.dtype).max
    outside = is_neg & (d_an > d_ap)
    closest_outside = d_an.masked_fill(~outside, inf).argmin(dim=1)
    farthest = d_an.masked_fill(~is_neg, -inf).argmax(dim=1)
    n = torch.where(outside.any(dim=1), closest_outside, farthest)
    return a, p, n


def random_triplets(labels: Any, rng: np.random.Generator | int | None = None) -> Triplets:
    """For each anchor, a positive and a negative drawn uniformly from the batch.

    Parameters
    ----------
    labels : (n,) int tensor or array
    rng : numpy Generator or seed

    Returns
    -------
    anchors, positives, negatives : (m,) int64 tensors
    """
    rng = np.random.default_rng(rng)
    lab = np.asarray(torch.as_tensor(labels).cpu())
    a_list, p_list, n_list = [], [], []
    for i, c in enumerate(lab):
        positives = np.flatnonzero((lab == c) & (np.arange(lab.size) != i))
        negatives = np.flatnonzero(lab != c)
        if positives.size and negatives.size:
            a_list.append(i)
            p_list.append(int(rng.choice(positives)))
            n_list.append(int(rng.choice(negatives)))

    def t(v: list[int]) -> Any:
        return torch.as_tensor(v, dtype=torch.int64)

    return t(a_list), t(p_list), t(n_list)


def mine_triplets(
    dist: Any,
    labels: Any,
    mining: str = "batch-hard",
    rng: np.random.Generator | int | None = None,
) -> Triplets:
    """Dispatch to :func:`batch_hard`, :func:`semi_hard` or :func:`random_triplets`."""
    if mining == "batch-hard":
        return batch_hard(dist, labels)
    if mining == "semi-hard":
        return semi_hard(dist, labels)
    if mining == "random":
        return random_triplets(labels, rng)
    raise ValueError(f"unknown mining {mining!r}; choose one of {', '.join(MINING)}")


class PKSampler:
    """Batches of ``batch_p`` classes × ``batch_k`` items, covering each epoch's items once.

    Each epoch shuffles every class's items and cuts them into groups of ``batch_k``
    (a class with fewer items is padded by drawing again from it); the groups are
    shuffled and packed ``batch_p`` at a time, never two groups of one class in one
    batch. An epoch therefore has about ``n_items / (batch_p * batch_k)`` batches.

    Parameters
    ----------
    labels : (n,) array_like of int
        Class of each item; classes with a single item are left out (no positive).
    batch_p, batch_k : int
        Classes per batch and items per class (``batch_p >= 2``, ``batch_k >= 2``).
    random_state : int or None

    Examples
    --------
    >>> s = PKSampler([0, 0, 1, 1, 2, 2], batch_p=2, batch_k=2, random_state=0)
    >>> [len(b) for b in s]
    [4]
    """

    def __init__(self, labels: Any, batch_p: int = 8, batch_k: int = 4,
                 random_state: int | None = 0):
        if int(batch_p) < 2 or int(batch_k) < 2:
            raise ValueError(
                f"batch_p={batch_p} and batch_k={batch_k}: both must be at least 2 (a P×K "
                "batch needs two classes and two images of each)"
            )
        self.labels = np.asarray(labels)
        self.batch_p = int(batch_p)
        self.batch_k = int(batch_k)
        self.random_state = random_state
        self._rng = np.random.default_rng(random_state)
        classes, counts = np.unique(self.labels, return_counts=True)
        self.classes_ = classes[counts >= 2]
        if self.classes_.size < 2:
            raise ValueError(
                "P×K batches need at least 2 classes with 2 or more items; got "
                f"{self.classes_.size}"
            )
        self._members = {c: np.flatnonzero(self.labels == c) for c in self.classes_}

    def __iter__(self) -> Iterator[NDArray[np.int64]]:
        rng, k = self._rng, self.batch_k
        groups: list[tuple[Any, NDArray[np.int64]]] = []
        for c, idx in self._members.items():
            idx = rng.permutation(idx)
            n_groups = max(1, idx.size // k)
            for g in range(n_groups):
                chunk = idx[g * k : (g + 1) * k]
                if chunk.size < k:
                    chunk = np.concatenate([chunk, rng.choice(idx, k - chunk.size)])
                groups.append((c, chunk))
        order = rng.permutation(len(groups))
        pending = [groups[i] for i in order]
        p = min(self.batch_p, self.classes_.size)
        while len(pending) >= 2:
            batch: list[NDArray[np.int64]] = []
            used: set[Any] = set()
            rest: list[tuple[Any, NDArray[np.int64]]] = []
            for c, chunk in pending:
                if len(batch) < p and c not in used:
                    batch.append(chunk)
                    used.add(c)
                else:
                    rest.append((c, chunk))
            if len(batch) < 2:
                break
            pending = rest
            yield np.concatenate(batch).astype(np.int64)
