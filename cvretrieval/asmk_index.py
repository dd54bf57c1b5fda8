"""The ASMK inverted file: word -> (image, binary code) postings, scored by the selective
match kernel [1]_.

:class:`AsmkIndex` implements the project's index protocol (``train``, ``add_with_ids``,
``remove_ids``, ``search``, ``empty_copy``, ``merge_from``, ``save``/``load``,
``memory_bytes``, ``ntotal``) for the per-image results of
:class:`~cvretrieval.embedders.asmk.ASMKEmbedder` (:class:`AsmkCodes`: distinct word ids
plus one packed binary code per word), so a Retriever stores and searches ASMK exactly as
it does Faiss vectors; only the scoring differs (not a dot product of fixed vectors):

``S(X, Y) = gamma(X) gamma(Y) sum_{c in X & Y} w_c sigma_alpha(1 - 2 h(b_Xc, b_Yc) / B)``

with ``w_c = ln((1 + N) / df_c)`` (smoothed IDF over the indexed images, never zero, as
:func:`cvretrieval.features.bovw.idf_weights`) and
``gamma(X) = (sum_{c in X} w_c) ** -1/2``, so that ``S(X, X) = 1`` is the maximum.
The IDF follows the collection: it is recomputed (one pass over the postings) on the
first search after images were added or removed.

Memory: one posting per (image, distinct word): ``n_bits / 8`` bytes of code + 4 bytes
of internal image number, i.e. about ``20 * W`` bytes per image for 128-bit codes and
``W`` distinct words (W ~ 600-900 for 1000 RootSIFT features), plus 8 bytes per image
for its id and norm.

References
----------
.. [1] G. Tolias, Y. Avrithis and H. Jégou, "To aggregate or not to aggregate: selective
   match kernels for image search", ICCV 2013 (IJCV 2016).
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .errors import BundleError
from .features.asmk import selective_kernel

__all__ = ["AsmkCodes", "AsmkIndex", "expand_codes", "pack_codes", "unpack_codes"]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
_EMPTY_SCORE = -np.inf


@dataclass(frozen=True)
class AsmkCodes:
    """One image's ASMK representation.

    Attributes
    ----------
    words : (u,) uint32
        Distinct visual words, sorted.
    codes : (u, n_bits // 8) uint8
        Packed binary code of the image's aggregated residual for each word.
    """

    words: NDArray[np.uint32]
    codes: NDArray[np.uint8]

    def __len__(self) -> int:
        return int(self.words.shape[0])

    @property
    def nbytes(self) -> int:
        return int(self.words.nbytes + self.codes.nbytes)


def pack_codes(
    items: Sequence[AsmkCodes], n_bytes: int
) -> tuple[NDArray[np.uint32], NDArray[np.uint8], NDArray[np.int64]]:
    """Many images' codes as flat arrays plus offsets (Faiss's ``lims``), for segments on disk.

    Returns
    -------
    words : (P,) uint32
    codes : (P, n_bytes) uint8
    lims : (n + 1,) int64
        Image ``i`` owns rows ``lims[i]:lims[i + 1]``.

    Examples
    --------
    >>> a = AsmkCodes(np.array([3], np.uint32), np.array([[9]], np.uint8))
    >>> w, c, lims = pack_codes([a, AsmkCodes(a.words[:0], a.codes[:0])], 1)
    >>> w.tolist(), lims.tolist(), len(unpack_codes(w, c, lims)[1])
    ([3], [0, 1, 1], 0)
    """
    lims = np.zeros(len(items) + 1, np.int64)
    np.cumsum([len(it) for it in items], out=lims[1:])
    if not items:
        return np.zeros(0, np.uint32), np.zeros((0, n_bytes), np.uint8), lims
    words = np.concatenate([np.asarray(it.words, np.uint32) for it in items])
    codes = np.concatenate([np.asarray(it.codes, np.uint8).reshape(-1, n_bytes) for it in items])
    return words, codes, lims


def unpack_codes(
    words: NDArray[np.uint32], codes: NDArray[np.uint8], lims: NDArray[np.int64]
) -> list[AsmkCodes]:
    """Inverse of :func:`pack_codes` (views, no copies)."""
    return [AsmkCodes(words[lims[i] : lims[i + 1]], codes[lims[i] : lims[i + 1]])
            for i in range(len(lims) - 1)]


def expand_codes(query: AsmkCodes, others: Sequence[AsmkCodes]) -> AsmkCodes:
    """Query expansion for ASMK: the query's codes and those of ``others`` (e.g. its
    spatially verified results, Chum et al. 2007) as one query.

    :meth:`AsmkIndex.scores` sums the kernel over every (query entry, posting) pair of a
    word, so a word may repeat: the expanded query scores an image by the sum of the
    query's and the others' kernel matches with it (one common normalisation by the
    combined IDF mass, which does not change the ranking). Entries are sorted by word
    (stable: the query's first). Returns ``query`` itself when ``others`` is empty.

    Examples
    --------
    >>> q = AsmkCodes(np.array([1, 4], np.uint32), np.array([[1], [2]], np.uint8))
    >>> o = AsmkCodes(np.array([1, 2], np.uint32), np.array([[3], [4]], np.uint8))
    >>> e = expand_codes(q, [o])
    >>> e.words.tolist(), e.codes[:, 0].tolist()
    ([1, 1, 2, 4], [1, 3, 4, 2])
    """
    items = [query, *others]
    if len(items) == 1:
        return query
    n_bytes = int(np.asarray(query.codes).reshape(len(query), -1).shape[1]) if len(query) else (
        max((np.asarray(o.codes).reshape(len(o), -1).shape[1] for o in others if len(o)),
            default=0))
    for it in items:
        if len(it) and np.asarray(it.codes).reshape(len(it), -1).shape[1] != n_bytes:
            raise ValueError("codes of different lengths: expand with items of one embedder")
    words, codes, _ = pack_codes(items, n_bytes)
    order = np.argsort(words, kind="stable")
    return AsmkCodes(words[order], codes[order])


def _hamming_rows(a: NDArray[np.uint8], b: NDArray[np.uint8]) -> NDArray[np.int64]:
    """Hamming distances of the rows of two ``(n, n_bytes)`` code arrays, a word of 64
    bits at a time when the codes allow (8 times fewer popcounts than byte by byte)."""
    if a.shape[1] % 8 == 0 and a.shape[0]:
        a = np.ascontiguousarray(a).view(np.uint64)
        b = np.ascontiguousarray(b).view(np.uint64)
    counts = np.bitwise_count(np.bitwise_xor(a, b))
    h = counts[:, 0].astype(np.int64) if counts.shape[1] else np.zeros(len(a), np.int64)
    for j in range(1, counts.shape[1]):  # column sums: a reduce over 2 columns is slower
        h += counts[:, j]
    return h


class AsmkIndex:
    """Inverted file of ASMK codes with selective-match-kernel scoring.

    Parameters
    ----------
    n_words : int
        Vocabulary size.
    n_bits : int, default 128
        Bits per code.
    alpha : float, default 3.0
        Selectivity exponent of the kernel.
    tau : float, default 0.0
        Kernel threshold on ``u = 1 - 2 h / n_bits``.

    Examples
    --------
    >>> idx = AsmkIndex(n_words=4, n_bits=8)
    >>> a = AsmkCodes(np.array([0, 2], np.uint32), np.array([[255], [0]], np.uint8))
    >>> b = AsmkCodes(np.array([1], np.uint32), np.array([[7]], np.uint8))
    >>> idx.add_with_ids([a, b], np.array([10, 20]))
    >>> D, I = idx.search([a], 2)
    >>> I.tolist(), round(float(D[0, 0]), 4)
    ([[10, 20]], 1.0)
    """

    higher_is_better = True

    def __init__(self, n_words: int, n_bits: int = 128, alpha: float = 3.0, tau: float = 0.0):
        if int(n_words) < 1:
            raise ValueError(f"n_words must be at least 1, got {n_words}")
        if int(n_bits) < 8 or int(n_bits) % 8:
            raise ValueError(f"n_bits must be a positive multiple of 8, got {n_bits}")
        self.n_words = int(n_words)
        self.n_bits = int(n_bits)
        self.alpha = float(alpha)
        self.tau = float(tau)
        nb = self.n_bits // 8
        self._ids = np.zeros(0, np.int64)  # external id of each internal image number
        self._alive = np.zeros(0, bool)
        # postings in arrival order (blocks); consolidated into CSR by word on search
        self._blocks: list[tuple[NDArray[np.uint32], NDArray[np.int32], NDArray[np.uint8]]] = []
        # consolidated postings by word (CSR); _dirty: blocks or removals not yet folded in
        self._post: tuple[NDArray[np.int64], NDArray[np.int32], NDArray[np.uint8]] = (
            np.zeros(self.n_words + 1, np.int64), np.zeros(0, np.int32), np.zeros((0, nb), np.uint8)
        )
        self._dirty = False
        self._stats: tuple[NDArray[np.float32], NDArray[np.float32]] | None = None

    # ------------------------------------------------------------------ properties
    @property
    def ntotal(self) -> int:
        """Number of live (not removed) images."""
        return int(np.count_nonzero(self._alive))

    def __len__(self) -> int:
        return self.ntotal

    @property
    def is_trained(self) -> bool:
        return True

    def config(self) -> dict[str, Any]:
        return {"kind": "asmk", "n_words": self.n_words, "n_bits": self.n_bits,
                "alpha": self.alpha, "tau": self.tau}

    def __repr__(self) -> str:
        return (f"AsmkIndex(n_words={self.n_words}, n_bits={self.n_bits}, alpha={self.alpha}, "
                f"tau={self.tau}, ntotal={self.ntotal})")

    def memory_bytes(self) -> int:
        """Bytes held by postings, ids and per-image norms."""
        ptr, img, codes = self._consolidate()
        stats = 0 if self._stats is None else sum(a.nbytes for a in self._stats)
        return int(ptr.nbytes + img.nbytes + codes.nbytes + self._ids.nbytes
                   + self._alive.nbytes + stats)

    # ------------------------------------------------------------------ building
    def train(self, sample: Sequence[AsmkCodes] = (), n_total: int | None = None) -> AsmkIndex:
        """Nothing to learn (the Hamming embedding is the embedder's); checks the sample."""
        for item in sample:
            self._check_item(item)
        return self

    def _check_item(self, item: Any) -> AsmkCodes:
        if not isinstance(item, AsmkCodes):
            raise TypeError(f"AsmkIndex takes AsmkCodes (from the asmk embedder), got "
                            f"{type(item).__name__}: index asmk features with an AsmkIndex only")
        if item.codes.shape != (len(item.words), self.n_bits // 8):
            raise ValueError(f"codes of shape {item.codes.shape} do not fit {len(item.words)} "
                             f"words of {self.n_bits} bits: was it embedded with other settings?")
        if len(item.words) and int(item.words.max()) >= self.n_words:
            raise ValueError(f"word id {int(item.words.max())} is outside the vocabulary of "
                             f"{self.n_words} words: embedder and index disagree")
        return item

    def add_with_ids(self, items: Sequence[AsmkCodes], ids: Any) -> None:
        """Add images with their ids (int64, unique, not already present)."""
        ids = np.asarray(ids, np.int64).reshape(-1)
        if len(ids) != len(items):
            raise ValueError(f"{len(items)} items but {len(ids)} ids")
        if len(np.unique(ids)) != len(ids) or np.isin(ids, self._ids[self._alive]).any():
            raise ValueError("ids must be unique and not already in the index: remove them first")
        items = [self._check_item(it) for it in items]
        if not items:
            return
        start = len(self._ids)
        counts = np.array([len(it) for it in items], np.int64)
        words = np.concatenate([it.words.astype(np.uint32) for it in items])
        codes = np.concatenate([it.codes for it in items]).reshape(-1, self.n_bits // 8)
        imgs = np.repeat(np.arange(start, start + len(items), dtype=np.int32), counts)
        self._blocks.append((words, imgs, codes))
        self._ids = np.concatenate([self._ids, ids])
        self._alive = np.concatenate([self._alive, np.ones(len(ids), bool)])
        self._dirty = True
        self._stats = None

    def remove_ids(self, ids: Any) -> int:
        """Remove images by id; returns how many were removed (unknown ids are ignored)."""
        hit = np.isin(self._ids, np.asarray(ids, np.int64).reshape(-1)) & self._alive
        n = int(np.count_nonzero(hit))
        if n:
            self._alive[hit] = False
            self._dirty = True  # postings of removed images are dropped at consolidation
            self._stats = None
        return n

    def _consolidate(self) -> tuple[NDArray[np.int64], NDArray[np.int32], NDArray[np.uint8]]:
        if not self._dirty:
            return self._post
        ptr, img, codes = self._post
        words = [np.repeat(np.arange(self.n_words, dtype=np.uint32), np.diff(ptr))]
        imgs, cods = [img], [codes]
        for w, i, c in self._blocks:
            words.append(w)
            imgs.append(i)
            cods.append(c)
        w_all, i_all, c_all = np.concatenate(words), np.concatenate(imgs), np.concatenate(cods)
        keep = self._alive[i_all]
        w_all, i_all, c_all = w_all[keep], i_all[keep], c_all[keep]
        order = np.argsort(w_all, kind="stable")
        ptr = np.zeros(self.n_words + 1, np.int64)
        np.cumsum(np.bincount(w_all, minlength=self.n_words), out=ptr[1:])
        self._post = (ptr, i_all[order], np.ascontiguousarray(c_all[order]))
        self._blocks = []
        self._dirty = False
        return self._post

    def _statistics(self) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """``(idf per word, gamma per internal image)`` over the live images."""
        if self._stats is None:
            ptr, img, _ = self._consolidate()
            df = np.diff(ptr).astype(np.float64)
            n = max(self.ntotal, 1)
            idf = np.log((1.0 + n) / np.maximum(df, 1.0))
            word_of = np.repeat(np.arange(self.n_words), np.diff(ptr))
            mass = np.bincount(img, weights=idf[word_of], minlength=len(self._ids))
            gamma = np.where(mass > 0, 1.0 / np.sqrt(np.maximum(mass, 1e-30)), 0.0)
            self._stats = (idf.astype(np.float32), gamma.astype(np.float32))
        return self._stats

    # ------------------------------------------------------------------ search
    def scores(self, query: AsmkCodes) -> NDArray[np.float32]:
        """Kernel similarity of one query to every internal image (removed ones: -inf)."""
        self._check_item(query)
        idf, gamma = self._statistics()
        ptr, img, codes = self._consolidate()
        out = np.zeros(len(self._ids), np.float64)
        if len(query) and len(img):
            w = query.words.astype(np.int64)
            lo, hi = ptr[w], ptr[w + 1]
            lens = hi - lo
            if lens.sum():
                which = np.repeat(np.arange(len(w)), lens)
                pos = np.repeat(lo - np.cumsum(np.r_[0, lens[:-1]]), lens) + np.arange(lens.sum())
                h = _hamming_rows(codes[pos], np.asarray(query.codes, np.uint8)[which])
                u = 1.0 - 2.0 * h / self.n_bits
                k = selective_kernel(u, self.alpha, self.tau).astype(np.float64)
                out += np.bincount(img[pos], weights=k * idf[w[which]], minlength=len(out))
            q_mass = float(idf[w].sum())
            out *= gamma / np.sqrt(q_mass) if q_mass > 0 else 0.0
        out[~self._alive] = _EMPTY_SCORE
        return out.astype(np.float32)

    def search(self, queries: Sequence[AsmkCodes], k: int) -> tuple[NDArray[np.float32],
                                                                     NDArray[np.int64]]:
        """Top-``k`` images of each query: ``D`` similarities (higher is better), ``I`` ids.

        Rows have ``-1`` ids and ``-inf`` scores past the number of indexed images.
        """
        k = int(k)
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        D = np.full((len(queries), k), _EMPTY_SCORE, np.float32)
        I = np.full((len(queries), k), -1, np.int64)  # noqa: E741 - Faiss's name
        n_live = self.ntotal
        for qi, q in enumerate(queries):
            s = self.scores(q)
            kk = min(k, n_live)
            if kk == 0:
                continue
            top = np.argpartition(-s, kk - 1)[:kk] if kk < len(s) else np.arange(len(s))
            # ties broken by id, so the order never depends on the insertion history
            top = top[np.lexsort((self._ids[top], -s[top]))][:kk]
            D[qi, :kk] = s[top]
            I[qi, :kk] = self._ids[top]
        return D, I

    # ------------------------------------------------------------------ shards
    def empty_copy(self) -> AsmkIndex:
        """An empty index with the same parameters."""
        return AsmkIndex(self.n_words, self.n_bits, self.alpha, self.tau)

    def _live_postings(self) -> tuple[NDArray[np.uint32], NDArray[np.int64], NDArray[np.uint8]]:
        ptr, img, codes = self._consolidate()
        words = np.repeat(np.arange(self.n_words, dtype=np.uint32), np.diff(ptr))
        return words, self._ids[img], codes

    def merge_from(self, other: AsmkIndex) -> None:
        """Move the live images of ``other`` (same parameters, disjoint ids) into this index."""
        if other.config() != self.config():
            raise ValueError(f"cannot merge {other!r} into {self!r}: parameters differ")
        ids = other._ids[other._alive]
        if np.isin(ids, self._ids[self._alive]).any():
            raise ValueError("the indexes share ids: merge needs disjoint ids")
        words, ext, codes = other._live_postings()
        imgs = (len(self._ids) + _positions(ids, ext)).astype(np.int32)
        self._blocks.append((words, imgs, codes))
        self._ids = np.concatenate([self._ids, ids])
        self._alive = np.concatenate([self._alive, np.ones(len(ids), bool)])
        self._dirty = True
        self._stats = None

    # ------------------------------------------------------------------ persistence
    def save(self, file: str | os.PathLike[str]) -> None:
        """Write the live postings to one ``.npz`` file (no pickle), atomically."""
        words, ext, codes = self._live_postings()
        alive_ids = self._ids[self._alive]
        meta = json.dumps({"format_version": FORMAT_VERSION, **self.config()}).encode()
        path = Path(file)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        buf = io.BytesIO()
        np.savez(buf, meta=np.frombuffer(meta, np.uint8), ids=alive_ids, words=words,
                 posting_ids=ext, codes=codes)
        with open(tmp, "wb") as f:
            f.write(buf.getvalue())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, file: str | os.PathLike[str]) -> AsmkIndex:
        """Read an index written by :meth:`save`; :class:`BundleError` when unusable."""
        try:
            with np.load(file, allow_pickle=False) as z:
                meta = json.loads(bytes(z["meta"]).decode())
                arrays = {k: z[k] for k in ("ids", "words", "posting_ids", "codes")}
        except (OSError, ValueError, KeyError) as exc:
            raise BundleError(f"{file} is not a readable ASMK index ({exc}); rebuild it") from None
        if meta.get("format_version") != FORMAT_VERSION or meta.get("kind") != "asmk":
            raise BundleError(f"{file}: unsupported ASMK index format {meta!r}; rebuild it")
        obj = cls(meta["n_words"], meta["n_bits"], meta["alpha"], meta["tau"])
        ids = arrays["ids"].astype(np.int64)
        imgs = _positions(ids, arrays["posting_ids"].astype(np.int64)).astype(np.int32)
        obj._ids = ids
        obj._alive = np.ones(len(ids), bool)
        obj._blocks = [(arrays["words"].astype(np.uint32), imgs,
                        arrays["codes"].reshape(-1, obj.n_bits // 8).astype(np.uint8))]
        obj._dirty = True
        return obj


def _positions(ids: NDArray[np.int64], values: NDArray[np.int64]) -> NDArray[np.int64]:
    """Position of each of ``values`` in ``ids`` (all present, ``ids`` unique)."""
    order = np.argsort(ids, kind="stable")
    at = np.searchsorted(ids[order], values)
    if len(values) and (at.max() >= len(ids) or (ids[order][at] != values).any()):
        raise BundleError("postings name image ids the index does not hold; rebuild it")
    return order[at]
