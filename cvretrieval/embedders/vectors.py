"""Precomputed vectors as an embedder: ``vectors:FILE.npz`` (vectors from any framework).

The ``.npz`` holds ``gallery`` and ``queries`` arrays (and optionally ``metric``,
``gallery_paths``, ``query_paths``; see :func:`load_vectors_npz`). The embedder
does not read pixels: it looks each image's row up by its path (when the file
lists paths) or by its position in the data set. It declares this with
``takes_paths = True``; :func:`cvretrieval.evaluation.evaluate_embedder` scores it
by exact search, the same way as any other vectors.
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from ..errors import DatasetError, NotFittedError
from .base import Embedder

if TYPE_CHECKING:  # pragma: no cover
    from ..datasets import RetrievalDataset

logger = logging.getLogger(__name__)

__all__ = ["VectorsEmbedder", "load_vectors_npz"]

_PATH_KEYS = ("gallery_paths", "query_paths")

_VECTOR_METRICS = ("ip", "l2")


def _as_matrix(x: Any, name: str) -> NDArray[np.float32]:
    a = np.asarray(x)
    if a.ndim != 2:
        raise DatasetError(f"{name} must be a 2-D (n, d) array of vectors, got shape {a.shape}")
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise DatasetError(f"{name} must hold numbers, got dtype {a.dtype}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    bad = ~np.isfinite(a).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise DatasetError(
            f"{name} has {rows.size} row(s) with NaN or infinite values (first: row {rows[0]}); "
            "fix the vectors"
        )
    return a


def _check_vectors(
    gallery: NDArray[np.float32], queries: NDArray[np.float32], dataset: RetrievalDataset
) -> None:
    if gallery.shape[0] != len(dataset.imlist):
        raise DatasetError(
            f"gallery has {gallery.shape[0]} vectors but data set {dataset.name!r} has "
            f"{len(dataset.imlist)} gallery images; give one row per imlist entry, in imlist order"
        )
    if queries.shape[0] != len(dataset.qimlist):
        raise DatasetError(
            f"queries has {queries.shape[0]} vectors but data set {dataset.name!r} has "
            f"{len(dataset.qimlist)} queries; give one row per qimlist entry, in qimlist order"
        )
    if gallery.shape[1] != queries.shape[1]:
        raise DatasetError(
            f"gallery vectors have dimension {gallery.shape[1]} but query vectors "
            f"{queries.shape[1]}; both must come from the same model"
        )


def load_vectors_npz(
    path: str | Path, dataset: RetrievalDataset | None = None
) -> tuple[NDArray[np.float32], NDArray[np.float32], str | None]:
    """Read precomputed vectors from an ``.npz`` file (no pickle).

    The file holds ``gallery`` ``(n, d)`` (row ``i`` = ``dataset.imlist[i]``),
    ``queries`` ``(m, d)`` (row ``j`` = ``dataset.qimlist[j]``) and optionally
    ``metric`` (``"ip"`` or ``"l2"``) and ``gallery_paths`` / ``query_paths``
    (strings, one per row: the image paths as in ``imlist`` / ``qimlist``, or
    absolute; then rows are looked up by path rather than by position and may
    come in any order, or hold extra images), e.g. written by
    ``np.savez("vecs.npz", gallery=G, queries=Q, metric="ip")``.

    Parameters
    ----------
    path : path-like
        The ``.npz`` file.
    dataset : RetrievalDataset, optional
        When given, the row counts are checked against it.

    Returns
    -------
    gallery : (n, d) ndarray of float32
    queries : (m, d) ndarray of float32
    metric : {"ip", "l2"} or None
        ``None`` when the file does not say.

    Raises
    ------
    DatasetError
        Missing or unreadable file, a missing key, a wrong shape, non-finite
        values, an unknown metric, or counts (or paths) that do not match ``dataset``.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"vector file {str(path)!r} does not exist; check the path")
    try:
        loaded = np.load(path, allow_pickle=False)
        if not hasattr(loaded, "files"):
            raise DatasetError(
                f"{path} is a single .npy array; write an .npz with "
                "np.savez(path, gallery=..., queries=...)"
            )
        with loaded as npz:
            keys = set(npz.files)
            missing = [key for key in ("gallery", "queries") if key not in keys]
            if missing:
                raise DatasetError(
                    f"{path} has no {' or '.join(missing)} array (keys: {sorted(keys)}); write it "
                    "with np.savez(path, gallery=..., queries=...)"
                )
            extra = sorted(keys - {"gallery", "queries", "metric", *_PATH_KEYS})
            if extra:
                logger.warning("%s: ignoring arrays %s", path, extra)
            gallery = _as_matrix(npz["gallery"], "gallery")
            queries = _as_matrix(npz["queries"], "queries")
            metric = None
            if "metric" in keys:
                value = npz["metric"]
                if value.shape != () or value.dtype.kind not in "US":
                    raise DatasetError(f"{path}: 'metric' must be the string 'ip' or 'l2'")
                metric = str(value.item().decode() if value.dtype.kind == "S" else value.item())
                metric = metric.strip().lower()
                if metric not in _VECTOR_METRICS:
                    raise DatasetError(f"{path}: unknown metric {metric!r}; use 'ip' or 'l2'")
    except DatasetError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DatasetError(f"cannot read vectors from {path} ({exc})") from None
    if gallery.shape[1] != queries.shape[1]:
        raise DatasetError(
            f"{path}: gallery vectors have dimension {gallery.shape[1]} but query vectors "
            f"{queries.shape[1]}; both must come from the same model"
        )
    if dataset is not None:
        gallery, queries = _align(path, gallery, queries, dataset)
    return gallery, queries, metric


