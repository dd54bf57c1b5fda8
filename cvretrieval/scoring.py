"""Scoring queries one at a time, from a ranking or from a row of scores, in bounded memory.

Every metric of :mod:`cvretrieval.metrics` is a function of the positions of a
query's positives, junk, own image and graded images in its ranking. A
:class:`Scorer` takes each query as it is searched, either as a (possibly
truncated) ranking (:meth:`Scorer.add_ranking`) or as a block of scores against
the whole gallery (:meth:`Scorer.add_scores`, where the positions are counted
from the sorted scores without sorting the gallery's indices), keeps the
per-query numbers and the first results for reports, and drops the rest. The
results equal those of the full rankings (the order of
``np.argsort(-scores, kind="stable")``: higher score first, ties by gallery
index) to rounding.

:func:`compute_metrics` and :func:`mean_pr_curve` are the same on a list of
rankings (:func:`~cvretrieval.metrics.revisited_metrics`
scores revisitop's protocols on rankings).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .metrics import (
    ap_at_k_from_positions,
    ap_from_positions,
    as_index_array,
    cleaned_positions,
    compute_ap,
    dcg_from_positions,
    first_rank_from_positions,
    graded_arrays,
    interpolated_from_positions,
    member,
    precision_from_positions,
    recall_from_positions,
    recall_levels,
    revisitop_precision,
)
from .metrics.ranking import _check_k

logger = logging.getLogger(__name__)

__all__ = [
    "Scorer",
    "compute_metrics",
    "mean_pr_curve",
    "MAP_AT_K",
    "PR_AT_K",
    "NDCG_AT_K",
]

#: cut-offs always reported for mAP@k, on top of the requested ``ks``
MAP_AT_K: tuple[int, ...] = (1, 10, 50, 100)
#: cut-offs always reported for P@k and R@k, on top of the requested ``ks``
PR_AT_K: tuple[int, ...] = (1, 5, 10)
#: cut-offs of NDCG@k, reported when the ground truth has grades
NDCG_AT_K: tuple[int, ...] = (5, 10, 100)
#: short names of the revisited protocols in metric keys, as revisitop prints them
PROTOCOL_LETTER = {"easy": "E", "medium": "M", "hard": "H"}
_N_TOP = 10


def _sorted_ks(ks: Sequence[int], always: Sequence[int]) -> list[int]:
    return sorted({_check_k(k) for k in ks} | set(always))


def _first_positions(raw: NDArray[np.int64], items: NDArray[np.int64], absent: int) -> Any:
    """Position of each item's first occurrence in ``raw``; ``absent`` when it is not there."""
    out = np.full(items.size, absent, dtype=np.int64)
    if raw.size and items.size:
        values, first = np.unique(raw, return_index=True)
        at = np.minimum(np.searchsorted(values, items), values.size - 1)
        present = values[at] == items
        out[present] = first[at[present]]
    return out


