"""The Faiss wrapper: presets and factory strings, metric, train/add/search, save/load.

An :class:`Index` stores float vectors and answers k-nearest-neighbour queries.
It is configured by a *spec*, either one of the :data:`PRESETS` (whose
parameters adapt to the number of vectors ``n`` and the dimension ``d`` seen at
the first :meth:`Index.build`) or any Faiss factory string, which is handed to
:func:`faiss.index_factory` as is (``"IVF64,PQ16"``, ``"OPQ16,IVF256,PQ16"``,
``"HNSW16,Flat"``...).

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
    polysemous training, a slow code reordering only useful for Hamming
    pre-filtering, which this wrapper does not use) where ``m`` is the largest
    divisor of ``d`` that is at most ``max(1, d // 4)`` and at most 64 (so each
    sub-vector has at least 4 dimensions) and ``nbits = clamp(floor(log2 n),
    1, 8)`` so that the ``2**nbits`` centroids of each sub-quantizer can be
    trained on ``n`` vectors (50 vectors give ``nbits = 5``). From
    ``n >= 100_000`` (:data:`PQ_IVF_THRESHOLD`) the preset is the
    non-exhaustive ``"IVF{nlist},PQ{m}np"`` (8-bit codes, ``nlist`` as for
    ``ivf``).
``lsh``
    ``"LSH{nbits}rt"``: :class:`faiss.IndexLSH` with ``nbits = min(2 * d,
    4096)`` bits, a random rotation (projection) of the data and trained
    per-bit thresholds (medians). LSH ranks by **Hamming distance** (smaller is
    better) whatever the metric: check :attr:`Index.higher_is_better`.
``hnsw``
    ``"HNSW32"`` (Faiss's default ``efConstruction`` of 40); ``efSearch``
    defaults to ``max(64, 2 * k)`` at search time.

Search-time parameters
----------------------
``nprobe`` (IVF-based indexes, including custom factory strings) defaults to
``min(nlist, max(8, round(nlist / 8)), 64)``, see :func:`default_nprobe`.
``ef_search`` (HNSW) defaults to ``max(64, 2 * k)``. Both may be set in the
constructor or later (also after :meth:`Index.load`), and both are saved.

Distances
---------
``metric="ip"`` ranks by inner product (cosine similarity on L2-normalised
vectors; larger is better); ``metric="l2"`` by *squared* Euclidean distance
(smaller is better), as Faiss returns it.
"""

from __future__ import annotations

import logging
import math
import os
import re
from numbers import Integral
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from numpy.typing import ArrayLike, NDArray

from cvretrieval._json import read_json_manifest, write_json_atomic
from cvretrieval.errors import BundleError, CVRetrievalError, IndexTrainingError, NotFittedError

__all__ = [
    "FORMAT_VERSION",
    "METRICS",
    "PRESETS",
    "Index",
    "default_nprobe",
    "preset_nlist",
    "resolve_factory",
]

logger = logging.getLogger(__name__)

PRESETS: tuple[str, ...] = ("flat", "ivf", "lsh", "pq", "hnsw")
METRICS: tuple[str, ...] = ("ip", "l2")
FORMAT_VERSION = 1
INDEX_FILE = "index.faiss"
CONFIG_FILE = "index.json"

#: From this many vectors the ``pq`` preset becomes ``IVF{nlist},PQ{m}``.
PQ_IVF_THRESHOLD = 100_000
#: Faiss warns below this many training points per k-means centroid.
_MIN_POINTS_PER_CENTROID = 39
_MAX_NLIST = 65536
_MAX_LSH_BITS = 4096

_FAISS_METRICS = {"ip": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}


# --------------------------------------------------------------------------- presets


