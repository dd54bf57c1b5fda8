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

import json
import logging
import os
import shutil
import tempfile
import time
import weakref
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from . import __version__
from .bundle import Bundle, BundleWriter, folder_checksums, read_manifest
from .bundle import build as bb
from .bundle.segments import segment_name
from .embedders import Embedder, load_embedder, make_embedder
from .errors import BundleError, ImageReadError, NotFittedError
from .io import scan_images
from .pipeline import Job, Pipeline, SVFeatures, fit_on_sample

logger = logging.getLogger(__name__)

BBox = tuple[float, float, float, float]
RERANK_STEPS = ("sv", "qe")
_OPTIONS = ("pca_whiten", "whiten_shrinkage", "dba", "rerank", "qe_k", "qe_alpha",
            "store_features", "sv_detector", "sv_top", "sv_min_inliers")


@dataclass(frozen=True)
class Hit:
    """One search result: ``rank`` is 1-based; ``score`` is the index's similarity or distance."""

    rank: int
    id: int
    path: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_bundle_manifest(root: Path) -> dict[str, Any]:
    """The checked manifest of a bundle folder (see :func:`cvretrieval.bundle.read_manifest`)."""
    return read_manifest(Path(root))


def parse_rerank(value: Sequence[str] | str | None) -> tuple[str, ...]:
    """Normalise re-ranking steps: ``"sv,qe"`` or ``["sv", "qe"]`` -> ``("sv", "qe")``.

    Examples
    --------
    >>> parse_rerank("qe, sv")
    ('sv', 'qe')
    >>> parse_rerank(None)
    ()
    """
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    steps = {str(v).strip().lower() for v in items if str(v).strip() and str(v).strip() != "none"}
    unknown = sorted(steps - set(RERANK_STEPS))
    if unknown:
        raise ValueError(f"unknown re-ranking {', '.join(unknown)}: use sv, qe or sv,qe")
    return tuple(s for s in RERANK_STEPS if s in steps)


