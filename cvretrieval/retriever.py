"""A Retriever composes an embedder, the streaming pipeline, a bundle and an index.

``build`` streams the images through the pipeline (:mod:`cvretrieval.pipeline`) into a
bundle folder (:mod:`cvretrieval.bundle`): the embedder is fitted on a random sample,
every other image is finished in a worker, and the vectors are written to immutable
segments as they arrive. ``add``, ``remove`` and ``compact`` change the bundle in place
under its writer lock and commit by replacing its manifest. ``search`` embeds the query,
asks the index (:mod:`cvretrieval.index`) for the top k and re-ranks them
(:mod:`cvretrieval.rerank`); ids map to paths through the live catalog.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .bundle import Bundle, read_manifest
from .bundle.build import load_shards
from .embedders import Embedder, load_embedder, make_embedder
from .errors import BundleError, NotFittedError
from .pipeline import Job, Pipeline, SVFeatures
from .search import RERANK_STEPS, Hit, check_k, parse_rerank
from .writing import BundleWriting

logger = logging.getLogger(__name__)

BBox = tuple[float, float, float, float]
__all__ = ["RERANK_STEPS", "Hit", "Retriever", "check_k", "parse_rerank",
           "read_bundle_manifest"]
_OPTIONS = ("pca_whiten", "whiten_shrinkage", "dba", "rerank", "qe_k", "qe_alpha", "store_features",
            "sv_detector", "sv_top", "sv_min_inliers", "sv_matcher", "sv_min_coverage", "sv_order")


def read_bundle_manifest(root: Path) -> dict[str, Any]:
    """The checked manifest of a bundle folder (see :func:`cvretrieval.bundle.read_manifest`)."""
    return read_manifest(Path(root))


class Retriever(BundleWriting):
    """Embed, index, search, grow and shrink a collection of images kept in a bundle folder.

    Parameters
    ----------
    embedder : Embedder or str
        An embedder, or a spec for :func:`cvretrieval.make_embedder` (``"hog"``, ``"bovw-sift"``).
    index : str, default 'flat'
        ``flat``, ``ivf``, ``lsh``, ``pq``, ``hnsw``, ``auto`` (chosen from the number of
        vectors, their dimension and ``max_memory``), ``sparse`` (an inverted file of BoVW
        rows) or any Faiss factory string.
    metric : {'ip', 'l2'}, default 'ip'
    max_side : int or None, default 640
        Images are downscaled so their long side is at most this before extraction.
    n_jobs : int, default -1
        Worker processes (-1: all cores; 1: in this process).
    chunk_size : int, optional
        Images per worker task (default: from the number of images, 8 to 64).
    scheduler : str, optional
        ``"local"`` or ``tcp://host:8786``: run the pipeline on dask.distributed.
    nprobe, ef_search : int, optional
        Search-time parameters of IVF and HNSW indexes.
    max_memory : int or str, optional
        Memory budget of ``index="auto"`` (``"4G"``).
    refine : int, optional
        Candidates a search re-ranks by their exact stored vectors (see
        :class:`~cvretrieval.index.Index`); default: 256 when ``auto`` chose PQ codes.
    random_state : int, default 0
        Seeds the samples the embedder, the whitening and the index are fitted on.
    pca_whiten, whiten_shrinkage
        Learn a PCA-whitening (this many dimensions) on a sample of the images.
    whiten_on : path, optional
        Learn the whitening on these images (a folder) instead of the indexed ones: it
        helps instance search without hurting class-level search (see the README).
    dba : int, default 0
        Database-side augmentation with this many neighbours (0 = off).
    rerank : sequence of str, default ()
        Default re-ranking of :meth:`search`: ``"sv"`` and/or ``"qe"``.
    qe_k, qe_alpha
        Query expansion: top results used, alpha-QE exponent (``None`` = average QE).
    store_features : bool, default False
        Keep key points for spatial verification (implied by ``"sv"``).
    sv_detector, sv_top, sv_min_inliers
        Verification detector (default the embedder's own), results verified, inliers needed.
    sv_matcher : {'words', 'words+desc'}, default 'words'
        BoVW verification: pairs of equal words, or those pairs whose descriptors also
        agree (~50 kB/image more); with ASMK, its own words (else: ratio matching).
    sv_min_coverage, sv_order
        ``min_coverage`` and ``order`` of :class:`~cvretrieval.rerank.spatial.SpatialVerifier`.
    feature_cache : path, optional
        Share extracted local features between embedders by image content hash.
    lock_timeout : float, default 3600
        Seconds a writer waits for another writer of the same bundle.
    reuse_vectors : bool, default True
        A query path that is indexed reuses its stored vector; False embeds every query
        again (to time queries end to end).

    Examples
    --------
    >>> ret = Retriever("hog", index="flat")
    >>> ret.config()["embedder"]["name"]
    'hog'
    """

    def __init__(
        self,
        embedder: Embedder | str,
        index: str = "flat",
        metric: str = "ip",
        *,
        max_side: int | None = 640,
        n_jobs: int = -1,
        chunk_size: int | None = None,
        scheduler: str | None = None,
        nprobe: int | None = None,
        ef_search: int | None = None,
        max_memory: int | str | None = None,
        refine: int | None = None,
        random_state: int = 0,
        pca_whiten: int | None = None,
        whiten_shrinkage: float = 0.5,
        whiten_on: str | os.PathLike | None = None,
        dba: int = 0,
        rerank: Sequence[str] = (),
        qe_k: int = 5,
        qe_alpha: float | None = 3.0,
        store_features: bool = False,
        sv_detector: str | None = None,
        sv_top: int = 100,
        sv_min_inliers: int = 12,
        sv_matcher: str = "words",
        sv_min_coverage: float | None = None, sv_order: str = "inliers",
        feature_cache: str | os.PathLike | None = None,
        lock_timeout: float = 3600.0,
        reuse_vectors: bool = True,
    ) -> None:
        self.embedder = make_embedder(embedder) if isinstance(embedder, str) else embedder
        self.index_spec = index
        self.metric = metric
        self.max_side = max_side
        self.n_jobs = n_jobs
        self.chunk_size = chunk_size
        self.scheduler = scheduler
        self.nprobe = nprobe
        self.ef_search = ef_search
        self.max_memory = max_memory
        self.refine = refine
        self.random_state = random_state
        self.pca_whiten = pca_whiten
        self.whiten_on = whiten_on
        self.whiten_shrinkage = whiten_shrinkage
        self.dba = int(dba)
        self.rerank = parse_rerank(rerank)
        self.qe_k = int(qe_k)
        self.qe_alpha = qe_alpha
        self.store_features = bool(store_features) or "sv" in self.rerank
        self.sv_detector = sv_detector
        self.sv_top = int(sv_top)
        self.sv_min_inliers = int(sv_min_inliers)
        self.sv_matcher, self.sv_order = sv_matcher, sv_order
        self.sv_min_coverage = None if sv_min_coverage is None else float(sv_min_coverage)
        self.feature_cache = feature_cache
        self.lock_timeout = float(lock_timeout)
        self.reuse_vectors = bool(reuse_vectors)
        self._check_sparse_options()
        self.whitening_: Any = None
        self._index: Any = None
        self.bundle_: Bundle | None = None
        self.last_run_: dict[str, Any] = {}
        self._store: Any = None

    # --- introspection ----------------------------------------------------------------
    @property
    def sparse(self) -> bool:
        """True for a sparse BoVW index (``index="sparse"``: an inverted file)."""
        return self.index_spec == "sparse"

    @property
    def items(self) -> bool:
        """True when the embedder's per-image result is not a vector (ASMK's codes): the
        bundle keeps the items and the embedder's own index scores them."""
        return getattr(self.embedder, "vector_output", True) is False

    @property
    def kind(self) -> str:
        """What a segment stores per image: ``dense``, ``sparse`` or ``items``."""
        return "items" if self.items else "sparse" if self.sparse else "dense"

    @property
    def sv_features(self) -> SVFeatures:
        """Which key points are kept for spatial verification, and how to extract them."""
        return SVFeatures.for_embedder(self.embedder, self.sv_detector, self.sv_matcher)

    def finish_vectors(self, reduced: Sequence[Any]) -> Any:
        """Query/database vectors (stacked) of reduced per-image results."""
        return self._stack(self._job("encode").finish(list(reduced)))

    @property
    def is_built(self) -> bool:
        return self.bundle_ is not None

    @property
    def root(self) -> Path | None:
        """The bundle folder this retriever reads and writes."""
        return self.bundle_.root if self.bundle_ is not None else None

    @property
    def catalog(self) -> Any:
        self._check_built()
        assert self.bundle_ is not None
        return self.bundle_.catalog

    @property
    def paths(self) -> list[Path]:
        """Every catalog path by id (reads the whole catalog: prefer :meth:`paths_of`)."""
        if self.bundle_ is None:
            return []
        out: list[Path] = [Path()] * self.bundle_.next_id
        for e in self.bundle_.catalog:
            out[e.id] = Path(e.path)
        return out

    def paths_of(self, ids: Sequence[int] | NDArray[np.int64]) -> list[str | None]:
        """Paths of catalog ids (``None`` for -1 or unknown ids): O(len(ids))."""
        return self.catalog.paths_of(ids)

    def config(self) -> dict[str, Any]:
        return {
            "embedder": self.embedder.spec(),
            "index": (self.bundle_.manifest["index"]["config"] if self.bundle_ is not None
                      else {"spec": self.index_spec}),
            "metric": self.metric,
            "max_side": self.max_side,
            "random_state": self.random_state,
            **self._options(),
        }

    def _options(self) -> dict[str, Any]:
        return {
            "pca_whiten": self.pca_whiten, "whiten_shrinkage": self.whiten_shrinkage,
            "whiten_on": str(self.whiten_on) if self.whiten_on else None,
            "dba": self.dba, "rerank": list(self.rerank), "qe_k": self.qe_k,
            "qe_alpha": self.qe_alpha, "store_features": self.store_features,
            "sv_detector": self.sv_detector, "sv_top": self.sv_top,
            "sv_min_inliers": self.sv_min_inliers, "sv_matcher": self.sv_matcher,
            "sv_min_coverage": self.sv_min_coverage, "sv_order": self.sv_order,
            "sv_features": self.sv_features.config() if self.store_features else None,
        }

    @property
    def supports_rerank(self) -> list[str]:
        return ["sv", "qe"] if self.store_features else ["qe"]

    @property
    def dim(self) -> int:
        if self.whitening_ is not None:
            return int(self.whitening_.n_components_)
        return int(self.embedder.dim)

    def __len__(self) -> int:
        """Images that searches can return."""
        return int(self.bundle_.manifest["counts"]["ok"]) if self.bundle_ is not None else 0

    @property
    def index(self) -> Any:
        """The in-memory index over every segment's shard, removed images taken out;
        read on first use (adding, removing and compacting do not need it)."""
        if self._index is None and self.bundle_ is not None:
            self._index = self._load_index(self.bundle_)
        return self._index

    def _check_sparse_options(self) -> None:
        if not self.sparse:
            return
        if not self.embedder.sparse_output or self.items:
            raise ValueError(
                f"index 'sparse' needs sparse vectors (bovw features), not {self.embedder.name!r}: "
                "use flat, ivf, pq, hnsw or lsh"
            )
        if self.metric != "ip":
            raise ValueError("index 'sparse' scores by inner product (cosine): use --metric ip")
        if self.pca_whiten or self.dba:
            raise ValueError("--pca-whiten and --dba need dense vectors: "
                             "use a Faiss index (flat, hnsw, ...) instead of 'sparse'")

    def _check_built(self) -> None:
        if self.bundle_ is None:
            raise NotFittedError("this retriever is empty: build it (cvret index) before searching")

    # --- the pieces ---------------------------------------------------------------------
    def _pipeline(self, n_jobs: int | None = None) -> Pipeline:
        from ._dask import resolve_scheduler

        return Pipeline(n_jobs=self.n_jobs if n_jobs is None else n_jobs,
                        chunk_size=self.chunk_size, scheduler=resolve_scheduler(self.scheduler))

    def _cache(self) -> tuple[str, str] | None:
        key = self.embedder.extract_cache_key
        return (str(self.feature_cache), key) if self.feature_cache and key else None

    def _job(self, stage: str, *, keypoints: bool = False, query: bool = False) -> Job:
        return Job(self.embedder, stage, self.max_side, sparse=self.sparse, items=self.items,
                   query=query and self.items, whitening=self.whitening_,
                   sv=self.sv_features if keypoints else None, cache=self._cache())

    def query_job(self) -> Job:
        """What the pipeline runs for query images (ASMK: multiple assignment)."""
        return self._job("encode", query=True)

    def reduce_query(self, features: Any) -> Any:
        """A query's reduced result (ASMK: multiple assignment on the query side)."""
        if self.items:
            return self.embedder.reduce(features, query=True)
        return self.embedder.reduce(features)

    def _new_index(self) -> Any:
        if self.items:
            return self.embedder.make_index()
        if self.sparse:
            return self._index_class()(self.embedder.dim)
        return self._index_class()(self.index_spec, self.metric, nprobe=self.nprobe,
                                   ef_search=self.ef_search, random_state=self.random_state,
                                   max_memory=self.max_memory, refine=self.refine)

    def _index_class(self) -> Any:
        if self.items:
            from .asmk_index import AsmkIndex

            return AsmkIndex
        if self.sparse:
            from .sparse import SparseIndex

            return SparseIndex
        from .index import Index

        return Index

    @classmethod
    def load(cls, path: str | os.PathLike, *, n_jobs: int = -1) -> Retriever:
        """Open a bundle folder (checked field by field) for searching and growing."""
        root = Path(path)
        manifest = read_manifest(root)
        opts = manifest["options"]
        bundle = Bundle(root, manifest)
        embedder = load_embedder(bundle.check_embedder_files())
        kind = manifest["index"].get("kind")
        # the index's own settings (budget, nprobe, efSearch, refine): a retrain at compact
        # chooses under the budget the bundle was built with, not without any
        config = manifest["index"].get("config") or {}
        index_opts = {k: config[k] for k in ("max_memory", "nprobe", "ef_search", "refine")
                      if config.get(k) is not None}
        ret = cls(embedder, index="sparse" if kind == "sparse" else manifest["index"]["spec"],
                  metric=manifest["metric"], max_side=manifest.get("max_side"), n_jobs=n_jobs,
                  random_state=manifest.get("random_state", 0), **index_opts,
                  **{k: opts[k] for k in _OPTIONS if k in opts})
        ret._open(root)
        return ret

    def _open(self, root: Path) -> None:
        """(Re)read the committed bundle: manifest, whitening, index shards, removals."""
        bundle = Bundle.open(root)
        m = bundle.manifest
        whitening = None
        if m["options"].get("whitening"):
            from .whitening import PCAWhitening

            try:
                whitening = PCAWhitening.load(root / m["options"]["whitening"])
            except (OSError, ValueError) as exc:
                raise BundleError(f"{root / m['options']['whitening']} cannot be read "
                                  f"({exc})") from None
        dim = int(whitening.n_components_) if whitening is not None else int(m["embedder"]["dim"])
        if int(m["index"].get("dim", -1)) != dim:
            raise BundleError(f"{root / 'manifest.json'}: field 'index.dim' is "
                              f"{m['index'].get('dim')!r} but the embedder gives {dim}")
        self.bundle_, self.whitening_, self._store, self._index = bundle, whitening, None, None

    def _load_index(self, bundle: Bundle, segments: Sequence[Any] | None = None,
                    index: Any = None) -> Any:
        """Merge the shards of ``segments`` (default all) into ``index`` (default a new
        empty copy of the trained template) and take the removed images out."""
        segments = bundle.segments if segments is None else segments
        index = load_shards(bundle, segments, self._index_class(), index)
        removed = bundle.catalog.ids_with_status("removed")
        present = [removed[seg.positions(removed) >= 0] for seg in segments]
        removed = np.concatenate(present) if present else removed[:0]
        if len(removed):
            index.remove_ids(removed)
        return index

    # --- searching ----------------------------------------------------------------------
    def embed_queries(
        self,
        queries: Sequence[str | os.PathLike | bytes | NDArray[np.uint8]],
        bboxes: Sequence[BBox | None] | None = None,
        *,
        progress: bool | None = False,
    ) -> tuple[Any, list[int], list[str]]:
        """Vectors of query images; returns ``(X, rows, errors)``.

        ``X`` has one row per query that could be embedded (``rows`` says which);
        ``errors`` one message per query (empty when fine). A query path without a box
        that is indexed reuses its stored vector (no decoding).
        """
        from .search import embed_queries

        self._check_built()
        return embed_queries(self, queries, bboxes, progress)

    def _stack(self, vecs: list[Any]) -> Any:
        from .search import stack_rows

        return stack_rows(self, vecs)

    def search_vectors(self, X: Any, k: int, *, rerank: Sequence[str] | str | None = None
                       ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """Search with vectors; ``I`` holds catalog ids (-1 where fewer than k).

        ``k`` is capped to the number of indexed images before anything is allocated.
        """
        from .search import search_with_qe

        self._check_built()
        steps = self._steps(rerank)
        if "sv" in steps:
            raise ValueError("spatial verification needs the query images: use search_many")
        return search_with_qe(self, X, self._k(k), steps)

    def _k(self, k: Any) -> int:
        return max(1, min(check_k(k), max(len(self), 1)))

    def _steps(self, rerank: Sequence[str] | str | None) -> tuple[str, ...]:
        steps = self.rerank if rerank is None else parse_rerank(rerank)
        missing = [s for s in steps if s not in self.supports_rerank]
        if missing:
            raise ValueError(
                f"this bundle cannot re-rank with {', '.join(missing)}: spatial verification "
                "needs the images' key points, stored when the bundle is built with --rerank sv"
            )
        return steps

    def feature_store(self) -> Any:
        """The stored key points of every segment, by catalog id (spatial verification)."""
        if self._store is None:
            self._check_built()
            if not self.store_features:
                raise ValueError("this retriever keeps no key points: build it with --rerank sv")
            assert self.bundle_ is not None
            self._store = self.bundle_.feature_store()
        return self._store

    def rows(self, ids: Sequence[int] | NDArray[np.int64]) -> Any:
        """Stored vectors of catalog ids (only those rows are read)."""
        self._check_built()
        assert self.bundle_ is not None
        return self.bundle_.rows(np.asarray(ids, np.int64))

    def search_many(
        self,
        queries: Sequence[str | os.PathLike | bytes | NDArray[np.uint8]],
        k: int,
        bboxes: Sequence[BBox | None] | None = None,
        *,
        progress: bool | None = None,
        rerank: Sequence[str] | str | None = None,
    ) -> tuple[NDArray[np.float32], NDArray[np.int64], list[int]]:
        """Search several query images; returns ``(D, I, failed)``: ``I`` holds catalog ids
        (rows of failed queries are all -1); ``failed`` the positions of unreadable queries."""
        from .search import search_images

        self._check_built()
        return search_images(self, queries, self._k(k), bboxes, self._steps(rerank), progress)

    def search(
        self,
        query: str | os.PathLike | bytes | NDArray[np.uint8],
        k: int = 10,
        bbox: BBox | None = None,
        *,
        rerank: Sequence[str] | str | None = None,
    ) -> list[Hit]:
        """Ranked hits for one query image (a path, file bytes or a decoded RGB array).

        Raises
        ------
        ImageReadError
            When the query cannot be read.
        """
        from .search import search_images

        self._check_built()
        D, I, failed = search_images(self, [query], self._k(k), [bbox], self._steps(rerank),  # noqa: E741
                                     False, raise_errors=True)
        paths = self.paths_of(I[0])
        return [Hit(rank=r + 1, id=int(i), path=str(p), score=float(d))
                for r, (d, i, p) in enumerate(zip(D[0], I[0], paths, strict=True)) if i >= 0]
