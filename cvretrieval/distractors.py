"""Evaluation with a distractor collection added to the gallery (revisited Oxford/Paris +1M).

:class:`WithDistractors` wraps a retriever built on a data set's gallery and a
distractor collection, either a folder of images (embedded with the
retriever's own fitted embedder, searched exactly: a flat Faiss index or the
sparse inverted file) or a bundle built once per
model (``cvret index DIR -o D.cvret`` with the same features), and behaves like
a retriever for :func:`cvretrieval.evaluation.evaluate`: its catalog is the
gallery followed by the distractors, and each query's results are the two
result lists merged by score (:func:`merge_topk`).

Rules: distractors are never relevant (they are outside the data set's
gallery); a distractor whose path is a gallery or query image of the data set is
dropped, with a warning (it is never returned); on equal scores a distractor
ranks before a gallery image, so distractors can only lower the scores.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

logger = logging.getLogger(__name__)

__all__ = ["WithDistractors", "merge_topk"]


def merge_topk(
    D1: NDArray[Any],
    I1: NDArray[np.int64],
    D2: NDArray[Any],
    I2: NDArray[np.int64],
    k: int,
    metric: str = "ip",
    offset: int = 0,
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Merge two per-query result lists into the best ``k`` by score.

    Parameters
    ----------
    D1, I1 : (m, k1) arrays
        Scores and ids of the first source (the gallery); -1 ids are empty slots.
    D2, I2 : (m, k2) arrays
        The second source (the distractors); its ids are shifted by ``offset``.
    k : int
        Results kept per query.
    metric : {"ip", "l2"}
        ``"ip"``: higher first; ``"l2"``: smaller first.
    offset : int
        Added to the valid ids of ``I2`` (the size of the first catalog).

    Returns
    -------
    D, I : (m, k) arrays
        Padded with NaN / -1 when fewer than ``k`` results exist. On equal scores
        the second source comes first.

    Examples
    --------
    >>> D, I = merge_topk(np.array([[0.9, 0.5]]), np.array([[0, 1]]),
    ...                   np.array([[0.5, 0.1]]), np.array([[0, 1]]), 3, offset=2)
    >>> I.tolist()  # the distractor (id 2) ties with gallery id 1 and goes first
    [[0, 2, 1]]
    """
    if metric not in ("ip", "l2"):
        raise ValueError(f"metric must be 'ip' or 'l2', got {metric!r}")
    I2 = np.where(I2 >= 0, I2 + offset, -1)
    D = np.concatenate([np.asarray(D1, np.float64), np.asarray(D2, np.float64)], axis=1)
    ids = np.concatenate([np.asarray(I1, np.int64), I2], axis=1)
    key = -D if metric == "ip" else D.copy()
    key[(ids < 0) | np.isnan(key)] = np.inf
    second_first = np.concatenate(
        [np.ones(np.shape(I1), np.int8), np.zeros(np.shape(I2), np.int8)], axis=1
    )
    order = np.lexsort((second_first, key), axis=1)[:, :k]
    out_i = np.take_along_axis(ids, order, axis=1)
    out_d = np.take_along_axis(D, order, axis=1).astype(np.float32)
    empty = np.take_along_axis(key, order, axis=1) == np.inf
    out_i[empty], out_d[empty] = -1, np.nan
    if out_i.shape[1] < k:
        pad = k - out_i.shape[1]
        out_i = np.pad(out_i, ((0, 0), (0, pad)), constant_values=-1)
        out_d = np.pad(out_d, ((0, 0), (0, pad)), constant_values=np.nan)
    return out_d, out_i