def check_k(k: Any) -> int:
    """``k`` as a positive int (``-k 1e30`` and ``-k 0`` are refused with one line)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


class Retriever:
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
    random_state : int, default 0
        Seeds the samples the embedder, the whitening and the index are fitted on.
    pca_whiten, whiten_shrinkage
        Learn a PCA-whitening (this many dimensions) on a sample of the images.
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
    feature_cache : path, optional
        Share extracted local features between embedders by image content hash.
    lock_timeout : float, default 3600
        Seconds a writer waits for another writer of the same bundle.

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
        random_state: int = 0,
        pca_whiten: int | None = None,
        whiten_shrinkage: float = 0.5,
        dba: int = 0,
        rerank: Sequence[str] = (),
        qe_k: int = 5,
        qe_alpha: float | None = 3.0,
        store_features: bool = False,
        sv_detector: str | None = None,
        sv_top: int = 100,
        sv_min_inliers: int = 12,
        feature_cache: str | os.PathLike | None = None,
        lock_timeout: float = 3600.0,
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
        self.random_state = random_state
        self.pca_whiten = pca_whiten
        self.whiten_shrinkage = whiten_shrinkage
        self.dba = int(dba)
        self.rerank = parse_rerank(rerank)
        self.qe_k = int(qe_k)
        self.qe_alpha = qe_alpha
        self.store_features = bool(store_features) or "sv" in self.rerank
        self.sv_detector = sv_detector
        self.sv_top = int(sv_top)
        self.sv_min_inliers = int(sv_min_inliers)
        self.feature_cache = feature_cache
        self.lock_timeout = float(lock_timeout)
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
    def sv_features(self) -> SVFeatures:
        """Which key points are kept for spatial verification, and how to extract them."""
        return SVFeatures.for_embedder(self.embedder, self.sv_detector)

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
            "dba": self.dba, "rerank": list(self.rerank), "qe_k": self.qe_k,
            "qe_alpha": self.qe_alpha, "store_features": self.store_features,
            "sv_detector": self.sv_detector, "sv_top": self.sv_top,
            "sv_min_inliers": self.sv_min_inliers,
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
        if not hasattr(self.embedder, "encode_sparse"):
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

    def _job(self, stage: str, *, keypoints: bool = False) -> Job:
        return Job(self.embedder, stage, self.max_side, sparse=self.sparse,
                   whitening=self.whitening_, sv=self.sv_features if keypoints else None,
                   cache=self._cache())

    def _new_index(self) -> Any:
        if self.sparse:
            return self._index_class()(self.embedder.dim)
        return self._index_class()(self.index_spec, self.metric, nprobe=self.nprobe,
                                   ef_search=self.ef_search, random_state=self.random_state,
                                   max_memory=self.max_memory)

    def _as_paths(self, images: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
        """The images to embed; a folder is scanned, and the entries it skips (links in a
        loop, FIFOs, ...) are kept in ``self._unlisted`` to be reported with the run."""
        self._unlisted: list[dict[str, str]] = []
        if isinstance(images, (str, os.PathLike)):
            root = Path(images)
            if root.is_dir():
                paths, skipped = scan_images(root)
                self._unlisted = [{"path": str(p), "error": why} for p, why in skipped]
                for entry in self._unlisted:
                    logger.warning("skipped %s: %s", entry["path"], entry["error"])
            else:
                paths = [root]
        else:
            paths = [Path(p) for p in images]
        if not paths:
            why = f" ({len(self._unlisted)} entries skipped: {self._unlisted[0]['error']})" \
                if self._unlisted else ""
            raise ValueError(f"no images to index in {images!s}: the folder holds no image "
                             f"files{why}")
        return paths

    def _store_writer(self) -> Any:
        if not self.store_features:
            return None
        from .featurestore import FeatureStoreWriter

        sv = self.sv_features
        words = sv.mode == "words"
        return lambda d: FeatureStoreWriter(d, max_keypoints=sv.n_features,
                                            descriptors="none" if words else "auto",
                                            words=words, meta=sv.config())

    @staticmethod
    def _has_features(vector: Any) -> bool:
        """An image whose vector is all zero had nothing to describe it (no key points,
        no visual word): it is catalogued as ``nofeatures``, not indexed."""
        return not _is_zero(vector)

    # --- building -----------------------------------------------------------------------
    def fit(self, images: str | os.PathLike | Sequence[str | os.PathLike], *,
            progress: bool | None = None) -> Retriever:
        """Fit the embedder only (e.g. a vocabulary) on a random sample of ``images``."""
        paths = self._as_paths(images)
        fit_on_sample(self._pipeline(), self.embedder, [(i, str(p), None)
                                                        for i, p in enumerate(paths)],
                      max_side=self.max_side, random_state=self.random_state, fit_only=True,
                      cache=self._cache(), progress=progress)
        return self

    def build(self, images: str | os.PathLike | Sequence[str | os.PathLike], *,
              output: str | os.PathLike | None = None, progress: bool | None = None) -> Retriever:
        """Fit on a sample, embed every image into the bundle ``output`` and index it.

        Without ``output`` the bundle lives in a temporary folder removed with this object
        (:meth:`save` copies it). An existing bundle at ``output`` is replaced atomically.
        """
        from ._dask import scheduler_session

        paths = self._as_paths(images)
        validate = getattr(self.embedder, "validate", None)
        if callable(validate):  # a missing model fails once, not once per image
            validate()
        t0 = time.perf_counter()
        root = Path(output) if output is not None else self._scratch()
        tasks = [(i, str(p), None) for i, p in enumerate(paths)]
        with scheduler_session(self._pipeline().scheduler), \
                BundleWriter(root, timeout=self.lock_timeout) as w:
            whitening = self._new_whitening()
            t_fit = time.perf_counter()
            pipe = self._pipeline()
            sample = fit_on_sample(pipe, self.embedder, tasks, max_side=self.max_side,
                                   random_state=self.random_state, whitening=whitening,
                                   cache=self._cache(), progress=progress)
            self.whitening_ = whitening
            fit_s = time.perf_counter() - t_fit
            emb_dir = w.new_name("embedder")
            self.embedder.save(root / emb_dir)
            wh_dir = None
            if whitening is not None:
                wh_dir = w.new_name("whitening")
                whitening.save(root / wh_dir)
            cat_name = w.new_name("catalog", ".sqlite")
            manifest = self._manifest_base(root, emb_dir, wh_dir, cat_name)
            records, failures = self._stream(w, root / cat_name, tasks, paths, 0, sample,
                                             progress)
            if not any(r["n"] for r in records):
                first = failures[0]["error"] if failures else "no image had features"
                raise ImageReadError(f"none of the {len(paths)} images could be indexed; "
                                     f"first error: {first}")
            t_index = time.perf_counter()
            manifest["segments"], manifest["next_id"] = records, len(paths)
            manifest["index"] = self._train_and_shard(root, manifest, w)
            index_s = time.perf_counter() - t_index
            self._commit(w, manifest)
        self._open(root)
        self._report("build", len(paths), failures, t0, fit_s, index_s)
        return self

    def _scratch(self) -> Path:
        tmp = Path(tempfile.mkdtemp(prefix="cvret-bundle-"))
        weakref.finalize(self, shutil.rmtree, tmp, True)
        return tmp / "bundle"

    def _new_whitening(self) -> Any:
        if not self.pca_whiten:
            return None
        from .whitening import PCAWhitening

        return PCAWhitening(n_components=int(self.pca_whiten),
                            shrinkage=float(self.whiten_shrinkage),
                            random_state=self.random_state)

    def _stream(self, w: BundleWriter, catalog_path: Path, tasks: list[Any], paths: list[Path],
                first_id: int, done: dict[int, Any], progress: bool | None) -> tuple[list, list]:
        """Run the pipeline over ``tasks`` (except those in ``done``, whose reduced results
        are finished here) and write the results to new segments and catalog rows."""
        job = self._job("encode", keypoints=self.store_features)
        todo = [t for t in tasks if t[0] not in done]
        if done and self.store_features:  # the sample's key points were not kept: redo them
            todo, done = tasks, {}
        finished: dict[int, Any] = {}
        if done:
            good = [p for p, it in done.items() if it.error is None]
            for p, v in zip(good, job.finish([done[p].value for p in good]), strict=True):
                done[p].value = v
            finished = done
        stream = self._pipeline().map(job, todo, progress=progress, desc="embedding")

        def ordered() -> Any:
            for pos in range(len(tasks)):
                it = finished.pop(pos) if pos in finished else next(stream)
                it.position = pos
                yield it

        sparse = self.sparse
        with bb.Catalog(catalog_path, first_id, write=True) as catalog:
            return bb.write_segments(
                lambda: w.new_segment(sparse=sparse, dim=self._vector_dim()), catalog,
                ordered(), [str(p.resolve()) for p in paths], first_id,
                store=self._store_writer(), has_features=self._has_features)

    def _vector_dim(self) -> int:
        return self.dim if not self.sparse else int(self.embedder.dim)

    def _train_and_shard(self, root: Path, manifest: dict[str, Any], w: BundleWriter,
                         template: Any = None, only: set[int] | None = None) -> dict[str, Any]:
        """Train the index on a sample of the stored vectors (unless ``template`` is given),
        save the trained empty index and each segment's shard; returns the manifest's
        ``index`` record."""
        bundle = Bundle(root, {**manifest, "index": {"kind": "sparse" if self.sparse else "faiss",
                                                      "dim": self._vector_dim(), "spec": ""}})
        if template is None:
            needs = self.index_spec.lower() not in ("flat", "hnsw", "sparse")
            sample = bb.train_sample(bundle.segments, bb.TRAIN_SAMPLE if needs else 256,
                                     self.random_state)
            total = sum(s.n for s in bundle.segments)
            template = self._new_index().train(sample, n_total=total)
            name = w.new_name("index", ".bin")
            template.save(root / name)
        else:
            name = manifest["index"]["template"]
        transform = None
        if self.dba:
            transform = lambda X: bb.augment(bundle.segments, bundle.rows, X,  # noqa: E731
                                             self.dba, self.metric)
        bb.build_shards(bundle.segments, template, transform=transform, only=only)
        return {"kind": "sparse" if self.sparse else "faiss", "spec": self.index_spec,
                "dim": self._vector_dim(), "template": name, "config": template.config()}

    def _manifest_base(self, root: Path, emb_dir: str, wh_dir: str | None,
                       cat_name: str) -> dict[str, Any]:
        import cv2
        import faiss

        return {
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "versions": {"cvretrieval": __version__, "numpy": np.__version__,
                         "faiss": getattr(faiss, "__version__", "?"), "opencv": cv2.__version__},
            "embedder": {**self.embedder.spec(), "dim": int(self.embedder.dim), "dir": emb_dir,
                         "checksums": folder_checksums(root / emb_dir)},
            "metric": self.metric, "max_side": self.max_side, "random_state": self.random_state,
            "options": {**self._options(), "whitening": wh_dir}, "catalog": cat_name,
        }

    def _commit(self, w: BundleWriter, manifest: dict[str, Any]) -> None:
        n_vectors = sum(s["n"] for s in manifest["segments"])
        with bb.Catalog(w.root / manifest["catalog"], manifest["next_id"]) as cat:
            counts = {s: cat.count(s) for s in ("ok", "failed", "nofeatures", "removed")}
        manifest["counts"] = {"images": manifest["next_id"], "vectors": n_vectors, **counts}
        w.commit(manifest)

    def add(self, images: str | os.PathLike | Sequence[str | os.PathLike], *,
            progress: bool | None = None) -> Retriever:
        """Embed more images with the fitted embedder and append them to the bundle in
        place: new segments, new catalog rows, one manifest commit. Paths already in the
        catalog are skipped (and counted)."""
        root = self._require_root("add images")
        t0 = time.perf_counter()
        candidates = self._as_paths(images)
        with BundleWriter(root, timeout=self.lock_timeout, create=False) as w:
            manifest = self._writer_manifest(w)
            first_id = int(manifest["next_id"])
            with bb.Catalog(root / manifest["catalog"], first_id) as cat:
                known = cat.ids_of([str(p.resolve()) for p in candidates])
                removed = set(cat.ids_with_status("removed").tolist()) if known else set()
            live = {p for p, i in known.items() if i not in removed}
            paths = []
            for p in candidates:
                key = str(p.resolve())
                if key not in live:
                    live.add(key)
                    paths.append(p)
            duplicates = len(candidates) - len(paths)
            failures: list[dict[str, str]] = []
            if paths:
                tasks = [(i, str(p), None) for i, p in enumerate(paths)]
                records, failures = self._stream(w, root / manifest["catalog"], tasks, paths,
                                                 first_id, {}, progress)
                manifest["segments"] = manifest["segments"] + records
                manifest["next_id"] = first_id + len(paths)
                new = {r["number"] for r in records if r["n"]}
                template = self._load_template(root, manifest)
                manifest["index"] = self._train_and_shard(root, manifest, w, template, new)
                self._commit(w, manifest)
        self._reopen(root, added=True)
        self._report("add", len(paths), failures, t0, 0.0, 0.0, duplicates=duplicates)
        return self

    def remove(self, images: Sequence[str | os.PathLike] | None = None, *,
               missing: bool = False) -> dict[str, Any]:
        """Remove images (by path) from the bundle, or with ``missing`` those whose files
        are gone. Removed images are never returned by a search. Returns a summary."""
        root = self._require_root("remove images")
        with BundleWriter(root, timeout=self.lock_timeout, create=False) as w:
            manifest = self._writer_manifest(w)
            with bb.Catalog(root / manifest["catalog"], manifest["next_id"], write=True) as cat:
                wanted = [str(Path(p).resolve()) for p in (images or [])]
                found = cat.ids_of(wanted) if wanted else {}
                ids = [i for p, i in found.items()]
                if missing:
                    ids += [e.id for e in cat.iter_entries()
                            if e.status != "removed" and not Path(e.path).is_file()]
                live = [e.id for e in cat.entries(sorted(set(ids)))
                        if e is not None and e.status != "removed"]
                cat.mark_removed(live)
            not_found = [p for p in wanted if p not in found]
            self._commit(w, manifest)
        loaded = self._index
        self._open(root)
        if loaded is not None and live:  # keep the loaded index: take the removed out
            loaded.remove_ids(np.asarray(live, np.int64))
            self._index = loaded
        self.last_run_ = {"operation": "remove", "removed": len(live), "not_found": not_found,
                          "total_indexed": len(self)}
        return self.last_run_

    def compact(self, *, retrain: bool = False, progress: bool | None = None) -> dict[str, Any]:
        """Merge every segment into one without the removed images; with ``retrain`` (or
        when the index's list count no longer fits) train the index again."""
        root = self._require_root("compact")
        t0 = time.perf_counter()
        with BundleWriter(root, timeout=self.lock_timeout, create=False) as w:
            manifest = self._writer_manifest(w)
            bundle = Bundle(root, manifest)
            removed = bundle.catalog.ids_with_status("removed")
            before = len(bundle.segments)
            number, writer = w.new_segment(sparse=self.sparse, dim=self._vector_dim())
            stores = bundle.feature_store() if self.store_features else None
            kp = self._store_writer()(writer.directory / "features") if stores else None
            for _, ids, rows in bb.iter_live_blocks(bundle.segments, removed):
                writer.append(ids, rows if self.sparse else np.asarray(rows, np.float32))
                if kp is not None:
                    self._copy_keypoints(stores, kp, ids, bundle.catalog)
            writer.close()
            if kp is not None:
                kp.close()
            bundle.catalog.close()
            manifest["segments"] = [{"number": number, "n": writer.n,
                                     "first_id": max(writer.first_id, 0),
                                     "last_id": writer.last_id}]
            template = self._load_template(root, manifest)
            retrain = retrain or bool(getattr(template, "needs_retrain", lambda n: False)(writer.n))
            manifest["index"] = self._train_and_shard(root, manifest, w,
                                                      None if retrain else template)
            self._commit(w, manifest)
        self._open(root)
        self.last_run_ = {"operation": "compact", "segments_before": before, "segments_after": 1,
                          "removed_dropped": int(len(removed)), "retrained": retrain,
                          "total_indexed": len(self), "seconds": round(time.perf_counter() - t0, 3)}
        return self.last_run_

    def _copy_keypoints(self, stores: Any, kp: Any, ids: NDArray[np.int64], catalog: Any) -> None:
        from .features.local import LocalFeatures

        for cid in ids.tolist():
            points, desc, words = stores.get(cid)
            n = len(points)
            desc = desc if desc is not None else np.zeros((n, 0), np.uint8)
            kp.append(LocalFeatures(np.asarray(points, np.float32), desc, np.ones(n, np.float32),
                                    np.zeros(n, np.float32), (0, 0)), words=words)

    def _reopen(self, root: Path, *, added: bool) -> None:
        """Read the committed manifest again; an index already in memory gets the new
        segments' shards merged in instead of being read again."""
        loaded, before = self._index, {s.number for s in self.bundle_.segments}  # type: ignore[union-attr]
        self._open(root)
        if loaded is not None and added:
            assert self.bundle_ is not None
            new = [s for s in self.bundle_.segments if s.number not in before]
            self._index = self._load_index(self.bundle_, new, loaded)

    def _require_root(self, what: str) -> Path:
        if self.bundle_ is None:
            raise NotFittedError(f"this retriever has no bundle yet: build it before you {what}")
        return self.bundle_.root

    def _writer_manifest(self, w: BundleWriter) -> dict[str, Any]:
        """The committed manifest, checked to still be the bundle this retriever loaded."""
        assert w.manifest is not None and self.bundle_ is not None
        if w.manifest["embedder"]["dir"] != self.bundle_.manifest["embedder"]["dir"]:
            raise BundleError(f"{w.root} was rebuilt by another process since it was opened: "
                              "load it again")
        return dict(w.manifest)

    def _load_template(self, root: Path, manifest: dict[str, Any]) -> Any:
        return self._index_class().load(root / manifest["index"]["template"])

    def _index_class(self) -> Any:
        if self.sparse:
            from .sparse import SparseIndex

            return SparseIndex
        from .index import Index

        return Index

    def _report(self, what: str, n: int, failed: list[dict[str, str]], t0: float,
                fit_s: float, index_s: float, duplicates: int = 0) -> None:
        unlisted = getattr(self, "_unlisted", [])
        n, failed = n + len(unlisted), [*failed, *unlisted]
        self.last_run_ = {
            "operation": what, "images": n, "indexed": n - len(failed), "skipped": len(failed),
            "duplicates": duplicates, "failed": failed[:1000], "total_indexed": len(self),
            "seconds": round(time.perf_counter() - t0, 3), "fit_seconds": round(fit_s, 3),
            "index_seconds": round(index_s, 3),
        }
        if failed:
            logger.warning("%s: %d of %d images could not be read and were skipped",
                           what, len(failed), n)

    # --- persistence ------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Copy this retriever's bundle to ``path`` (a no-op when it is already there)."""
        root = self._require_root("save it")
        target = Path(path)
        if target.resolve() == root.resolve():
            return target
        src = self.bundle_.manifest  # type: ignore[union-attr]
        with BundleWriter(target, timeout=self.lock_timeout) as w:
            m = json.loads(json.dumps(src))
            m["embedder"]["dir"] = w.new_name("embedder")
            shutil.copytree(root / src["embedder"]["dir"], target / m["embedder"]["dir"])
            m["index"]["template"] = w.new_name("index", ".bin")
            shutil.copy2(root / src["index"]["template"], target / m["index"]["template"])
            if src["options"].get("whitening"):
                m["options"]["whitening"] = w.new_name("whitening")
                shutil.copytree(root / src["options"]["whitening"],
                                target / m["options"]["whitening"])
            m["catalog"] = w.new_name("catalog", ".sqlite")
            self.catalog.copy_to(target / m["catalog"])
            for seg in m["segments"]:
                old = root / segment_name(seg["number"])
                seg["number"] = w.new_segment_number()
                shutil.copytree(old, target / segment_name(seg["number"]))
            w.commit(m)
        return target

    @classmethod
    def load(cls, path: str | os.PathLike, *, n_jobs: int = -1) -> Retriever:
        """Open a bundle folder (checked field by field) for searching and growing."""
        root = Path(path)
        manifest = read_manifest(root)
        opts = manifest["options"]
        bundle = Bundle(root, manifest)
        embedder = load_embedder(bundle.check_embedder_files())
        kind = manifest["index"].get("kind")
        ret = cls(embedder, index="sparse" if kind == "sparse" else manifest["index"]["spec"],
                  metric=manifest["metric"], max_side=manifest.get("max_side"), n_jobs=n_jobs,
                  random_state=manifest.get("random_state", 0),
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
        if index is None:
            index = self._index_class().load(bundle.root / bundle.manifest["index"]["template"])
            index = index.empty_copy()
        segments = bundle.segments if segments is None else segments
        for seg in segments:
            shard = self._index_class().load(seg.shard_path)
            if shard.ntotal != seg.n:
                raise BundleError(f"{seg.shard_path} holds {shard.ntotal} vectors, the manifest "
                                  f"says {seg.n}: the bundle is damaged; rebuild it")
            index.merge_from(shard)
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
        self._check_built()
        assert self.bundle_ is not None
        boxes = list(bboxes) if bboxes is not None else [None] * len(queries)
        if len(boxes) != len(queries):
            raise ValueError(f"{len(queries)} queries but {len(boxes)} boxes")
        keys = {qi: str(Path(q).resolve()) for qi, q in enumerate(queries)
                if isinstance(q, (str, os.PathLike)) and boxes[qi] is None}
        known = self.catalog.ids_of(keys.values(), status="ok") if keys else {}
        stored = {qi: known[k] for qi, k in keys.items() if k in known}
        tasks = [(qi, q, tuple(b) if b is not None else None)
                 for qi, (q, b) in enumerate(zip(queries, boxes, strict=True)) if qi not in stored]
        n_jobs = self.n_jobs if len(tasks) > 16 else 1
        errors = [""] * len(queries)
        vectors: dict[int, Any] = {}
        pipe = Pipeline(n_jobs=n_jobs, chunk_size=self.chunk_size)  # queries stay here
        for it in pipe.map(self._job("encode"), tasks, progress=progress, desc="queries"):
            if it.error is not None:
                errors[it.position] = it.error
            else:
                vectors[it.position] = it.value
        if stored:
            order = sorted(stored)
            rows = self.bundle_.rows(np.array([stored[q] for q in order], np.int64))
            for r, qi in enumerate(order):
                vectors[qi] = rows[r]
        for qi in [q for q in vectors if q not in stored]:
            if not self._has_features(vectors[qi]):
                name = queries[qi] if isinstance(queries[qi], (str, os.PathLike)) else qi
                logger.warning("query %s has no features (too small or too plain for %s): its "
                               "results are arbitrary", name, self.embedder.name)
        rows_out = sorted(vectors)
        return self._stack([vectors[i] for i in rows_out]), rows_out, errors

    def _stack(self, vecs: list[Any]) -> Any:
        if self.sparse:
            import scipy.sparse as sp

            return (sp.vstack(vecs).tocsr() if vecs
                    else sp.csr_matrix((0, self.dim), dtype=np.float32))
        if not vecs:
            return np.zeros((0, self.dim), np.float32)
        return np.ascontiguousarray(np.vstack(vecs), np.float32)

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


def _is_zero(v: Any) -> bool:
    if hasattr(v, "nnz"):
        return v.nnz == 0
    return not np.any(np.asarray(v))
