"""Approximate assignment of descriptors to large vocabularies (20k to 1M visual words).

Exact assignment to ``k`` words costs ``O(k d)`` per descriptor: fine for 1,000 words,
too slow for the 20k-1M words that make BoVW discriminative [1]_ [2]_. Philbin et al.
used a forest of randomised k-d trees over the centres (approximate k-means, AKM) [1]_;
here an approximate Faiss index over the centres plays that part: an HNSW graph [3]_
(default; no training, best speed/accuracy) or an inverted file (IVF) trained on the
centres themselves. Binary vocabularies (uint8 packed bits, k-majority centres) use
Faiss's binary HNSW / IVF with Hamming distance.

The result has the conventions of :meth:`KMeansVocabulary.assign_multi
<cvretrieval.features.vocabulary.KMeansVocabulary.assign_multi>`: word ids and squared L2
(or Hamming) distances, nearest first.

References
----------
.. [1] J. Philbin, O. Chum, M. Isard, J. Sivic, A. Zisserman, "Object retrieval with large
       vocabularies and fast spatial matching", CVPR 2007.
.. [2] D. Nistér, H. Stewénius, "Scalable recognition with a vocabulary tree", CVPR 2006.
.. [3] Y. A. Malkov, D. A. Yashunin, "Efficient and robust approximate nearest neighbor
       search using hierarchical navigable small world graphs", IEEE TPAMI 2020.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from numpy.typing import NDArray

from .._json import read_json_manifest, write_json_atomic
from ..errors import BundleError, NotFittedError

__all__ = ["ApproximateAssigner"]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
METHODS = ("hnsw", "ivf", "flat")
INDEX_FILE = "assigner.faiss"
META_FILE = "assigner.json"


class ApproximateAssigner:
    """Nearest visual word(s) of descriptors through an approximate Faiss index of the centres.

    Parameters
    ----------
    centers : (n_words, D) ndarray
        float32 centres (k-means, L2) or uint8 packed-bit centres (k-majority, Hamming),
        e.g. ``vocabulary.centers_``.
    method : {"hnsw", "ivf", "flat"}, default "hnsw"
        ``"flat"`` is exact (the reference).
    M : int, default 32
        HNSW neighbours per node.
    ef_construction : int, default 40
        HNSW build-time beam width.
    ef_search : int, default 64
        HNSW search beam width (higher: more exact, slower).
    nlist : int or None, default None
        IVF lists; ``None``: ``4 * sqrt(n_words)``, at most ``n_words // 39``.
    nprobe : int, default 16
        IVF lists visited per descriptor.
    random_state : int, default 0
        Seed of the IVF k-means.

    Attributes
    ----------
    index_ : faiss.Index or faiss.IndexBinary
        Built by :meth:`fit` (called by :meth:`assign` when needed).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> centers = rng.standard_normal((2000, 16)).astype(np.float32)
    >>> a = ApproximateAssigner(centers, "hnsw").fit()
    >>> x = centers[:5] + 0.01
    >>> a.assign(x).tolist()
    [0, 1, 2, 3, 4]
    """

    def __init__(
        self,
        centers: NDArray[Any],
        method: str = "hnsw",
        *,
        M: int = 32,  # noqa: N803 - Faiss's name
        ef_construction: int = 40,
        ef_search: int = 64,
        nlist: int | None = None,
        nprobe: int = 16,
        random_state: int = 0,
    ) -> None:
        self.centers = centers
        self.method = method
        self.M = M
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        self.nlist = nlist
        self.nprobe = nprobe
        self.random_state = random_state
        self.index_: Any = None

    @classmethod
    def from_vocabulary(
        cls, vocabulary: Any, method: str = "hnsw", **kw: Any
    ) -> ApproximateAssigner:
        """An assigner over a fitted ``KMeansVocabulary`` / ``HammingVocabulary``."""
        return cls(vocabulary.centers_, method, **kw)

    # ------------------------------------------------------------------ properties
    def _centers(self) -> NDArray[Any]:
        c = np.asarray(self.centers)
        if c.ndim != 2 or c.shape[0] < 1 or c.shape[1] < 1:
            raise ValueError(f"centers must be a non-empty (n_words, D) array, got shape {c.shape}")
        if c.dtype == np.uint8:
            return np.ascontiguousarray(c)
        return np.ascontiguousarray(c, dtype=np.float32)

    @property
    def n_words(self) -> int:
        return int(np.asarray(self.centers).shape[0])

    @property
    def binary(self) -> bool:
        """True for uint8 packed-bit centres (Hamming distance)."""
        return np.asarray(self.centers).dtype == np.uint8

    def get_params(self) -> dict[str, Any]:
        """The parameters except ``centers`` (JSON-serialisable)."""
        return {
            "method": self.method,
            "M": int(self.M),
            "ef_construction": int(self.ef_construction),
            "ef_search": int(self.ef_search),
            "nlist": self.nlist,
            "nprobe": int(self.nprobe),
            "random_state": int(self.random_state),
        }

    def _nlist(self, k: int) -> int:
        if self.nlist is not None:
            nlist = int(self.nlist)
            if not 1 <= nlist <= k:
                raise ValueError(f"nlist must be between 1 and n_words={k}, got {self.nlist}")
            return nlist
        return max(1, min(int(4 * math.sqrt(k)), k // 39))

    # ------------------------------------------------------------------ building
    def fit(self, X: Any = None, y: Any = None) -> ApproximateAssigner:  # noqa: N803
        """Build the index over the centres (``X``, ``y`` ignored); returns ``self``."""
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        for name in ("M", "ef_construction", "ef_search", "nprobe"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        c = self._centers()
        k, d = c.shape
        if self.binary:
            index = self._build_binary(c, k, d * 8)
        else:
            index = self._build_float(c, k, d)
        self.index_ = index
        self._apply_search_params()
        logger.info("%s assigner over %d words of dim %d", self.method, k, d)
        return self

    def _build_float(self, c: NDArray[np.float32], k: int, d: int) -> Any:
        index: Any
        if self.method == "flat":
            index = faiss.IndexFlatL2(d)
        elif self.method == "hnsw":
            index = faiss.IndexHNSWFlat(d, int(self.M))
            index.hnsw.efConstruction = int(self.ef_construction)
        else:
            nlist = self._nlist(k)
            index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, nlist)
            index.cp.seed = int(self.random_state)
            index.train(c)
        index.add(c)
        return index

    def _build_binary(self, c: NDArray[np.uint8], k: int, bits: int) -> Any:
        index: Any
        if self.method == "flat":
            index = faiss.IndexBinaryFlat(bits)
        elif self.method == "hnsw":
            index = faiss.IndexBinaryHNSW(bits, int(self.M))
            index.hnsw.efConstruction = int(self.ef_construction)
        else:
            nlist = self._nlist(k)
            index = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(bits), bits, nlist)
            index.cp.seed = int(self.random_state)
            index.train(c)
        index.add(c)
        return index

    def _apply_search_params(self) -> None:
        if self.method == "hnsw":
            self.index_.hnsw.efSearch = int(self.ef_search)
        elif self.method == "ivf":
            self.index_.nprobe = min(int(self.nprobe), int(self.index_.nlist))

    # ------------------------------------------------------------------ assignment
    def _prepare(self, x: Any) -> NDArray[Any]:
        a = np.asarray(x)
        d = np.asarray(self.centers).shape[1]
        if a.ndim != 2 or (a.shape[0] and a.shape[1] != d):
            raise ValueError(
                f"descriptors must have shape (n, {d}) like the centres, got {a.shape}"
            )
        if self.binary:
            if a.dtype != np.uint8:
                raise ValueError(f"binary centres need uint8 packed-bit descriptors, got {a.dtype}")
            return np.ascontiguousarray(a)
        return np.ascontiguousarray(a, dtype=np.float32)

    def assign_multi(
        self, x: NDArray[Any], m: int, *, batch_size: int = 65536
    ) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """The ``m`` (approximately) nearest words of each descriptor.

        Parameters
        ----------
        x : (n, D) ndarray
            Descriptors of the centres' kind (float, or uint8 packed bits).
        m : int
            Words per descriptor (multiple assignment), ``1 <= m <= n_words``.
        batch_size : int, default 65536

        Returns
        -------
        I : (n, m) int64 ndarray
            Word ids, nearest first (``-1`` if the approximate search found fewer).
        D : (n, m) float32 ndarray
            Squared L2 distances (float centres) or Hamming distances in bits.
        """
        m = int(m)
        if not 1 <= m <= self.n_words:
            raise ValueError(f"m must be between 1 and n_words={self.n_words}, got {m}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if self.index_ is None:
            self.fit()
        x = self._prepare(x)
        n = x.shape[0]
        ids = np.empty((n, m), np.int64)
        dist = np.empty((n, m), np.float32)
        if self.method == "hnsw":
            self.index_.hnsw.efSearch = max(int(self.ef_search), m)
        for lo in range(0, n, int(batch_size)):
            D, I = self.index_.search(x[lo : lo + batch_size], m)  # noqa: E741
            ids[lo : lo + batch_size] = I
            dist[lo : lo + batch_size] = D
        return ids, dist

    def assign(self, x: NDArray[Any], *, batch_size: int = 65536) -> NDArray[np.int64]:
        """Nearest word of each descriptor, ``(n,)`` int64 (see :meth:`assign_multi`)."""
        return self.assign_multi(x, 1, batch_size=batch_size)[0][:, 0]

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write ``assigner.faiss`` (the built index) and ``assigner.json`` into ``directory``.

        The centres are not written (they belong to the vocabulary); :meth:`load` takes
        them again and checks they match.
        """
        if self.index_ is None:
            raise NotFittedError("the assigner has no index yet: call fit() before save()")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        c = np.asarray(self.centers)
        doc = {
            "format_version": FORMAT_VERSION,
            "n_words": int(c.shape[0]),
            "dim": int(c.shape[1]),
            "binary": bool(self.binary),
            "params": self.get_params(),
        }
        tmp = directory / f".{INDEX_FILE}.tmp-{os.getpid()}"
        if self.binary:
            faiss.write_index_binary(self.index_, str(tmp))
        else:
            faiss.write_index(self.index_, str(tmp))
        os.replace(tmp, directory / INDEX_FILE)
        write_json_atomic(directory / META_FILE, doc)

    @classmethod
    def load(cls, directory: str | os.PathLike[str], centers: NDArray[Any]) -> ApproximateAssigner:
        """Read an assigner written by :meth:`save` for these ``centers``.

        Raises
        ------
        BundleError
            Missing or unreadable files, or an index built for other centres
            (different count, width or kind).
        """
        directory = Path(directory)
        meta_path, index_path = directory / META_FILE, directory / INDEX_FILE
        if not meta_path.is_file() or not index_path.is_file():
            raise BundleError(
                f"{directory} holds no assigner ({META_FILE} and {INDEX_FILE}); "
                "build one with ApproximateAssigner(centers).fit().save(dir)"
            )
        doc = read_json_manifest(meta_path, format_version=FORMAT_VERSION)
        c = np.asarray(centers)
        want = (doc.get("n_words"), doc.get("dim"), doc.get("binary"))
        got = (int(c.shape[0]), int(c.shape[1]), c.dtype == np.uint8)
        if want != got:
            raise BundleError(
                f"{directory}: the assigner was built for (n_words, dim, binary) = "
                f"{want} but the centres given are {got}"
            )
        obj = cls(c, **doc["params"])
        try:
            reader = faiss.read_index_binary if obj.binary else faiss.read_index
            obj.index_ = reader(str(index_path))
        except RuntimeError as exc:
            raise BundleError(f"{index_path} cannot be read ({exc})") from None
        if obj.index_.ntotal != got[0]:
            raise BundleError(f"{index_path} holds {obj.index_.ntotal} centres, expected {got[0]}")
        obj._apply_search_params()
        return obj
