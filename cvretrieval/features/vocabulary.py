"""Visual vocabularies: quantising local descriptors into visual words.

Two estimators share one interface (``fit``, ``assign``, ``assign_multi``,
``distortion``, ``centers_``):

* :class:`KMeansVocabulary` clusters float descriptors (SIFT, RootSIFT) with
  Faiss k-means in Euclidean space;
* :class:`HammingVocabulary` clusters binary descriptors (ORB, AKAZE, BRISK,
  packed as ``uint8`` bytes) with k-majority in Hamming space, so the centres
  stay binary and assignment is a Hamming nearest-neighbour search.

:func:`save_vocabulary` / :func:`load_vocabulary` store a fitted vocabulary as
a folder holding ``centers.npy`` and ``vocabulary.json`` (no pickle).

References
----------
.. [1] J. Sivic and A. Zisserman, "Video Google: A text retrieval approach to
   object matching in videos", ICCV 2003.
.. [2] C. Grana, D. Borghesani, M. Manfredi and R. Cucchiara, "A fast approach
   for integrating ORB descriptors in the bag of words model", Proc. SPIE 8667,
   Multimedia Content and Mobile Devices, 2013.
.. [3] D. Arthur and S. Vassilvitskii, "k-means++: the advantages of careful
   seeding", SODA 2007.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from numpy.typing import NDArray

from cvretrieval._json import atomic_write, read_json_manifest
from cvretrieval._params import ParamsMixin
from cvretrieval.errors import BundleError, NotFittedError

__all__ = [
    "HammingVocabulary",
    "KMeansVocabulary",
    "load_vocabulary",
    "make_vocabulary",
    "nearest_centers",
    "sample_descriptors",
    "save_vocabulary",
]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
CENTERS_FILE = "centers.npy"
META_FILE = "vocabulary.json"
_BUILD_HINT = "build one with `cvret vocab build`"
_INITS = ("random", "k-means++")


# --------------------------------------------------------------------------- sampling


def sample_descriptors(
    descriptor_sets: Sequence[NDArray[Any] | None],
    max_descriptors: int = 100_000,
    random_state: int | None = 0,
) -> NDArray[Any]:
    """Sample descriptors uniformly, without replacement, across many images.

    Every descriptor of every set has the same chance of being drawn, so an
    image with many key points contributes proportionally more; the sets are
    never concatenated whole, only the drawn rows are copied.

    Parameters
    ----------
    descriptor_sets : sequence of (N_i, D) ndarray
        The descriptors of each image, all with the same ``D`` and dtype.
        Empty sets, ``(0, D)`` arrays (and ``None``) are allowed and skipped.
    max_descriptors : int, default 100_000
        At most this many rows are returned. When the sets hold fewer, all
        of them are returned (in input order).
    random_state : int or None, default 0
        Seed of the sampling; ``None`` draws a fresh one.

    Returns
    -------
    sample : (min(max_descriptors, sum N_i), D) ndarray
        Same dtype as the input, rows in input order (set by set).

    Raises
    ------
    ValueError
        When every set is empty, when ``max_descriptors < 1``, or when the sets
        disagree on width or dtype.

    Examples
    --------
    >>> a = np.zeros((5, 2), np.uint8); b = np.ones((0, 2), np.uint8)
    >>> sample_descriptors([a, b], max_descriptors=3).shape
    (3, 2)
    """
    if max_descriptors < 1:
        raise ValueError(f"max_descriptors must be at least 1, got {max_descriptors}")
    sets: list[NDArray[Any]] = []
    width: int | None = None
    dtype: np.dtype | None = None
    for i, s in enumerate(descriptor_sets):
        if s is None:
            continue
        s = np.asarray(s)
        if s.size == 0:
            continue
        if s.ndim != 2:
            raise ValueError(f"descriptor set {i} must be 2-D (N, D), got shape {s.shape}")
        if width is None:
            width, dtype = s.shape[1], s.dtype
        elif s.shape[1] != width or s.dtype != dtype:
            raise ValueError(
                f"descriptor set {i} has shape {s.shape} and dtype {s.dtype}, but earlier sets "
                f"are (N, {width}) {dtype}; mixing detectors in one vocabulary is not supported"
            )
        sets.append(s)
    if not sets:
        raise ValueError(
            "no descriptors to sample: all descriptor sets are empty, i.e. the images "
            "produced no key points (check the images, or use a detector finding more features)"
        )
    assert width is not None and dtype is not None  # set with the first non-empty set
    counts = np.array([len(s) for s in sets], dtype=np.int64)
    total = int(counts.sum())
    if total <= max_descriptors:
        return np.concatenate(sets, axis=0)
    rng = np.random.default_rng(random_state)
    picked = np.sort(rng.choice(total, size=max_descriptors, replace=False))
    offsets = np.concatenate([[0], np.cumsum(counts)])
    which = np.searchsorted(offsets, picked, side="right") - 1
    out = np.empty((max_descriptors, width), dtype=dtype)
    bounds = np.searchsorted(which, np.arange(len(sets) + 1))
    for j, s in enumerate(sets):
        lo, hi = bounds[j], bounds[j + 1]
        if hi > lo:
            out[lo:hi] = s[picked[lo:hi] - offsets[j]]
    return out


# --------------------------------------------------------------------------- helpers


def _check_params(n_words: int, niter: int, n_init: int, init: str) -> None:
    if int(n_words) < 1:
        raise ValueError(f"n_words must be at least 1, got {n_words}")
    if int(niter) < 1:
        raise ValueError(f"niter must be at least 1, got {niter}")
    if int(n_init) < 1:
        raise ValueError(f"n_init must be at least 1, got {n_init}")
    if init not in _INITS:
        raise ValueError(f"init must be one of {_INITS}, got {init!r}")


def _too_few(n: int, n_words: int, what: str) -> ValueError:
    return ValueError(
        f"cannot build a vocabulary of {n_words} words from {n} {what}: "
        f"use fewer words (n_words <= {n}) or more images"
    )


def _seed(random_state: int | None) -> int:
    if random_state is None:
        return int(np.random.default_rng().integers(2**31 - 1))
    return int(random_state) % (2**31 - 1)


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


def _majority_update(
    bits: NDArray[np.uint8], labels: NDArray[np.int64], n_clusters: int
) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """k-majority centre update [2].

    Parameters
    ----------
    bits : (n, nbits) uint8
        Unpacked descriptor bits (``np.unpackbits(x, axis=1)``), values 0/1.
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
    import scipy.sparse as sp

    n = len(labels)
    one_hot = sp.csr_matrix(
        (np.ones(n, dtype=np.int32), (labels, np.arange(n))), shape=(n_clusters, n)
    )
    counts = np.asarray(one_hot @ bits)  # (k, nbits) int32 per-cluster bit counts
    sizes = np.bincount(labels, minlength=n_clusters).astype(np.int64)
    majority = (2 * counts > sizes[:, None]).astype(np.uint8)
    return np.packbits(majority, axis=1), sizes


