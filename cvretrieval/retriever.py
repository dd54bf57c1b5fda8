"""A Retriever is an embedder + a Faiss index + a catalog of images, saved as one folder.

Building streams the images through worker processes (joblib): each worker decodes an
image, extracts its features and reduces them to something compact (visual-word ids,
a HOG vector), so memory holds only compact results. Embedders that must be fitted (a
vocabulary) are fitted first on a random sample of images whose extracted features are
then reused, so no image is decoded twice. An image that cannot be read is recorded in
the catalog as ``failed`` and the batch goes on.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from joblib import Parallel, delayed
from numpy.typing import NDArray
from tqdm.auto import tqdm

from . import __version__
from .catalog import Catalog
from .embedders import Embedder, load_embedder, make_embedder
from .errors import BundleError, ImageReadError, NotFittedError
from .features.local import LocalFeatures, load_features, save_features
from .index import Index
from .io import list_images, read_bytes_and_image, read_image

if TYPE_CHECKING:
    from .sparse import SparseIndex

logger = logging.getLogger(__name__)

BUNDLE_FORMAT_VERSION = 1
BBox = tuple[float, float, float, float]


@dataclass(frozen=True)
class Hit:
    """One search result: ``rank`` is 1-based; ``score`` is the index's similarity or distance."""

    rank: int
    id: int
    path: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Item:
    """What a worker returns for one image."""

    position: int
    sha1: str | None
    n_bytes: int | None
    shape: tuple[int, ...] | None
    value: Any = None
    error: str | None = None
    keypoints: Any = None  # LocalFeatures kept for spatial verification (store_features)


def _limit_worker_threads() -> None:
    """Worker processes already run in parallel: keep OpenCV and Faiss (OpenMP, whose idle
    threads spin) single-threaded inside them."""
    import cv2
    import faiss

    cv2.setNumThreads(1)
    faiss.omp_set_num_threads(1)
    _keep_freed_memory()


_MALLOC_TUNED = False


