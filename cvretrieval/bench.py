"""Several embedders evaluated on one data set in one run (``cvret bench``).

Local features are extracted once per detector and shared between configurations through
the retriever's feature cache, so ``bovw-sift`` and ``vlad-sift`` cost one SIFT pass.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from typing import Any

from .datasets import RetrievalDataset
from .demo import markdown_table
from .evaluation import evaluate, evaluate_embedder

logger = logging.getLogger(__name__)

#: columns of the printed table, in order (absent metrics are left blank)
COLUMNS = ("features", "mAP", "mAP@10", "P@1", "P@10", "R@10", "ns_score", "index_s", "query_ms")


def run_bench(
    dataset: RetrievalDataset,
    specs: Sequence[str],
    *,
    index: str = "flat",
    metric: str = "ip",
    max_side: int = 640,
    n_jobs: int = -1,
    random_state: int = 0,
    feature_cache: str | os.PathLike | None = None,
    retriever_options: dict[str, Any] | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Build and evaluate one retriever per spec; return rows, a markdown table and reports.

    Parameters
    ----------
    dataset : RetrievalDataset
    specs : sequence of str
        Embedder specs (``hog``, ``bovw-sift``, ``vlad``, ``tflite:model.tflite``...).
    index, metric, max_side, n_jobs, random_state
        As for :class:`~cvretrieval.retriever.Retriever`, the same for every spec.
    feature_cache : path, optional
        Folder for the shared local-feature cache (``None``: no sharing).
    retriever_options : dict, optional
        Other :class:`~cvretrieval.retriever.Retriever` keyword arguments for every spec.

    Returns
    -------
    dict
        ``rows`` (one per spec: the metrics of :data:`COLUMNS`, ``index_s`` = build
        seconds, ``query_ms`` = mean search time per query), ``table`` (markdown),
        ``reports`` (spec -> the full :func:`~cvretrieval.evaluation.evaluate` result),
        ``dataset`` (summary).
    """
    from .embedders import make_embedder
    from .retriever import Retriever

    if not specs:
        raise ValueError("no features to compare: give at least one spec, e.g. hog,bovw-sift")
    rows, reports = [], {}
    for spec in specs:
        embedder = make_embedder(spec, random_state=random_state) if _takes_seed(spec) else (
            make_embedder(spec)
        )
        if getattr(embedder, "takes_paths", False):  # vectors:FILE.npz: nothing to build
            report = evaluate_embedder(embedder, dataset, metric=metric, progress=progress)
            rows.append(_row(spec, report, 0.0, len(dataset.qimlist), 0))
            reports[spec] = report
            continue
        ret = Retriever(embedder, index=index, metric=metric, max_side=max_side, n_jobs=n_jobs,
                        random_state=random_state, feature_cache=feature_cache,
                        **(retriever_options or {}))
        t0 = time.perf_counter()
        ret.build(dataset.image_paths(), progress=progress)
        index_s = time.perf_counter() - t0
        # time queries through the whole pipeline: no stored gallery vectors or features
        ret.reuse_vectors = False
        ret.feature_cache = None
        report = evaluate(ret, dataset, progress=progress)
        report["build"] = {k: v for k, v in ret.last_run_.items() if k != "failed"}
        rows.append(_row(spec, report, index_s, len(dataset.qimlist),
                         ret.last_run_.get("skipped", 0)))
        reports[spec] = report
        logger.info("%s: mAP %.4f, built in %.1f s", spec, report["metrics"]["mAP"], index_s)
    return {
        "dataset": {"name": dataset.name, "root": str(dataset.root), **dataset.summary()},
        "index": index,
        "metric": metric,
        "rows": rows,
        "table": markdown_table(rows, list(COLUMNS)),
        "reports": reports,
    }


def _row(spec: str, report: dict[str, Any], index_s: float, n_queries: int,
         skipped: int) -> dict[str, Any]:
    m = report["metrics"]
    row: dict[str, Any] = {"features": spec}
    row.update({k: m[k] for k in COLUMNS if k in m})
    row["index_s"] = round(index_s, 2)
    row["query_ms"] = round(1000 * report["search_seconds"] / max(1, n_queries), 1)
    row["skipped"] = skipped
    return row


def _takes_seed(spec: str) -> bool:
    import inspect

    from .embedders import embedder_class, parse_spec

    name, _ = parse_spec(spec)
    return "random_state" in inspect.signature(embedder_class(name).__init__).parameters
