"""Faiss-level operations behind :class:`~cvretrieval.index.Index` (private)."""

from __future__ import annotations

import re
from typing import Any

import faiss
import numpy as np
from numpy.typing import NDArray

from ..errors import CVRetrievalError, IndexTrainingError
from ._factory import (
    AUTO_EF_SEARCH,
    PRESETS,
    auto_nprobe,
    choose_index,
    default_nprobe,
    pq_nbits,
    preset_nlist,
    resolve_factory,
)
from ._faiss import (
    as_matrix,
    faiss_message,
    hnsw_of,
    is_idmap,
    ivf_of,
    make_faiss_index,
    min_training,
    seed,
    unwrap,
)

_FAISS: Any = faiss  # the Faiss stubs lack DirectMap and SearchParametersHNSW

#: Training vectors kept per k-means centroid (Faiss wants >= 39; 64 keeps 1M-vector
#: IVF training to about a minute on two cores).
TRAIN_POINTS_PER_CENTROID = 64
#: Vectors handed to Faiss per add call (bounds the float32 copy of a big input).
ADD_BLOCK = 65536
#: Bytes of exact vectors :func:`rescore` reads at once (a block of queries' candidates).
RESCORE_BYTES = 64 << 20
_POSITIONAL = (
    "this index was saved by an older version and numbers its vectors by position: "
    "rebuild it to {}"
)


def make_trained(
    spec: str, metric: str, xb: NDArray[np.float32], n: int, random_state: int, max_memory: Any
) -> tuple[Any, str, str, Any]:
    """Resolve ``spec`` for ``n`` vectors, build and train the empty index on ``xb``.

    Returns the index (non-IVF ones wrapped in :class:`faiss.IndexIDMap`), the
    factory string, the reason, and the serialised empty index (the template).
    """
    d = xb.shape[1]
    if spec.strip().lower() == "auto":
        factory, reason = choose_index(n, d, metric, max_memory, n_train=xb.shape[0])
    else:
        factory = resolve_factory(spec, n, d, n_train=xb.shape[0])
        kind = "preset" if spec.strip().lower() in PRESETS else "factory string"
        reason = f"{kind} {spec!r} resolved for {n} vectors of dimension {d}"
    index = make_faiss_index(factory, d, metric, spec, PRESETS)
    seed(index, random_state)
    if not index.is_trained:
        train_index(index, factory, xb, random_state)
    if ivf_of(index) is None:
        index = faiss.IndexIDMap(index)
    template = faiss.serialize_index(index)
    # use the deserialised template, so that shards (also deserialised) have the very
    # same Faiss types (the factory makes IndexFlat, read_index IndexFlatIP)
    return faiss.deserialize_index(template), factory, reason, template


def train_index(index: Any, factory: str, xb: NDArray[np.float32], random_state: int) -> None:
    """Train ``index`` on (a seeded subsample of 64 per centroid, at least 65536, of) ``xb``."""
    need, why = min_training(index)
    keep = max(TRAIN_POINTS_PER_CENTROID * need, 65536)
    if xb.shape[0] > keep:
        rng = np.random.default_rng(random_state)
        xb = xb[np.sort(rng.choice(xb.shape[0], keep, replace=False))]
    n = xb.shape[0]
    advice = (
        "use index 'flat' (--index flat), a preset ('ivf' and 'pq' adapt to the data size) "
        "or a smaller factory string"
    )
    if n < need:
        smaller = re.sub(r"IVF\d+", f"IVF{preset_nlist(n)}", factory, count=1)
        example = f" such as {smaller}" if smaller != factory else ""
        raise IndexTrainingError(
            f"{factory} needs at least {need} training vectors ({why}), got {n}: "
            f"{advice}{example}"
        )
    try:
        index.train(xb)
    except RuntimeError as exc:
        raise IndexTrainingError(
            f"training {factory} on {n} vectors failed: {faiss_message(exc)}; {advice}"
        ) from None


def stored_ids(index: Any) -> NDArray[np.int64]:
    """Every id ``index`` holds (masked HNSW ones included), in storage order."""
    index = faiss.downcast_index(index)
    if is_idmap(index):
        return faiss.vector_to_array(index.id_map).astype(np.int64, copy=False)
    ivf = ivf_of(index)
    if ivf is not None:
        parts = []
        invlists = ivf.invlists
        for lst in range(ivf.nlist):
            size = invlists.list_size(lst)
            if size:
                ptr = invlists.get_ids(lst)
                parts.append(faiss.rev_swig_ptr(ptr, size).copy())
                invlists.release_ids(lst, ptr)
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
    return np.arange(index.ntotal, dtype=np.int64)