def _keep_freed_memory() -> None:
    """In a worker, let glibc keep up to 64 MB of freed memory instead of returning every
    block above 128 KB to the system at once.

    Each image's scale-space pyramid is a few MB; by default it is unmapped after every
    image and page-faulted in again for the next one. On 1,000 Caltech images this cut the
    indexing command's page faults from 0.5-0.9 million to 0.1 million and its system time
    from 2.4-4.0 s to 1.2 s (``MALLOC_MMAP_THRESHOLD_``/``MALLOC_TRIM_THRESHOLD_`` set to
    the same values). Other C libraries are left alone.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED or not sys.platform.startswith("linux"):
        return
    _MALLOC_TUNED = True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
        libc.mallopt(m_mmap_threshold, 32 << 20)
        libc.mallopt(m_trim_threshold, 64 << 20)
    except (OSError, AttributeError):  # not glibc (musl, ...): keep the defaults
        pass


class SVFeatures:
    """Which key points a bundle keeps for spatial verification, and how to get them.

    ``mode`` is ``"words"`` when the embedder is a BoVW model (its visual words, one per key
    point, are the tentative matches: only key points and words are stored) and
    ``"ratio"`` otherwise (a local detector's descriptors are stored and matched with
    Lowe's ratio test); ``own`` says the embedder's own local features are used.
    """

    def __init__(self, mode: str, detector: str, n_features: int, own: bool) -> None:
        self.mode = mode
        self.detector = detector
        self.n_features = n_features
        self.own = own
        self._extractor: Any = None

    @classmethod
    def for_embedder(cls, embedder: Embedder, detector: str | None) -> SVFeatures:
        from .embedders.classical import BoVWEmbedder, LocalFeatureEmbedder

        if isinstance(embedder, BoVWEmbedder) and detector in (None, embedder.detector):
            return cls("words", embedder.detector, embedder.n_features, True)
        if isinstance(embedder, LocalFeatureEmbedder) and detector in (None, embedder.detector):
            return cls("ratio", embedder.detector, embedder.n_features, True)
        return cls("ratio", detector or "sift", 1000, False)

    def config(self) -> dict[str, Any]:
        return {"mode": self.mode, "detector": self.detector, "n_features": self.n_features,
                "own": self.own}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_extractor": None}

    def extract(self, image: NDArray[np.uint8]) -> LocalFeatures:
        if self._extractor is None:
            from .features.local import LocalFeatureExtractor

            self._extractor = LocalFeatureExtractor(self.detector, self.n_features)
        return self._extractor.extract(image)

    def features(
        self, extracted: Any, image: Any, path: str, max_side: int | None
    ) -> LocalFeatures:
        """Key points (and descriptors in ``ratio`` mode) of one image, compact."""
        if self.own:
            f = extracted
        else:
            if image is None:  # features came from the cache: decode again
                image = read_image(path, max_side=max_side)
            f = self.extract(image)
        if self.mode == "words":  # words come from the embedder; no descriptors needed
            n = len(f)
            return LocalFeatures(f.keypoints, np.zeros((n, 0), np.uint8), f.scales, f.angles,
                                 f.image_shape)
        return f


def _cache_file(
    cache: tuple[Path, str] | None, sha1: str | None, max_side: int | None
) -> Path | None:
    """Where the extracted features of an image with content hash ``sha1`` are cached."""
    if cache is None or sha1 is None:
        return None
    root, key = cache
    return root / f"{key}-s{max_side or 0}" / sha1[:2] / f"{sha1}.npz"


def _work(
    embedder: Embedder,
    tasks: Sequence[tuple[int, str, BBox | None]],
    max_side: int | None,
    stage: str,
    in_worker: bool,
    cache: tuple[Path, str] | None = None,
    sv: SVFeatures | None = None,
) -> list[_Item]:
    """Decode, extract and (for ``stage == "reduce"``) reduce a chunk of images.

    With ``cache = (folder, key)``, extracted local features are read from and written to
    ``folder`` keyed by the image's content hash, so several embedders that extract the same
    features (``bovw-sift``, ``vlad-sift``) do it once.
    """
    if in_worker:
        _limit_worker_threads()
    items: list[_Item] = []
    images = []
    extracted: dict[int, Any] = {}
    for position, path, bbox in tasks:
        try:
            if bbox is None:
                sha1, n_bytes, image = read_bytes_and_image(path, max_side=max_side)
            else:
                sha1, n_bytes, image = None, None, read_image(path, max_side=max_side, bbox=bbox)
        except (ImageReadError, ValueError, OSError) as exc:
            items.append(_Item(position, None, None, None, error=str(exc)))
            continue
        items.append(_Item(position, sha1, n_bytes, tuple(image.shape)))
        cached = _cache_file(cache, sha1, max_side)
        if cached is not None and cached.exists():
            try:
                extracted[len(items) - 1] = load_features(cached)
                continue
            except (OSError, ValueError, KeyError):
                logger.debug("unreadable cache file %s: extracting again", cached)
        images.append((len(items) - 1, image))
    try:
        fresh = embedder.extract_batch([im for _, im in images])
        pairs = list(zip([i for i, _ in images], fresh, strict=True))
    except Exception:  # one bad image must not sink the chunk: retry one by one
        pairs = []
        for i, im in images:
            try:
                pairs.append((i, embedder.extract(im)))
            except Exception as exc:
                items[i].error = f"cannot extract features from {tasks[i][1]}: {exc}"
    for i, feats in pairs:
        cached = _cache_file(cache, items[i].sha1, max_side)
        if cached is not None and isinstance(feats, LocalFeatures):
            try:
                save_features(cached, feats)
            except OSError as exc:
                logger.debug("cannot cache features in %s: %s", cached, exc)
        extracted[i] = feats
    for i, feats in sorted(extracted.items()):
        try:
            items[i].value = embedder.reduce(feats) if stage == "reduce" else feats
        except Exception as exc:
            items[i].error = f"cannot encode {tasks[i][1]}: {exc}"
    if sv is not None:
        by_item = dict(images)
        for i, feats in extracted.items():
            if items[i].error is None:
                try:
                    items[i].keypoints = sv.features(feats, by_item.get(i), tasks[i][1], max_side)
                except Exception as exc:
                    items[i].error = f"cannot extract key points from {tasks[i][1]}: {exc}"
    return items


def _show_progress(progress: bool | None) -> bool:
    if progress is None:
        return sys.stderr.isatty()
    return bool(progress)


def read_bundle_manifest(root: Path) -> dict[str, Any]:
    """The checked ``manifest.json`` of a bundle folder; :class:`BundleError` saying what is
    wrong (not a folder, no or unreadable manifest, another bundle format)."""
    from ._json import read_json_manifest

    if not root.is_dir():
        what = "does not exist" if not root.exists() else "is a file, not a folder"
        raise BundleError(f"{root} {what}, so it is not a bundle folder: pass one written by "
                          "`cvret index -o`")
    mpath = root / "manifest.json"
    if not mpath.is_file():
        raise BundleError(f"{root} has no manifest.json: it is not a cvretrieval bundle "
                          "(make one with `cvret index`)")
    manifest = read_json_manifest(mpath)
    if manifest.get("format") != "cvretrieval-bundle":
        raise BundleError(f"{mpath} is not a cvretrieval bundle manifest")
    if manifest.get("format_version") != BUNDLE_FORMAT_VERSION:
        raise BundleError(
            f"{root} has bundle format {manifest.get('format_version')!r}; this cvretrieval "
            f"reads {BUNDLE_FORMAT_VERSION}: rebuild it with `cvret index`"
        )
    return manifest


RERANK_STEPS = ("sv", "qe")


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


class Retriever:
    """Embed, index, search, save and load a collection of images.

    Parameters
    ----------
    embedder : Embedder or str
        An embedder, or a spec string for :func:`cvretrieval.make_embedder` (``"hog"``,
        ``"bovw-sift"``, ...).
    index : str, default 'flat'
        A preset (``flat``, ``ivf``, ``lsh``, ``pq``, ``hnsw``) or any Faiss factory string.
    metric : {'ip', 'l2'}, default 'ip'
        Inner product (cosine: every built-in embedder L2-normalises) or L2 distance.
    max_side : int or None, default 640
        Images are downscaled so their long side is at most this before extraction.
    n_jobs : int, default -1
        Worker processes for extraction (-1: all cores; 1: in this process).
    chunk_size : int, default 8
        Images per task sent to a worker.
    nprobe, ef_search : int, optional
        Search-time parameters of IVF and HNSW indexes.
    random_state : int, default 0
        Seeds the choice of images the embedder is fitted on and the index training.
    pca_whiten : int, optional
        Learn a PCA-whitening of the vectors on the indexed images and keep this many
        dimensions (:class:`~cvretrieval.whitening.PCAWhitening`); queries are whitened
        the same way.
    whiten_shrinkage : float, default 0.5
        Eigenvalue shrinkage of the whitening (0 = full whitening, 1 = plain PCA); full
        whitening learned on few images over-fits them.
    dba : int, default 0
        Database-side augmentation: replace every indexed vector by the weighted mean of
        itself and its ``dba`` nearest neighbours (0 = off).
    rerank : sequence of str, default ()
        Re-ranking applied by :meth:`search` when none is asked for: ``"qe"`` (query
        expansion), ``"sv"`` (spatial verification; needs ``store_features``).
    qe_k : int, default 5
        Top results that expand a query.
    qe_alpha : float or None, default 3.0
        alpha-QE weight exponent; ``None`` for plain average query expansion.
    store_features : bool, default False
        Keep the indexed images' key points (a :class:`~cvretrieval.featurestore.FeatureStore`
        in the bundle) so searches can be spatially verified; implied by ``"sv"`` in
        ``rerank``. BoVW bundles keep key points and visual words; other embedders keep a
        local detector's descriptors (``sv_detector``, default the embedder's own or SIFT).
    sv_top, sv_min_inliers : int
        Results verified per query (100) and inliers that make a match verified (12).
    feature_cache : path, optional
        A folder where extracted local features are cached by image content hash, so
        embedders extracting the same features (``bovw-sift`` then ``vlad-sift``) share
        the work; ``cvret bench`` uses it. Not part of the saved bundle.

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
        chunk_size: int = 8,
        nprobe: int | None = None,
        ef_search: int | None = None,
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
    ) -> None:
        self.embedder = make_embedder(embedder) if isinstance(embedder, str) else embedder
        self.index_spec = index
        self.metric = metric
        self.max_side = max_side
        self.n_jobs = n_jobs
        self.chunk_size = chunk_size
        self.nprobe = nprobe
        self.ef_search = ef_search
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
        self._sv = SVFeatures.for_embedder(self.embedder, sv_detector)
        self._store_dir: Path | None = None  # the feature store (a scratch folder or the bundle's)
        self._store: Any = None
        self.feature_cache = feature_cache
        self._check_sparse_options()
        self.whitening_: Any = None
        self._xb: NDArray[np.float32] | None = None  # indexed vectors, for query expansion
        self.index: Index | SparseIndex | None = None
        self.catalog = Catalog()
        self.ids_ = np.zeros(0, np.int64)  # index position -> catalog id
        self.last_run_: dict[str, Any] = {}
        self._vectors: dict[int, NDArray[np.float32]] = {}  # catalog id -> vector (this session)

    # --- introspection ----------------------------------------------------------------
    @property
    def paths(self) -> list[Path]:
        """Catalog image paths; search results' ids index this list."""
        return [Path(p) for p in self.catalog.paths]

    @property
    def is_built(self) -> bool:
        return self.index is not None

    def config(self) -> dict[str, Any]:
        return {
            "embedder": self.embedder.spec(),
            "index": self.index.config() if self.index is not None else {"spec": self.index_spec},
            "metric": self.metric,
            "max_side": self.max_side,
            "random_state": self.random_state,
            **self._options(),
        }

    def _options(self) -> dict[str, Any]:
        """Post-processing and re-ranking settings (also saved in the manifest)."""
        return {
            "pca_whiten": self.pca_whiten,
            "whiten_shrinkage": self.whiten_shrinkage,
            "dba": self.dba,
            "rerank": list(self.rerank),
            "qe_k": self.qe_k,
            "qe_alpha": self.qe_alpha,
            "store_features": self.store_features,
            "sv_detector": self.sv_detector,
            "sv_top": self.sv_top,
            "sv_min_inliers": self.sv_min_inliers,
            "sv_features": self._sv.config() if self.store_features else None,
        }

    @property
    def supports_rerank(self) -> list[str]:
        """Re-ranking steps this retriever can run (``qe`` always; ``sv`` with stored features)."""
        return ["sv", "qe"] if self.store_features else ["qe"]

    @property
    def dim(self) -> int:
        """Dimension of the indexed vectors (after whitening)."""
        if self.whitening_ is not None:
            return int(self.whitening_.n_components_)
        return int(self.embedder.dim)

    def __len__(self) -> int:
        return int(self.ids_.shape[0])

    # --- building ---------------------------------------------------------------------
    def _n_jobs(self) -> int:
        n = self.n_jobs
        if n is None or n == 0:
            return 1
        return max(1, (os.cpu_count() or 1) + 1 + n) if n < 0 else int(n)

    def _run(
        self,
        tasks: Sequence[tuple[int, str, BBox | None]],
        stage: str,
        progress: bool | None,
        desc: str,
    ) -> Iterator[_Item]:
        """Run ``_work`` over chunks of tasks, in parallel when it pays; yields items in order."""
        if not tasks:
            return
        n_jobs = self._n_jobs()
        key = self.embedder.extract_cache_key
        cache = (Path(self.feature_cache), key) if self.feature_cache and key else None
        sv = self._sv if (self.store_features and desc != "queries") else None
        size = max(1, int(self.chunk_size))
        chunks = [tasks[i : i + size] for i in range(0, len(tasks), size)]
        if n_jobs == 1 or len(chunks) == 1:
            results: Any = (
                _work(self.embedder, c, self.max_side, stage, False, cache, sv) for c in chunks
            )
        else:
            results = Parallel(n_jobs=n_jobs, return_as="generator")(
                delayed(_work)(self.embedder, c, self.max_side, stage, True, cache, sv)
                for c in chunks
            )
        with tqdm(total=len(tasks), desc=desc, unit="img",
                  disable=not _show_progress(progress)) as bar:
            for chunk_items in results:
                bar.update(len(chunk_items))
                yield from chunk_items

    @staticmethod
    def _as_paths(images: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
        if isinstance(images, (str, os.PathLike)):
            root = Path(images)
            paths = list_images(root) if root.is_dir() else [root]
        else:
            paths = [Path(p) for p in images]
        if not paths:
            raise ValueError(f"no images to index in {images!s}: the folder holds no image files")
        return paths

    def _fit_on_sample(
        self, tasks: list[tuple[int, str, BBox | None]], progress: bool | None
    ) -> tuple[list[_Item], list[tuple[int, str, BBox | None]]]:
        """Extract a random sample of images, fit the embedder on it; return (sample, rest)."""
        rng = np.random.default_rng(self.random_state)
        m = self.embedder.n_fit_images(len(tasks))
        chosen = set(rng.choice(len(tasks), size=m, replace=False).tolist())
        sample = [t for j, t in enumerate(tasks) if j in chosen]
        rest = [t for j, t in enumerate(tasks) if j not in chosen]
        extracted = list(self._run(sample, "extract", progress, "features (fit sample)"))
        good = [it for it in extracted if it.error is None]
        if not good:
            raise ImageReadError(
                f"none of the {len(sample)} images sampled to fit {self.embedder.name} "
                "could be read"
            )
        self.embedder.fit([it.value for it in good])
        return extracted, rest

    def fit(
        self,
        images: str | os.PathLike | Sequence[str | os.PathLike],
        *,
        progress: bool | None = None,
    ) -> Retriever:
        """Fit the embedder only (e.g. a vocabulary) on a random sample of ``images``."""
        paths = self._as_paths(images)
        self._fit_on_sample([(i, str(p), None) for i, p in enumerate(paths)], progress)
        return self

    def build(
        self,
        images: str | os.PathLike | Sequence[str | os.PathLike],
        *,
        progress: bool | None = None,
    ) -> Retriever:
        """Fit the embedder if needed, embed every image and build the index.

        Parameters
        ----------
        images : folder or sequence of paths
            A folder is listed recursively (see :func:`cvretrieval.io.list_images`).
        progress : bool, optional
            Show progress bars (default: when standard error is a terminal).

        Returns
        -------
        self
        """
        paths = self._as_paths(images)
        validate = getattr(self.embedder, "validate", None)
        if callable(validate):  # a missing model fails once, not once per image
            validate()
        t0 = time.perf_counter()
        self.catalog = Catalog()
        self._vectors = {}
        items: list[_Item | None] = [None] * len(paths)
        tasks: list[tuple[int, str, BBox | None]] = [(i, str(p), None) for i, p in enumerate(paths)]
        fit_seconds = 0.0
        if self.embedder.needs_fit:
            t_fit = time.perf_counter()
            sample, tasks = self._fit_on_sample(tasks, progress)
            for it in sample:
                if it.error is None:
                    it.value = self.embedder.reduce(it.value)
                items[it.position] = it
            fit_seconds = time.perf_counter() - t_fit
        for it in self._run(tasks, "reduce", progress, "embedding"):
            items[it.position] = it
        ok = self._record(paths, items)
        if not ok:
            raise ImageReadError(
                f"none of the {len(paths)} images could be read; "
                f"first error: {items[0].error if items[0] else '?'}"
            )
        self.embedder.fit_corpus([items[i].value for i in ok])  # type: ignore[union-attr]
        t_index = time.perf_counter()
        if self.sparse:
            vectors = self._encode([items[i].value for i in ok])  # type: ignore[union-attr]
            self._vectors = {cid: vectors[r] for r, cid in enumerate(ok)}
            self.index = self._new_index().build(vectors)
        else:
            vectors = self.embedder.encode([items[i].value for i in ok])  # type: ignore[union-attr]
            vectors = self._fit_whitening(vectors)
            self._vectors = dict(zip(ok, vectors, strict=True))
            xb = self._augment(vectors)
            self.index = self._new_index().build(xb)
            self._xb = xb
        self.ids_ = np.asarray(ok, np.int64)
        if self.store_features:
            self._write_store(items, append=False)
        self._report("build", paths, ok, t0, fit_seconds, time.perf_counter() - t_index)
        return self

    def add(
        self,
        images: str | os.PathLike | Sequence[str | os.PathLike],
        *,
        progress: bool | None = None,
    ) -> Retriever:
        """Embed more images with the fitted embedder and append them to the index.

        Images whose path is already in the catalog are skipped (and counted).
        """
        if self.index is None:
            raise NotFittedError("this retriever has no index yet: build it before adding images")
        t0 = time.perf_counter()
        known = {str(Path(p).resolve()) for p in self.catalog.paths}
        paths, duplicates = [], 0
        for p in self._as_paths(images):
            key = str(p.resolve())
            if key in known:
                duplicates += 1
                continue
            known.add(key)
            paths.append(p)
        items: list[_Item | None] = [None] * len(paths)
        tasks = [(i, str(p), None) for i, p in enumerate(paths)]
        for it in self._run(tasks, "reduce", progress, "embedding"):
            items[it.position] = it
        first_id = len(self.catalog)
        ok = self._record(paths, items)
        if ok:
            vectors = self._encode([items[i - first_id].value for i in ok])  # type: ignore[union-attr]
            if self.sparse:
                self._vectors.update({cid: vectors[r] for r, cid in enumerate(ok)})
                self.index.add(vectors)
                self.ids_ = np.concatenate([self.ids_, np.asarray(ok, np.int64)])
                if self.store_features:
                    self._write_store(items, append=True)
                self._report("add", paths, ok, t0, 0.0, 0.0, duplicates=duplicates)
                return self
            self._vectors.update(zip(ok, vectors, strict=True))
            old_xb = self._indexed_vectors() if (self.dba or self._xb is not None) else None
            xb = self._augment(vectors, old_xb)
            self.index.add(xb)
            if old_xb is not None:
                self._xb = np.concatenate([old_xb, xb])
            self.ids_ = np.concatenate([self.ids_, np.asarray(ok, np.int64)])
        if self.store_features:
            self._write_store(items, append=True)
        self._report("add", paths, ok, t0, 0.0, 0.0, duplicates=duplicates)
        return self

    # --- vectors and the index -----------------------------------------------------------
    @property
    def sparse(self) -> bool:
        """True for a sparse BoVW index (``index="sparse"``: an inverted file)."""
        return self.index_spec == "sparse"

    def _encode(self, reduced: Sequence[Any]) -> Any:
        """Final query/database vectors: sparse rows, or dense whitened ones."""
        if self.sparse:
            return self.embedder.encode_sparse(reduced)  # type: ignore[attr-defined]
        return self._whiten(self.embedder.encode(reduced))

    def _new_index(self) -> Any:
        if self.sparse:
            from .sparse import SparseIndex

            return SparseIndex(self.embedder.dim)
        return Index(self.index_spec, self.metric, nprobe=self.nprobe, ef_search=self.ef_search,
                     random_state=self.random_state)

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

    # --- the feature store (spatial verification) ---------------------------------------
    def _write_store(self, items: Sequence[_Item | None], *, append: bool) -> None:
        """Append the key points of ``items`` (catalog order) to the feature store."""
        import tempfile
        import weakref

        from .featurestore import FeatureStoreWriter

        scratch = Path(tempfile.mkdtemp(prefix="cvret-features-"))
        weakref.finalize(self, shutil.rmtree, scratch, True)
        target = scratch / "features"
        if append and self._store_dir is not None:
            shutil.copytree(self._store_dir, target)  # never write into a saved bundle
        words = self._sv.mode == "words"
        writer = FeatureStoreWriter(
            target,
            mode="a" if append and self._store_dir is not None else "w",
            max_keypoints=self._sv.n_features,
            descriptors="none" if words else "auto",
            words=words,
            meta=self._sv.config(),
        )
        with writer:
            for it in items:
                if it is None or it.error is not None or it.keypoints is None:
                    writer.append(None)
                else:
                    writer.append(it.keypoints, words=it.value if words else None)
                    it.keypoints = None
        self._store_dir, self._store = target, None

    def _feature_store(self) -> Any:
        if self._store is None:
            from .featurestore import FeatureStore

            if self._store_dir is None:
                raise ValueError("this retriever keeps no key points: build it with --rerank sv")
            self._store = FeatureStore.open(self._store_dir)
        return self._store

    def _query_features(self, query: Any, bbox: BBox | None) -> tuple[Any, Any]:
        """Key points (and words in ``words`` mode) of one query, as the store holds them."""
        img = read_image(query, max_side=self.max_side, bbox=bbox)
        if self._sv.own:
            feats = self.embedder.extract(img)
            words = self.embedder.reduce(feats) if self._sv.mode == "words" else None
            return feats, words
        return self._sv.extract(img), None

    # --- post-processing of vectors ------------------------------------------------------
    def _fit_whitening(self, vectors: NDArray[np.float32]) -> NDArray[np.float32]:
        if not self.pca_whiten:
            self.whitening_ = None
            return vectors
        from .whitening import PCAWhitening

        n, d = vectors.shape
        if n < 10 * min(int(self.pca_whiten), d):
            logger.warning(
                "PCA-whitening of %d dimensions learned on only %d images: expect over-fitting "
                "(shrinkage %.2f)", min(int(self.pca_whiten), d), n, self.whiten_shrinkage
            )
        self.whitening_ = PCAWhitening(
            n_components=int(self.pca_whiten),
            shrinkage=float(self.whiten_shrinkage),
            random_state=self.random_state,
        ).fit(vectors)
        return self.whitening_.transform(vectors)

    def _whiten(self, vectors: NDArray[np.float32]) -> NDArray[np.float32]:
        if self.whitening_ is None or len(vectors) == 0:
            return vectors
        return self.whitening_.transform(vectors)

    def _augment(
        self, vectors: NDArray[np.float32], old: NDArray[np.float32] | None = None
    ) -> NDArray[np.float32]:
        """DBA of ``vectors`` (new rows) against themselves and the ``old`` indexed rows."""
        if not self.dba or len(vectors) == 0:
            return vectors
        from .rerank.qe import database_augmentation

        if old is None or len(old) == 0:
            return database_augmentation(vectors, k=self.dba, metric=self.metric)
        both = np.concatenate([vectors, old])
        return database_augmentation(both, k=self.dba, metric=self.metric)[: len(vectors)]

    def _indexed_vectors(self) -> NDArray[np.float32]:
        """The vectors the index holds, in index order (kept, or reconstructed from it)."""
        if self._xb is None:
            assert isinstance(self.index, Index)  # dense: a sparse index holds no vectors
            self._xb = self.index.reconstruct_all()
        return self._xb

    def _record(self, paths: Sequence[Path], items: Sequence[_Item | None]) -> list[int]:
        """Append catalog entries in input order; return the catalog ids that were embedded."""
        ok = []
        for path, it in zip(paths, items, strict=True):
            assert it is not None
            if it.error is None:
                h, w = (it.shape or (None, None))[:2]
                e = self.catalog.append(
                    path=str(path.resolve()), sha1=it.sha1, n_bytes=it.n_bytes, width=w, height=h
                )
                ok.append(e.id)
            else:
                logger.warning("skipped %s", it.error)
                self.catalog.append(path=str(path.resolve()), status="failed", error=it.error)
        return ok

    def _report(self, what: str, paths: Sequence[Path], ok: Sequence[int], t0: float,
                fit_s: float, index_s: float, duplicates: int = 0) -> None:
        failed = [
            {"path": e.path, "error": e.error}
            for e in self.catalog.entries[len(self.catalog) - len(paths):]
            if e.status != "ok"
        ]
        self.last_run_ = {
            "operation": what,
            "images": len(paths),
            "indexed": len(ok),
            "skipped": len(failed),
            "duplicates": duplicates,
            "failed": failed,
            "total_indexed": len(self),
            "seconds": round(time.perf_counter() - t0, 3),
            "fit_seconds": round(fit_s, 3),
            "index_seconds": round(index_s, 3),
        }
        if failed:
            logger.warning("%s: %d of %d images could not be read and were skipped",
                           what, len(failed), len(paths))

    # --- searching --------------------------------------------------------------------
    def embed_queries(
        self,
        queries: Sequence[str | os.PathLike | bytes | NDArray[np.uint8]],
        bboxes: Sequence[BBox | None] | None = None,
        *,
        progress: bool | None = False,
    ) -> tuple[NDArray[np.float32], list[int], list[str]]:
        """Vectors of query images; returns ``(X, rows, errors)``.

        ``X`` has one row per query that could be read (``rows`` says which); ``errors``
        has one message per query (empty string when fine). A query without a box whose
        path is in the catalog reuses the vector computed when it was indexed (this session).
        """
        self._check_built()
        bboxes = list(bboxes) if bboxes is not None else [None] * len(queries)
        if len(bboxes) != len(queries):
            raise ValueError(f"{len(queries)} queries but {len(bboxes)} boxes")
        by_path = {p: i for i, p in enumerate(self.catalog.paths)} if self._vectors else {}
        vectors: dict[int, NDArray[np.float32]] = {}
        errors = [""] * len(queries)
        arrays: list[tuple[int, Any, BBox | None]] = []
        tasks: list[tuple[int, str, BBox | None]] = []
        for qi, (q, bb) in enumerate(zip(queries, bboxes, strict=True)):
            if isinstance(q, (np.ndarray, bytes, bytearray)):  # decoded pixels or file bytes
                arrays.append((qi, q, bb))
                continue
            cid = by_path.get(str(Path(q).resolve())) if bb is None else None
            if cid is not None and cid in self._vectors:
                vectors[qi] = self._vectors[cid]
            else:
                tasks.append((qi, str(q), cast(BBox, tuple(bb)) if bb is not None else None))
        reduced: dict[int, Any] = {}
        for it in self._run(tasks, "reduce", progress, "queries"):
            if it.error is None:
                reduced[it.position] = it.value
            else:
                errors[it.position] = it.error
        for qi, arr, bb in arrays:
            try:
                img = read_image(arr, max_side=self.max_side, bbox=bb)
                reduced[qi] = self.embedder.reduce(self.embedder.extract(img))
            except (ImageReadError, ValueError) as exc:
                errors[qi] = str(exc)
        if reduced:
            order = sorted(reduced)
            enc = self._encode([reduced[i] for i in order])
            vectors.update({qi: enc[r] for r, qi in enumerate(order)})
        rows = sorted(vectors)
        if self.sparse:
            import scipy.sparse as sp

            X = (sp.vstack([vectors[i] for i in rows]).tocsr() if rows
                 else sp.csr_matrix((0, self.dim), dtype=np.float32))
            return X, rows, errors
        X = np.stack([vectors[i] for i in rows]) if rows else np.zeros((0, self.dim), np.float32)
        return np.ascontiguousarray(X, np.float32), rows, errors

    def search_vectors(
        self, X: NDArray[np.float32], k: int, *, rerank: Sequence[str] | str | None = None
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """Search the index with vectors; ``I`` holds catalog ids (-1 where fewer than k).

        ``rerank`` may hold ``"qe"`` (query expansion); spatial verification needs the
        query images, so it is only available through :meth:`search_many`/:meth:`search`.
        """
        self._check_built()
        steps = self._steps(rerank)
        if "sv" in steps:
            raise ValueError("spatial verification needs the query images: use search_many")
        D, P = self._search_positions(X, k, steps)
        return D, self._to_ids(P)

    def _to_ids(self, P: NDArray[np.int64]) -> NDArray[np.int64]:
        return np.where(P >= 0, self.ids_[np.clip(P, 0, None)], -1).astype(np.int64)

    def _steps(self, rerank: Sequence[str] | str | None) -> tuple[str, ...]:
        steps = self.rerank if rerank is None else parse_rerank(rerank)
        missing = [s for s in steps if s not in self.supports_rerank]
        if missing:
            raise ValueError(
                f"this bundle cannot re-rank with {', '.join(missing)}: spatial verification "
                "needs the images' key points, stored when the bundle is built with --rerank sv"
            )
        return steps

    def _search_positions(
        self, X: NDArray[np.float32], k: int, steps: Sequence[str]
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """Index search (positions), with query expansion when ``"qe"`` is in ``steps``."""
        assert self.index is not None
        k = int(k)
        if "qe" not in steps or self.qe_k == 0 or X.shape[0] == 0:
            return self.index.search(X, k)
        D1, P1 = self.index.search(X, self.qe_k)
        return self.index.search(self._expand_queries(X, P1, D1), k)

    def _expand_queries(self, X: Any, E: NDArray[np.int64], S: NDArray[np.float32]) -> Any:
        """Query expansion: each query plus its results ``E`` (index positions, -1 = none)
        weighted by their scores ``S`` (alpha-QE, Radenović et al. 2018; plain average when
        ``qe_alpha`` is None, Chum et al. 2007), L2-normalised. Dense or sparse."""
        if not self.sparse:
            from .rerank.qe import alpha_query_expansion, average_query_expansion

            xb = self._indexed_vectors()
            if self.qe_alpha is None:
                return average_query_expansion(X, xb, E, k=E.shape[1])
            return alpha_query_expansion(X, xb, E, S, k=E.shape[1], alpha=self.qe_alpha,
                                         metric=self.metric)
        import scipy.sparse as sp
        from sklearn.preprocessing import normalize

        from .sparse import SparseIndex

        assert isinstance(self.index, SparseIndex)
        valid = E >= 0
        sims = np.where(valid & np.isfinite(S), S, 0.0)
        W = np.ones_like(sims) if self.qe_alpha is None else np.clip(sims, 0, None) ** self.qe_alpha
        W = np.where(valid, W, 0.0)
        xb = self.index._consolidate()
        rows = np.repeat(np.arange(E.shape[0]), E.shape[1])
        M = sp.csr_matrix((W.ravel(), (rows, np.clip(E, 0, None).ravel())),
                          shape=(E.shape[0], xb.shape[0]))
        return normalize(sp.csr_matrix(X) + M @ xb).astype(np.float32).tocsr()

    def search_many(
        self,
        queries: Sequence[str | os.PathLike | bytes | NDArray[np.uint8]],
        k: int,
        bboxes: Sequence[BBox | None] | None = None,
        *,
        progress: bool | None = None,
        rerank: Sequence[str] | str | None = None,
    ) -> tuple[NDArray[np.float32], NDArray[np.int64], list[int]]:
        """Search several query images; returns ``(D, I, failed)``.

        ``I`` is ``(len(queries), k)`` catalog ids (rows of failed queries are all -1);
        ``failed`` lists the positions of queries that could not be read. ``rerank``
        (default: the retriever's ``rerank``) may hold ``"sv"`` and ``"qe"``.
        """
        self._check_built()
        steps = self._steps(rerank)
        X, rows, errors, feats = self._embed_for(steps, queries, bboxes, progress)
        k = int(k)
        D = np.full((len(queries), k), np.nan, np.float32)
        I = np.full((len(queries), k), -1, np.int64)  # noqa: E741 - Faiss's name
        if rows:
            boxes = list(bboxes) if bboxes is not None else [None] * len(queries)
            d, p = self._rerank_search(X, k, steps, [queries[r] for r in rows],
                                       [boxes[r] for r in rows],
                                       [feats[r] for r in rows] if feats else None)
            D[rows], I[rows] = d, self._to_ids(p)
        failed = [qi for qi, e in enumerate(errors) if e]
        for qi in failed:
            logger.warning("query skipped: %s", errors[qi])
        return D, I, failed

    def _embed_for(
        self,
        steps: Sequence[str],
        queries: Sequence[Any],
        bboxes: Sequence[BBox | None] | None,
        progress: bool | None,
    ) -> tuple[Any, list[int], list[str], list[Any]]:
        """Query vectors; with spatial verification on the embedder's own key points, the
        features are extracted once, here, and kept for the verification."""
        if "sv" not in steps or not self._sv.own:
            X, rows, errors = self.embed_queries(queries, bboxes, progress=progress)
            return X, rows, errors, []
        boxes = list(bboxes) if bboxes is not None else [None] * len(queries)
        if len(boxes) != len(queries):
            raise ValueError(f"{len(queries)} queries but {len(boxes)} boxes")
        feats: list[Any] = [None] * len(queries)
        errors = [""] * len(queries)
        reduced: dict[int, Any] = {}
        for qi, (q, bb) in enumerate(zip(queries, boxes, strict=True)):
            try:
                f, words = self._query_features(q, bb)
                feats[qi] = (f, words)
                reduced[qi] = words if words is not None else self.embedder.reduce(f)
            except (ImageReadError, ValueError, OSError) as exc:
                errors[qi] = str(exc)
        rows = sorted(reduced)
        if not rows:
            X = np.zeros((0, self.dim), np.float32)
        else:
            X = self._encode([reduced[i] for i in rows])
            if not self.sparse:
                X = np.ascontiguousarray(X, np.float32)
        return X, rows, errors, feats

    def _rerank_search(
        self,
        X: NDArray[np.float32],
        k: int,
        steps: Sequence[str],
        queries: Sequence[Any],
        bboxes: Sequence[BBox | None],
        query_features: Sequence[Any] | None = None,
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """Search and re-rank; positions in the index."""
        if "sv" not in steps:
            return self._search_positions(X, k, steps)
        assert self.index is not None
        from .rerank.spatial import SpatialVerifier

        k = int(k)
        D, P = self.index.search(X, max(k, self.sv_top))
        store = self._feature_store()
        verifier = SpatialVerifier(top_n=self.sv_top, min_inliers=self.sv_min_inliers,
                                   matcher=self._sv.mode)
        pos_of = np.full(len(self.catalog), -1, np.int64)
        pos_of[self.ids_] = np.arange(len(self.ids_))
        verified: list[NDArray[np.int64]] = []
        for j, (query, bbox) in enumerate(zip(queries, bboxes, strict=True)):
            try:
                if query_features is not None and query_features[j] is not None:
                    feats, words = query_features[j]
                else:
                    feats, words = self._query_features(query, bbox)
            except (ImageReadError, ValueError) as exc:  # the vector search still stands
                logger.warning("no spatial verification for query %d: %s", j, exc)
                verified.append(np.zeros(0, np.int64))
                continue
            ids = self._to_ids(P[j])
            new_ids, inliers = verifier.rerank(feats, ids, store, query_words=words)
            order_pos = np.where(new_ids >= 0, pos_of[np.clip(new_ids, 0, None)], -1)
            score = dict(zip(P[j].tolist(), D[j].tolist(), strict=True))
            P[j] = order_pos
            D[j] = [score.get(int(p), np.nan) for p in order_pos]
            verified.append(order_pos[inliers >= self.sv_min_inliers])
        if "qe" not in steps or self.qe_k == 0:
            return D[:, :k], P[:, :k]
        return self._verified_expansion(X, k, D, P, verified)

    def _verified_expansion(
        self,
        X: NDArray[np.float32],
        k: int,
        D: NDArray[np.float32],
        P: NDArray[np.int64],
        verified: Sequence[NDArray[np.int64]],
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """Query expansion with the spatially verified results (Chum et al. 2007): the query
        is expanded with its top ``qe_k`` verified images and searched again; the verified
        images keep their places at the top, the new search fills the rest. Queries with no
        verified result keep the verified ranking."""
        assert self.index is not None
        n = X.shape[0]
        E = np.full((n, self.qe_k), -1, np.int64)
        for j, v in enumerate(verified):
            E[j, : min(self.qe_k, len(v))] = v[: self.qe_k]
        has = (E >= 0).any(axis=1)
        outD, outP = D[:, :k].copy(), P[:, :k].copy()
        if not has.any():
            return outD, outP
        rows = np.flatnonzero(has)
        score = [dict(zip(P[j].tolist(), D[j].tolist(), strict=True)) for j in rows]
        S = np.array([[score[r].get(int(p), 0.0) for p in E[j]] for r, j in enumerate(rows)],
                     np.float32).reshape(len(rows), E.shape[1])
        Xq = self._expand_queries(X[rows], E[rows], S)
        D2, P2 = self.index.search(Xq, k)
        for r, j in enumerate(rows.tolist()):
            head = [int(p) for p in verified[j]][:k]
            seen = set(head)
            tail = [(float(d), int(p)) for d, p in zip(D2[r], P2[r], strict=True)
                    if p >= 0 and int(p) not in seen]
            score_j = dict(zip(P[j].tolist(), D[j].tolist(), strict=True))
            merged = [(score_j.get(p, np.nan), p) for p in head] + tail
            merged = merged[:k]
            outP[j] = -1
            outD[j] = np.nan
            outP[j, : len(merged)] = [p for _, p in merged]
            outD[j, : len(merged)] = [d for d, _ in merged]
        return outD, outP

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
        self._check_built()
        steps = self._steps(rerank)
        X, rows, errors, feats = self._embed_for(steps, [query], [bbox], False)
        if not rows:
            raise ImageReadError(errors[0])
        D, P = self._rerank_search(X, k, steps, [query], [bbox], feats or None)
        I = self._to_ids(P)  # noqa: E741
        paths = self.catalog.paths
        return [
            Hit(rank=r + 1, id=int(i), path=paths[i], score=float(d))
            for r, (d, i) in enumerate(zip(D[0], I[0], strict=True))
            if i >= 0
        ]

    def _check_built(self) -> None:
        if self.index is None:
            raise NotFittedError("this retriever is empty: build it (cvret index) before searching")

    # --- persistence ------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the bundle folder atomically (a temporary sibling, then a rename)."""
        self._check_built()
        assert self.index is not None
        target = Path(path)
        if target.exists() and not (target / "manifest.json").is_file():
            if not target.is_dir() or any(target.iterdir()):
                raise BundleError(
                    f"{target} exists and is not a cvretrieval bundle: choose another output path"
                )
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            self.embedder.save(tmp / "embedder")
            if self.whitening_ is not None:
                self.whitening_.save(tmp / "whitening")
            if self.store_features and self._store_dir is not None:
                shutil.copytree(self._store_dir, tmp / "features")
            self.index.save(tmp)
            np.save(tmp / "ids.npy", self.ids_)
            self.catalog.save(tmp / "catalog.sqlite")
            (tmp / "manifest.json").write_text(json.dumps(self._manifest(), indent=2))
            if target.exists():
                old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
                target.rename(old)
                tmp.rename(target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                tmp.rename(target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return target

    def _manifest(self) -> dict[str, Any]:
        import cv2
        import faiss

        assert self.index is not None
        return {
            "format": "cvretrieval-bundle",
            "format_version": BUNDLE_FORMAT_VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "versions": {
                "cvretrieval": __version__,
                "numpy": np.__version__,
                "faiss": getattr(faiss, "__version__", "?"),
                "opencv": cv2.__version__,
            },
            "embedder": {**self.embedder.spec(), "dim": self.embedder.dim},
            "index": self.index.config(),
            "metric": self.metric,
            "max_side": self.max_side,
            "random_state": self.random_state,
            "options": self._options(),
            "counts": {
                "images": len(self.catalog),
                "indexed": len(self),
                "failed": len(self.catalog.failed()),
            },
        }

    @classmethod
    def load(cls, path: str | os.PathLike, *, n_jobs: int = -1) -> Retriever:
        """Open a bundle folder and check that its parts agree."""
        root = Path(path)
        manifest = read_bundle_manifest(root)
        embedder = load_embedder(root / "embedder")
        if manifest.get("index", {}).get("type") == "sparse-inverted-file":
            from .sparse import SparseIndex

            index: Any = SparseIndex.load(root)
        else:
            index = Index.load(root)
        try:
            ids = np.load(root / "ids.npy", allow_pickle=False).astype(np.int64)
        except (OSError, ValueError) as exc:
            raise BundleError(f"{root / 'ids.npy'} cannot be read ({exc})") from None
        catalog = Catalog.load(root / "catalog.sqlite")
        if index.ntotal != len(ids):
            raise BundleError(
                f"{root}: the index holds {index.ntotal} vectors but ids.npy {len(ids)}"
            )
        options = manifest.get("options", {})
        whitening = None
        if options.get("pca_whiten"):
            from .whitening import PCAWhitening

            try:
                whitening = PCAWhitening.load(root / "whitening")
            except (OSError, ValueError) as exc:
                raise BundleError(f"{root / 'whitening'} cannot be read ({exc})") from None
        dim = int(whitening.n_components_) if whitening is not None else embedder.dim
        if index.d != dim:
            raise BundleError(f"{root}: the index has dimension {index.d}, the embedder {dim}")
        n_ok = sum(1 for e in catalog if e.status == "ok")
        if n_ok != len(ids) or (len(ids) and (ids.min() < 0 or ids.max() >= len(catalog))):
            raise BundleError(
                f"{root}: the catalog ({n_ok} indexed images) and the index ({len(ids)}) disagree"
            )
        ret = cls(
            embedder,
            index=("sparse" if manifest.get("index", {}).get("type") == "sparse-inverted-file"
                   else manifest.get("index", {}).get("spec", "flat")),
            metric=manifest.get("metric", "ip"),
            max_side=manifest.get("max_side", 640),
            n_jobs=n_jobs,
            random_state=manifest.get("random_state", 0),
            **{key: options[key] for key in ("pca_whiten", "whiten_shrinkage", "dba", "rerank",
                                             "qe_k", "qe_alpha", "store_features", "sv_detector",
                                             "sv_top", "sv_min_inliers") if key in options},
        )
        ret.index, ret.ids_, ret.catalog = index, ids, catalog
        ret.whitening_ = whitening
        if ret.store_features:
            if not (root / "features" / "featurestore.json").is_file():
                raise BundleError(f"{root}: the manifest says key points are stored but "
                                  "features/ is missing or incomplete: rebuild the bundle")
            ret._store_dir = root / "features"
        return ret