class _VocabularyBase(ParamsMixin):
    """Shared fitted-state checks and batched assignment."""

    binary: bool = False
    kind: str = ""
    # set by fit() or load_vocabulary(); absent (not None) until then
    centers_: NDArray[Any]
    meta_: dict[str, Any]

    def _check_shape(self, x: NDArray[Any]) -> NDArray[Any]:
        """``(n, dim)`` descriptors; an empty 1-D array becomes ``(0, dim)``."""
        if x.ndim == 1 and x.size == 0:
            x = x.reshape(0, self.dim)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(
                f"descriptors must have shape (n, {self.dim}) to match the vocabulary, "
                f"got {x.shape}"
            )
        return x

    def _check_fitted(self) -> None:
        if getattr(self, "centers_", None) is None:
            raise NotFittedError(
                f"this {type(self).__name__} is not fitted yet: call fit(descriptors) "
                "or load one with load_vocabulary(directory) first"
            )

    @property
    def dim(self) -> int:
        """Width of a descriptor (floats for k-means, bytes for Hamming)."""
        self._check_fitted()
        return int(self.centers_.shape[1])

    def _derived(self, name: str, build: Callable[[], Any]) -> Any:
        """A structure derived from ``centers_`` (the Faiss index, the GEMM terms), built on
        first use and rebuilt when ``centers_`` is replaced (a new fit or load)."""
        cache = self.__dict__.setdefault("_derived_cache", {})
        if cache.get("centers") is not self.centers_:
            cache.clear()
            cache["centers"] = self.centers_
        if name not in cache:
            cache[name] = build()
        return cache[name]

    def _get_index(self) -> Any:
        return self._derived("index", self._build_index)

    def __getstate__(self) -> dict[str, Any]:
        # derived structures are rebuilt on demand: keep them out of copies. A copy of
        # __dict__: object.__getstate__ is Python >= 3.11 only and returns the live one
        state = self.__dict__.copy()
        state.pop("_derived_cache", None)
        return state

    def _build_index(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _prepare(self, descriptors: Any) -> NDArray[Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def assign_multi(
        self, descriptors: NDArray[Any], m: int, *, batch_size: int = 65536
    ) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """The ``m`` nearest words of each descriptor (for soft / multiple assignment).

        Parameters
        ----------
        descriptors : (n, D) ndarray
        m : int
            Words per descriptor, ``1 <= m <= n_words``.
        batch_size : int, default 65536
            Descriptors searched per Faiss call (bounds memory).

        Returns
        -------
        I : (n, m) int64
            Word ids, nearest first.
        D : (n, m) float32
            Their distances: squared L2 for k-means, Hamming (bits) for Hamming.
        """
        self._check_fitted()
        m = int(m)
        if not 1 <= m <= len(self.centers_):
            raise ValueError(f"m must be between 1 and n_words={len(self.centers_)}, got {m}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        x = self._prepare(descriptors)
        n = len(x)
        ids = np.empty((n, m), dtype=np.int64)
        dist = np.empty((n, m), dtype=np.float32)
        if n == 0:
            return ids, dist
        index = self._get_index()
        for lo in range(0, n, batch_size):
            d_b, i_b = index.search(x[lo : lo + batch_size], m)
            ids[lo : lo + batch_size] = i_b
            dist[lo : lo + batch_size] = d_b
        return ids, dist

    def assign(self, descriptors: NDArray[Any], *, batch_size: int = 65536) -> NDArray[np.int64]:
        """Nearest visual word of each descriptor.

        Parameters
        ----------
        descriptors : (n, D) ndarray
            ``n`` may be 0 (an image without key points).
        batch_size : int, default 65536

        Returns
        -------
        words : (n,) int64
            Word ids in ``[0, n_words)``. Between equidistant words the choice is
            Faiss's (in practice the lowest id for exact ties of the Hamming
            search; float searches are subject to rounding).
        """
        ids, _ = self.assign_multi(descriptors, 1, batch_size=batch_size)
        return ids[:, 0]

    def distortion(self, descriptors: NDArray[Any], *, batch_size: int = 65536) -> float:
        """Mean distance of descriptors to their assigned word (the k-means objective / n).

        Squared L2 for :class:`KMeansVocabulary`, Hamming bits for
        :class:`HammingVocabulary`. Measure it on held-out descriptors to
        compare vocabularies.

        Returns
        -------
        float

        Raises
        ------
        ValueError
            On an empty descriptor array.
        """
        _, dist = self.assign_multi(descriptors, 1, batch_size=batch_size)
        if len(dist) == 0:
            raise ValueError("distortion needs at least one descriptor, got 0")
        return float(dist[:, 0].astype(np.float64).mean())

    objective = distortion


# --------------------------------------------------------------------------- k-means


def center_terms(centers: NDArray[Any]) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """``(centers.T, ||c||^2 / 2)`` as float32: the per-vocabulary part of
    :func:`nearest_centers`."""
    c = np.asarray(centers, dtype=np.float32)
    return np.ascontiguousarray(c.T), 0.5 * np.einsum("ij,ij->i", c, c, dtype=np.float32)


def nearest_centers(
    x: NDArray[np.float32],
    centers: NDArray[np.float32],
    *,
    max_rows: int = 65536,
    terms: tuple[NDArray[np.float32], NDArray[np.float32]] | None = None,
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Nearest centre of each row of ``x`` (squared L2), exhaustively, with one GEMM per chunk.

    ``argmin_j ||x - c_j||^2 = argmax_j (x . c_j - ||c_j||^2 / 2)``. For one image's few
    hundred descriptors against 1k-10k centres this is about three times faster than a
    Faiss ``IndexFlatL2`` search with ``k=1`` on one thread (``benchmarks/speed.py``,
    part ``assign``), and it gives the same words up to floating-point ties.

    Parameters
    ----------
    x : (n, D) float32
    centers : (k, D) float32
    max_rows : int, default 65536
        Rows per chunk; the chunk's score matrix is also capped at about 64 MB.
    terms : tuple, optional
        :func:`center_terms` of ``centers``, when the caller keeps them between calls.

    Returns
    -------
    ids : (n,) int64
    dist : (n,) float32
        Squared L2 distance to the chosen centre (clipped at 0 against rounding).

    Examples
    --------
    >>> c = np.array([[0, 0], [10, 0]], np.float32)
    >>> ids, d = nearest_centers(np.array([[9, 1], [1, 0]], np.float32), c)
    >>> ids.tolist(), d.tolist()
    ([1, 0], [2.0, 1.0])
    """
    x = np.asarray(x, dtype=np.float32)
    n, k = len(x), len(centers)
    ids = np.empty(n, dtype=np.int64)
    dist = np.empty(n, dtype=np.float32)
    if n == 0:
        return ids, dist
    ct, half = terms if terms is not None else center_terms(centers)
    step = max(1, min(int(max_rows), (16 << 20) // max(k, 1)))
    for lo in range(0, n, step):
        xb = x[lo : lo + step]
        scores = xb @ ct
        scores -= half
        best = np.argmax(scores, axis=1)
        top = np.take_along_axis(scores, best[:, None], axis=1)[:, 0]
        ids[lo : lo + step] = best
        sq = np.einsum("ij,ij->i", xb, xb, dtype=np.float32)
        dist[lo : lo + step] = np.maximum(sq - 2.0 * top, 0.0)
    return ids, dist


class KMeansVocabulary(_VocabularyBase):
    """Visual vocabulary of float descriptors, learnt with Faiss k-means [1]_.

    Parameters
    ----------
    n_words : int, default 1000
        Number of visual words (clusters).
    niter : int, default 6
        Lloyd iterations. Measured on 100k SIFT descriptors (``benchmarks/speed.py``):
        6 iterations end within 0.6 % of the held-out distortion of 20 at 1k words and
        within 0.01 % at 10k words, in under a third of the time.
    n_init : int, default 1
        Independent runs (Faiss ``nredo``); the lowest objective is kept.
    init : {"random", "k-means++"}, default "random"
        Faiss's uniform random seeding, or k-means++ [3]_ (``O(n k d)``:
        better on small, well-separated data, slow for big vocabularies).
    max_points_per_centroid : int, default 256
        Faiss subsamples the training set to ``n_words * max_points_per_centroid``
        descriptors.
    random_state : int or None, default 0
        Seed of the initialisation and subsampling.
    verbose : bool, default False
        Let Faiss print its per-iteration progress.

    Attributes
    ----------
    centers_ : (n_words, D) float32
        The word centres.
    objective_ : float
        Final training objective (sum of squared distances, as Faiss reports it).
    meta_ : dict
        Free, JSON-serialisable metadata saved with the vocabulary (e.g. the
        detector name); empty after ``fit``, set it as you like.

    References
    ----------
    .. [1] J. Sivic and A. Zisserman, "Video Google: A text retrieval approach
       to object matching in videos", ICCV 2003.
    .. [3] D. Arthur and S. Vassilvitskii, "k-means++: the advantages of careful
       seeding", SODA 2007.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(500, 8)).astype(np.float32)
    >>> voc = KMeansVocabulary(n_words=10).fit(x)
    >>> voc.centers_.shape, voc.assign(x[:3]).dtype
    ((10, 8), dtype('int64'))
    """

    binary = False
    kind = "kmeans"

    def __init__(
        self,
        n_words: int = 1000,
        *,
        niter: int = 6,
        n_init: int = 1,
        init: str = "random",
        max_points_per_centroid: int = 256,
        random_state: int | None = 0,
        verbose: bool = False,
    ) -> None:
        self.n_words = n_words
        self.niter = niter
        self.n_init = n_init
        self.init = init
        self.max_points_per_centroid = max_points_per_centroid
        self.random_state = random_state
        self.verbose = verbose

    def _prepare(self, descriptors: Any) -> NDArray[np.float32]:
        x = np.asarray(descriptors)
        x = self._check_shape(x)
        return np.ascontiguousarray(x, dtype=np.float32)

    def _build_index(self) -> Any:
        index = faiss.IndexFlatL2(self.dim)
        index.add(np.ascontiguousarray(self.centers_, dtype=np.float32))
        return index

    def assign_multi(
        self, descriptors: NDArray[Any], m: int, *, batch_size: int = 65536
    ) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        if int(m) != 1:
            return super().assign_multi(descriptors, m, batch_size=batch_size)
        self._check_fitted()
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        x = self._prepare(descriptors)
        terms = self._derived("terms", lambda: center_terms(self.centers_))
        ids, dist = nearest_centers(x, self.centers_, max_rows=batch_size, terms=terms)
        return ids[:, None], dist[:, None]

    assign_multi.__doc__ = _VocabularyBase.assign_multi.__doc__

    def fit(self, descriptors: NDArray[Any], y: Any = None) -> KMeansVocabulary:
        """Cluster the descriptors into ``n_words`` centres.

        Parameters
        ----------
        descriptors : (n, D) ndarray
            Float descriptors (any real dtype; cast to float32). Use
            :func:`sample_descriptors` to bound ``n``.
        y : ignored

        Returns
        -------
        self

        Raises
        ------
        ValueError
            When ``n < n_words`` or the array is not 2-D / not finite.
        """
        _check_params(self.n_words, self.niter, self.n_init, self.init)
        x = np.asarray(descriptors)
        if x.ndim != 2 or x.shape[1] < 1:
            raise ValueError(f"descriptors must be a 2-D (n, D) array, got shape {x.shape}")
        x = np.ascontiguousarray(x, dtype=np.float32)
        k = int(self.n_words)
        if len(x) < k:
            raise _too_few(len(x), k, "descriptors")
        if not np.isfinite(x).all():
            raise ValueError("descriptors contain NaN or infinity; drop those rows before fit")
        kwargs: dict[str, Any] = dict(
            niter=int(self.niter),
            nredo=int(self.n_init),
            seed=_seed(self.random_state),
            max_points_per_centroid=int(self.max_points_per_centroid),
            min_points_per_centroid=1,  # silence Faiss's stderr warning; we log instead
            verbose=bool(self.verbose),
        )
        if self.init == "k-means++":
            kwargs["init_method"] = faiss.ClusteringInitMethod_KMEANS_PLUS_PLUS
        if len(x) < 39 * k:
            logger.warning(
                "k-means of %d descriptors into %d words: fewer than 39 per word, "
                "the vocabulary may be poor",
                len(x),
                k,
            )
        km = faiss.Kmeans(x.shape[1], k, **kwargs)
        km.train(x)
        self.centers_ = np.ascontiguousarray(km.centroids, dtype=np.float32).reshape(k, -1)
        self.objective_ = float(km.obj[-1]) if km.obj is not None and len(km.obj) else float("nan")
        self.meta_ = getattr(self, "meta_", None) or {}
        logger.info(
            "k-means vocabulary: %d words from %d descriptors of dim %d", k, len(x), x.shape[1]
        )
        return self


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
        bits = np.unpackbits(x, axis=1)
        best: tuple[float, NDArray[np.uint8], int] | None = None
        for run in range(int(self.n_init)):
            centers, n_iter, obj = self._fit_once(x, bits, k, rng)
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
        self, x: NDArray[np.uint8], bits: NDArray[np.uint8], k: int, rng: np.random.Generator
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
            centers, sizes = _majority_update(bits, labels, k)
            empty = np.flatnonzero(sizes == 0)
            if len(empty):
                centers[empty] = x[rng.choice(n, size=len(empty), replace=n < len(empty))]
                logger.debug("k-majority: re-seeded %d empty clusters", len(empty))
            labels_prev = labels
        dist, _ = _binary_index(centers).search(x, 1)
        return centers, n_iter, float(dist.astype(np.float64).mean())


# --------------------------------------------------------------------------- factory & I/O


def make_vocabulary(
    n_words: int, *, binary: bool, random_state: int | None = 0, **kw: Any
) -> KMeansVocabulary | HammingVocabulary:
    """A vocabulary suited to the descriptor type.

    Parameters
    ----------
    n_words : int
    binary : bool
        ``True`` for ``uint8`` binary descriptors (ORB, AKAZE, BRISK) ->
        :class:`HammingVocabulary`; ``False`` for float ones -> :class:`KMeansVocabulary`.
    random_state : int or None, default 0
    **kw
        Other parameters of the chosen class (``niter``, ``n_init``, ``init``...).
    """
    cls = HammingVocabulary if binary else KMeansVocabulary
    return cls(n_words=n_words, random_state=random_state, **kw)


_KINDS: dict[str, type[KMeansVocabulary] | type[HammingVocabulary]] = {
    "kmeans": KMeansVocabulary,
    "hamming": HammingVocabulary,
}


def save_vocabulary(
    vocab: KMeansVocabulary | HammingVocabulary, directory: str | os.PathLike
) -> None:
    """Write a fitted vocabulary to ``directory`` (created if needed).

    Writes ``centers.npy`` (the centres, no pickle) then ``vocabulary.json``
    ``{"format_version": 1, "kind": "kmeans"|"hamming", "n_words", "dim",
    "dtype", "params": {...}, "meta": {...}}``. Each file is replaced
    atomically and the JSON is written last (an old JSON is removed first), so
    an interrupted save never leaves a JSON describing other centres.

    Parameters
    ----------
    vocab : KMeansVocabulary or HammingVocabulary
        Fitted. ``vocab.meta_`` (a JSON-serialisable dict) is stored as ``meta``.
    directory : path
    """
    vocab._check_fitted()
    meta = getattr(vocab, "meta_", None) or {}
    doc = {
        "format_version": FORMAT_VERSION,
        "kind": vocab.kind,
        "n_words": int(vocab.centers_.shape[0]),
        "dim": int(vocab.centers_.shape[1]),
        "dtype": str(vocab.centers_.dtype),
        "params": vocab.get_params(),
        "meta": meta,
    }
    data = (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("utf-8")  # fail early
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / META_FILE
    if json_path.exists():
        json_path.unlink()
    centers = np.ascontiguousarray(vocab.centers_)
    atomic_write(
        directory / CENTERS_FILE, lambda f: np.save(f, centers, allow_pickle=False), fsync=True
    )
    atomic_write(json_path, lambda f: f.write(data), fsync=True)
    logger.info("saved %s vocabulary (%d words) to %s", vocab.kind, doc["n_words"], directory)


def load_vocabulary(directory: str | os.PathLike) -> KMeansVocabulary | HammingVocabulary:
    """Read a vocabulary written by :func:`save_vocabulary`.

    Parameters
    ----------
    directory : path

    Returns
    -------
    KMeansVocabulary or HammingVocabulary
        Fitted, with ``meta_`` restored.

    Raises
    ------
    BundleError
        Missing folder or files, unreadable JSON, unknown ``format_version`` or
        kind, or centres whose shape/dtype disagree with the JSON.
    """
    directory = Path(directory)
    json_path, npy_path = directory / META_FILE, directory / CENTERS_FILE

    def fail(what: str) -> BundleError:
        return BundleError(f"{directory}: {what}; {_BUILD_HINT}")

    if not directory.is_dir():
        raise fail("no vocabulary folder here")
    if not json_path.is_file():
        raise fail(f"missing {META_FILE} (not a vocabulary folder, or an interrupted save)")
    if not npy_path.is_file():
        raise fail(f"missing {CENTERS_FILE}")
    doc = read_json_manifest(json_path, format_version=FORMAT_VERSION, hint=_BUILD_HINT)
    kind = doc.get("kind")
    if kind not in _KINDS:
        raise fail(f"unknown vocabulary kind {kind!r} (expected one of {sorted(_KINDS)})")
    params = doc.get("params", {})
    meta = doc.get("meta", {})
    if not isinstance(params, dict) or not isinstance(meta, dict):
        raise fail("'params' and 'meta' must be JSON objects")
    try:
        vocab = _KINDS[kind](**params)
    except TypeError as exc:
        raise fail(f"unexpected vocabulary parameters ({exc})") from exc
    try:
        centers = np.load(npy_path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise fail(f"{CENTERS_FILE} cannot be read ({exc})") from exc
    expected = (doc.get("n_words"), doc.get("dim"))
    if centers.ndim != 2 or tuple(centers.shape) != expected:
        raise fail(
            f"{CENTERS_FILE} has shape {centers.shape} but {META_FILE} says "
            f"(n_words, dim) = {expected}"
        )
    want_dtype = "uint8" if kind == "hamming" else "float32"
    if str(centers.dtype) != doc.get("dtype") or str(centers.dtype) != want_dtype:
        raise fail(
            f"{CENTERS_FILE} has dtype {centers.dtype} but a {kind} vocabulary needs "
            f"{want_dtype} (json says {doc.get('dtype')!r})"
        )
    if params.get("n_words", expected[0]) != expected[0]:
        raise fail(f"params.n_words={params.get('n_words')} disagrees with n_words={expected[0]}")
    vocab.centers_ = np.ascontiguousarray(centers)
    vocab.meta_ = meta
    return vocab
