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

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from ._json import atomic_write, read_json_manifest, write_json_atomic
from .errors import BundleError, NotFittedError

__all__ = ["SparseIndex", "power_normalize"]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MATRIX_FILE = "sparse_vectors.npz"
META_FILE = "sparseindex.json"


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


class SparseIndex:
    """Exact inner-product search over sparse vectors through an inverted file.

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
        The indexed vectors, row = id (order of :meth:`add`).

    Examples
    --------
    >>> xb = np.array([[1, 0, 0, 0], [0.6, 0.8, 0, 0], [0, 0, 0, 1]], np.float32)
    >>> index = SparseIndex(4)
    >>> index.add(xb)
    >>> D, I = index.search(np.array([[0.8, 0.6, 0, 0]], np.float32), k=3)
    >>> I.tolist(), [round(float(v), 2) for v in D[0]]   # image 2 shares no word: -1
    ([[1, 0, -1]], [0.96, 0.8, -inf])
    """

    def __init__(self, n_words: int, *, query_batch: int = 256) -> None:
        self.n_words = n_words
        self.query_batch = query_batch
        self.xb_: sp.csr_matrix | None = None
        self._inverted: sp.csr_matrix | None = None
        self._pending: list[sp.csr_matrix] = []

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
            parts = ([self.xb_] if self.xb_ is not None else []) + self._pending
            self.xb_ = sp.csr_matrix(sp.vstack(parts, format="csr"), dtype=np.float32)
            self._pending = []
            self._inverted = None
        if self.xb_ is None:
            self.xb_ = sp.csr_matrix((0, int(self.n_words)), dtype=np.float32)
        return self.xb_

    @property
    def ntotal(self) -> int:
        n = self.xb_.shape[0] if self.xb_ is not None else 0
        return int(n + sum(p.shape[0] for p in self._pending))

    def __len__(self) -> int:
        return self.ntotal

    @property
    def d(self) -> int:
        return int(self.n_words)

    @property
    def higher_is_better(self) -> bool:
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
    def add(self, xb: Any) -> None:
        """Append vectors; their ids continue from :attr:`ntotal`.

        Parameters
        ----------
        xb : (n, n_words) sparse matrix or ndarray
            Usually L2-normalised TF-IDF rows (:func:`cvretrieval.features.bovw.tfidf`),
            so that scores are cosine similarities.
        """
        n_words = self._check_params()
        m = _as_csr(xb, n_words, "xb")
        if m.shape[0]:
            self._pending.append(m)
            self._inverted = None

    def build(self, xb: Any) -> SparseIndex:
        """Replace the content by ``xb``; returns ``self``."""
        self.xb_, self._inverted, self._pending = None, None, []
        self.add(xb)
        self._consolidate()
        return self

    # ------------------------------------------------------------------ search
    def scores(self, xq: Any) -> sp.csr_matrix:
        """All non-zero scores: ``(n_queries, ntotal)`` CSR ``xq @ xb.T`` via the inverted file."""
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
        D : (m, k) float32 ndarray
            Inner products, decreasing; ``-inf`` where missing.
        I : (m, k) int64 ndarray
            Ids; ``-1`` where fewer than ``k`` images share a word with the query (their
            score would be 0). Equal scores are ordered by increasing id.

        Raises
        ------
        NotFittedError
            The index is empty.
        """
        n_words = self._check_params()
        k = int(k)
        if k < 1:
            raise ValueError(f"k must be a positive integer, got {k}")
        if self.ntotal == 0:
            raise NotFittedError("the sparse index holds no vectors: add vectors before searching")
        q = _as_csr(xq, n_words, "xq")
        m = q.shape[0]
        D = np.full((m, k), -np.inf, np.float32)
        I = np.full((m, k), -1, np.int64)  # noqa: E741 - Faiss's name
        inv = self.inverted_
        step = int(self.query_batch)
        for lo in range(0, m, step):
            s = sp.csr_matrix(q[lo : lo + step] @ inv)
            s.eliminate_zeros()
            for r in range(s.shape[0]):
                a, b = s.indptr[r], s.indptr[r + 1]
                if a == b:
                    continue
                vals, ids = s.data[a:b], s.indices[a:b]
                if b - a > k:
                    part = np.argpartition(-vals, k - 1)[:k]
                    # include every id tied with the k-th score so ties break by id
                    kth = vals[part].min()
                    part = np.flatnonzero(vals >= kth)
                    vals, ids = vals[part], ids[part]
                order = np.lexsort((ids, -vals))[:k]
                D[lo + r, : order.size] = vals[order]
                I[lo + r, : order.size] = ids[order]
        return D, I

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write ``sparse_vectors.npz`` (``scipy.sparse.save_npz``) and ``sparseindex.json``.

        The inverted file is not written: it is rebuilt (one transpose) on load.
        """
        xb = self._consolidate()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write(directory / MATRIX_FILE, lambda f: sp.save_npz(f, xb, compressed=False))
        doc = {"format_version": FORMAT_VERSION, **self.config(), "nnz": int(xb.nnz)}
        write_json_atomic(directory / META_FILE, doc)

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> SparseIndex:
        """Read an index written by :meth:`save`.

        Raises
        ------
        BundleError
            Missing or unreadable files, another format version, or a matrix whose
            shape disagrees with ``sparseindex.json``.
        """
        directory = Path(directory)
        meta_path, npz_path = directory / META_FILE, directory / MATRIX_FILE
        for path in (meta_path, npz_path):
            if not path.is_file():
                raise BundleError(f"{path} is missing: {directory} holds no SparseIndex")
        doc = read_json_manifest(meta_path, format_version=FORMAT_VERSION)
        try:
            xb = sp.load_npz(npz_path)
        except (OSError, ValueError) as exc:
            raise BundleError(f"{npz_path} cannot be read ({exc})") from None
        want = (doc.get("ntotal"), doc.get("n_words"))
        if tuple(xb.shape) != want:
            raise BundleError(f"{npz_path} holds a {xb.shape} matrix but {META_FILE} says {want}")
        index = cls(int(doc["n_words"]))
        index.xb_ = sp.csr_matrix(xb, dtype=np.float32)
        return index