class WithDistractors:
    """A retriever plus a distractor collection, searched as one catalog.

    Parameters
    ----------
    retriever : Retriever
        Built on the data set's gallery; embeds the queries.
    distractors : path-like
        A folder of images (embedded with ``retriever``'s fitted embedder) or a
        bundle folder (``Retriever.load``) built with the same features.
    exclude : sequence of path-like
        Paths that must never be distractors (the data set's gallery and queries):
        such distractors are dropped with a warning.
    progress : bool or None
        Progress bar while embedding a folder of distractors.
    """

    def __init__(
        self, retriever: Any, distractors: str | Path, exclude: Sequence[str | Path] = (),
        progress: bool | None = None,
    ) -> None:
        self.retriever = retriever
        self.source = Path(distractors)
        self.exclude = exclude
        self.progress = progress
        self.metric = str(retriever.config().get("metric", "ip"))
        if retriever.config().get("rerank"):
            raise ValueError(
                "re-ranking (--rerank) is not supported with distractors; evaluate without it"
            )
        self._load()

    def _load(self) -> None:
        from .retriever import Retriever

        excluded = {str(Path(p).resolve()) for p in self.exclude}
        if (self.source / "manifest.json").is_file():
            bundle = Retriever.load(self.source)
            self._check_bundle(bundle)
            paths = [Path(p) for p in bundle.paths]
            self._bundle: Any = bundle
            self._index: Any = None
        else:
            from .io import list_images

            listed = list_images(self.source)
            self._bundle = None
            X, rows, errors = self.retriever.embed_queries(
                [str(p) for p in listed], progress=self.progress
            )
            bad = [e for e in errors if e]
            if bad:
                logger.warning("%d distractor images could not be read: skipped", len(bad))
            paths = [listed[r] for r in rows]
            self._index = self._exact_index(X)
        if not paths:
            raise ValueError(f"{self.source} holds no readable distractor image; check the path")
        self.distractor_paths = paths
        self._dropped = np.array(
            [str(Path(p).resolve()) in excluded for p in paths], dtype=bool
        )
        if self._dropped.any():
            logger.warning(
                "%d distractors are images of the data set itself: dropped",
                int(self._dropped.sum()),
            )
        logger.info("%d distractors from %s", len(paths) - int(self._dropped.sum()), self.source)

    def _exact_index(self, X: Any) -> Any:
        """An exact index of the distractor vectors, of the kind the retriever searches."""
        if hasattr(X, "tocsr"):  # sparse vectors (BoVW): the sparse inverted file
            from .sparse import SparseIndex

            return SparseIndex(n_words=int(X.shape[1])).build(X)
        from .index import Index

        return Index("flat", self.metric).build(X)

    def _check_bundle(self, bundle: Any) -> None:
        mine, theirs = self.retriever.config(), bundle.config()
        same_name = mine["embedder"]["name"] == theirs["embedder"]["name"]
        if not same_name or bundle.dim != self.retriever.dim:
            raise ValueError(
                f"distractor bundle {self.source} was built with {theirs['embedder']['name']} "
                f"(dim {bundle.dim}), not {mine['embedder']['name']} (dim {self.retriever.dim}); "
                "build it with the same --features"
            )
        if theirs.get("metric") != mine.get("metric"):
            raise ValueError(
                f"distractor bundle {self.source} uses metric {theirs.get('metric')}, not "
                f"{mine.get('metric')}; build it with the same --metric"
            )
        if mine["embedder"] != theirs["embedder"]:
            logger.warning("distractor bundle %s: embedder parameters differ", self.source)

    @property
    def paths(self) -> list[Path]:
        return [*map(Path, self.retriever.paths), *self.distractor_paths]

    def config(self) -> dict[str, Any]:
        dropped = int(self._dropped.sum())
        n = len(self.distractor_paths) - dropped
        return {
            **self.retriever.config(),
            "distractors": {"source": str(self.source), "n": n, "dropped": dropped},
        }

    def search_many(
        self, queries: Sequence[Any], k: int, bboxes: Sequence[Any] | None = None,
        *, progress: bool | None = False,
    ) -> tuple[NDArray[np.float32], NDArray[np.int64], list[int]]:
        """Search both collections with the same query vectors and merge by score."""
        n1 = len(self.retriever.paths)
        n2 = len(self.distractor_paths)
        X, rows, errors = self.retriever.embed_queries(queries, bboxes, progress=progress)
        D = np.full((len(queries), k), np.nan, np.float32)
        I = np.full((len(queries), k), -1, np.int64)  # noqa: E741 - Faiss's name
        if rows:
            k1, k2 = min(k, n1), min(k + int(self._dropped.sum()), n2)
            D1, I1 = self.retriever.search_vectors(X, k1)
            if self._bundle is not None:
                D2, I2 = self._bundle.search_vectors(X, k2)
            else:
                D2, I2 = self._index.search(X, k2)
            I2 = np.where((I2 >= 0) & self._dropped[np.clip(I2, 0, None)], -1, I2)
            D[rows], I[rows] = merge_topk(D1, I1, D2, I2, k, self.metric, offset=n1)
        return D, I, [qi for qi, e in enumerate(errors) if e]
