"""The streaming pipeline: images -> worker processes -> compact per-image results, in order.

This is the only place that runs workers. A :class:`Pipeline` maps chunks of images over
joblib processes on this machine or over a dask.distributed cluster (``scheduler``), and
yields one :class:`Item` per image in input order as the chunks arrive, so callers write
results to disk as they come and memory does not grow with the number of images.

Each worker decodes an image (:mod:`cvretrieval.io`), extracts its features and, by
``stage``, stops there (``"extract"``: to fit a vocabulary), reduces them (``"reduce"``:
visual words) or encodes them into the final vector (``"encode"``: after the embedder's
corpus statistics and the whitening are fitted on a sample, every image's vector is
finished in the worker; only that vector crosses the process boundary).

:func:`fit_on_sample` is the sample-fit: the embedder's ``fit`` (a vocabulary), its
``fit_corpus`` (idf) and an optional whitening, each on a bounded random sample.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._items import Item, pack_items, unpack_items
from ._progress import progress_bar
from .embedders import Embedder
from .errors import ImageReadError
from .features.local import LocalFeatures, load_features, save_features
from .io import read_bytes_and_image, read_image

logger = logging.getLogger(__name__)

BBox = tuple[float, float, float, float]
Task = tuple[int, Any, "BBox | None"]  # (position, path or bytes or array, box)
STAGES = ("extract", "reduce", "encode")
#: images whose reduced results fit the corpus statistics (idf) and the whitening
CORPUS_SAMPLE = 2000


@dataclass
class Job:
    """Everything a worker needs, pickled once per chunk (or scattered once with Dask)."""

    embedder: Embedder
    stage: str
    max_side: int | None = 640
    sparse: bool = False
    items: bool = False  # the embedder's result is not a vector (ASMK): kept as it is
    query: bool = False  # query side (ASMK's multiple assignment)
    whitening: Any = None
    sv: Any = None
    cache: tuple[str, str] | None = None
    in_worker: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def finish(self, reduced: Sequence[Any]) -> list[Any]:
        """Final vectors of reduced results: sparse rows, dense whitened vectors or items."""
        if self.items:
            return list(self.embedder.encode(reduced))
        if self.sparse:
            m = self.embedder.encode_sparse(reduced)  # type: ignore[attr-defined]
            return [m[i] for i in range(m.shape[0])]
        x = self.embedder.encode(reduced)
        if self.whitening is not None:
            x = self.whitening.transform(x)
        return list(np.asarray(x, np.float32))


class SVFeatures:
    """Which key points a bundle keeps for spatial verification, and how to get them.

    ``mode`` is ``"words"`` when the embedder is a BoVW model (its visual words, one per key
    point, are the tentative matches: only key points and words are stored),
    ``"words+desc"`` for a BoVW model whose pairs of equal words must also agree by their
    descriptors (mutual nearest neighbours passing a ratio test: stores descriptors too), and
    ``"ratio"`` otherwise (a local detector's descriptors are stored and matched with
    Lowe's ratio test); ``own`` says the embedder's own local features are used.
    """

    def __init__(self, mode: str, detector: str, n_features: int, own: bool) -> None:
        self.mode = mode
        self.detector = detector
        self.n_features = n_features
        self.own = own
        self._extractor: Any = None

    @property
    def uses_words(self) -> bool:
        return self.mode in ("words", "words+desc")

    @classmethod
    def for_embedder(cls, embedder: Embedder, detector: str | None,
                     matcher: str = "words") -> SVFeatures:
        from .embedders.classical import BoVWEmbedder, LocalFeatureEmbedder

        if matcher not in ("words", "words+desc"):
            raise ValueError(f"sv_matcher must be 'words' or 'words+desc', got {matcher!r}")
        if isinstance(embedder, BoVWEmbedder) and detector in (None, embedder.detector):
            return cls(matcher, embedder.detector, embedder.n_features, True)
        if matcher == "words+desc" and embedder.keypoint_word_output and detector in (
                None, getattr(embedder, "detector", None)):  # ASMK: its words + descriptors
            return cls(matcher, embedder.detector, embedder.n_features, True)
        own = isinstance(embedder, LocalFeatureEmbedder) or (
            getattr(embedder, "local_features", False) and hasattr(embedder, "detector"))
        if own and detector in (None, getattr(embedder, "detector", None)):
            return cls("ratio", embedder.detector, embedder.n_features, True)
        return cls("ratio", detector or "sift", 1000, False)

    @staticmethod
    def words_of(embedder: Embedder, features: LocalFeatures, reduced: Any) -> Any:
        """The key points' words: BoVW's reduced result, or ``keypoint_words`` (ASMK)."""
        if embedder.keypoint_word_output:
            return embedder.keypoint_words(features)  # type: ignore[attr-defined]
        return reduced

    def config(self) -> dict[str, Any]:
        return {"mode": self.mode, "detector": self.detector, "n_features": self.n_features,
                "own": self.own}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_extractor": None}

    @property
    def extractor(self) -> Any:
        if self._extractor is None:
            from .features.local import LocalFeatureExtractor

            self._extractor = LocalFeatureExtractor(self.detector, self.n_features)
        return self._extractor

    @property
    def grayscale_input(self) -> bool:
        return bool(self.extractor.grayscale_input)

    def extract(self, image: NDArray[np.uint8]) -> LocalFeatures:
        return self.extractor.extract(image)

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


# --- the worker side -------------------------------------------------------------------
_MALLOC_TUNED = False


def limit_worker_threads() -> None:
    """Workers already run in parallel: keep OpenCV and Faiss single-threaded inside them,
    and let glibc keep freed memory (each image's SIFT pyramid was otherwise page-faulted
    in again: 0.5-0.9 M faults per 1,000 images before, 0.1 M after)."""
    global _MALLOC_TUNED
    import cv2
    import faiss

    cv2.setNumThreads(1)
    faiss.omp_set_num_threads(1)
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


def _cache_file(cache: tuple[str, str] | None, sha1: str | None,
                max_side: int | None) -> Path | None:
    if cache is None or sha1 is None:
        return None
    root, key = cache
    return Path(root) / f"{key}-s{max_side or 0}" / sha1[:2] / f"{sha1}.npz"


def _read(source: Any, bbox: BBox | None, max_side: int | None,
          grayscale: bool = False) -> tuple[Any, Any, Any]:
    if isinstance(source, (str, os.PathLike)) and bbox is None:
        return read_bytes_and_image(source, max_side=max_side, grayscale=grayscale)
    return None, None, read_image(source, max_side=max_side, bbox=bbox, grayscale=grayscale)


def run_chunk(job: Job, tasks: Sequence[Task]) -> list[Item]:
    """Decode, extract and reduce/encode a chunk of images; one bad image never sinks it."""
    if job.in_worker:
        limit_worker_threads()
    emb = job.embedder
    gray = bool(emb.grayscale_input) and (
        job.sv is None or job.sv.own or job.sv.grayscale_input)
    items: list[Item] = []
    images: list[tuple[int, Any]] = []
    extracted: dict[int, Any] = {}
    for position, source, bbox in tasks:
        name = source if isinstance(source, (str, os.PathLike)) else f"query {position}"
        try:
            sha1, n_bytes, image = _read(source, bbox, job.max_side, gray)
        except (ImageReadError, ValueError, OSError) as exc:
            items.append(Item(position, error=str(exc) or f"cannot read {name}"))
            continue
        items.append(Item(position, sha1, n_bytes, tuple(image.shape)))
        cached = _cache_file(job.cache, sha1, job.max_side)
        if cached is not None and cached.exists():
            try:
                extracted[len(items) - 1] = load_features(cached)
                continue
            except (OSError, ValueError, KeyError):
                logger.debug("unreadable cache file %s: extracting again", cached)
        images.append((len(items) - 1, image))
    try:
        pairs = list(zip([i for i, _ in images], emb.extract_batch([im for _, im in images]),
                         strict=True))
    except Exception:  # retry one by one so one bad image does not sink the chunk
        pairs = []
        for i, im in images:
            try:
                pairs.append((i, emb.extract(im)))
            except Exception as exc:
                items[i].error = f"cannot extract features from {tasks[i][1]}: {exc}"
    for i, feats in pairs:
        cached = _cache_file(job.cache, items[i].sha1, job.max_side)
        if cached is not None and isinstance(feats, LocalFeatures):
            try:
                save_features(cached, feats)
            except OSError as exc:
                logger.debug("cannot cache features in %s: %s", cached, exc)
        extracted[i] = feats
    by_item = dict(images)
    reduced: dict[int, Any] = {}
    for i, feats in sorted(extracted.items()):
        try:
            if job.stage == "extract":
                reduced[i] = feats
            else:
                reduced[i] = emb.reduce(feats, query=True) if job.query else emb.reduce(feats)
        except Exception as exc:
            items[i].error = f"cannot encode {tasks[i][1]}: {exc}"
            continue
        if job.sv is not None:
            try:
                items[i].keypoints = job.sv.features(feats, by_item.get(i), tasks[i][1],
                                                     job.max_side)
                if job.sv.uses_words:
                    items[i].words = job.sv.words_of(emb, feats, reduced[i])
            except Exception as exc:
                items[i].error = f"cannot extract key points from {tasks[i][1]}: {exc}"
                del reduced[i]
    order = sorted(reduced)
    if job.stage == "encode" and order:
        try:
            values = job.finish([reduced[i] for i in order])
        except Exception as exc:
            for i in order:
                items[i].error = f"cannot encode {tasks[i][1]}: {exc}"
            values = []
        for i, v in zip(order, values, strict=False):
            items[i].value = v
    else:
        for i in order:
            items[i].value = reduced[i]
    return items


def run_chunk_packed(job: Job, tasks: Sequence[Task]) -> tuple[Any, ...]:
    """:func:`run_chunk` for a worker: its items packed for the trip back."""
    return pack_items(run_chunk(job, tasks))


# --- the caller side --------------------------------------------------------------------
def n_workers(n_jobs: int | None) -> int:
    """joblib's convention: -1 = all cores, -2 = all but one, 0/None = 1."""
    if not n_jobs:
        return 1
    return max(1, (os.cpu_count() or 1) + 1 + n_jobs) if n_jobs < 0 else int(n_jobs)


class Pipeline:
    """Map images through workers, yielding :class:`Item` objects in input order.

    Parameters
    ----------
    n_jobs : int, default -1
        Worker processes on this machine (-1: all cores; 1: in this process).
    chunk_size : int or None
        Images per task; ``None`` picks it from the number of images and workers
        (8 to 64: fewer, larger tasks cost less per image for fast features).
    scheduler : str or None
        ``None`` (joblib processes), ``"local"`` (a dask.distributed LocalCluster
        started and stopped here) or the address of a running scheduler
        (``tcp://host:8786``); workers must be able to read the image paths.
    """

    def __init__(self, *, n_jobs: int = -1, chunk_size: int | None = None,
                 scheduler: str | None = None) -> None:
        self.n_jobs = n_jobs
        self.chunk_size = chunk_size
        self.scheduler = scheduler

    def _chunks(self, tasks: Sequence[Task], workers: int) -> list[Sequence[Task]]:
        size = self.chunk_size or int(np.clip(len(tasks) // (workers * 8), 8, 64))
        return [tasks[i : i + size] for i in range(0, len(tasks), size)]

    def map(self, job: Job, tasks: Sequence[Task], *, progress: bool | None = None,
            desc: str = "images") -> Iterator[Item]:
        if not tasks:
            return
        if self.scheduler:
            from ._dask import dask_map

            results: Any = dask_map(job, tasks, self.scheduler, self.chunk_size)
        else:
            workers = n_workers(self.n_jobs)
            chunks = self._chunks(tasks, workers)
            if workers == 1 or len(chunks) == 1:
                results = _in_process(job, chunks)
            else:
                from joblib import Parallel, delayed

                wjob = Job(**{**job.__dict__, "in_worker": True})
                results = map(unpack_items, Parallel(n_jobs=workers, return_as="generator")(
                    delayed(run_chunk_packed)(wjob, c) for c in chunks))
        with progress_bar(total=len(tasks), desc=desc, unit="img", enabled=progress) as bar:
            for chunk_items in results:
                bar.update(len(chunk_items))
                yield from chunk_items


@contextlib.contextmanager
def faiss_single_thread() -> Iterator[None]:
    """Faiss on one OpenMP thread inside the block, for the work of one image at a time:
    its threads only spin against other processes on a busy machine (a binary assignment
    of 1,000 ORB descriptors took 24.6 ms with 2 threads beside another job, 2.3 ms with
    1; a query's ASMK assignment to 4,096 words 89.6 ms, 19.5 ms with 1)."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _in_process(job: Job, chunks: Sequence[Sequence[Task]]) -> Iterator[list[Item]]:
    """Chunks run here, one image at a time as a worker would (single-threaded Faiss)."""
    with faiss_single_thread():
        for c in chunks:
            yield run_chunk(job, c)


def sample_positions(n: int, m: int, random_state: int | None,
                     salt: int = 0) -> NDArray[np.int64]:
    """``m`` distinct positions out of ``n``, sorted, reproducible."""
    rng = np.random.default_rng(None if random_state is None else [int(random_state), salt])
    return np.sort(rng.choice(n, size=min(m, n), replace=False)).astype(np.int64)


def fit_on_sample(
    pipeline: Pipeline,
    embedder: Embedder,
    tasks: Sequence[Task],
    *,
    max_side: int | None,
    random_state: int | None,
    whitening: Any = None,
    corpus_sample: int = CORPUS_SAMPLE,
    fit_only: bool = False,
    cache: tuple[str, str] | None = None,
    progress: bool | None = None,
) -> dict[int, Item]:
    """Fit ``embedder`` (and ``whitening``) on random samples of ``tasks``.

    Returns the sampled images' items (``value`` = the reduced result) keyed by
    position, so the caller does not decode them again. With ``fit_only`` only the
    embedder's ``fit`` runs (a vocabulary).
    """
    n = len(tasks)
    items: dict[int, Item] = {}
    if embedder.needs_fit:
        chosen = sample_positions(n, embedder.n_fit_images(n), random_state)
        job = Job(embedder, "extract", max_side, cache=cache)
        got = [it for it in pipeline.map(job, [tasks[i] for i in chosen], progress=progress,
                                         desc="features (fit sample)")]
        good = [it for it in got if it.error is None]
        if not good:
            first = next((it.error for it in got), "no image")
            raise ImageReadError(f"none of the {len(got)} images sampled to fit {embedder.name} "
                                 f"could be read (first error: {first})")
        embedder.fit([it.value for it in good])
        if fit_only:
            return {}
        for pos, it in zip(chosen.tolist(), got, strict=True):
            if it.error is None:
                it.value = embedder.reduce(it.value)
            it.position = pos
            items[pos] = it
    corpus_fit = type(embedder).fit_corpus is not Embedder.fit_corpus
    if corpus_fit or whitening is not None:
        chosen = sample_positions(n, corpus_sample, random_state, salt=1)
        todo = [tasks[i] for i in chosen.tolist() if i not in items]
        job = Job(embedder, "reduce", max_side, cache=cache)
        for it in pipeline.map(job, todo, progress=progress, desc="features (corpus sample)"):
            items[it.position] = it
        reduced = [it.value for it in items.values() if it.error is None]
        if reduced:
            embedder.fit_corpus(reduced)
            if whitening is not None:
                whitening.fit(embedder.encode(reduced))
    return items


def embed_paths(
    embedder: Embedder,
    paths: Sequence[str | os.PathLike],
    *,
    max_side: int | None = 640,
    n_jobs: int = -1,
    scheduler: str | None = None,
    random_state: int | None = 0,
    progress: bool | None = None,
    fit: bool = True,
) -> tuple[NDArray[np.float32], NDArray[np.int64], list[tuple[int, str]]]:
    """Fit ``embedder`` when it needs it, then embed every image: ``(X, rows, errors)``.

    With ``fit=False`` the embedder is used as it is (already fitted).
    ``X`` holds the vectors of the images that could be embedded, ``rows`` their
    positions in ``paths`` and ``errors`` the ``(position, message)`` of the others. For
    callers that want vectors in memory (a training set); a collection goes to a bundle.
    """
    pipe = Pipeline(n_jobs=n_jobs, scheduler=scheduler)
    tasks = [(i, str(p), None) for i, p in enumerate(paths)]
    done = (fit_on_sample(pipe, embedder, tasks, max_side=max_side, random_state=random_state,
                          progress=progress) if fit else {})
    job = Job(embedder, "encode", max_side)
    vectors: dict[int, Any] = {}
    errors: list[tuple[int, str]] = []
    good = [p for p, it in done.items() if it.error is None]
    for p, v in zip(good, job.finish([done[p].value for p in good]) if good else [],
                    strict=True):
        vectors[p] = v
    errors += [(p, str(it.error)) for p, it in done.items() if it.error is not None]
    todo = [t for t in tasks if t[0] not in done]
    for it in pipe.map(job, todo, progress=progress, desc="embedding"):
        if it.error is None:
            vectors[it.position] = it.value
        else:
            errors.append((it.position, it.error))
    rows = np.array(sorted(vectors), np.int64)
    X = (np.stack([vectors[int(r)] for r in rows]) if len(rows)
         else np.zeros((0, embedder.dim), np.float32))
    return np.ascontiguousarray(X, np.float32), rows, sorted(errors)