def live_vectors(
    index: Any, removed: NDArray[np.int64]
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Vectors and ids of an id-mapped index, in storage order, without ``removed``."""
    ids = stored_ids(index)
    inner = faiss.downcast_index(index.index) if is_idmap(index) else index
    vectors = inner.reconstruct_n(0, inner.ntotal)
    keep = ~np.isin(ids, removed)
    return np.ascontiguousarray(vectors[keep], dtype=np.float32), ids[keep]


def reconstruct_sorted(index: Any, removed: NDArray[np.int64]) -> NDArray[np.float32]:
    """The vectors of ``index`` by increasing id, without ``removed`` (RuntimeError: cannot)."""
    ivf = ivf_of(index)
    if ivf is not None:
        ids = np.sort(stored_ids(index))
        ivf.set_direct_map_type(_FAISS.DirectMap.Hashtable)
        try:
            out = index.reconstruct_batch(ids)
        finally:
            ivf.set_direct_map_type(_FAISS.DirectMap.NoMap)
        return np.ascontiguousarray(out, dtype=np.float32)
    if is_idmap(index):
        vectors, ids = live_vectors(index, removed)
        return np.ascontiguousarray(vectors[np.argsort(ids, kind="stable")])
    return np.ascontiguousarray(index.reconstruct_n(0, index.ntotal), dtype=np.float32)


def merge_faiss(dst: Any, src: Any, consume: bool) -> None:
    """Move (``consume``) or copy the lists/codes and ids of ``src`` into ``dst``."""
    other = src if consume else faiss.clone_index(src)
    ivf = ivf_of(dst)
    if ivf is not None:
        ivf.merge_from(ivf_of(other), 0)
        dst.ntotal = ivf.ntotal  # a pre-transform wrapper keeps its own count
        if consume:
            src.ntotal = 0
    else:
        dst.merge_from(other, 0)


def ill_sized(index: Any, n_total: int, n_train: int | None = None) -> bool:
    """IVF ``nlist`` off by more than 4x from :func:`preset_nlist` (for ``n_total`` vectors
    and ``n_train`` training vectors), or too few PQ bits."""
    ivf = ivf_of(index)
    if ivf is not None:
        ideal = preset_nlist(n_total, n_train)
        return bool(ivf.nlist * 4 < ideal or ivf.nlist > 4 * ideal)
    pq = getattr(unwrap(index), "pq", None)
    if pq is not None:
        return int(pq.nbits) < pq_nbits(n_total)
    return False


def search_faiss(
    index: Any,
    xq: NDArray[np.float32],
    k: int,
    nprobe: int | None,
    ef_search: int | None,
    auto: bool,
    removed: NDArray[np.int64],
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """``index.search(xq, k)`` with the search parameters set and ``removed`` ids masked.

    HNSW gets the mask as an :class:`faiss.IDSelector` in its search
    parameters; another index with a mask over-fetches and drops.
    """
    ivf = ivf_of(index)
    if ivf is not None:
        nlist = int(ivf.nlist)
        default = auto_nprobe(nlist) if auto else default_nprobe(nlist)
        ivf.nprobe = min(nlist, nprobe if nprobe is not None else default)
    hnsw = hnsw_of(index)
    if hnsw is not None:
        ef = ef_search if ef_search is not None else max(AUTO_EF_SEARCH if auto else 64, 2 * k)
        hnsw.hnsw.efSearch = ef
        if removed.size:
            batch = faiss.IDSelectorBatch(removed)
            sel = faiss.IDSelectorNot(batch)
            params = _FAISS.SearchParametersHNSW(sel=sel, efSearch=ef)
            return index.search(xq, k, params=params)  # batch, sel alive until here
    if not removed.size:
        return index.search(xq, k)
    kf = min(int(index.ntotal), k + int(removed.size))
    D, I = index.search(xq, kf)  # noqa: E741
    gone = np.isin(I, removed) | (I < 0)
    order = np.argsort(gone, axis=1, kind="stable")[:, :k]
    D = np.take_along_axis(D, order, axis=1)
    I = np.where(np.take_along_axis(gone, order, axis=1), -1, np.take_along_axis(I, order, axis=1))  # noqa: E741
    return D, I


def rescore(
    xq: NDArray[np.float32],
    I: NDArray[np.int64],  # noqa: E741, N803 - Faiss's name
    vectors: Any,
    metric: str,
    max_bytes: int = RESCORE_BYTES,
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Exact scores of the candidates ``I`` (``-1``: none) of each query ``xq``, re-sorted.

    ``vectors(ids)`` gives the exact ``(len(ids), d)`` vectors of increasing ``ids``. The
    queries are taken in blocks whose candidates' vectors (at most ``max_bytes`` of
    float32) are read once per block however many of its queries share them, so that
    10,000 queries with 256 candidates of 8,100 dims each do not read 83 GB at once.
    Scores are inner products (``metric="ip"``, best first = highest) or squared L2
    distances (lowest first); missing candidates sort last with ``-inf`` / ``+inf``.
    """
    valid = I >= 0
    fill = -np.inf if metric == "ip" else np.inf
    D = np.full(I.shape, fill, np.float32)
    step = max(1, int(max_bytes) // max(1, 4 * xq.shape[1] * I.shape[1]))
    for lo in range(0, I.shape[0], step):
        uniq = np.unique(I[lo : lo + step][valid[lo : lo + step]])
        if not len(uniq):
            continue
        xb = np.asarray(vectors(uniq), np.float32)
        for j in range(lo, min(lo + step, I.shape[0])):
            sel = np.flatnonzero(valid[j])
            rows = xb[np.searchsorted(uniq, I[j, sel])]
            if metric == "ip":
                D[j, sel] = rows @ xq[j]
            else:
                diff = rows - xq[j]
                D[j, sel] = np.einsum("ij,ij->i", diff, diff)
    order = np.argsort(-D if metric == "ip" else D, axis=1, kind="stable")
    return (np.take_along_axis(D, order, axis=1),
            np.take_along_axis(np.where(valid, I, -1), order, axis=1))


def add_faiss(index: Any, xb: NDArray[Any], ids: NDArray[np.int64]) -> None:
    """Add ``xb`` under ``ids`` in blocks of :data:`ADD_BLOCK` rows, as float32."""
    native = is_idmap(index) or ivf_of(index) is not None
    n = xb.shape[0]
    if not native and not np.array_equal(ids, np.arange(index.ntotal, index.ntotal + n)):
        raise CVRetrievalError(_POSITIONAL.format("add with arbitrary ids"))
    for lo in range(0, n, ADD_BLOCK):
        block = as_matrix(xb[lo : lo + ADD_BLOCK], "xb", offset=lo)
        if native:
            index.add_with_ids(block, ids[lo : lo + ADD_BLOCK])
        else:
            index.add(block)


def remove_faiss(
    index: Any, ids: NDArray[np.int64], removed: NDArray[np.int64]
) -> tuple[int, NDArray[np.int64]]:
    """Remove unique ``ids`` natively, or add them to the mask ``removed`` (HNSW).

    Returns the number removed and the new mask.
    """
    if not (is_idmap(index) or ivf_of(index) is not None):
        raise CVRetrievalError(_POSITIONAL.format("remove ids"))
    if hnsw_of(index) is None:
        try:
            return int(index.remove_ids(ids)), removed
        except RuntimeError:
            pass  # this index type cannot remove: fall back to a mask
    present = np.isin(ids, stored_ids(index)) & ~np.isin(ids, removed)
    return int(present.sum()), np.union1d(removed, ids[present]).astype(np.int64)


def check_mergeable(
    dst: dict[str, Any], dst_sum: str | None, src: dict[str, Any], src_sum: str | None
) -> None:
    """ValueError unless a shard with config ``src`` can merge into ``dst``."""
    mine = (dst["factory"], dst["d"], dst["metric"])
    theirs = (src["factory"], src["d"], src["metric"])
    if mine != theirs:
        raise ValueError(f"cannot merge a {theirs} shard into a {mine} index")
    if dst_sum and src_sum and dst_sum != src_sum:
        raise ValueError(
            "the shard was trained separately from this index: make shards with "
            "index.empty_copy() so that they share its training"
        )