class Scorer:
    """Accumulates the metrics of the queries of one ground truth, query by query.

    Parameters
    ----------
    gnd : sequence of dict
        Per query ``ok``, optionally ``junk`` and ``graded`` (``[[index, grade], ...]``).
    self_index : sequence of int or None
        Gallery index of each query's own image (removed from its ranking and its ``ok``).
    n_im : int or None
        Gallery size: a ranking entry ``>= n_im`` is a distractor (``None`` in ``top``).
    ks : sequence of int
        Extra cut-offs of P@k, R@k and mAP@k.
    n_points : int
        Recall levels of the mean PR curve.
    protocols : mapping of str to sequence of dict, optional
        revisitop's Easy/Medium/Hard ground truths, scored as :func:`compute_map`.
    ndcg_gain : {"linear", "exponential"}
        Gain of NDCG@k, reported when some query has ``graded`` relevance.
    keep_top : int
        Also keep the first ``keep_top`` results (the query's own image removed)
        of every query in ``self.tops`` (GLDv2's mAP@100 needs 100).
    """

    def __init__(
        self,
        gnd: Sequence[Mapping[str, Any]],
        self_index: Sequence[int | None],
        *,
        n_im: int | None = None,
        ks: Sequence[int] = (1, 5, 10),
        n_points: int = 11,
        protocols: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
        ndcg_gain: str = "linear",
        keep_top: int = 0,
    ) -> None:
        nq = len(gnd)
        if len(self_index) != nq:
            raise ValueError(f"self_index has {len(self_index)} entries for {nq} queries")
        self.gnd, self.self_index, self.n_im = gnd, self_index, n_im
        self.levels = recall_levels(n_points)
        self.pr_ks, self.map_ks = _sorted_ks(ks, PR_AT_K), _sorted_ks(ks, MAP_AT_K)
        self.protocols = dict(protocols or {})
        for name, g in self.protocols.items():
            if len(g) != nq:
                raise ValueError(f"protocol {name!r} has {len(g)} queries for {nq} rankings")
        self.graded = any("graded" in g for g in gnd)
        self.ndcg_gain = ndcg_gain
        if self.graded:
            dcg_from_positions(np.zeros(0, np.int64), np.ones(1), 1, ndcg_gain)  # check the gain
        self.keep_top = int(keep_top)
        self.per_query: list[dict[str, Any] | None] = [None] * nq
        self.tops: list[list[int]] = [[] for _ in range(nq)] if keep_top else []
        self.curve_sum = np.zeros(self.levels.size)
        self.prot_ap = {name: np.full(nq, np.nan) for name in self.protocols}
        self.prot_pr = {name: np.full((nq, 3), np.nan) for name in self.protocols}
        self.ap_k = {k: np.full(nq, np.nan) for k in self.map_ks}
        self.worst = (n_im + 1) if n_im is not None else 1

    # ------------------------------------------------------------------ per query sets
    def _sets(self, q: int) -> dict[str, Any]:
        s = self.self_index[q]
        g = self.gnd[q]
        ok = as_index_array(g["ok"])
        junk = as_index_array(g.get("junk", ()))
        me = np.zeros(0, np.int64) if s is None else np.array([int(s)], np.int64)
        if s is not None:
            ok = ok[ok != int(s)]
        sets: dict[str, Any] = {
            "ok": ok,
            "removed": np.concatenate([junk, me]),
            "self": me,
            "junk_not_ok": junk[~member(junk, ok)],
        }
        sets["group"] = np.concatenate([ok, me])
        for name, pg in self.protocols.items():
            pok = as_index_array(pg[q]["ok"])
            pjunk = as_index_array(pg[q].get("junk", ()))
            if s is not None:
                pok = pok[pok != int(s)]
                pjunk = np.append(pjunk[pjunk != int(s)], int(s))
            sets[f"ok:{name}"], sets[f"junk:{name}"] = pok, pjunk
        if self.graded:
            sets["graded"] = graded_arrays(g.get("graded", ()), s)
        return sets

    # ------------------------------------------------------------------ inputs
    def add_ranking(self, q: int, ranking: ArrayLike, *, failed: bool = False) -> None:
        """Score query ``q`` from its ranking (gallery indices best first, -1 padding)."""
        raw = np.asarray(ranking)
        if raw.ndim != 1:
            raise ValueError(f"ranking of query {q} must be 1-D, got shape {raw.shape}")
        raw = np.zeros(0, np.int64) if failed else raw.astype(np.int64, copy=False)
        sets = self._sets(q)

        def find(items: NDArray[np.int64]) -> NDArray[np.int64]:
            return np.flatnonzero(member(raw, items))

        padding = np.flatnonzero(raw < 0)
        graded_pos = None
        if self.graded:
            graded_pos = _first_positions(raw, sets["graded"][0], raw.size + 10**9)
        self._add(q, sets, find, padding, raw.size, raw, graded_pos, failed)

    def add_scores(self, q0: int, scores: ArrayLike, *, k: int | None = None) -> None:
        """Score queries ``q0, q0 + 1, ...`` from their scores against the whole gallery.

        Parameters
        ----------
        scores : (b, n) array_like of float
            Row ``i`` scores query ``q0 + i`` against gallery items ``0..n-1``; higher
            is better (pass ``-distance``). Ties go to the smaller gallery index.
        k : int, optional
            Treat the rankings as truncated to their first ``k`` results.
        """
        S = np.asarray(scores)
        if S.ndim != 2:
            raise ValueError(f"scores must be 2-D (queries, gallery), got shape {S.shape}")
        n = S.shape[1]
        n_raw = n if k is None else min(int(k), n)
        ordered = np.sort(S, axis=1)
        for i in range(S.shape[0]):
            self._add_score_row(q0 + i, S[i], ordered[i], n_raw)

    def _add_score_row(self, q: int, s: NDArray[Any], ordered: NDArray[Any], n_raw: int) -> None:
        n = s.size
        sets = self._sets(q)
        parts = [v for key, v in sets.items() if key != "graded"]
        if self.graded:
            parts.append(sets["graded"][0])
        every = np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
        every = every[(every >= 0) & (every < n)]
        v = s[every]
        greater = n - np.searchsorted(ordered, v, side="right")
        ties = (n - np.searchsorted(ordered, v, side="left")) - greater
        pos = greater.astype(np.int64)
        for j in np.flatnonzero(ties > 1):  # equal scores: the smaller gallery index first
            pos[j] += int(np.count_nonzero(s[: every[j]] == v[j]))

        def find(items: NDArray[np.int64]) -> NDArray[np.int64]:
            items = np.unique(items)
            at = np.minimum(np.searchsorted(every, items), max(every.size - 1, 0))
            hit = every[at] == items if every.size else np.zeros(items.size, bool)
            p = pos[at[hit]]
            return np.sort(p[p < n_raw])

        n_head = min(n_raw, max(_N_TOP + sets["removed"].size, self.keep_top + sets["self"].size))
        head = np.zeros(0, np.int64)
        if n_head > 0:
            t = ordered[n - n_head]
            cand = np.flatnonzero(s >= t)
            head = cand[np.lexsort((cand, -s[cand]))][:n_head]
        graded_pos = None
        if self.graded:
            gi = sets["graded"][0]
            at = np.minimum(np.searchsorted(every, gi), max(every.size - 1, 0))
            hit = (every[at] == gi) if every.size else np.zeros(gi.size, bool)
            graded_pos = np.full(gi.size, n_raw + 10**9, np.int64)
            graded_pos[hit] = np.where(pos[at[hit]] < n_raw, pos[at[hit]], n_raw + 10**9)
        self._add(q, sets, find, np.zeros(0, np.int64), n_raw, head, graded_pos, False)

    # ------------------------------------------------------------------ the metrics
    def _add(
        self,
        q: int,
        sets: dict[str, Any],
        find: Any,
        padding: NDArray[np.int64],
        n_raw: int,
        head: NDArray[np.int64],
        graded_pos: Any,
        failed: bool,
    ) -> None:
        ok = sets["ok"]
        nres = int(ok.size)
        removed = np.union1d(find(sets["removed"]), padding)
        hits = cleaned_positions(find(ok), removed)
        n_clean = n_raw - removed.size
        ns = 0 if failed else int(np.count_nonzero(find(sets["group"]) < 4))
        entry: dict[str, Any] = {"query": q, "n_ok": nres, "ns": ns, "failed": failed}
        if nres == 0:
            entry["ap"] = None
            entry["first_rank"] = None
            for k in self.pr_ks:
                entry[f"P@{k}"] = precision_from_positions(hits, k)
                entry[f"R@{k}"] = None
        else:
            entry["ap"] = ap_from_positions(hits, nres)
            entry["first_rank"] = self.worst if failed else first_rank_from_positions(hits, n_clean)
            self.curve_sum += interpolated_from_positions(hits, nres, self.levels)
            for k in self.map_ks:
                self.ap_k[k][q] = ap_at_k_from_positions(hits, nres, k)
            for k in self.pr_ks:
                entry[f"P@{k}"] = precision_from_positions(hits, k)
                entry[f"R@{k}"] = recall_from_positions(hits, nres, k)
        if self.graded:
            idx, grades = sets["graded"]
            gpos = np.asarray(graded_pos, np.int64)
            order = np.argsort(gpos, kind="stable")
            cpos = np.empty_like(gpos)
            cpos[order] = cleaned_positions(gpos[order], removed)
            for k in NDCG_AT_K:
                value = dcg_from_positions(cpos, grades, k, self.ndcg_gain)
                entry[f"NDCG@{k}"] = None if math.isnan(value) else value
        head = head[head >= 0]
        not_self = head[~member(head, sets["self"])]
        clean = not_self[~member(not_self, sets["junk_not_ok"])]
        entry["top"] = self._as_top(clean[:_N_TOP])
        entry["top_raw"] = self._as_top(not_self[:_N_TOP])
        if self.keep_top:
            self.tops[q] = [int(v) for v in not_self[: self.keep_top]]
        for name in self.protocols:
            pok = sets[f"ok:{name}"]
            if pok.size:
                ppos = cleaned_positions(find(pok), find(sets[f"junk:{name}"]))
                self.prot_ap[name][q] = compute_ap(ppos, pok.size)
                self.prot_pr[name][q] = revisitop_precision(ppos, (1, 5, 10))
        self.per_query[q] = entry

    def _as_top(self, values: NDArray[np.int64]) -> list[int | None]:
        n_im = self.n_im
        return [None if (n_im is not None and v >= n_im) else int(v) for v in values]

    # ------------------------------------------------------------------ results
    def result(self) -> tuple[dict[str, float | int], list[dict[str, Any]], dict[str, list[float]]]:
        """``metrics``, ``per_query`` and the mean PR ``curve`` (see :func:`compute_metrics`)."""
        missing = [q for q, e in enumerate(self.per_query) if e is None]
        if missing:
            raise ValueError(f"{len(missing)} queries were never scored (first: {missing[0]})")
        per_query: list[dict[str, Any]] = [e for e in self.per_query if e is not None]
        evaluated = [e for e in per_query if e["n_ok"] > 0]
        n_eval = len(evaluated)
        if n_eval == 0:
            logger.warning("no query has positives: ranking metrics are reported as 0")

        def mean(key: str, rows: list[dict[str, Any]] = evaluated) -> float:
            values = [e[key] for e in rows if e.get(key) is not None]
            return float(np.mean(values)) if values else 0.0

        metrics: dict[str, float | int] = {"mAP": mean("ap")}
        for k in self.map_ks:
            values = self.ap_k[k][~np.isnan(self.ap_k[k])]
            metrics[f"mAP@{k}"] = float(np.mean(values)) if values.size else 0.0
        for k in self.pr_ks:
            metrics[f"P@{k}"] = mean(f"P@{k}")
        for k in self.pr_ks:
            metrics[f"R@{k}"] = mean(f"R@{k}")
        if self.graded:
            for k in NDCG_AT_K:
                metrics[f"NDCG@{k}"] = mean(f"NDCG@{k}", per_query)
        ranks = [e["first_rank"] for e in evaluated]
        metrics["mean_rank"] = float(np.mean(ranks)) if ranks else 0.0
        metrics["median_rank"] = float(np.median(ranks)) if ranks else 0.0
        metrics["ns_score"] = mean("ns", per_query)
        metrics["n_queries"] = len(per_query)
        metrics["n_queries_evaluated"] = n_eval
        metrics["n_failed"] = sum(1 for e in per_query if e["failed"])
        precision = self.curve_sum / n_eval if n_eval else self.curve_sum
        curve = {
            "recall": [float(x) for x in self.levels],
            "precision": [float(x) for x in precision],
        }
        return metrics, per_query, curve

    def protocol_results(self) -> dict[str, dict[str, Any]]:
        """Per protocol ``mAP``, ``mP@1/5/10``, ``n_queries_evaluated``, ``ap`` (as revisitop)."""
        out: dict[str, dict[str, Any]] = {}
        for name in self.protocols:
            aps, prs = self.prot_ap[name], self.prot_pr[name]
            valid = ~np.isnan(aps)
            n = int(np.count_nonzero(valid))
            entry: dict[str, Any] = {"mAP": float(np.sum(aps[valid]) / n) if n else 0.0}
            for j, kappa in enumerate((1, 5, 10)):
                entry[f"mP@{kappa}"] = float(np.sum(prs[valid, j], axis=0) / n) if n else 0.0
            entry["n_queries_evaluated"] = n
            entry["ap"] = [None if math.isnan(a) else float(a) for a in aps]
            out[name] = entry
        return out


