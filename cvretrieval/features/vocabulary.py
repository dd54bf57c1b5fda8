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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from numpy.typing import NDArray

from cvretrieval._json import atomic_write, read_json_manifest
from cvretrieval.errors import BundleError

from ._vocabbase import (  # noqa: F401 - re-exported
    _check_params,
    _seed,
    _too_few,
    _VocabularyBase,
    center_terms,
    nearest_centers,
)
from .kmajority import (  # noqa: F401 - re-exported
    _POPCOUNT,
    HammingVocabulary,
    _majority_update,
)

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