def preset_nlist(n: int) -> int:
    """Number of inverted lists the ``ivf`` preset uses for ``n`` vectors.

    ``round(4 * sqrt(n))`` clamped to ``[1, max(1, n // 39)]`` and to at most
    65536, so that every k-means centroid gets at least 39 training points.

    Parameters
    ----------
    n : int
        Number of training vectors.

    Returns
    -------
    int
        ``nlist``.

    Examples
    --------
    >>> preset_nlist(50), preset_nlist(5000), preset_nlist(1_000_000)
    (1, 128, 4000)
    """
    if n < 2:
        return 1
    nlist = int(round(4.0 * math.sqrt(n)))
    return max(1, min(nlist, n // _MIN_POINTS_PER_CENTROID, _MAX_NLIST))


def default_nprobe(nlist: int) -> int:
    """Default number of inverted lists visited per query.

    ``min(nlist, max(8, round(nlist / 8)), 64)``: about an eighth of the lists,
    at least 8 (high recall on small indexes), at most 64 (bounded cost on
    large ones).

    Examples
    --------
    >>> default_nprobe(1), default_nprobe(128), default_nprobe(4000)
    (1, 16, 64)
    """
    return int(max(1, min(nlist, max(8, round(nlist / 8)), 64)))


def _pq_m(d: int) -> int:
    """Largest divisor of ``d`` that is at most ``max(1, d // 4)`` and at most 64."""
    limit = max(1, min(d // 4, 64))
    for m in range(limit, 0, -1):
        if d % m == 0:
            return m
    return 1  # pragma: no cover - 1 always divides d


def _pq_nbits(n: int) -> int:
    """Bits per PQ code: ``clamp(floor(log2 n), 1, 8)`` so that ``2**nbits <= n``."""
    return int(max(1, min(8, math.floor(math.log2(max(n, 2))))))


def _check_positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _faiss_message(exc: BaseException) -> str:
    """The useful part of the first line of a Faiss C++ error."""
    lines = str(exc).strip().splitlines()
    line = lines[0] if lines else repr(exc)
    for marker in ("failed: ", ": Error: ", ": "):
        if marker in line and line.startswith("Error in"):
            return line.rsplit(marker, 1)[-1].strip()
    return line.strip()


def _factory_metric(factory: str, metric: str) -> int:
    """The Faiss metric to build ``factory`` with (LSH only exists for L2 in the factory)."""
    if factory.lstrip().upper().startswith("LSH"):
        return faiss.METRIC_L2
    return _FAISS_METRICS[metric]


def _make_faiss_index(factory: str, d: int, metric: str, spec: str) -> faiss.Index:
    try:
        return faiss.index_factory(d, factory, _factory_metric(factory, metric))
    except RuntimeError as exc:
        raise ValueError(
            f"invalid index spec {spec!r} (factory string {factory!r}, d={d}): "
            f"{_faiss_message(exc)}. Use one of the presets {', '.join(PRESETS)} "
            "or a valid Faiss factory string such as 'IVF64,Flat', 'IVF256,PQ16' or 'HNSW32'"
        ) from None


def resolve_factory(spec: str, n: int, d: int) -> str:
    """Turn a preset name or a Faiss factory string into a factory string.

    Parameters
    ----------
    spec : str
        One of :data:`PRESETS` (case-insensitive) or a Faiss factory string.
    n : int
        Number of vectors the index is first built with (presets adapt to it).
    d : int
        Dimension of the vectors.

    Returns
    -------
    str
        A string :func:`faiss.index_factory` accepts.

    Raises
    ------
    ValueError
        If ``n`` or ``d`` is not positive, or ``spec`` is neither a preset nor a
        factory string Faiss can parse.

    Examples
    --------
    >>> resolve_factory("ivf", 5000, 128)
    'IVF128,Flat'
    >>> resolve_factory("pq", 50, 32)
    'PQ8x5np'
    >>> resolve_factory("lsh", 1000, 64)
    'LSH128rt'
    >>> resolve_factory("IVF64,PQ16", 10_000, 128)
    'IVF64,PQ16'
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(
            f"index spec must be a non-empty string, got {spec!r}: use one of the presets "
            f"{', '.join(PRESETS)} or a Faiss factory string"
        )
    n = _check_positive_int(n, "n (number of vectors)")
    d = _check_positive_int(d, "d (dimension)")
    key = spec.strip().lower()
    if key == "flat":
        return "Flat"
    if key == "ivf":
        return f"IVF{preset_nlist(n)},Flat"
    if key == "pq":
        m = _pq_m(d)
        if n >= PQ_IVF_THRESHOLD:
            return f"IVF{preset_nlist(n)},PQ{m}np"
        return f"PQ{m}x{_pq_nbits(n)}np"
    if key == "lsh":
        return f"LSH{min(2 * d, _MAX_LSH_BITS)}rt"
    if key == "hnsw":
        return "HNSW32"
    factory = spec.strip()
    _make_faiss_index(factory, d, "l2", spec)  # validate: raises ValueError naming the spec
    return factory


# --------------------------------------------------------------------------- faiss helpers


def _unwrap(index: faiss.Index) -> faiss.Index:
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


def _ivf(index: faiss.Index) -> Any | None:
    try:
        return faiss.downcast_index(faiss.extract_index_ivf(index))
    except (RuntimeError, AttributeError, TypeError):
        return None


def _hnsw(index: faiss.Index) -> Any | None:
    inner = _unwrap(index)
    return inner if isinstance(inner, faiss.IndexHNSW) else None


def _is_lsh(index: faiss.Index) -> bool:
    return isinstance(_unwrap(index), faiss.IndexLSH)


def _seed(index: faiss.Index, random_state: int) -> None:
    """Seed every k-means / random rotation Faiss will run while training ``index``."""
    seed = int(random_state) & 0x7FFFFFFF
    ivf = _ivf(index)
    if ivf is not None:
        ivf.cp.seed = seed
        if hasattr(ivf, "pq"):
            ivf.pq.cp.seed = seed
    inner = _unwrap(index)
    if hasattr(inner, "pq") and ivf is None:
        inner.pq.cp.seed = seed
    if isinstance(inner, faiss.IndexLSH) and getattr(inner, "rotate_data", False):
        inner.rrot.init(seed)


def _min_training(index: faiss.Index) -> tuple[int, str]:
    """Smallest number of training vectors ``index`` can be trained on, and why."""
    need, why = 1, ""
    ivf = _ivf(index)
    if ivf is not None and ivf.nlist > need:
        need, why = int(ivf.nlist), f"{ivf.nlist} inverted lists"
    inner = _unwrap(index)
    pq = getattr(ivf, "pq", None) if ivf is not None else getattr(inner, "pq", None)
    if pq is not None and int(pq.ksub) > need:
        need, why = int(pq.ksub), f"{pq.ksub} centroids per PQ sub-quantizer"
    return need, why


def _as_matrix(x: ArrayLike, name: str) -> NDArray[np.float32]:
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
            f"{name} has {bad.size} row(s) with NaN or infinite values (first: row {bad[0]}): "
            "drop or fix them before indexing"
        )
    return out


# --------------------------------------------------------------------------- Index


class Index:
    """A Faiss index chosen by a preset or a factory string.

    Parameters
    ----------
    spec : str, default "flat"
        One of :data:`PRESETS` (``flat``, ``ivf``, ``lsh``, ``pq``, ``hnsw``) or
        any Faiss factory string. Presets are resolved by :func:`resolve_factory`
        from the data given to the first :meth:`build`.
    metric : {"ip", "l2"}, default "ip"
        Inner product (cosine on L2-normalised vectors; higher is better) or
        squared Euclidean distance (lower is better). LSH always ranks by
        Hamming distance (lower is better).
    nprobe : int or None, default None
        Inverted lists visited per query by IVF-based indexes; None picks
        :func:`default_nprobe` of ``nlist``. Ignored by other indexes.
    ef_search : int or None, default None
        HNSW ``efSearch``; None uses ``max(64, 2 * k)``. Ignored by other indexes.
    random_state : int, default 0
        Seed of Faiss's k-means (IVF, PQ) and of the LSH rotation, so builds
        are reproducible.

    Attributes
    ----------
    factory_ : str
        The resolved factory string.
    d_ : int
        Vector dimension.
    index_ : faiss.Index
        The Faiss index.

    Notes
    -----
    Result ids ``I`` are the positions of the vectors in the order they were
    added (0-based, over all :meth:`build`/:meth:`add` calls). HNSW graph
    construction is multi-threaded in Faiss; its builds are in practice but
    not provably bit-identical from run to run. A saved HNSW index reloads
    exactly.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> xb = rng.standard_normal((100, 16)).astype(np.float32)
    >>> index = Index("flat", metric="l2").build(xb)
    >>> D, I = index.search(xb[:2], k=3)
    >>> I[:, 0].tolist(), D.shape
    ([0, 1], (2, 3))
    """

    def __init__(
        self,
        spec: str = "flat",
        metric: str = "ip",
        *,
        nprobe: int | None = None,
        ef_search: int | None = None,
        random_state: int = 0,
    ) -> None:
        if not isinstance(spec, str) or not spec.strip():
            raise ValueError(
                f"index spec must be a non-empty string, got {spec!r}: use one of the presets "
                f"{', '.join(PRESETS)} or a Faiss factory string"
            )
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}: use one of {', '.join(METRICS)}")
        self.spec = spec
        self.metric = metric
        self.nprobe = nprobe
        self.ef_search = ef_search
        self.random_state = random_state

    # ---------------------------------------------------------------- parameters

    @property
    def nprobe(self) -> int | None:
        """Inverted lists visited per query (IVF indexes); None means the default."""
        return self._nprobe

    @nprobe.setter
    def nprobe(self, value: int | None) -> None:
        self._nprobe = None if value is None else _check_positive_int(value, "nprobe")

    @property
    def ef_search(self) -> int | None:
        """HNSW ``efSearch``; None means ``max(64, 2 * k)``."""
        return self._ef_search

    @ef_search.setter
    def ef_search(self, value: int | None) -> None:
        self._ef_search = None if value is None else _check_positive_int(value, "ef_search")

    # ---------------------------------------------------------------- state

    def _fitted(self) -> bool:
        return getattr(self, "index_", None) is not None

    def _require_fitted(self, what: str) -> None:
        if not self._fitted():
            raise NotFittedError(
                f"this Index ({self.spec!r}) is not built yet: call build(xb) before {what}"
            )

    @property
    def ntotal(self) -> int:
        """Number of indexed vectors (0 before :meth:`build`)."""
        return int(self.index_.ntotal) if self._fitted() else 0

    def __len__(self) -> int:
        return self.ntotal

    @property
    def d(self) -> int:
        """Vector dimension."""
        self._require_fitted("reading d")
        return int(self.d_)

    @property
    def factory(self) -> str:
        """The resolved Faiss factory string."""
        self._require_fitted("reading factory")
        return str(self.factory_)

    @property
    def higher_is_better(self) -> bool:
        """True when larger ``D`` is better (metric ``ip``, except for LSH)."""
        if self._fitted():
            lsh = _is_lsh(self.index_)
        else:
            lsh = self.spec.strip().upper().startswith("LSH")
        return self.metric == "ip" and not lsh

    @property
    def nlist(self) -> int | None:
        """Number of inverted lists, or None if the index is not IVF-based."""
        self._require_fitted("reading nlist")
        ivf = _ivf(self.index_)
        return None if ivf is None else int(ivf.nlist)

    def __repr__(self) -> str:
        built = (
            f", factory={self.factory_!r}, d={self.d_}, ntotal={self.ntotal}"
            if (self._fitted())
            else ""
        )
        return f"Index(spec={self.spec!r}, metric={self.metric!r}{built})"

    def config(self) -> dict[str, Any]:
        """The parameters and shape of the index, as stored in ``index.json``.

        Returns
        -------
        dict
            ``spec``, ``factory``, ``metric``, ``d``, ``ntotal``, ``nprobe``,
            ``ef_search``, ``random_state`` (``factory`` and ``d`` are None
            before :meth:`build`).
        """
        fitted = self._fitted()
        return {
            "spec": self.spec,
            "factory": self.factory_ if fitted else None,
            "metric": self.metric,
            "d": int(self.d_) if fitted else None,
            "ntotal": self.ntotal,
            "nprobe": self.nprobe,
            "ef_search": self.ef_search,
            "random_state": int(self.random_state),
        }

    # ---------------------------------------------------------------- build / add

    def build(self, xb: ArrayLike) -> Index:
        """Create the Faiss index for ``xb``, train it if needed, and add ``xb``.

        Any previous content is discarded. Presets are resolved from
        ``xb.shape``.

        Parameters
        ----------
        xb : (n, d) array_like
            Database vectors (converted to float32).

        Returns
        -------
        Index
            self.

        Raises
        ------
        ValueError
            Empty or non-finite ``xb``, or an invalid factory string.
        IndexTrainingError
            Too few vectors to train the index.
        """
        xb = _as_matrix(xb, "xb")
        n, d = xb.shape
        if n == 0:
            raise ValueError("xb is empty (0 vectors): build needs at least one vector")
        factory = resolve_factory(self.spec, n, d)
        index = _make_faiss_index(factory, d, self.metric, self.spec)
        _seed(index, self.random_state)
        if not index.is_trained:
            self._train(index, factory, xb)
        index.add(xb)
        self.index_ = index
        self.factory_ = factory
        self.d_ = int(d)
        logger.info(
            "built %s index (%s, metric %s) on %d vectors of dimension %d",
            self.spec,
            factory,
            self.metric,
            n,
            d,
        )
        return self

    def _train(self, index: faiss.Index, factory: str, xb: NDArray[np.float32]) -> None:
        n = xb.shape[0]
        advice = (
            "use index 'flat' (--index flat), a preset ('ivf' and 'pq' adapt to the data size) "
            "or a smaller factory string"
        )
        need, why = _min_training(index)
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
                f"training {factory} on {n} vectors failed: {_faiss_message(exc)}; {advice}"
            ) from None

    def add(self, xb: ArrayLike) -> None:
        """Append vectors to a built index (builds it if it is not built yet).

        The ids of the new vectors continue from :attr:`ntotal`.

        Parameters
        ----------
        xb : (n, d) array_like
            Vectors of the index's dimension.

        Raises
        ------
        ValueError
            If the dimension of ``xb`` differs from the index's.
        """
        if not self._fitted():
            self.build(xb)
            return
        xb = _as_matrix(xb, "xb")
        if xb.shape[1] != self.d_:
            raise ValueError(
                f"xb has dimension {xb.shape[1]} but the index holds vectors of dimension "
                f"{self.d_}: embed with the same embedder the index was built with"
            )
        if xb.shape[0] == 0:
            return
        self.index_.add(xb)
        logger.debug("added %d vectors (ntotal %d)", xb.shape[0], self.ntotal)

    # ---------------------------------------------------------------- search

    def _apply_search_params(self, k: int) -> None:
        ivf = _ivf(self.index_)
        if ivf is not None:
            ivf.nprobe = min(
                int(ivf.nlist),
                self.nprobe if self.nprobe is not None else default_nprobe(int(ivf.nlist)),
            )
        hnsw = _hnsw(self.index_)
        if hnsw is not None:
            hnsw.hnsw.efSearch = self.ef_search if self.ef_search is not None else max(64, 2 * k)

    def search(self, xq: ArrayLike, k: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """The ``k`` nearest indexed vectors of each query, best first.

        Parameters
        ----------
        xq : (m, d) array_like
            Query vectors (a single (d,) vector is treated as one query).
        k : int
            Number of results per query.

        Returns
        -------
        D : (m, k) ndarray of float32
            Scores: inner products (metric ``ip``), squared L2 distances
            (``l2``) or Hamming distances (LSH). See :attr:`higher_is_better`.
        I : (m, k) ndarray of int64
            Positions of the results. Always exactly ``k`` columns: missing
            results (``k > ntotal``, or lists an IVF index did not probe) have
            ``I = -1`` and ``D = -inf`` (higher is better) or ``+inf``.

        Raises
        ------
        NotFittedError
            If the index is not built or holds no vectors.
        ValueError
            Bad ``k`` or a dimension mismatch.
        """
        self._require_fitted("search")
        k = _check_positive_int(k, "k")
        if self.ntotal == 0:
            raise NotFittedError("the index holds no vectors: add vectors before searching")
        xq = _as_matrix(xq, "xq")
        if xq.shape[1] != self.d_:
            raise ValueError(
                f"xq has dimension {xq.shape[1]} but the index holds vectors of dimension "
                f"{self.d_}: embed queries with the embedder the index was built with"
            )
        m = xq.shape[0]
        fill = -np.inf if self.higher_is_better else np.inf
        D = np.full((m, k), fill, dtype=np.float32)
        I = np.full((m, k), -1, dtype=np.int64)  # noqa: E741 - Faiss's name
        if m == 0:
            return D, I
        kk = min(k, self.ntotal)
        self._apply_search_params(kk)
        Dk, Ik = self.index_.search(xq, kk)
        missing = Ik < 0
        if missing.any():
            Dk = Dk.copy()
            Dk[missing] = fill
        D[:, :kk] = Dk
        I[:, :kk] = Ik
        return D, I

    # ---------------------------------------------------------------- persistence

    def reconstruct_all(self) -> NDArray[np.float32]:
        """The indexed vectors, ``(ntotal, d)`` float32, in index order.

        Exact for flat and HNSW indexes, approximate (decoded codes) for IVF-PQ / PQ;
        IVF indexes get a direct map first. Query expansion uses this.

        Raises
        ------
        CVRetrievalError
            When the index cannot give its vectors back (e.g. LSH).
        """
        self._require_fitted("reconstruct_all")
        n = self.ntotal
        ivf = _ivf(self.index_)
        try:
            if ivf is not None and ivf.direct_map.no():  # no direct map yet
                ivf.make_direct_map()
            return np.ascontiguousarray(self.index_.reconstruct_n(0, n), dtype=np.float32)
        except RuntimeError as exc:
            raise CVRetrievalError(
                f"this {self.factory} index cannot give its vectors back ({_faiss_message(exc)}): "
                "query expansion and database augmentation need flat, hnsw, ivf or pq"
            ) from None

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write ``index.faiss`` and ``index.json`` into ``directory`` (created if needed).

        Each file is written to a temporary name and renamed, so a crash never
        leaves a half-written file under the final name.
        """
        self._require_fitted("save")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {
            "format_version": FORMAT_VERSION,
            **self.config(),
            "faiss_version": faiss.__version__,
        }
        tmp_index = directory / f".{INDEX_FILE}.tmp"
        faiss.write_index(self.index_, str(tmp_index))
        os.replace(tmp_index, directory / INDEX_FILE)
        write_json_atomic(directory / CONFIG_FILE, meta)
        logger.debug("saved index %s to %s", self.factory_, directory)

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> Index:
        """Read an index written by :meth:`save`.

        Raises
        ------
        BundleError
            Missing files, unreadable JSON or index, a different
            ``format_version``, or an index whose ``ntotal``/``d``/metric
            disagree with ``index.json``.
        """
        directory = Path(directory)
        json_path = directory / CONFIG_FILE
        index_path = directory / INDEX_FILE
        for path in (json_path, index_path):
            if not path.is_file():
                raise BundleError(
                    f"{path} is missing: {directory} is not an index folder written by Index.save"
                )
        meta = read_json_manifest(
            json_path, format_version=FORMAT_VERSION, hint="re-save the index with this version"
        )
        missing = [key for key in ("spec", "factory", "metric", "d", "ntotal") if key not in meta]
        if missing:
            raise BundleError(f"{json_path} lacks {', '.join(missing)}: re-save the index")
        try:
            obj = cls(
                meta["spec"],
                meta["metric"],
                nprobe=meta.get("nprobe"),
                ef_search=meta.get("ef_search"),
                random_state=meta.get("random_state", 0),
            )
        except ValueError as exc:
            raise BundleError(f"{json_path} has an invalid setting: {exc}") from None
        try:
            index = faiss.read_index(str(index_path))
        except RuntimeError as exc:
            raise BundleError(
                f"{index_path} is not a readable Faiss index: {_faiss_message(exc)}"
            ) from None
        if index.ntotal != meta["ntotal"] or index.d != meta["d"]:
            raise BundleError(
                f"{index_path} holds {index.ntotal} vectors of dimension {index.d} but {json_path} "
                f"says {meta['ntotal']} of dimension {meta['d']}: the two files do not belong "
                "together, re-save the index"
            )
        if not _is_lsh(index) and index.metric_type != _FAISS_METRICS[obj.metric]:
            raise BundleError(
                f"{index_path} uses Faiss metric {index.metric_type} but {json_path} says "
                f"{obj.metric!r}: the two files do not belong together, re-save the index"
            )
        obj.index_ = index
        obj.factory_ = str(meta["factory"])
        obj.d_ = int(index.d)
        return obj