# =========================================================================== on rankings
def _gnd_and_self(
    dataset_or_gnd: Any, self_index: Sequence[int | None] | None
) -> tuple[Sequence[dict], Sequence[int | None], int | None]:
    dataset: Any = dataset_or_gnd if hasattr(dataset_or_gnd, "gnd") else None
    gnd: Sequence[dict] = dataset.gnd if dataset is not None else dataset_or_gnd
    if self_index is None:
        self_index = dataset.query_self_index() if dataset is not None else [None] * len(gnd)
    n_im = len(dataset.imlist) if dataset is not None else None
    return gnd, self_index, n_im


def _score_rankings(
    rankings: Sequence[ArrayLike],
    dataset_or_gnd: Any,
    self_index: Any,
    ks: Sequence[int],
    failed: Collection[int],
    n_points: int,
    ndcg_gain: str = "linear",
) -> tuple[dict[str, float | int], list[dict[str, Any]], dict[str, list[float]]]:
    gnd, self_index, n_im = _gnd_and_self(dataset_or_gnd, self_index)
    if len(rankings) != len(gnd):
        raise ValueError(f"got {len(rankings)} rankings for {len(gnd)} queries; give one per query")
    if n_im is None:
        n_im_worst = max((np.asarray(r).size for r in rankings), default=0)
    scorer = Scorer(gnd, self_index, n_im=n_im, ks=ks, n_points=n_points, ndcg_gain=ndcg_gain)
    if n_im is None:
        scorer.worst = n_im_worst + 1
    failed_set = {int(q) for q in failed}
    for q, r in enumerate(rankings):
        scorer.add_ranking(q, r, failed=q in failed_set)
    return scorer.result()


