"""Factory strings: the presets and ``auto`` (chosen by size, memory budget and scan cost).

Pure functions of ``(n, d, metric, max_memory)``: nothing here builds an index,
so ``auto``'s choice and its memory estimate are known before any work is done.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any

from ._faiss import check_positive_int, make_faiss_index
from ._sizes import format_size, parse_size

__all__ = [
    "PRESETS",
    "auto_refine",
    "choose_index",
    "default_nprobe",
    "estimate_memory",
    "format_size",
    "needs_training",
    "parse_size",
    "preset_nlist",
    "resolve_factory",
    "scan_bytes",
]

logger = logging.getLogger(__name__)

PRESETS: tuple[str, ...] = ("flat", "ivf", "lsh", "pq", "hnsw", "auto")

#: From this many vectors the ``pq`` preset becomes ``IVF{nlist},PQ{m}``.
PQ_IVF_THRESHOLD = 100_000
#: Faiss warns below this many training points per k-means centroid.
MIN_POINTS_PER_CENTROID = 39
MAX_NLIST = 65536
MAX_LSH_BITS = 4096

# ---- auto's thresholds (measured by benchmarks/index_sweep.py, see docs/notes/index.md)
#: Exact search while n is at most this (one query scans n*d floats; ~2 ms on one core).
AUTO_FLAT_MAX_N = 50_000
#: HNSW neighbours per node.
AUTO_HNSW_M = 32
#: efSearch that reached recall@10 >= 0.95 in the sweep.
AUTO_EF_SEARCH = 64
#: An auto-chosen IVF index probes ``AUTO_NPROBE_SCALE * sqrt(nlist)`` lists (at least
#: AUTO_MIN_NPROBE): 53 of 1265 lists at 100k vectors, 95 of 4000 at 1M, where the sweep
#: measured recall@10 0.97 / 0.98 (IVF-Flat) and >= 0.95 (IVF-SQ8).
AUTO_NPROBE_SCALE = 1.5
AUTO_MIN_NPROBE = 16
#: Below this many sub-vector dimensions per PQ byte, OPQ's rotation is skipped.
AUTO_OPQ_MIN_DSUB = 4
#: Above this dimension OPQ's rotation is skipped: training it costs about d^2 per
#: iteration (OPQ50 on 67k 1,000-d vectors: 487 s, against 22 s without; at 128-d it
#: was 65 s more for 1M vectors), and the exact re-rank (:data:`AUTO_REFINE`) recovers
#: what the rotation would have gained.
AUTO_OPQ_MAX_D = 256
#: Bytes of codes one query may scan in an inverted file (``n * nprobe / nlist`` codes)
#: before ``auto`` prefers PQ codes re-ranked exactly: 100k 8,100-d HOG vectors in
#: IVF212,SQ8 scanned ~84 MB a query (430 ms on one core; its lists are unbalanced),
#: IVF212,PQ100x6 plus the exact re-rank 13.9 ms at recall@10 0.957 (highdim_index.py);
#: IVF4000,Flat over 1M 128-d vectors scans 12 MB.
AUTO_MAX_SCAN_BYTES = 32 << 20
#: PQ codes chosen by ``auto`` take at most ``max(AUTO_PQ_MAX_M, d // AUTO_PQ_DSUB)`` bytes
#: (and at most d / 2): with the exact re-rank, longer codes only slow the scan.
AUTO_PQ_MAX_M = 64
AUTO_PQ_DSUB = 80
#: Above :data:`AUTO_PQ_HIGH_D` dimensions PQ codes take 6 bits a sub-vector, not 8:
#: encoding costs ``n * d * 2**nbits``, which dominates the build there (100k 8,100-d HOG:
#: train + encode 12-14 s instead of 25-29 s, recall@10 0.957 instead of 0.977 after the
#: re-rank, 13.9 ms instead of 8.3 ms a query; benchmarks/highdim_index.py).
AUTO_PQ_HIGH_D_NBITS = 6
AUTO_PQ_HIGH_D = 1024
#: Candidates an index with PQ codes chosen by ``auto`` re-ranks by their exact stored
#: vectors when the caller can supply them (a bundle reads them from its segments).
AUTO_REFINE = 256

# --------------------------------------------------------------------------- presets


def preset_nlist(n: int, n_train: int | None = None) -> int:
    """Number of inverted lists the ``ivf`` preset uses for ``n`` vectors.

    ``round(4 * sqrt(n))`` clamped to ``[1, max(1, n_train // 39)]`` (``n_train``:
    the training vectors at hand, default ``n``) and to at most 65536, so that every
    k-means centroid gets at least 39 training points.

    Examples
    --------
    >>> preset_nlist(50), preset_nlist(5000), preset_nlist(1_000_000)
    (1, 128, 4000)
    """
    if n < 2:
        return 1
    n_train = n if n_train is None else min(n, n_train)
    nlist = int(round(4.0 * math.sqrt(n)))
    return max(1, min(nlist, n_train // MIN_POINTS_PER_CENTROID, MAX_NLIST))


def default_nprobe(nlist: int) -> int:
    """Default number of inverted lists visited per query by the ``ivf``/``pq`` presets.

    ``min(nlist, max(8, round(nlist / 8)), 64)``: about an eighth of the lists,
    at least 8 (high recall on small indexes), at most 64 (bounded cost on
    large ones).

    Examples
    --------
    >>> default_nprobe(1), default_nprobe(128), default_nprobe(4000)
    (1, 16, 64)
    """
    return int(max(1, min(nlist, max(8, round(nlist / 8)), 64)))


def auto_nprobe(nlist: int) -> int:
    """``nprobe`` of an index chosen by ``auto``: ``max(16, round(1.5 sqrt(nlist)))``, <= nlist.

    The sweep (``docs/notes/index.md``) found that a fixed fraction of the lists
    over-probes large indexes, while ``~1.5 sqrt(nlist)`` kept recall@10 at or
    above 0.95 from 100k to 1M RootSIFT vectors.

    Examples
    --------
    >>> auto_nprobe(12), auto_nprobe(1265), auto_nprobe(4000)
    (12, 53, 95)
    """
    probe = max(AUTO_MIN_NPROBE, round(AUTO_NPROBE_SCALE * math.sqrt(max(nlist, 1))))
    return int(max(1, min(nlist, probe)))


def pq_m(d: int, limit: int | None = None) -> int:
    """Largest divisor of ``d`` at most ``limit`` (default ``max(1, d // 4)``, at most 64)."""
    limit = max(1, min(d // 4, 64)) if limit is None else max(1, min(limit, d))
    for m in range(limit, 0, -1):
        if d % m == 0:
            return m
    return 1  # pragma: no cover - 1 always divides d


def pq_nbits(n: int) -> int:
    """Bits per PQ code: ``clamp(floor(log2 n), 1, 8)`` so that ``2**nbits <= n``."""
    return int(max(1, min(8, math.floor(math.log2(max(n, 2))))))


def resolve_factory(spec: str, n: int, d: int, *, n_train: int | None = None) -> str:
    """Turn a preset name or a Faiss factory string into a factory string.

    Parameters
    ----------
    spec : str
        One of :data:`PRESETS` except ``auto`` (case-insensitive; see
        :func:`choose_index` for ``auto``) or a Faiss factory string.
    n : int
        Number of vectors the index is meant for (presets adapt to it).
    d : int
        Dimension of the vectors.
    n_train : int, optional
        Number of training vectors at hand (default ``n``): ``nlist`` and PQ
        bits are also capped so that they can be trained on that many.

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
    n = check_positive_int(n, "n (number of vectors)")
    d = check_positive_int(d, "d (dimension)")
    n_train = n if n_train is None else min(n, check_positive_int(n_train, "n_train"))
    nlist = preset_nlist(n, n_train)
    key = spec.strip().lower()
    if key == "auto":
        return choose_index(n, d)[0]
    if key == "flat":
        return "Flat"
    if key == "ivf":
        return f"IVF{nlist},Flat"
    if key == "pq":
        m = pq_m(d)
        if n >= PQ_IVF_THRESHOLD and n_train >= 256:
            return f"IVF{nlist},PQ{m}np"
        return f"PQ{m}x{pq_nbits(n_train)}np"
    if key == "lsh":
        return f"LSH{min(2 * d, MAX_LSH_BITS)}rt"
    if key == "hnsw":
        return "HNSW32"
    factory = spec.strip()
    make_faiss_index(factory, d, "l2", spec, PRESETS)  # validate: ValueError naming the spec
    return factory


def needs_training(spec: str, n: int, d: int, max_memory: Any = None) -> bool:
    """Whether the index ``spec`` resolves to for ``n`` vectors of dimension ``d`` (under
    ``max_memory`` for ``auto``) must be trained on a sample (IVF, PQ, OPQ, LSH) or only
    reads the dimension (Flat, HNSW): a caller can skip drawing a training sample.

    >>> needs_training("auto", 10_000, 128), needs_training("auto", 10**6, 128, "60M")
    (False, True)
    >>> needs_training("hnsw", 10, 8), needs_training("IVF16,Flat", 1000, 8)
    (False, True)
    """
    if spec.strip().lower() == "auto":
        factory = choose_index(n, d, max_memory=max_memory)[0]
    else:
        factory = resolve_factory(spec, n, d)
    return not make_faiss_index(factory, d, "l2", spec, PRESETS).is_trained


# --------------------------------------------------------------------------- auto


_PQ_CODE = re.compile(r"PQ(\d+)(?:x(\d+))?(?:fs|fsr)?(np)?")
_SQ_BITS = {"SQ4": 4, "SQ6": 6, "SQ8": 8, "SQfp16": 16, "SQbf16": 16}


def code_bytes(code: str, d: int) -> int:
    """Bytes one vector of dimension ``d`` takes in the encoding ``code`` of a factory
    string (``PQ{m}[x{nbits}]``, ``SQ4``...``SQbf16``; anything else: float32).

    >>> code_bytes("PQ100x6np", 8100), code_bytes("SQ8", 8100), code_bytes("Flat", 128)
    (75, 8100, 512)
    """
    pq = _PQ_CODE.fullmatch(code)
    if pq:
        return math.ceil(int(pq.group(1)) * int(pq.group(2) or 8) / 8)
    if code in _SQ_BITS:
        return math.ceil(d * _SQ_BITS[code] / 8)
    return 4 * d


def estimate_memory(factory: str, n: int, d: int, metric: str = "l2") -> int:
    """Bytes an index built from ``factory`` takes for ``n`` vectors of dimension ``d``.

    An estimate made before building (the formulas of Faiss's storage: codes,
    8-byte ids, the HNSW graph, coarse centroids, PQ/OPQ tables), for the
    factory strings :func:`choose_index` and the presets produce; other
    strings are estimated as ``Flat``. :meth:`Index.memory_bytes` measures the
    built index and agrees within a few percent (tested).

    Examples
    --------
    >>> estimate_memory("Flat", 1000, 128)
    520000
    """
    ids = 8 * n
    hnsw = re.fullmatch(r"HNSW(\d+)(?:,Flat)?", factory)
    if hnsw:
        m = int(hnsw.group(1))
        # level 0 keeps 2M neighbours, upper levels ~M/(M-1) more; int32 each,
        # plus the level (int32) and offset (int64) of every node
        return n * (4 * d + 4 * (2 * m + 1) + 12) + ids
    opq = re.match(r"OPQ(\d+)(?:_(\d+))?,", factory)
    rest = factory[opq.end() :] if opq else factory
    extra = 4 * d * d if opq else 0
    ivf = re.match(r"IVF(\d+),", rest)
    if ivf:
        nlist = int(ivf.group(1))
        extra += 4 * nlist * d + 48 * nlist  # centroids, two vectors per list
        rest = rest[ivf.end() :]
    pq = _PQ_CODE.fullmatch(rest)
    if pq:
        m, nbits = int(pq.group(1)), int(pq.group(2) or 8)
        extra += 4 * d * (1 << nbits)  # m sub-quantizers of 2**nbits centroids of d/m dims
        if ivf and metric == "l2":  # by-residual precomputed table, nlist x m x 2**nbits floats
            extra += 4 * int(ivf.group(1)) * m * (1 << nbits)
        return n * code_bytes(rest, d) + ids + extra
    if rest in _SQ_BITS:  # codes, ids, vmin/vdiff
        return n * (code_bytes(rest, d) + 8) + extra + 8 * d
    lsh = re.fullmatch(r"LSH(\d+)?r?t?", rest)
    if lsh:
        nbits = int(lsh.group(1) or d)
        return n * math.ceil(nbits / 8) + ids + 4 * d * nbits + 4 * nbits
    return n * 4 * d + ids + extra


def _ivf_code(factory: str) -> tuple[int, str] | None:
    """``(nlist, code)`` of an ``[OPQ..,]IVF{nlist},{code}`` factory string, else None."""
    m = re.match(r"(?:OPQ\d+(?:_\d+)?,)?IVF(\d+),(.+)$", factory)
    return (int(m.group(1)), m.group(2)) if m else None


def scan_bytes(factory: str, n: int, d: int) -> int:
    """Bytes of codes one query scans in the inverted file of ``factory`` with ``auto``'s
    ``nprobe`` (lists of equal size assumed); 0 for an index without inverted lists.

    >>> scan_bytes("IVF212,SQ8", 100_000, 8100) // 2**20, scan_bytes("HNSW32", 10**6, 128)
    (80, 0)
    """
    parsed = _ivf_code(factory)
    if parsed is None:
        return 0
    nlist, code = parsed
    probed = min(nlist, auto_nprobe(nlist))
    return int(n * probed / nlist * code_bytes(code, d))


def auto_refine(factory: str) -> int:
    """Candidates re-ranked exactly by an index ``auto`` chose: :data:`AUTO_REFINE` for
    product-quantised codes (their scores are approximate), 0 otherwise.

    >>> auto_refine("IVF212,PQ100np"), auto_refine("IVF4000,SQ8"), auto_refine("HNSW32")
    (256, 0, 0)
    """
    parsed = _ivf_code(factory)
    code = parsed[1] if parsed else factory
    return AUTO_REFINE if re.match(r"PQ\d", code) else 0


def choose_index(
    n: int, d: int, metric: str = "ip", max_memory: Any = None, *, n_train: int | None = None
) -> tuple[str, str]:
    """Pick a Faiss factory string for ``n`` vectors of dimension ``d`` under a memory budget.

    The rule (after autofaiss; thresholds measured by
    ``benchmarks/index_sweep.py``, see ``docs/notes/index.md``), first that fits:

    1. ``Flat`` (exact) while ``n <= AUTO_FLAT_MAX_N`` and it fits the budget;
    2. ``HNSW32`` when its memory (vectors + graph, ~``4d + 276`` bytes per
       vector) fits;
    3. ``IVF{nlist},Flat`` with ``nlist = preset_nlist(n)`` (~``4 sqrt n``);
    4. ``IVF{nlist},SQ8`` (one byte per dimension, near-exact);
    5. ``[OPQ{m},]IVF{nlist},PQ{m}`` with the largest ``m`` (sub-vectors, a divisor
       of ``d`` at most ``max(64, d // 80)`` and ``d // 2``) that fits; OPQ's
       rotation when each sub-vector has at least 4 dimensions and ``d <= 256``;
       above 1,024 dimensions 6-bit codes (``PQ{m}x6``), cheaper to encode.
       Its top :data:`AUTO_REFINE` candidates are re-ranked by their exact
       vectors where the caller supplies them (:func:`auto_refine`).

    Steps 3 and 4 are skipped when a query would scan more than
    :data:`AUTO_MAX_SCAN_BYTES` of codes (:func:`scan_bytes`): high-dimensional
    vectors (8,100-d HOG) go to PQ codes and the exact re-rank.

    Parameters
    ----------
    n, d : int
        Number and dimension of the vectors.
    metric : {"ip", "l2"}
        Only reported in the reason (the rule does not depend on it).
    max_memory : int or str, optional
        Budget for the built index (see :func:`parse_size`); None is unlimited.
    n_train : int, optional
        Training vectors at hand (default ``n``): ``nlist`` is capped so that each
        k-means centroid gets at least 39 of them (a bundle of 8,100-d HOG vectors trains
        on 8,285 of its 100,000: 212 lists, not 1,265 lists of 6.5 points each, whose
        k-means put up to 4,815 vectors in one list).

    Returns
    -------
    factory : str
    reason : str
        One line: what was chosen, its estimated memory and why.

    Raises
    ------
    ValueError
        When even the smallest IVF-PQ does not fit the budget.

    Examples
    --------
    >>> choose_index(10_000, 128)[0]
    'Flat'
    >>> choose_index(1_000_000, 128)[0]
    'HNSW32'
    >>> choose_index(1_000_000, 128, max_memory="60M")[0]
    'OPQ32,IVF4000,PQ32np'
    >>> choose_index(1_000_000, 128, max_memory="60M", n_train=39_000)[0]
    'OPQ32,IVF1000,PQ32np'
    >>> choose_index(100_000, 8100, max_memory="2G", n_train=8285)[0]
    'IVF212,PQ100x6np'
    """
    n = check_positive_int(n, "n (number of vectors)")
    d = check_positive_int(d, "d (dimension)")
    budget = None if max_memory is None else parse_size(max_memory)
    cap = "no memory limit" if budget is None else f"max_memory {format_size(budget)}"

    def fits(factory: str) -> tuple[bool, int]:
        size = estimate_memory(factory, n, d, metric)
        return budget is None or size <= budget, size

    def cheap(factory: str) -> bool:
        scanned = scan_bytes(factory, n, d)
        if scanned > AUTO_MAX_SCAN_BYTES:
            skipped.append(f"{factory} would scan ~{format_size(scanned)} a query")
            return False
        return True

    skipped: list[str] = []

    def why(factory: str, size: int, because: str) -> tuple[str, str]:
        reason = (
            f"{factory} for {n} vectors of dimension {d} ({metric}): ~{format_size(size)} "
            f"({cap}); {because}"
        )
        logger.info("index auto: %s", reason)
        return factory, reason

    ok, size = fits("Flat")
    if ok and n <= AUTO_FLAT_MAX_N:
        return why("Flat", size, f"exact search is affordable for n <= {AUTO_FLAT_MAX_N}")
    hnsw = f"HNSW{AUTO_HNSW_M}"
    ok, size = fits(hnsw)
    if ok:
        because = (
            f"n > {AUTO_FLAT_MAX_N}: exact search is too slow, and the graph fits in memory"
            if n > AUTO_FLAT_MAX_N
            else "flat does not fit the budget but the graph does"
        )
        return why(hnsw, size, because)
    nlist = preset_nlist(
        n, None if n_train is None else check_positive_int(n_train, "n_train"))
    ivf = f"IVF{nlist},Flat"
    ok, size = fits(ivf)
    if ok and cheap(ivf):
        return why(ivf, size, "HNSW does not fit the budget; full vectors in inverted lists do")
    sq8 = f"IVF{nlist},SQ8"
    ok, size = fits(sq8)
    if ok and cheap(sq8):
        return why(sq8, size, "full vectors do not fit the budget; 8-bit scalar codes do")
    smallest = ""
    if n >= 256:
        top = max(1, min(d // 2, max(AUTO_PQ_MAX_M, d // AUTO_PQ_DSUB)))
        for m in sorted({pq_m(d, lim) for lim in range(1, top + 1)}, reverse=True):
            opq = f"OPQ{m}," if d // m >= AUTO_OPQ_MIN_DSUB and d <= AUTO_OPQ_MAX_D else ""
            bits = f"x{AUTO_PQ_HIGH_D_NBITS}" if d > AUTO_PQ_HIGH_D else ""
            factory = f"{opq}IVF{nlist},PQ{m}{bits}np"
            ok, size = fits(factory)
            smallest = f"{factory} (~{format_size(size)})"
            if ok:
                size_of = f"{m}x{AUTO_PQ_HIGH_D_NBITS}-bit" if bits else f"{m}-byte"
                because = (f"{'; '.join(skipped)}: {size_of} PQ codes" if skipped
                           else f"only {size_of} PQ codes fit the budget")
                return why(
                    factory, size, because +
                    (" (OPQ rotation: sub-vectors of >= 4 dims)" if opq else "") +
                    f", top {auto_refine(factory)} re-ranked by exact vectors"
                )
    else:
        m = pq_m(d)
        factory = f"PQ{m}x{pq_nbits(n)}np"
        ok, size = fits(factory)
        smallest = f"{factory} (~{format_size(size)})"
        if ok:
            return why(factory, size, "too few vectors for IVF; PQ codes fit the budget")
    raise ValueError(
        f"max_memory {format_size(budget or 0)} is too small for {n} vectors of dimension {d}: "
        f"the smallest index considered, {smallest}, needs more; raise --max-memory"
    )
