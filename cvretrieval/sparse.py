"""An exact inverted-file index for sparse Bag-of-Visual-Words vectors (large vocabularies).

With 20k-1M visual words a BoVW vector has a few hundred non-zeros: a dense
``(n_images, n_words)`` float32 matrix would take 4 * n_words bytes per image (800 kB for
200k words), the sparse one about 8 bytes per non-zero. :class:`SparseIndex` keeps the
database as a SciPy CSR matrix ``X`` (images x words) and its transpose ``X.T`` in CSR
form, which is exactly the *inverted file* of text retrieval [1]_ [2]_: row ``w`` lists
the images that contain word ``w`` and their weights. A query's scores are the sparse
product ``q @ X.T``, which only touches the posting lists of the query's words, and the
top ``k`` come from ``argpartition``: exact cosine similarity (the vectors are
L2-normalised TF-IDF), ranked as Faiss ``IndexFlatIP`` would rank their dense versions.

:func:`power_normalize` is the burstiness remedy of Jégou et al. [3]_ (a power law on the
vector components, then L2 again); :mod:`cvretrieval.features.bovw`'s ``sublinear`` tf
(``1 + ln tf``) is the other classical one.

References
----------
.. [1] J. Sivic, A. Zisserman, "Video Google: a text retrieval approach to object matching
       in videos", ICCV 2003.
.. [2] J. Zobel, A. Moffat, "Inverted files for text search engines", ACM Computing
       Surveys 38(2), 2006.
.. [3] H. Jégou, M. Douze, C. Schmid, "On the burstiness of visual elements", CVPR 2009.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from ._json import atomic_write, check_format_version, read_json_manifest, write_json_atomic
from .errors import BundleError

__all__ = ["SparseIndex", "power_normalize"]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MATRIX_FILE = "sparse_vectors.npz"
META_FILE = "sparseindex.json"
IDS_FILE = "sparse_ids.npy"
#: ``search`` returns ``min(k, max(ntotal, MAX_PADDED_K))`` columns (as ``Index.search``).
MAX_PADDED_K = 1024


def _as_csr(x: Any, n_words: int | None, name: str) -> sp.csr_matrix:
    if sp.issparse(x):
        m = sp.csr_matrix(x, dtype=np.float32)
    else:
        a = np.asarray(x, dtype=np.float32)
        if a.ndim == 1:
            a = a.reshape(1, -1)
        if a.ndim != 2:
            raise ValueError(f"{name} must be a 2-D (n, n_words) matrix, got shape {a.shape}")
        m = sp.csr_matrix(a)
    if n_words is not None and m.shape[1] != n_words:
        raise ValueError(
            f"{name} has {m.shape[1]} columns but the index has {n_words} words: "
            "encode with the vocabulary the index was built with"
        )
    m.sum_duplicates()
    m.eliminate_zeros()
    return m


def power_normalize(x: Any, alpha: float = 0.5) -> sp.csr_matrix:
    """Power-law normalisation against burstiness [3]_: ``sign(v) |v|^alpha``, then L2 per row.

    Parameters
    ----------
    x : (n, n_words) sparse matrix or ndarray
        E.g. TF-IDF vectors.
    alpha : float, default 0.5
        ``0 < alpha <= 1``; 0.5 is the square root, 1 leaves the vector as it is
        (but L2-normalised).

    Returns
    -------
    (n, n_words) scipy.sparse.csr_matrix of float32
        All-zero rows stay zero.

    Examples
    --------
    >>> power_normalize(np.array([[4.0, 0.0, 9.0]])).toarray().round(4)
    array([[0.5547, 0.    , 0.8321]], dtype=float32)
    """
    if not 0.0 < float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    m = _as_csr(x, None, "x").copy()
    m.data = (np.sign(m.data) * np.abs(m.data) ** float(alpha)).astype(np.float32)
    sq = np.asarray(m.multiply(m).sum(axis=1)).reshape(-1)
    norms = np.sqrt(sq)
    norms[norms == 0] = 1.0
    return sp.csr_matrix(sp.diags((1.0 / norms).astype(np.float32)) @ m, dtype=np.float32)


def _as_ids(ids: Any, n: int | None) -> NDArray[np.int64]:
    arr = np.asarray(ids)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.size == 0:
        arr = arr.astype(np.int64)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"ids must be a 1-D integer array, got {arr.dtype} shape {arr.shape}")
    if n is not None and arr.size != n:
        raise ValueError(f"ids has {arr.size} entries but there are {n} rows: give one id each")
    out = np.ascontiguousarray(arr, dtype=np.int64)
    if out.size and out.min() < 0:
        raise ValueError(f"ids must be >= 0 (-1 marks a missing result), got {int(out.min())}")
    return out


class SparseIndex:
    """Exact inner-product search over sparse vectors through an inverted file.

    Implements the protocol of :class:`cvretrieval.index.Index` (``train``,
    ``add_with_ids``, ``remove_ids``, ``search`` returning ids, ``empty_copy``,
    ``merge_from``, ``save``/``load``, ``memory_bytes``) on CSR rows.

    Parameters
    ----------
    n_words : int
        Vocabulary size (the vectors' dimension).
    query_batch : int, default 256
        Queries scored per sparse product in :meth:`search` (bounds memory: the
        score matrix of a batch has up to ``query_batch x ntotal`` entries).

    Attributes
    ----------
    xb_ : (ntotal, n_words) scipy.sparse.csr_matrix of float32
        The indexed vectors, in the order they were added.
    ids_ : (ntotal,) int64 ndarray
        The id of each row of ``xb_``.

    Examples
    --------
    >>> xb = np.array([[1, 0, 0, 0], [0.6, 0.8, 0, 0], [0, 0, 0, 1]], np.float32)
    >>> index = SparseIndex(4)
    >>> index.add_with_ids(xb, [10, 11, 12])
    >>> D, I = index.search(np.array([[0.8, 0.6, 0, 0]], np.float32), k=3)
    >>> I.tolist(), [round(float(v), 2) for v in D[0]]   # image 12 shares no word: -1
    ([[11, 10, -1]], [0.96, 0.8, -inf])
    >>> index.remove_ids([11]), index.search(xb[1], k=1)[1].tolist()
    (1, [[10]])
    """

    def __init__(self, n_words: int, *, query_batch: int = 256) -> None:
        self.n_words = n_words
        self.query_batch = query_batch
        self.xb_: sp.csr_matrix | None = None
        self.ids_: NDArray[np.int64] = np.zeros(0, np.int64)
        self.next_id_ = 0
        self._inverted: sp.csr_matrix | None = None
        self._pending: list[tuple[sp.csr_matrix, NDArray[np.int64]]] = []

    # ------------------------------------------------------------------ state
    def _check_params(self) -> int:
        n = int(self.n_words)
        if n < 1:
            raise ValueError(f"n_words must be at least 1, got {self.n_words}")
        if int(self.query_batch) < 1:
            raise ValueError(f"query_batch must be at least 1, got {self.query_batch}")
        return n

    def _consolidate(self) -> sp.csr_matrix:
        if self._pending:
            parts = ([self.xb_] if self.xb_ is not None else []) + [m for m, _ in self._pending]
            self.xb_ = sp.csr_matrix(sp.vstack(parts, format="csr"), dtype=np.float32)
            self.ids_ = np.concatenate([self.ids_] + [i for _, i in self._pending])
            self._pending = []
            self._inverted = None
        if self.xb_ is None:
            self.xb_ = sp.csr_matrix((0, int(self.n_words)), dtype=np.float32)
        return self.xb_

    @property
    def ntotal(self) -> int:
        n = self.xb_.shape[0] if self.xb_ is not None else 0
        return int(n + sum(m.shape[0] for m, _ in self._pending))

    def __len__(self) -> int:
        return self.ntotal

    @property
    def d(self) -> int:
        return int(self.n_words)

    @property
    def higher_is_better(self) -> bool:
        return True

    @property
    def is_trained(self) -> bool:
        """Always True for valid parameters: an inverted file needs no training."""
        self._check_params()
        return True

    @property
    def inverted_(self) -> sp.csr_matrix:
        """The inverted file: ``(n_words, ntotal)`` CSR, row ``w`` = posting list of word ``w``."""
        xb = self._consolidate()
        if self._inverted is None:
            self._inverted = sp.csr_matrix(xb.T, dtype=np.float32)  # CSC of X, viewed as CSR
            self._inverted.sort_indices()
        return self._inverted

    @property
    def nbytes(self) -> int:
        """Bytes of the stored vectors and of the inverted file."""
        xb = self._consolidate()
        inv = self.inverted_
        return int(sum(a.nbytes for m in (xb, inv) for a in (m.data, m.indices, m.indptr)))

    def memory_bytes(self) -> int:
        """Bytes of the vectors, their ids and the inverted file (estimated if not built yet)."""
        xb = self._consolidate()
        own = sum(a.nbytes for a in (xb.data, xb.indices, xb.indptr)) + self.ids_.nbytes
        if self._inverted is not None:
            inv = self._inverted
            return int(own + sum(a.nbytes for a in (inv.data, inv.indices, inv.indptr)))
        per_nnz = xb.data.itemsize + xb.indices.itemsize
        return int(own + xb.nnz * per_nnz + (int(self.n_words) + 1) * xb.indptr.itemsize)

    def config(self) -> dict[str, Any]:
        return {
            "type": "sparse-inverted-file",
            "n_words": int(self.n_words),
            "metric": "ip",
            "ntotal": self.ntotal,
        }

    def __repr__(self) -> str:
        return f"SparseIndex(n_words={self.n_words}, ntotal={self.ntotal})"

    # ------------------------------------------------------------------ building
    def train(self, xb_sample: Any = None, n_total: int | None = None) -> SparseIndex:
        """Nothing to learn (protocol compatibility); checks the parameters, returns ``self``."""
        self._check_params()
        return self

    def needs_retrain(self, n_total: int, n_train: int | None = None) -> bool:
        """Always False: an inverted file fits any number of rows."""
        return False

    def add_with_ids(self, xb: Any, ids: Any) -> None:
        """Append rows under the given non-negative, distinct ids.

        Parameters
        ----------
        xb : (n, n_words) sparse matrix or ndarray
            Usually L2-normalised TF-IDF rows (:func:`cvretrieval.features.bovw.tfidf`),
            so that scores are cosine similarities.
        ids : (n,) array_like of int
        """
        n_words = self._check_params()
        m = _as_csr(xb, n_words, "xb")
        ids64 = _as_ids(ids, m.shape[0])
        if not m.shape[0]:
            return
        if np.unique(ids64).size != ids64.size:
            raise ValueError("ids has repeated values: every row needs its own id")
        self._pending.append((m, ids64))
        self._inverted = None
        self.next_id_ = max(self.next_id_, int(ids64.max()) + 1)

    def add(self, xb: Any) -> None:
        """Append rows; their ids continue from the largest id so far."""
        n_words = self._check_params()
        m = _as_csr(xb, n_words, "xb")
        self.add_with_ids(m, np.arange(self.next_id_, self.next_id_ + m.shape[0]))

    def build(self, xb: Any) -> SparseIndex:
        """Replace the content by ``xb`` (ids ``0..n-1``); returns ``self``."""
        self.xb_, self._inverted, self._pending = None, None, []
        self.ids_, self.next_id_ = np.zeros(0, np.int64), 0
        self.add(xb)
        self._consolidate()
        return self

    def remove_ids(self, ids: Any) -> int:
        """Drop the rows with these ids; returns how many were removed (unknown ids ignored)."""
        xb = self._consolidate()
        gone = np.isin(self.ids_, _as_ids(ids, None))
        count = int(gone.sum())
        if count:
            keep = np.flatnonzero(~gone)
            self.xb_ = sp.csr_matrix(xb[keep], dtype=np.float32)
            self.ids_ = self.ids_[keep]
            self._inverted = None
        return count

    def ids(self) -> NDArray[np.int64]:
        """The ids of the indexed rows, increasing."""
        self._consolidate()
        return np.sort(self.ids_)

    def rows(self, ids: Any) -> sp.csr_matrix:
        """The stored rows of ``ids``, in that order: ``(len(ids), n_words)`` CSR float32.

        Raises
        ------
        KeyError
            One line naming the first id the index does not hold.
        """
        xb = self._consolidate()
        want = _as_ids(ids, None)
        order = np.argsort(self.ids_, kind="stable")
        sorted_ids = self.ids_[order]
        pos = np.minimum(np.searchsorted(sorted_ids, want), max(sorted_ids.size - 1, 0))
        missing = np.ones(want.size, bool) if not sorted_ids.size else sorted_ids[pos] != want
        if missing.any():
            raise KeyError(f"id {int(want[missing][0])} is not in this sparse index")
        return sp.csr_matrix(xb[order[pos]] if want.size else xb[:0], dtype=np.float32)

    def empty_copy(self) -> SparseIndex:
        """An empty index with the same parameters (a per-segment shard)."""
        return SparseIndex(self.n_words, query_batch=self.query_batch)

    def merge_from(self, shard: SparseIndex, *, consume: bool = False) -> None:
        """Append the rows and ids of ``shard`` (left as it is unless ``consume``)."""
        if not isinstance(shard, SparseIndex) or int(shard.n_words) != int(self.n_words):
            raise ValueError(
                f"cannot merge {shard!r} into {self!r}: shards must be SparseIndex objects "
                "with the same n_words (make them with empty_copy())"
            )
        xb = shard._consolidate()
        if xb.shape[0]:
            self.add_with_ids(xb, shard.ids_)
        if consume:
            shard.build(sp.csr_matrix((0, int(shard.n_words)), dtype=np.float32))

    # ------------------------------------------------------------------ search
    def scores(self, xq: Any) -> sp.csr_matrix:
        """All non-zero scores: ``(n_queries, ntotal)`` CSR ``xq @ xb.T`` (column = row of xb_)."""
        n_words = self._check_params()
        q = _as_csr(xq, n_words, "xq")
        return sp.csr_matrix(q @ self.inverted_)

    def search(self, xq: Any, k: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """The ``k`` highest inner products of each query, best first.

        Parameters
        ----------
        xq : (m, n_words) sparse matrix or ndarray
        k : int

        Returns
        -------
        D : (m, k') float32 ndarray
            Inner products, decreasing; ``-inf`` where missing.
            ``k' = min(k, max(ntotal, 1024))`` as for :meth:`Index.search`.
        I : (m, k') int64 ndarray
            Ids; ``-1`` where fewer than ``k`` rows share a word with the query (their
            score would be 0), or the index is empty. Equal scores keep insertion order.
        """
        n_words = self._check_params()
        if isinstance(k, bool) or int(k) != k or int(k) < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        k = int(k)
        q = _as_csr(xq, n_words, "xq")
        m = q.shape[0]
        k_out = min(k, max(self.ntotal, MAX_PADDED_K))
        D = np.full((m, k_out), -np.inf, np.float32)
        I = np.full((m, k_out), -1, np.int64)  # noqa: E741 - Faiss's name
        if self.ntotal == 0:
            return D, I
        k = min(k, self.ntotal)
        inv = self.inverted_
        step = int(self.query_batch)
        for lo in range(0, m, step):
            s = sp.csr_matrix(q[lo : lo + step] @ inv)
            s.eliminate_zeros()
            for r in range(s.shape[0]):
                a, b = s.indptr[r], s.indptr[r + 1]
                if a == b:
                    continue
                vals, pos = s.data[a:b], s.indices[a:b]
                if b - a > k:
                    part = np.argpartition(-vals, k - 1)[:k]
                    # include every row tied with the k-th score so ties break by position
                    kth = vals[part].min()
                    part = np.flatnonzero(vals >= kth)
                    vals, pos = vals[part], pos[part]
                order = np.lexsort((pos, -vals))[:k]
                D[lo + r, : order.size] = vals[order]
                I[lo + r, : order.size] = self.ids_[pos[order]]
        return D, I

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the index to ONE ``.npz`` file (CSR arrays, ids, JSON configuration).

        An existing directory, or a path without a suffix, receives the older
        pair ``sparse_vectors.npz`` + ``sparseindex.json`` (plus ``sparse_ids.npy``
        when the ids are not ``0..n-1``). The inverted file is not written: it is
        rebuilt (one transpose) on load.
        """
        xb = self._consolidate()
        path = Path(path)
        doc = {"format_version": FORMAT_VERSION, **self.config(), "nnz": int(xb.nnz),
               "next_id": int(self.next_id_)}
        if path.is_dir() or (not path.exists() and not path.suffix):
            path.mkdir(parents=True, exist_ok=True)
            atomic_write(path / MATRIX_FILE, lambda f: sp.save_npz(f, xb, compressed=False))
            if not np.array_equal(self.ids_, np.arange(self.ids_.size)):
                atomic_write(path / IDS_FILE, lambda f: np.save(f, self.ids_))
            elif (path / IDS_FILE).exists():
                (path / IDS_FILE).unlink()
            write_json_atomic(path / META_FILE, doc)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = np.frombuffer(json.dumps(doc).encode("utf-8"), np.uint8)
        arrays = {"data": xb.data, "indices": xb.indices, "indptr": xb.indptr,
                  "ids": self.ids_, "meta": meta}
        atomic_write(path, lambda f: np.savez(f, **arrays), fsync=True)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SparseIndex:
        """Read an index written by :meth:`save` (a file, or a folder of the older format).

        Raises
        ------
        BundleError
            Missing or unreadable files, another format version, or a matrix whose
            shape disagrees with the stored configuration.
        """
        path = Path(path)
        if path.is_dir() or (not path.exists() and not path.suffix):
            return cls._load_folder(path)
        if not path.is_file():
            raise BundleError(f"{path} is missing: give a file written by SparseIndex.save")
        try:
            with np.load(path, allow_pickle=False) as z:
                doc = json.loads(bytes(z["meta"]).decode("utf-8"))
                arrays = {key: z[key] for key in ("data", "indices", "indptr", "ids")}
            if not isinstance(doc, dict):
                raise ValueError("meta is not a JSON object")
            shape = (int(doc["ntotal"]), int(doc["n_words"]))
            xb = sp.csr_matrix((arrays["data"], arrays["indices"], arrays["indptr"]), shape=shape)
        except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            why = str(exc).splitlines()[0] if str(exc) else repr(exc)
            raise BundleError(f"{path} is not a SparseIndex file ({why}): re-save it") from None
        check_format_version(doc, path, FORMAT_VERSION, hint="re-save the index")
        return cls._restore(doc, xb, arrays["ids"], path)

    @classmethod
    def _load_folder(cls, directory: Path) -> SparseIndex:
        meta_path, npz_path = directory / META_FILE, directory / MATRIX_FILE
        for path in (meta_path, npz_path):
            if not path.is_file():
                raise BundleError(f"{path} is missing: {directory} holds no SparseIndex")
        doc = read_json_manifest(meta_path, format_version=FORMAT_VERSION)
        try:
            xb = sp.load_npz(npz_path)
            ids_path = directory / IDS_FILE
            ids = np.load(ids_path, allow_pickle=False) if ids_path.is_file() else None
        except (OSError, ValueError) as exc:
            raise BundleError(f"{npz_path} cannot be read ({exc})") from None
        return cls._restore(doc, xb, ids, npz_path)

    @classmethod
    def _restore(cls, doc: dict[str, Any], xb: Any, ids: Any, path: Path) -> SparseIndex:
        want = (doc.get("ntotal"), doc.get("n_words"))
        if tuple(xb.shape) != want:
            raise BundleError(f"{path} holds a {xb.shape} matrix but its metadata says {want}")
        ids = np.arange(xb.shape[0], dtype=np.int64) if ids is None else np.asarray(ids, np.int64)
        if ids.shape != (xb.shape[0],):
            raise BundleError(f"{path} holds {ids.size} ids for {xb.shape[0]} rows: re-save it")
        index = cls(int(doc["n_words"]))
        index.xb_ = sp.csr_matrix(xb, dtype=np.float32)
        index.ids_ = ids
        index.next_id_ = int(doc.get("next_id", int(ids.max()) + 1 if ids.size else 0))
        return index
