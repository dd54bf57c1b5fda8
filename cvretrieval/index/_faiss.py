"""Small helpers around Faiss objects: unwrapping, seeding, validation, measured memory."""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral
from typing import Any

import faiss
import numpy as np
from numpy.typing import ArrayLike, NDArray

FAISS_METRICS = {"ip": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}


def check_positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def faiss_message(exc: BaseException) -> str:
    """The useful part of the first line of a Faiss C++ error."""
    lines = str(exc).strip().splitlines()
    line = lines[0] if lines else repr(exc)
    for marker in ("failed: ", ": Error: ", ": "):
        if marker in line and line.startswith("Error in"):
            return line.rsplit(marker, 1)[-1].strip()
    return line.strip()


def factory_metric(factory: str, metric: str) -> int:
    """The Faiss metric to build ``factory`` with (LSH only exists for L2 in the factory)."""
    if factory.lstrip().upper().startswith("LSH"):
        return faiss.METRIC_L2
    return FAISS_METRICS[metric]


def make_faiss_index(
    factory: str, d: int, metric: str, spec: str, presets: Sequence[str]
) -> faiss.Index:
    try:
        return faiss.index_factory(d, factory, factory_metric(factory, metric))
    except RuntimeError as exc:
        raise ValueError(
            f"invalid index spec {spec!r} (factory string {factory!r}, d={d}): "
            f"{faiss_message(exc)}. Use one of the presets {', '.join(presets)} "
            "or a valid Faiss factory string such as 'IVF64,Flat', 'IVF256,PQ16' or 'HNSW32'"
        ) from None


def unwrap(index: faiss.Index) -> faiss.Index:
    """The innermost index of pre-transform / refine / id-map wrappers."""
    index = faiss.downcast_index(index)
    for _ in range(8):
        if isinstance(index, faiss.IndexPreTransform):
            index = faiss.downcast_index(index.index)
        elif isinstance(index, faiss.IndexRefine):
            index = faiss.downcast_index(index.base_index)
        elif isinstance(index, (faiss.IndexIDMap, faiss.IndexIDMap2)):
            index = faiss.downcast_index(index.index)
        else:
            break
    return index


def ivf_of(index: faiss.Index) -> Any | None:
    try:
        return faiss.downcast_index(faiss.extract_index_ivf(index))
    except (RuntimeError, AttributeError, TypeError):
        return None


def hnsw_of(index: faiss.Index) -> Any | None:
    inner = unwrap(index)
    return inner if isinstance(inner, faiss.IndexHNSW) else None


def is_lsh(index: faiss.Index) -> bool:
    return isinstance(unwrap(index), faiss.IndexLSH)


def is_idmap(index: faiss.Index) -> bool:
    return isinstance(faiss.downcast_index(index), (faiss.IndexIDMap, faiss.IndexIDMap2))


def seed(index: faiss.Index, random_state: int) -> None:
    """Seed every k-means / random rotation Faiss will run while training ``index``."""
    value = int(random_state) & 0x7FFFFFFF
    ivf = ivf_of(index)
    if ivf is not None:
        ivf.cp.seed = value
        if hasattr(ivf, "pq"):
            ivf.pq.cp.seed = value
    inner = unwrap(index)
    if hasattr(inner, "pq") and ivf is None:
        inner.pq.cp.seed = value
    if isinstance(inner, faiss.IndexLSH) and getattr(inner, "rotate_data", False):
        inner.rrot.init(value)


def min_training(index: faiss.Index) -> tuple[int, str]:
    """Smallest number of training vectors ``index`` can be trained on, and why."""
    need, why = 1, ""
    ivf = ivf_of(index)
    if ivf is not None and ivf.nlist > need:
        need, why = int(ivf.nlist), f"{ivf.nlist} inverted lists"
    inner = unwrap(index)
    pq = getattr(ivf, "pq", None) if ivf is not None else getattr(inner, "pq", None)
    if pq is not None and int(pq.ksub) > need:
        need, why = int(pq.ksub), f"{pq.ksub} centroids per PQ sub-quantizer"
    return need, why