def _read_paths(path: Path, key: str, n: int) -> list[str] | None:
    with np.load(path, allow_pickle=False) as npz:
        if key not in npz.files:
            return None
        value = npz[key]
    if value.ndim != 1 or value.dtype.kind not in "US" or value.size != n:
        raise DatasetError(f"{path}: {key!r} must be {n} strings, one per row")
    return [v.decode() if isinstance(v, bytes) else str(v) for v in value.tolist()]


def _lookup(
    path: Path, key: str, vectors: NDArray[np.float32], wanted: Sequence[str], root: Path
) -> NDArray[np.float32] | None:
    """Rows of ``vectors`` for the ``wanted`` relative paths, by the file's path list."""
    listed = _read_paths(path, key, vectors.shape[0])
    if listed is None:
        return None
    where: dict[str, int] = {}
    for i, p in enumerate(listed):
        where.setdefault(PurePosixPath(p).as_posix(), i)
        where.setdefault(str((root / p).resolve()), i)
    rows = []
    for w in wanted:
        found = where.get(PurePosixPath(w).as_posix(), where.get(str((root / w).resolve())))
        if found is None:
            raise DatasetError(
                f"{path}: {key} has no row for {w!r}; give one vector per data set image"
            )
        rows.append(found)
    return np.ascontiguousarray(vectors[np.asarray(rows, dtype=np.int64)])


def _align(
    path: Path,
    gallery: NDArray[np.float32],
    queries: NDArray[np.float32],
    dataset: RetrievalDataset,
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    root = Path(dataset.root)
    g = _lookup(path, "gallery_paths", gallery, dataset.imlist, root)
    q = _lookup(path, "query_paths", queries, dataset.qimlist, root)
    gallery = gallery if g is None else g
    queries = queries if q is None else q
    _check_vectors(gallery, queries, dataset)
    return gallery, queries


class VectorsEmbedder(Embedder):
    """Vectors computed elsewhere, read from an ``.npz`` file (spec ``vectors:FILE.npz``).

    Parameters
    ----------
    path : str or path-like
        The ``.npz`` file (see :func:`load_vectors_npz`).
    metric : {"ip", "l2"}, optional
        Overrides the file's ``metric``.

    Examples
    --------
    >>> from cvretrieval.embedders import parse_spec
    >>> parse_spec("vectors:runs/vecs.npz")
    ('vectors', {'path': 'runs/vecs.npz'})
    """

    name: ClassVar[str] = "vectors"
    path_param: ClassVar[str] = "path"
    #: reads no pixels: rows are looked up by image path (see :meth:`vectors_for`)
    takes_paths: ClassVar[bool] = True

    def __init__(self, path: str | Path, metric: str | None = None) -> None:
        self.path = path
        self.metric = metric

    def validate(self) -> None:
        """Fail early on a missing or malformed file."""
        _, _, metric = load_vectors_npz(self.path)
        m = self.metric or metric
        if m is not None and str(m).lower() not in _VECTOR_METRICS:
            raise ValueError(f"metric must be 'ip' or 'l2', got {m!r}")

    def vectors_for(
        self, dataset: RetrievalDataset
    ) -> tuple[NDArray[np.float32], NDArray[np.float32], str | None]:
        """``(gallery, queries, metric)`` for ``dataset``, rows looked up by path or position."""
        gallery, queries, metric = load_vectors_npz(self.path, dataset)
        self.dim_ = int(gallery.shape[1])
        return gallery, queries, (self.metric or metric)

    @property
    def dim(self) -> int:
        if not hasattr(self, "dim_"):
            raise NotFittedError(f"{self!r}: call vectors_for(dataset) first")
        return self.dim_

    def extract(self, image: NDArray[np.uint8]) -> Any:
        raise TypeError(
            f"embedder 'vectors:{self.path}' reads precomputed vectors, not images: use it with "
            "`cvret eval DATASET --features vectors:FILE.npz`"
        )
