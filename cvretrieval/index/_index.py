"""The :class:`Index` class: train on a sample, add with ids, remove, search, shards."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from typing import Any

import faiss
import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..errors import CVRetrievalError, NotFittedError
from . import _io
from ._factory import (
    PRESETS,
    parse_size,
)
from ._faiss import (
    as_ids,
    as_matrix,
    check_positive_int,
    faiss_message,
    hnsw_of,
    index_memory,
    is_idmap,
    is_lsh,
    ivf_of,
)
from ._ops import (
    add_faiss,
    check_mergeable,
    ill_sized,
    live_vectors,
    make_trained,
    merge_faiss,
    reconstruct_sorted,
    remove_faiss,
    rescore,
    search_faiss,
    stored_ids,
)
from ._settings import SearchSettings

__all__ = ["METRICS", "Index"]

logger = logging.getLogger("cvretrieval.index")

METRICS: tuple[str, ...] = ("ip", "l2")
#: ``search`` pads to ``k`` columns up to ``max(ntotal, MAX_PADDED_K)``: beyond, the
#: columns could only hold padding, and an absurd ``k`` must not allocate them.
MAX_PADDED_K = 1024


class Index(SearchSettings):
    """A Faiss index chosen by a preset, ``auto`` or a factory string; ids given by the caller.

    Parameters
    ----------
    spec : str, default "flat"
        One of :data:`PRESETS` (``flat``, ``ivf``, ``lsh``, ``pq``, ``hnsw``,
        ``auto``) or any Faiss factory string. Resolved by :meth:`train` from
        the number of vectors and their dimension (``auto``: also the memory
        budget, see :func:`choose_index`).
    metric : {"ip", "l2"}, default "ip"
        Inner product (cosine on L2-normalised vectors; higher is better) or
        squared Euclidean distance (lower is better). LSH always ranks by
        Hamming distance (lower is better).
    nprobe : int or None, default None
        Inverted lists visited per query by IVF-based indexes; None picks
        :func:`default_nprobe` (presets) or :func:`auto_nprobe` (``auto``).
    ef_search : int or None, default None
        HNSW ``efSearch``; None uses ``max(64, 2 * k)``.
    random_state : int, default 0
        Seed of Faiss's k-means (IVF, PQ), of the training subsample and of the
        LSH rotation.
    max_memory : int or str, optional
        Memory budget of the built index for ``auto`` (``"4G"``, ``"500M"``,
        bytes); see :func:`parse_size`.
    refine : int or None, default None
        Candidates :meth:`search` re-ranks by their exact vectors when the caller
        supplies them (``vectors=``): the top ``max(k, refine)`` of the index's
        approximate scores are scored again exactly. None: :func:`auto_refine`
        (256 for PQ codes chosen by ``auto``, else 0); 0 turns it off.

    Attributes
    ----------
    index_ : faiss.Index
        The Faiss index (IVF indexes store the ids natively; others are wrapped
        in :class:`faiss.IndexIDMap`).
    factory_ : str
        The resolved factory string; ``reason_`` says why it was chosen.
    d_ : int
        Vector dimension.
    removed_ : (r,) int64 ndarray
        Ids removed from an index Faiss cannot remove from (HNSW): masked at search.

    Notes
    -----
    Ids are non-negative int64 (``-1`` marks a missing result); :meth:`add` and
    :meth:`build` number vectors 0, 1, 2... HNSW builds are multi-threaded, in
    practice but not provably identical from run to run.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> xb = rng.standard_normal((100, 16)).astype(np.float32)
    >>> index = Index("flat", metric="l2").train(xb)
    >>> index.add_with_ids(xb, np.arange(100) * 10 + 7)
    >>> D, I = index.search(xb[:2], k=3)
    >>> I[:, 0].tolist(), D.shape
    ([7, 17], (2, 3))
    >>> index.remove_ids([7]), index.search(xb[:1], k=1)[1].tolist() != [[7]]
    (1, True)
    """

    def __init__(
        self,
        spec: str = "flat",
        metric: str = "ip",
        *,
        nprobe: int | None = None,
        ef_search: int | None = None,
        random_state: int = 0,
        max_memory: int | str | None = None,
        refine: int | None = None,
    ) -> None:
        if not isinstance(spec, str) or not spec.strip():
            raise ValueError(
                f"index spec must be a non-empty string, got {spec!r}: use one of the presets "
                f"{', '.join(PRESETS)} or a Faiss factory string"
            )
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}: use one of {', '.join(METRICS)}")
        if max_memory is not None:
            parse_size(max_memory)  # fail early on garbage
        self.spec = spec
        self.metric = metric
        self.nprobe = nprobe
        self.ef_search = ef_search
        self.random_state = random_state
        self.max_memory = max_memory
        self.refine = refine

    def _fitted(self) -> bool:
        return getattr(self, "index_", None) is not None

    def _require_fitted(self, what: str) -> None:
        if not self._fitted():
            raise NotFittedError(
                f"this Index ({self.spec!r}) is not trained yet: call train(sample) or "
                f"build(xb) before {what}"
            )

    @property
    def is_trained(self) -> bool:
        """True once :meth:`train` (or :meth:`build`) has created and trained the index."""
        return self._fitted() and bool(self.index_.is_trained)

    @property
    def ntotal(self) -> int:
        """Number of searchable vectors (0 before :meth:`train`; removed ones excluded)."""
        if not self._fitted():
            return 0
        return int(self.index_.ntotal) - int(self.removed_.size)

    def __len__(self) -> int:
        return self.ntotal

    @property
    def d(self) -> int:
        """Vector dimension."""
        self._require_fitted("reading d")
        return int(self.d_)

    @property
    def factory(self) -> str:
        """The resolved Faiss factory string."""
        self._require_fitted("reading factory")
        return str(self.factory_)

    @property
    def higher_is_better(self) -> bool:
        """True when larger ``D`` is better (metric ``ip``, except for LSH)."""
        lsh = is_lsh(self.index_) if self._fitted() else self.spec.strip().upper().startswith("LSH")
        return self.metric == "ip" and not lsh

    @property
    def nlist(self) -> int | None:
        """Number of inverted lists, or None if the index is not IVF-based."""
        self._require_fitted("reading nlist")
        ivf = ivf_of(self.index_)
        return None if ivf is None else int(ivf.nlist)

    def __repr__(self) -> str:
        fit = (
            f", factory={self.factory_!r}, d={self.d_}, ntotal={self.ntotal}"
            if self._fitted()
            else ""
        )
        return f"Index(spec={self.spec!r}, metric={self.metric!r}{fit})"

    def config(self) -> dict[str, Any]:
        """The parameters, the resolved factory and why, and the shape (JSON-able).

        ``factory``, ``reason``, ``d`` and ``n_planned`` (the size the factory
        was resolved for) are None before :meth:`train`.
        """
        fitted = self._fitted()
        return {
            "spec": self.spec,
            "factory": self.factory_ if fitted else None,
            "reason": self.reason_ if fitted else None,
            "metric": self.metric,
            "d": int(self.d_) if fitted else None,
            "ntotal": self.ntotal,
            "n_planned": int(self.n_planned_) if fitted else None,
            "nprobe": self.nprobe,
            "ef_search": self.ef_search,
            "random_state": int(self.random_state),
            "max_memory": self.max_memory,
            "refine": self.refine,
        }

    def train(self, xb_sample: ArrayLike, n_total: int | None = None) -> Index:
        """Resolve the factory string and train the (empty) Faiss index on a sample.

        Parameters
        ----------
        xb_sample : (n, d) array_like
            Training vectors (a random subsample of 64 per k-means
            centroid is used). Flat and HNSW only read the dimension.
        n_total : int, optional
            Number of vectors the index is meant to hold (default ``len(xb_sample)``):
            presets and ``auto`` size ``nlist``, PQ and the memory estimate from it.

        Returns self, trained and empty (any previous content is discarded).
        Raises ValueError (empty or non-finite sample, invalid factory string,
        ``auto`` budget too small) or IndexTrainingError (too few vectors).
        """
        xb = as_matrix(xb_sample, "xb_sample")
        n_sample, d = xb.shape
        if n_sample == 0:
            raise ValueError("the training sample is empty (0 vectors): train needs vectors")
        n = n_sample if n_total is None else check_positive_int(n_total, "n_total")
        index, factory, reason, template = make_trained(
            self.spec, self.metric, xb, n, self.random_state, self.max_memory
        )
        self._check_refine(is_lsh(index), factory)
        self._install(index, factory, reason, d, n, template)
        logger.info("trained %s index %s (metric %s): %s", self.spec, factory, self.metric, reason)
        return self

    def _install(
        self, index: Any, factory: str, reason: str, d: int, n: int, template: Any
    ) -> None:
        self.index_ = index
        self.factory_ = factory
        self.reason_ = reason
        self.d_ = int(d)
        self.n_planned_ = int(n)
        self.removed_ = np.zeros(0, np.int64)
        self.next_id_ = 0
        tmpl = None if template is None else np.asarray(template, np.uint8)
        self.template_ = tmpl
        self.checksum_ = None if tmpl is None else hashlib.sha1(tmpl.tobytes()).hexdigest()

    def needs_retrain(self, n_total: int, n_train: int | None = None) -> bool:
        """Whether an index trained for ``n_planned_`` vectors is ill-sized for ``n_total``.

        True for an IVF index whose ``nlist`` is off by more than 4x from
        :func:`preset_nlist` of ``n_total`` (e.g. 12 lists for a million
        vectors) and ``n_train`` (the training vectors a retrain would have: its
        ``nlist`` is capped by them, so an index already at that cap is not
        ill-sized), and for a flat PQ index trained with fewer bits than
        ``n_total`` allows; False for flat, HNSW and LSH.
        """
        self._require_fitted("needs_retrain")
        n_train = None if n_train is None else check_positive_int(n_train, "n_train")
        return ill_sized(self.index_, check_positive_int(n_total, "n_total"), n_train)

    def build(self, xb: ArrayLike) -> Index:
        """Train on ``xb`` and add it with ids ``0..n-1`` (discarding any previous content)."""
        xb = as_matrix(xb, "xb")
        if xb.shape[0] == 0:
            raise ValueError("xb is empty (0 vectors): build needs at least one vector")
        self.train(xb)
        self.add(xb)
        return self

    def add(self, xb: ArrayLike) -> None:
        """Append vectors with ids continuing from the largest id so far (builds if untrained)."""
        if not self._fitted():
            self.build(xb)
            return
        n = np.asarray(xb).shape[0] if np.asarray(xb).ndim == 2 else 1
        self.add_with_ids(xb, np.arange(self.next_id_, self.next_id_ + n, dtype=np.int64))

    def add_with_ids(self, xb: ArrayLike, ids: ArrayLike) -> None:
        """Append vectors under the given ids (handed to Faiss in blocks of 65536).

        Parameters
        ----------
        xb : (n, d) array_like
            Vectors of the index's dimension.
        ids : (n,) array_like of int
            Non-negative, distinct ids (e.g. catalog ids; need not be
            contiguous). :meth:`search` returns them.

        NotFittedError before :meth:`train`; ValueError for another dimension,
        bad or repeated ids, or (HNSW) an id that was removed.
        """
        self._require_fitted("add_with_ids")
        arr = np.asarray(xb)
        if arr.ndim == 1:
            arr = arr.reshape(1, -1)
        if arr.ndim != 2:
            raise ValueError(f"xb must be a 2-D (n, d) array, got shape {arr.shape}")
        if arr.shape[1] != self.d_:
            raise ValueError(
                f"xb has dimension {arr.shape[1]} but the index holds vectors of dimension "
                f"{self.d_}: embed with the same embedder the index was built with"
            )
        n = arr.shape[0]
        ids64 = as_ids(ids, n)
        if n == 0:
            return
        if np.unique(ids64).size != n:
            raise ValueError("ids has repeated values: every vector needs its own id")
        if self.removed_.size and np.isin(ids64, self.removed_).any():
            raise ValueError(
                "some ids were removed from this index and cannot be reused (the graph still "
                "holds them): give new ids, or rebuild the index"
            )
        add_faiss(self.index_, arr, ids64)
        self.next_id_ = max(self.next_id_, int(ids64.max()) + 1)
        logger.debug("added %d vectors (ntotal %d)", n, self.ntotal)

    def ids(self) -> NDArray[np.int64]:
        """The ids of the searchable vectors, increasing."""
        self._require_fitted("ids")
        ids = np.sort(stored_ids(self.index_))
        return ids[~np.isin(ids, self.removed_)] if self.removed_.size else ids

    def remove_ids(self, ids: ArrayLike) -> int:
        """Remove vectors by id; returns how many were removed (unknown ids are ignored).

        Faiss removes them where it can (flat, IVF, PQ, LSH); HNSW graphs cannot
        lose nodes, so their ids go to ``removed_`` and are filtered out at
        search time (an :class:`faiss.IDSelector` in the search parameters).
        """
        self._require_fitted("remove_ids")
        ids64 = np.unique(as_ids(ids, None))
        if ids64.size == 0:
            return 0
        removed, self.removed_ = remove_faiss(self.index_, ids64, self.removed_)
        logger.debug("removed %d vectors (ntotal %d)", removed, self.ntotal)
        return removed

    def search(
        self, xq: ArrayLike, k: int, *, vectors: Callable[[NDArray[np.int64]], Any] | None = None
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """The ``k`` nearest searchable vectors of each query, best first.

        ``vectors``, when given, maps increasing ids to their exact ``(len(ids), d)``
        vectors (a bundle reads them from its segments): with :attr:`refine_` > 0 the top
        ``max(k, refine_)`` candidates are then scored again exactly and re-sorted.

        Returns ``D`` (m, k') float32 scores (inner products, squared L2 or
        Hamming distances, see :attr:`higher_is_better`) and ``I`` (m, k') int64,
        the ids given at add, where ``k' = min(k, max(ntotal, 1024))``: exactly
        ``k`` columns for any sensible ``k``, while an absurd ``k`` (1e10) is
        capped instead of allocating columns that could only hold padding.
        Missing results (``k > ntotal``, lists an IVF index did not probe) have
        ``I = -1`` and ``D = -inf`` (higher is better) or ``+inf``. A query may
        be a single (d,) vector. ValueError for ``k < 1`` or another dimension;
        NotFittedError before :meth:`train`.
        """
        self._require_fitted("search")
        k = check_positive_int(k, "k")
        xq = as_matrix(xq, "xq")
        if xq.shape[1] != self.d_:
            raise ValueError(
                f"xq has dimension {xq.shape[1]} but the index holds vectors of dimension "
                f"{self.d_}: embed queries with the embedder the index was built with"
            )
        m, live = xq.shape[0], self.ntotal
        fill = -np.inf if self.higher_is_better else np.inf
        k_out = min(k, max(live, MAX_PADDED_K))
        D = np.full((m, k_out), fill, dtype=np.float32)
        I = np.full((m, k_out), -1, dtype=np.int64)  # noqa: E741 - Faiss's name
        if m == 0 or live == 0:
            return D, I
        kk = min(k, live)
        auto = self.spec.strip().lower() == "auto"
        depth = self.refine_ if vectors is not None else 0
        Dk, Ik = search_faiss(
            self.index_, xq, min(max(kk, depth), live), self.nprobe, self.ef_search, auto,
            self.removed_,
        )
        if depth:
            Dk, Ik = rescore(xq, Ik, vectors, self.metric)
        Dk, Ik = Dk[:, :kk], Ik[:, :kk]
        missing = Ik < 0
        if missing.any():
            Dk = Dk.copy()
            Dk[missing] = fill
        D[:, :kk] = Dk
        I[:, :kk] = Ik
        return D, I

    def empty_copy(self) -> Index:
        """A trained, empty index with the same factory and parameters (a per-segment shard)."""
        self._require_fitted("empty_copy")
        params = {
            k: getattr(self, k)
            for k in ("nprobe", "ef_search", "random_state", "max_memory", "refine")
        }
        new = Index(self.spec, self.metric, **params)
        if self.template_ is not None:
            index = faiss.deserialize_index(self.template_)
        else:  # loaded from the folder format, which keeps no template
            index = faiss.clone_index(self.index_)
            index.reset()
        new._install(index, self.factory_, self.reason_, self.d_, self.n_planned_, None)
        new.template_, new.checksum_ = self.template_, self.checksum_
        return new

    def merge_from(self, shard: Index, *, consume: bool = False) -> None:
        """Append the searchable vectors and ids of ``shard`` (made by :meth:`empty_copy`).

        IVF lists and flat codes are moved with Faiss's ``merge_from``; HNSW
        vectors are re-added. ``shard`` is left as it was unless ``consume``
        (then Faiss moves its data and it is left empty, saving a copy).

        ValueError for a shard of another factory, dimension or metric, or one
        trained separately (its coarse centroids / codebooks differ).
        """
        self._require_fitted("merge_from")
        if not isinstance(shard, Index) or not shard._fitted():
            raise ValueError("merge_from needs a trained Index made by empty_copy()")
        check_mergeable(self.config(), self.checksum_, shard.config(), shard.checksum_)
        if shard.ntotal == 0:
            return
        ivf = ivf_of(self.index_)
        if (
            hnsw_of(self.index_) is not None
            or shard.removed_.size
            or not (ivf is not None or is_idmap(self.index_))
        ):
            vectors, ids = live_vectors(shard.index_, shard.removed_)
            self.add_with_ids(vectors, ids)
            return
        merge_faiss(self.index_, shard.index_, consume)
        self.next_id_ = max(self.next_id_, shard.next_id_)

    def reconstruct_all(self) -> NDArray[np.float32]:
        """The searchable vectors, ``(ntotal, d)`` float32, in increasing id order (:meth:`ids`).

        Exact for flat and HNSW indexes, approximate (decoded codes) for PQ;
        CVRetrievalError when the index cannot give its vectors back (LSH).
        """
        self._require_fitted("reconstruct_all")
        try:
            return reconstruct_sorted(self.index_, self.removed_)
        except RuntimeError as exc:
            raise CVRetrievalError(
                f"this {self.factory} index cannot give its vectors back ({faiss_message(exc)}): "
                "query expansion and database augmentation need flat, hnsw, ivf or pq"
            ) from None

    def memory_bytes(self) -> int:
        """Estimated RAM of the built index: codes, ids, graph, centroids, tables, masks."""
        self._require_fitted("memory_bytes")
        return int(index_memory(self.index_)) + int(self.removed_.nbytes)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the index to ONE file (``faiss.write_index`` + a cvretrieval trailer).

        The file stays readable by ``faiss.read_index``; the trailer holds the
        configuration (JSON), the removed-id mask and the trained empty index
        (for :meth:`empty_copy`). Written to a temporary name, fsynced and
        renamed. An existing directory, or a path without a suffix, instead
        receives the older pair ``index.faiss`` + ``index.json``.
        """
        self._require_fitted("save")
        _io.save(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Index:
        """Read an index written by :meth:`save` (a file, or a folder of the older format).

        BundleError (one line naming the file) when it is missing, not written by
        :meth:`save`, of another format version, or disagrees with its configuration.
        """
        return _io.load(cls, path)