def as_matrix(x: ArrayLike, name: str, *, offset: int = 0) -> NDArray[np.float32]:
    """``x`` as a C-contiguous float32 (n, d) array, or a ValueError saying what is wrong."""
    arr = np.asarray(x)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise ValueError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (n, d) array, got shape {arr.shape}")
    if arr.shape[1] == 0:
        raise ValueError(f"{name} has dimension 0 (shape {arr.shape}): vectors need d >= 1")
    out = np.ascontiguousarray(arr, dtype=np.float32)
    finite = np.isfinite(out).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(
            f"{name} has {bad.size} row(s) with NaN or infinite values (first: row "
            f"{bad[0] + offset}): drop or fix them before indexing"
        )
    return out


def as_ids(ids: ArrayLike, n: int | None, name: str = "ids") -> NDArray[np.int64]:
    """``ids`` as a 1-D C-contiguous int64 array of non-negative values (length ``n`` if given)."""
    arr = np.asarray(ids)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.size == 0:
        arr = arr.astype(np.int64)
    if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(
            f"{name} must be a 1-D integer array, got dtype {arr.dtype} shape {arr.shape}"
        )
    if n is not None and arr.size != n:
        raise ValueError(
            f"{name} has {arr.size} entries but there are {n} vectors: give one id each"
        )
    out = np.ascontiguousarray(arr, dtype=np.int64)
    if out.size and out.min() < 0:
        raise ValueError(f"{name} must be >= 0 (-1 marks a missing result), got {int(out.min())}")
    return out


# --------------------------------------------------------------------------- memory


def _vec_bytes(vec: Any, itemsize: int) -> int:
    try:
        return int(vec.size()) * itemsize
    except AttributeError:
        return 0


def index_memory(index: Any) -> int:
    """Bytes held by a built Faiss index (codes, ids, graph, centroids and tables).

    Computed from the sizes of Faiss's arrays (not the allocator's slack) for
    the index types this package builds; any other type is measured by
    serialising it.
    """
    index = faiss.downcast_index(index)  # Any: the Faiss stubs lack these fields
    if isinstance(index, faiss.IndexIDMap2):
        # id_map + rev_map (an unordered_map: ~40 bytes a node)
        return 48 * int(index.ntotal) + index_memory(index.index)
    if isinstance(index, faiss.IndexIDMap):
        return 8 * int(index.ntotal) + index_memory(index.index)
    if isinstance(index, faiss.IndexPreTransform):
        size = 0
        chain: Any = index.chain
        for i in range(chain.size()):
            vt = faiss.downcast_VectorTransform(chain.at(i))
            size += _vec_bytes(getattr(vt, "A", None), 4) + _vec_bytes(getattr(vt, "b", None), 4)
        return size + index_memory(index.index)
    if isinstance(index, faiss.IndexIVF):
        n = int(index.ntotal)
        size = n * (int(index.code_size) + 8) + 48 * int(index.nlist)
        size += index_memory(index.quantizer)
        if hasattr(index, "pq"):
            size += _vec_bytes(index.pq.centroids, 4)
        size += _vec_bytes(getattr(index, "precomputed_table", None), 4)
        return size
    if isinstance(index, faiss.IndexHNSW):
        hnsw: Any = index.hnsw
        graph = (
            _vec_bytes(hnsw.neighbors, 4) + _vec_bytes(hnsw.levels, 4)
            + _vec_bytes(hnsw.offsets, 8)
        )
        return graph + index_memory(index.storage)
    if isinstance(index, faiss.IndexFlatCodes):
        size = int(index.ntotal) * int(index.code_size)
        if hasattr(index, "pq"):
            size += _vec_bytes(index.pq.centroids, 4)
        if isinstance(index, faiss.IndexLSH):
            lsh: Any = index
            size += _vec_bytes(lsh.thresholds, 4) + _vec_bytes(lsh.rrot.A, 4)
        return size
    return int(faiss.serialize_index(index).size)