def compute_metrics(
    rankings: Sequence[ArrayLike],
    dataset_or_gnd: Any,
    self_index: Sequence[int | None] | None = None,
    ks: Sequence[int] = (1, 5, 10),
    *,
    failed: Collection[int] = (),
    ndcg_gain: str = "linear",
) -> tuple[dict[str, float | int], list[dict[str, Any]]]:
    """All metrics of a set of rankings, summary and per query.

    The N-S score counts the query's group (its positives and its own image)
    among the first 4 raw results; every other metric is computed on the
    ranking with the query's own image, its junk and -1 padding removed (as
    revisitop removes junk). A query's own image listed in its ``ok`` is
    dropped from ``ok``.

    Parameters
    ----------
    rankings : sequence of (n_i,) array_like of int, length n_q
        Per query, gallery indices best first (full or truncated rankings).
    dataset_or_gnd : RetrievalDataset or sequence of dict
        The ground truth (``gnd``), per query ``"ok"``, optionally ``"junk"`` and
        ``"graded"`` (``[[gallery_index, grade], ...]``).
    self_index : sequence of int or None, length n_q, optional
        Gallery index of each query's own image. Default: ``dataset.query_self_index()``
        for a data set, else no query is in the gallery.
    ks : sequence of int
        Cut-offs of P@k and R@k (1, 5 and 10 are always reported) and extra
        cut-offs of mAP@k (1, 10, 50, 100 are always reported).
    failed : collection of int
        Queries that could not be run: AP, P, R and N-S are 0 and ``first_rank``
        is one past the gallery size.
    ndcg_gain : {"linear", "exponential"}
        Gain of ``NDCG@5``, ``NDCG@10``, ``NDCG@100``, reported when the ground
        truth has ``graded`` entries (mean over the queries with a positive grade).

    Returns
    -------
    metrics : dict
        ``mAP``, ``mAP@k``, ``P@k``, ``R@k``, ``mean_rank``, ``median_rank`` (means
        over the ``n_queries_evaluated`` queries with positives), ``NDCG@k``,
        ``ns_score`` (mean over all queries), ``n_queries``, ``n_queries_evaluated``,
        ``n_failed``; plain Python numbers, never ``NaN``.
    per_query : list of dict
        ``query``, ``ap``, ``P@k``, ``R@k``, ``first_rank`` (``None`` when the
        query has no positives), ``NDCG@k``, ``ns``, ``n_ok``, ``failed``,
        ``top``: the first 10 gallery indices of the cleaned ranking (``None``
        for a result outside the gallery), and ``top_raw``: the same before junk
        removal (the query's own image still removed).
    """
    metrics, per_query, _ = _score_rankings(
        rankings, dataset_or_gnd, self_index, ks, failed, 11, ndcg_gain
    )
    return metrics, per_query


def mean_pr_curve(
    rankings: Sequence[ArrayLike],
    dataset_or_gnd: Any,
    self_index: Sequence[int | None] | None = None,
    n_points: int = 11,
    *,
    failed: Collection[int] = (),
) -> dict[str, list[float]]:
    """Mean interpolated precision-recall curve over the queries with positives.

    Rankings are cleaned as in :func:`compute_metrics`; failed queries have
    precision 0. Returns ``{"recall": [0, ..., 1], "precision": [...]}``.
    """
    return _score_rankings(rankings, dataset_or_gnd, self_index, (), failed, n_points)[2]
