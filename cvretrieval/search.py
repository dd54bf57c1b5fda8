"""Search-time composition: query vectors -> index -> re-ranking (verification, expansion).

Functions over a :class:`~cvretrieval.retriever.Retriever`'s public face (``index``,
``rows``, ``feature_store``, ``embed_queries``): every step touches only the top-k ids of
each query, never the whole catalog.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .errors import ImageReadError
from .io import read_image
from .pipeline import faiss_single_thread

logger = logging.getLogger(__name__)
RERANK_STEPS = ("sv", "qe")


@dataclass(frozen=True)
class Hit:
    """One search result: ``rank`` is 1-based; ``score`` is the index's similarity or distance."""

    rank: int
    id: int
    path: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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


def expand_queries(ret: Any, X: Any, E: NDArray[np.int64], S: NDArray[np.float32]) -> Any:
    """Query expansion: each query plus its results ``E`` (catalog ids, -1 = none) weighted
    by their scores ``S`` (alpha-QE, Radenović et al. 2018; plain average when
    ``qe_alpha`` is None, Chum et al. 2007), L2-normalised; only those rows are read."""
    valid = E >= 0
    uniq = np.unique(E[valid])
    local = np.where(valid, np.searchsorted(uniq, np.where(valid, E, uniq[0] if len(uniq) else 0)),
                     -1)
    xb = ret.rows(uniq) if len(uniq) else None
    if ret.items:  # ASMK: the codes of the query and its results as one query (no weights)
        from .asmk_index import expand_codes

        if xb is None:
            return X
        return _ItemList([expand_codes(X[j], [xb[int(p)] for p in local[j] if p >= 0])
                          for j in range(E.shape[0])])
    if not ret.sparse:
        from .rerank.qe import alpha_query_expansion, average_query_expansion

        if xb is None:
            return X
        if ret.qe_alpha is None:
            return average_query_expansion(X, xb, local, k=E.shape[1])
        return alpha_query_expansion(X, xb, local, S, k=E.shape[1], alpha=ret.qe_alpha,
                                     metric=ret.metric)
    import scipy.sparse as sp
    from sklearn.preprocessing import normalize

    sims = np.where(valid & np.isfinite(S), S, 0.0)
    W = np.ones_like(sims) if ret.qe_alpha is None else np.clip(sims, 0, None) ** ret.qe_alpha
    W = np.where(valid, W, 0.0)
    if xb is None:
        return sp.csr_matrix(X)
    rows = np.repeat(np.arange(E.shape[0]), E.shape[1])
    M = sp.csr_matrix((W.ravel(), (rows, np.clip(local, 0, None).ravel())),
                      shape=(E.shape[0], xb.shape[0]))
    return normalize(sp.csr_matrix(X) + M @ xb).astype(np.float32).tocsr()


