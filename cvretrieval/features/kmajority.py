"""k-majority: visual vocabularies of binary descriptors (ORB, AKAZE, BRISK) in Hamming space.

Split out of :mod:`cvretrieval.features.vocabulary` (which re-exports
:class:`HammingVocabulary`).

References
----------
.. [2] C. Grana, D. Borghesani, M. Manfredi and R. Cucchiara, "A fast approach
   for integrating ORB descriptors in the bag of words model", Proc. SPIE 8667, 2013.
.. [3] D. Arthur and S. Vassilvitskii, "k-means++: the advantages of careful
   seeding", SODA 2007.
"""

from __future__ import annotations

import logging
from typing import Any

import faiss
import numpy as np
from numpy.typing import NDArray

from ._vocabbase import _check_params, _too_few, _VocabularyBase

__all__ = ["HammingVocabulary"]

logger = logging.getLogger(__name__)


_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.int64)


def _kmeanspp_binary(x: NDArray[np.uint8], k: int, rng: np.random.Generator) -> NDArray[np.uint8]:
    """k-means++ seeding [3] in Hamming space (D^2 weighting with Hamming distance)."""
    n = len(x)
    first = int(rng.integers(n))
    centers = np.empty((k, x.shape[1]), dtype=np.uint8)
    centers[0] = x[first]
    d2 = (_POPCOUNT[x ^ centers[0]].sum(axis=1) ** 2).astype(np.float64)
    for j in range(1, k):
        total = d2.sum()
        if total <= 0:  # fewer distinct descriptors than words: pad with random rows
            idx = int(rng.integers(n))
        else:
            idx = int(np.searchsorted(np.cumsum(d2), rng.random() * total, side="right"))
            idx = min(idx, n - 1)
        centers[j] = x[idx]
        np.minimum(d2, _POPCOUNT[x ^ centers[j]].sum(axis=1) ** 2, out=d2)
    return centers


def _binary_index(centers: NDArray[np.uint8]) -> Any:
    """Exact Hamming index over packed centres.

    Faiss's default ``query_batch_size`` (32) opens one OpenMP parallel region per 32
    queries, which costs seconds per search on a busy machine; 1024 gives the same
    results without that overhead.
    """
    index = faiss.IndexBinaryFlat(8 * centers.shape[1])
    index.query_batch_size = 1024  # type: ignore[attr-defined]  # not in faiss's bundled stubs
    index.add(np.ascontiguousarray(centers, dtype=np.uint8))
    return index


#: bit ``b`` (most significant first, as ``np.packbits``) of every byte value, (256, 8)
_BYTE_BITS = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).astype(np.int64)


def majority_of_packed(
    x: NDArray[np.uint8], labels: NDArray[np.int64], n_clusters: int
) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """k-majority centre update [2] on packed descriptors ``x`` ``(n, nbytes)``.

    Per byte position, one ``bincount`` of (cluster, byte value) pairs gives a
    ``(k, 256)`` histogram, and its product with the bits of each byte value gives the
    per-cluster bit counts: 0.05 s for 200,000 ORB descriptors and 1,000 words where a
    sparse one-hot product over the unpacked bits took 1.6 s.

    Returns ``(centers, sizes)`` as :func:`_majority_update`.
    """
    k = int(n_clusters)
    labels = np.asarray(labels, np.int64)
    x = np.asarray(x, np.uint8)
    counts = np.empty((k, 8 * x.shape[1]), np.int64)
    for j in range(x.shape[1]):
        hist = np.bincount(labels * 256 + x[:, j], minlength=k * 256).reshape(k, 256)
        counts[:, 8 * j : 8 * j + 8] = hist @ _BYTE_BITS
    sizes = np.bincount(labels, minlength=k).astype(np.int64)
    majority = (2 * counts > sizes[:, None]).astype(np.uint8)
    return np.packbits(majority, axis=1), sizes


