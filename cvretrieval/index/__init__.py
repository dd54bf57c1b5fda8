"""The Index protocol and its Faiss implementation: presets, ``auto``, ids, shards, one file.

An :class:`Index` stores float vectors under caller-given int64 ids and answers
k-nearest-neighbour queries. :class:`cvretrieval.sparse.SparseIndex` implements
the same protocol for sparse BoVW rows::

    idx = Index("auto", "ip", max_memory="4G").train(sample, n_total=N)
    idx.add_with_ids(xb, ids)            # in blocks; ids need not be contiguous
    idx.remove_ids(ids) -> int           # every preset (HNSW: a mask applied at search)
    D, I = idx.search(xq, k)             # I holds the ids, -1 where missing
    shard = idx.empty_copy(); shard.add_with_ids(...); idx.merge_from(shard)
    idx.save("x.faiss"); Index.load("x.faiss")
    idx.memory_bytes(); idx.needs_retrain(n_total); idx.config()

The spec is one of the :data:`PRESETS` or any Faiss factory string, which is
handed to :func:`faiss.index_factory` as is (``"IVF64,PQ16"``,
``"OPQ16,IVF256,PQ16"``, ``"HNSW16,Flat"``...).

Preset rules (see :func:`resolve_factory`)
------------------------------------------
``flat``
    ``"Flat"``: exact search.
``ivf``
    ``"IVF{nlist},Flat"`` with ``nlist = round(4 * sqrt(n))``, clamped to
    ``[1, n // 39]`` (Faiss's k-means wants at least 39 training points per
    centroid) and to at most 65536. 50 vectors give one list (exact search),
    5000 give 128 lists, one million give 4000.
``pq``
    ``"PQ{m}x{nbits}np"`` (flat product quantizer; ``np`` turns off Faiss's
    polysemous training) where ``m`` is the largest divisor of ``d`` that is
    at most ``max(1, d // 4)`` and at most 64 and ``nbits = clamp(floor(log2
    n), 1, 8)``. From ``n >= 100_000`` the preset is ``"IVF{nlist},PQ{m}np"``.
``lsh``
    ``"LSH{nbits}rt"``: :class:`faiss.IndexLSH` with ``nbits = min(2 * d,
    4096)`` bits, a random rotation and trained per-bit thresholds. LSH ranks
    by **Hamming distance** (smaller is better) whatever the metric.
``hnsw``
    ``"HNSW32"``; ``efSearch`` defaults to ``max(64, 2 * k)``.
``auto``
    :func:`choose_index` from ``n``, ``d`` and ``max_memory``: Flat, HNSW32,
    IVF-Flat, IVF-SQ8 or (O)PQ-IVF, by thresholds measured in
    ``benchmarks/index_sweep.py``; an inverted file whose query would scan more
    than :data:`AUTO_MAX_SCAN_BYTES` of codes (high-dimensional vectors) is
    passed over for PQ codes.

Search-time parameters
----------------------
``nprobe`` (IVF-based indexes) defaults to :func:`default_nprobe` (presets) or
:func:`auto_nprobe` (``auto``); ``ef_search`` (HNSW) to ``max(64, 2 * k)``.
Both may be set in the constructor or later (also after :meth:`Index.load`).
``refine`` re-ranks the top candidates by their exact vectors when
:meth:`Index.search` is given them (``vectors=``, a function of the ids; a
bundle reads them from its segments): 256 for PQ codes ``auto`` chose
(:func:`auto_refine`), else 0 unless set.

Distances
---------
``metric="ip"`` ranks by inner product (larger is better); ``metric="l2"`` by
*squared* Euclidean distance (smaller is better), as Faiss returns it.
"""

from __future__ import annotations

from ._factory import (
    AUTO_MAX_SCAN_BYTES,
    AUTO_REFINE,
    PQ_IVF_THRESHOLD,
    PRESETS,
    auto_nprobe,
    auto_refine,
    choose_index,
    default_nprobe,
    estimate_memory,
    needs_training,
    parse_size,
    preset_nlist,
    resolve_factory,
    scan_bytes,
)
from ._index import METRICS, Index
from ._io import CONFIG_FILE, FORMAT_VERSION, INDEX_FILE

__all__ = [
    "AUTO_MAX_SCAN_BYTES",
    "AUTO_REFINE",
    "CONFIG_FILE",
    "FORMAT_VERSION",
    "INDEX_FILE",
    "METRICS",
    "PQ_IVF_THRESHOLD",
    "PRESETS",
    "Index",
    "auto_nprobe",
    "auto_refine",
    "choose_index",
    "default_nprobe",
    "estimate_memory",
    "needs_training",
    "parse_size",
    "preset_nlist",
    "resolve_factory",
    "scan_bytes",
]