def index_search(ret: Any, X: Any, k: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """``ret.index.search``; a dense index (without DBA, whose indexed vectors are not the
    stored ones) gets the stored vectors to re-rank its candidates exactly by."""
    if ret.sparse or ret.items or ret.dba:
        return ret.index.search(X, k)
    return ret.index.search(X, k, vectors=ret.rows)


def search_with_qe(ret: Any, X: Any, k: int, steps: Sequence[str]
                   ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Index search, with query expansion when ``"qe"`` is in ``steps``."""
    if "qe" not in steps or ret.qe_k == 0 or X.shape[0] == 0:
        return index_search(ret, X, k)
    D1, I1 = index_search(ret, X, min(ret.qe_k, k) if k < ret.qe_k else ret.qe_k)
    return index_search(ret, expand_queries(ret, X, I1, D1), k)


def query_features(ret: Any, query: Any, bbox: Any) -> tuple[Any, Any]:
    """Key points (and words when verification matches words) of one query image."""
    img = read_image(query, max_side=ret.max_side, bbox=bbox)
    sv = ret.sv_features
    if sv.own:
        feats = ret.embedder.extract(img)
        return feats, ret.reduce_query(feats)
    return sv.extract(img), None


#: at most this many query images are searched with single-threaded Faiss (their
#: assignments and searches are too small for threads to pay on a busy machine)
FEW_QUERIES = 8


def search_images(ret: Any, queries: Sequence[Any], k: int, bboxes: Sequence[Any] | None,
                  steps: Sequence[str], progress: bool | None, *, raise_errors: bool = False
                  ) -> tuple[NDArray[np.float32], NDArray[np.int64], list[int]]:
    """Embed query images, search, re-rank; ``(D, I, failed)`` with catalog ids."""
    threads = faiss_single_thread() if len(queries) <= FEW_QUERIES else contextlib.nullcontext()
    with threads:
        return _search_images(ret, queries, k, bboxes, steps, progress,
                              raise_errors=raise_errors)


def _search_images(ret: Any, queries: Sequence[Any], k: int, bboxes: Sequence[Any] | None,
                   steps: Sequence[str], progress: bool | None, *, raise_errors: bool = False
                   ) -> tuple[NDArray[np.float32], NDArray[np.int64], list[int]]:
    boxes = list(bboxes) if bboxes is not None else [None] * len(queries)
    if len(boxes) != len(queries):
        raise ValueError(f"{len(queries)} queries but {len(boxes)} boxes")
    feats: list[Any] = []
    if "sv" in steps and ret.sv_features.own:  # extract once, embed and verify from it
        feats = [None] * len(queries)
        errors = [""] * len(queries)
        reduced: dict[int, Any] = {}
        for qi, (q, bb) in enumerate(zip(queries, boxes, strict=True)):
            try:
                f, r = query_features(ret, q, bb)
                feats[qi] = (f, ret.sv_features.words_of(ret.embedder, f, r)
                             if ret.sv_features.uses_words else None)
                reduced[qi] = r
            except (ImageReadError, ValueError, OSError) as exc:
                errors[qi] = str(exc)
        rows = sorted(reduced)
        X = ret.finish_vectors([reduced[i] for i in rows])
    else:
        X, rows, errors = ret.embed_queries(queries, boxes, progress=progress)
    failed = [qi for qi, e in enumerate(errors) if e]
    if raise_errors and failed:
        raise ImageReadError(errors[failed[0]])
    for qi in failed:
        logger.warning("query skipped: %s", errors[qi])
    D = np.full((len(queries), k), np.nan, np.float32)
    I = np.full((len(queries), k), -1, np.int64)  # noqa: E741 - Faiss's name
    if rows:
        if "sv" in steps:
            d, i = verify_and_expand(ret, X, k, steps, [queries[r] for r in rows],
                                     [boxes[r] for r in rows],
                                     [feats[r] for r in rows] if feats else None)
        else:
            d, i = search_with_qe(ret, X, k, steps)
        D[rows, : d.shape[1]], I[rows, : i.shape[1]] = d, i
    return D, I, failed


def verify_and_expand(ret: Any, X: Any, k: int, steps: Sequence[str], queries: Sequence[Any],
                      bboxes: Sequence[Any], query_feats: Sequence[Any] | None
                      ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Spatially verify the top ``sv_top`` of each query (verified first), then expand
    the queries with their verified images when ``"qe"`` is asked for."""
    from .rerank.spatial import SpatialVerifier

    D, I = index_search(ret, X, max(k, ret.sv_top))  # noqa: E741
    store = ret.feature_store()
    verifier = SpatialVerifier(top_n=ret.sv_top, min_inliers=ret.sv_min_inliers,
                               matcher=ret.sv_features.mode, order=ret.sv_order,
                               min_coverage=ret.sv_min_coverage)
    verified: list[NDArray[np.int64]] = []
    for j, (query, bbox) in enumerate(zip(queries, bboxes, strict=True)):
        try:
            if query_feats is not None and query_feats[j] is not None:
                feats, words = query_feats[j]
            else:
                feats, words = query_features(ret, query, bbox)
                words = (ret.sv_features.words_of(ret.embedder, feats, words)
                         if ret.sv_features.uses_words and ret.sv_features.own else None)
        except (ImageReadError, ValueError) as exc:  # the vector search still stands
            logger.warning("no spatial verification for query %d: %s", j, exc)
            verified.append(np.zeros(0, np.int64))
            continue
        new_ids, inliers = verifier.rerank(feats, I[j], store, query_words=words)
        score = dict(zip(I[j].tolist(), D[j].tolist(), strict=True))
        I[j] = new_ids
        D[j] = [score.get(int(p), np.nan) for p in new_ids]
        verified.append(new_ids[inliers >= ret.sv_min_inliers])
    if "qe" not in steps or ret.qe_k == 0:
        return D[:, :k], I[:, :k]
    return _verified_expansion(ret, X, k, D, I, verified)


def _verified_expansion(ret: Any, X: Any, k: int, D: NDArray[np.float32],
                        I: NDArray[np.int64],  # noqa: E741
                        verified: Sequence[NDArray[np.int64]]
                        ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Query expansion with the verified results (Chum et al. 2007): verified images keep
    their places at the top, a search with the expanded query fills the rest."""
    n = X.shape[0]
    E = np.full((n, ret.qe_k), -1, np.int64)
    for j, v in enumerate(verified):
        E[j, : min(ret.qe_k, len(v))] = v[: ret.qe_k]
    has = (E >= 0).any(axis=1)
    outD, outI = D[:, :k].copy(), I[:, :k].copy()
    if not has.any():
        return outD, outI
    rows = np.flatnonzero(has)
    scores = [dict(zip(I[j].tolist(), D[j].tolist(), strict=True)) for j in rows]
    S = np.array([[scores[r].get(int(p), 0.0) for p in E[j]] for r, j in enumerate(rows)],
                 np.float32).reshape(len(rows), E.shape[1])
    D2, I2 = index_search(ret, expand_queries(ret, X[rows], E[rows], S), k)
    for r, j in enumerate(rows.tolist()):
        head = [int(p) for p in verified[j]][:k]
        seen = set(head)
        tail = [(float(d), int(p)) for d, p in zip(D2[r], I2[r], strict=True)
                if p >= 0 and int(p) not in seen]
        merged = ([(scores[r].get(p, np.nan), p) for p in head] + tail)[:k]
        outI[j], outD[j] = -1, np.nan
        outI[j, : len(merged)] = [p for _, p in merged]
        outD[j, : len(merged)] = [d for d, _ in merged]
    return outD, outI


def embed_queries(ret: Any, queries: Sequence[Any], bboxes: Sequence[Any] | None,
                  progress: bool | None) -> tuple[Any, list[int], list[str]]:
    """Query vectors ``(X, rows, errors)`` (see :meth:`Retriever.embed_queries`): an indexed
    query path without a box reuses its stored vector; the others run the pipeline here."""
    import os
    from pathlib import Path

    from .pipeline import Pipeline

    boxes = list(bboxes) if bboxes is not None else [None] * len(queries)
    if len(boxes) != len(queries):
        raise ValueError(f"{len(queries)} queries but {len(boxes)} boxes")
    keys = {qi: str(Path(q).resolve()) for qi, q in enumerate(queries)
            if isinstance(q, (str, os.PathLike)) and boxes[qi] is None and ret.reuse_vectors}
    known = ret.catalog.ids_of(keys.values(), status="ok") if keys else {}
    stored = {qi: known[k] for qi, k in keys.items() if k in known}
    tasks = [(qi, q, tuple(b) if b is not None else None)
             for qi, (q, b) in enumerate(zip(queries, boxes, strict=True)) if qi not in stored]
    errors = [""] * len(queries)
    vectors: dict[int, Any] = {}
    pipe = Pipeline(n_jobs=ret.n_jobs if len(tasks) > 16 else 1, chunk_size=ret.chunk_size)
    for it in pipe.map(ret.query_job(), tasks, progress=progress, desc="queries"):
        if it.error is not None:
            errors[it.position] = it.error
        else:
            vectors[it.position] = it.value
    if stored:
        order = sorted(stored)
        rows = ret.rows(np.array([stored[q] for q in order], np.int64))
        for r, qi in enumerate(order):
            vectors[qi] = rows[r]
    for qi in [q for q in vectors if q not in stored]:
        if not ret.has_features(vectors[qi]):
            name = queries[qi] if isinstance(queries[qi], (str, os.PathLike)) else qi
            logger.warning("query %s has no features (too small or too plain for %s): its "
                           "results are arbitrary", name, ret.embedder.name)
    rows_out = sorted(vectors)
    return stack_rows(ret, [vectors[i] for i in rows_out]), rows_out, errors


def stack_rows(ret: Any, vecs: list[Any]) -> Any:
    """Per-query vectors as one matrix (dense or CSR), or a list of items (ASMK)."""
    if ret.items:
        return _ItemList(vecs)
    if ret.sparse:
        import scipy.sparse as sp

        return (sp.vstack(vecs).tocsr() if vecs
                else sp.csr_matrix((0, ret.dim), dtype=np.float32))
    if not vecs:
        return np.zeros((0, ret.dim), np.float32)
    return np.ascontiguousarray(np.vstack(vecs), np.float32)


class _ItemList(list):  # type: ignore[type-arg]
    """Query items (ASMK codes) with the ``shape`` the search code reads."""

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self), 0)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, np.ndarray):
            return _ItemList([list.__getitem__(self, int(i)) for i in key])
        got = list.__getitem__(self, key)
        return _ItemList(got) if isinstance(key, slice) else got