def _majority_update(
    bits: NDArray[np.uint8], labels: NDArray[np.int64], n_clusters: int
) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """k-majority centre update [2].

    Parameters
    ----------
    bits : (n, nbits) uint8
        Unpacked descriptor bits (``np.unpackbits(x, axis=1)``), values 0/1; ``nbits``
        a multiple of 8.
    labels : (n,) int64
        Cluster of each descriptor, in ``[0, n_clusters)``.
    n_clusters : int

    Returns
    -------
    centers : (n_clusters, nbits // 8) uint8
        Packed centres: bit ``b`` of centre ``c`` is 1 iff strictly more than
        half of the members of ``c`` have bit ``b`` set (a tie gives 0). Empty
        clusters get all-zero centres (the caller re-seeds them).
    sizes : (n_clusters,) int64
        Members per cluster.
    """
    return majority_of_packed(np.packbits(np.asarray(bits, np.uint8), axis=1), labels,
                              n_clusters)


# --------------------------------------------------------------------------- k-majority


class HammingVocabulary(_VocabularyBase):
    """Visual vocabulary of binary descriptors, learnt with k-majority [2]_.

    k-majority is k-means in Hamming space: each descriptor goes to the centre
    at the smallest Hamming distance (Faiss ``IndexBinaryFlat``), and each
    centre bit becomes the majority vote of its members' bits, so centres stay
    binary and assignment stays a cheap XOR/popcount.

    Parameters
    ----------
    n_words : int, default 1000
        Number of visual words.
    niter : int, default 10
        Maximum iterations; stops earlier when no assignment changes.
    n_init : int, default 1
        Independent runs; the one with the lowest mean Hamming distance wins.
    init : {"random", "k-means++"}, default "random"
        ``"random"``: distinct descriptors drawn uniformly (as in [2]_);
        ``"k-means++"``: D^2 seeding [3]_ with the Hamming distance
        (``O(n k)``, better on well-separated data, slow for big vocabularies).
    random_state : int or None, default 0

    Attributes
    ----------
    centers_ : (n_words, nbytes) uint8
        Packed binary centres (``np.packbits`` order, most significant bit first).
    n_iter_ : int
        Iterations run by the best initialisation.
    objective_ : float
        Mean Hamming distance of the training descriptors to their centre.
    meta_ : dict
        Free, JSON-serialisable metadata saved with the vocabulary.

    Notes
    -----
    A tie in the majority vote (exactly half the members have the bit set)
    gives 0. Empty clusters are re-seeded with random training descriptors.

    References
    ----------
    .. [2] C. Grana, D. Borghesani, M. Manfredi and R. Cucchiara, "A fast
       approach for integrating ORB descriptors in the bag of words model",
       Proc. SPIE 8667, 2013.
    .. [3] D. Arthur and S. Vassilvitskii, "k-means++: the advantages of careful
       seeding", SODA 2007.

    Examples
    --------
    >>> x = np.array([[0b11110000], [0b11001100], [0b10101010]], dtype=np.uint8)
    >>> bin(int(HammingVocabulary(n_words=1).fit(x).centers_[0, 0]))
    '0b11101000'
    """

    binary = True
    kind = "hamming"

    def __init__(
        self,
        n_words: int = 1000,
        *,
        niter: int = 10,
        n_init: int = 1,
        init: str = "random",
        random_state: int | None = 0,
    ) -> None:
        self.n_words = n_words
        self.niter = niter
        self.n_init = n_init
        self.init = init
        self.random_state = random_state

    @property
    def n_bits(self) -> int:
        """Bits per descriptor (``8 * dim``)."""
        return 8 * self.dim

    @staticmethod
    def _as_binary(descriptors: Any) -> NDArray[np.uint8]:
        x = np.asarray(descriptors)
        if x.dtype != np.uint8:
            raise TypeError(
                f"binary descriptors must be uint8 bytes (ORB/AKAZE/BRISK), got {x.dtype}; "
                "for float descriptors (SIFT) use KMeansVocabulary"
            )
        return x

    def _prepare(self, descriptors: Any) -> NDArray[np.uint8]:
        x = self._as_binary(descriptors)
        x = self._check_shape(x)
        return np.ascontiguousarray(x, dtype=np.uint8)

    def _build_index(self) -> Any:
        return _binary_index(self.centers_)

    def fit(self, descriptors: NDArray[np.uint8], y: Any = None) -> HammingVocabulary:
        """Cluster binary descriptors with k-majority.

        Parameters
        ----------
        descriptors : (n, nbytes) uint8
        y : ignored

        Returns
        -------
        self

        Raises
        ------
        ValueError
            When ``n < n_words``.
        TypeError
            When the descriptors are not ``uint8``.
        """
        _check_params(self.n_words, self.niter, self.n_init, self.init)
        x = self._as_binary(descriptors)
        if x.ndim != 2 or x.shape[1] < 1:
            raise ValueError(f"descriptors must be a 2-D (n, nbytes) array, got shape {x.shape}")
        x = np.ascontiguousarray(x)
        k, n = int(self.n_words), len(x)
        if n < k:
            raise _too_few(n, k, "descriptors")
        rng = np.random.default_rng(self.random_state)
        best: tuple[float, NDArray[np.uint8], int] | None = None
        for run in range(int(self.n_init)):
            centers, n_iter, obj = self._fit_once(x, k, rng)
            logger.debug("k-majority run %d: %d iterations, mean Hamming %.3f", run, n_iter, obj)
            if best is None or obj < best[0]:
                best = (obj, centers, n_iter)
        assert best is not None
        self.objective_, self.centers_, self.n_iter_ = best
        self.meta_ = getattr(self, "meta_", None) or {}
        logger.info(
            "k-majority vocabulary: %d words from %d descriptors of %d bits, %d iterations",
            k,
            n,
            8 * x.shape[1],
            self.n_iter_,
        )
        return self

    def _init_centers(
        self, x: NDArray[np.uint8], k: int, rng: np.random.Generator
    ) -> NDArray[np.uint8]:
        if self.init == "k-means++":
            return _kmeanspp_binary(x, k, rng)
        # distinct descriptors, uniformly: first occurrences of a random permutation
        order = rng.permutation(len(x))
        rows = np.ascontiguousarray(x[order]).view(np.dtype((np.void, x.shape[1])))[:, 0]
        _, first = np.unique(rows, return_index=True)
        if len(first) >= k:
            chosen = order[np.sort(first)[:k]]
        else:
            logger.warning(
                "only %d distinct descriptors for %d words: some words will repeat", len(first), k
            )
            extra = rng.choice(len(x), size=k - len(first), replace=False)
            chosen = np.concatenate([order[np.sort(first)], extra])
        return x[chosen].copy()

    def _fit_once(
        self, x: NDArray[np.uint8], k: int, rng: np.random.Generator
    ) -> tuple[NDArray[np.uint8], int, float]:
        n = len(x)
        centers = self._init_centers(x, k, rng)
        labels_prev: NDArray[np.int64] | None = None
        n_iter = 0
        for it in range(1, int(self.niter) + 1):
            n_iter = it
            _, labels2d = _binary_index(centers).search(x, 1)
            labels = labels2d[:, 0]
            if labels_prev is not None and np.array_equal(labels, labels_prev):
                break  # converged: the centres are already the majority of these members
            centers, sizes = majority_of_packed(x, labels, k)
            empty = np.flatnonzero(sizes == 0)
            if len(empty):
                centers[empty] = x[rng.choice(n, size=len(empty), replace=n < len(empty))]
                logger.debug("k-majority: re-seeded %d empty clusters", len(empty))
            labels_prev = labels
        dist, _ = _binary_index(centers).search(x, 1)
        return centers, n_iter, float(dist.astype(np.float64).mean())
