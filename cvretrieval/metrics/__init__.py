"""Retrieval metrics as pure functions on rankings and ground truth.

* :func:`compute_ap` and :func:`compute_map` reproduce, signature and semantics,
  revisitop's ``python/evaluate.py`` (the field's reference for AP with junk
  images): ``ranks`` is ``(n_db, n_q)``, column ``i`` is query ``i``'s ranking.
* per-query metrics on one 1-D ranking (best first): :func:`average_precision`,
  :func:`ap_at_k`, :func:`precision_at_k`, :func:`recall_at_k`,
  :func:`first_relevant_rank`, :func:`interpolated_precision`, the UKBench
  :func:`ns_score` and :func:`ndcg_at_k` on graded relevance.
* :func:`gldv2_map_at_100`, the Google Landmark Retrieval challenge's metric.

Junk, the query's own image and -1 padding are removed from a ranking the way
revisitop does it: a positive's position drops by the number of removed entries
ranked strictly before it. An image listed both as positive and as junk
therefore counts as a positive at its own position and, as junk, moves the
positives after it up by one (revisitop's behaviour, kept as is).

Every metric is a function of the 0-based positions of the relevant images in
the cleaned ranking (:func:`cleaned_positions`), which is what lets
:mod:`cvretrieval.scoring` score queries from block-wise scores without keeping
rankings.

References
----------
.. [1] F. Radenović, A. Iscen, G. Tolias, Y. Avrithis, O. Chum, "Revisiting Oxford
       and Paris: Large-Scale Image Retrieval Benchmarking", CVPR 2018.
.. [2] D. Nistér, H. Stewénius, "Scalable Recognition with a Vocabulary Tree",
       CVPR 2006.
.. [3] T. Weyand, A. Araujo, B. Cao, J. Sim, "Google Landmarks Dataset v2", CVPR 2020.
.. [4] K. Järvelin, J. Kekäläinen, "Cumulated gain-based evaluation of IR
       techniques", ACM TOIS 2002 (NDCG).
"""

from __future__ import annotations

from .ndcg import NDCG_GAINS, dcg_from_positions, graded_arrays, ndcg_at_k
from .ranking import (
    ap_at_k,
    ap_at_k_from_positions,
    ap_from_positions,
    average_precision,
    first_rank_from_positions,
    first_relevant_rank,
    gldv2_map_at_100,
    hit_positions,
    interpolated_from_positions,
    interpolated_precision,
    ns_score,
    precision_at_k,
    precision_from_positions,
    recall_at_k,
    recall_from_positions,
    recall_levels,
)
from .revisitop import (
    as_index_array,
    cleaned_positions,
    compute_ap,
    compute_map,
    member,
    revisited_metrics,
    revisitop_precision,
)

__all__ = [
    "compute_ap",
    "compute_map",
    "revisitop_precision",
    "revisited_metrics",
    "average_precision",
    "ap_at_k",
    "precision_at_k",
    "recall_at_k",
    "first_relevant_rank",
    "ns_score",
    "interpolated_precision",
    "ndcg_at_k",
    "gldv2_map_at_100",
    "cleaned_positions",
    "hit_positions",
    "ap_from_positions",
    "ap_at_k_from_positions",
    "precision_from_positions",
    "recall_from_positions",
    "first_rank_from_positions",
    "interpolated_from_positions",
    "dcg_from_positions",
    "graded_arrays",
    "recall_levels",
    "as_index_array",
    "member",
    "NDCG_GAINS",
]
