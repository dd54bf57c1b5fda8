"""Ground truth in bounded memory: flat index arrays with offsets, or class labels.

A data set's ``gnd`` is a read-only :class:`~collections.abc.Sequence` of
revisitop-style dicts (``gnd[i]["ok"]``, ``["junk"]``, ``["bbx"]``,
``["graded"]``), but nothing is stored as one Python list per query:

- :class:`ArrayGroundTruth` keeps every query's positives in one flat ``int64``
  array plus offsets (``ok[ok_lims[i]:ok_lims[i + 1]]``, the ``lims`` layout of
  faiss' range search), likewise junk and graded relevance; query boxes in an
  ``(n_queries, 4)`` array (NaN rows: no box);
- :class:`ClassGroundTruth` keeps one class label per gallery image and per
  query: the positives of query ``i`` are the gallery images of its class (its
  own image excluded), found through the images sorted by label. Memory is
  O(n_images + n_queries) however large the classes are.

``gnd[i]`` builds query ``i``'s dict on demand (plain int lists, so existing
callers keep working); :meth:`GroundTruth.positives` and friends return arrays.
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Sequence
from typing import Any, overload

import numpy as np
from numpy.typing import NDArray

from cvretrieval.errors import DatasetError

__all__ = ["ArrayGroundTruth", "ClassGroundTruth", "GroundTruth", "short_repr"]

_EMPTY = np.zeros(0, dtype=np.int64)
_REPR = reprlib.Repr()
_REPR.maxstring = 40
_REPR.maxother = 40
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = 4
_REPR.maxlevel = 2


def short_repr(value: Any) -> str:
    """A one-line repr of at most about 60 characters (for error messages)."""
    text = _REPR.repr(value)
    return " ".join(text.split())


def _lims(counts: Sequence[int] | NDArray[np.int64]) -> NDArray[np.int64]:
    out = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(np.asarray(counts, dtype=np.int64), out=out[1:])
    return out


class GroundTruth(Sequence):  # type: ignore[type-arg]
    """Per-query ground truth; ``gt[i]`` is query ``i``'s revisitop dict.

    Subclasses implement :meth:`positives`, :meth:`junk` and ``__len__``.
    """

    n_images: int

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def positives(self, qi: int) -> NDArray[np.int64]:  # pragma: no cover - abstract
        """Gallery indices relevant to query ``qi`` (int64, ascending or as given)."""
        raise NotImplementedError

    def junk(self, qi: int) -> NDArray[np.int64]:
        """Gallery indices ignored when scoring query ``qi`` (int64)."""
        self._check(qi)
        return _EMPTY.copy()

    def bbx(self, qi: int) -> list[float] | None:
        """Query ``qi``'s region ``[x1, y1, x2, y2]``, or None for the whole image."""
        self._check(qi)
        return None

    def graded(self, qi: int) -> tuple[NDArray[np.int64], NDArray[np.float64]] | None:
        """``(gallery indices, grades)`` of query ``qi``, or None when it has no graded list."""
        self._check(qi)
        return None

    def has_graded(self) -> bool:
        """Whether any query has graded relevance."""
        return False

    def n_positives(self) -> NDArray[np.int64]:
        """Number of positives of every query, ``(n_queries,)`` int64."""
        return np.array([len(self.positives(i)) for i in range(len(self))], dtype=np.int64)

    def n_junk(self) -> NDArray[np.int64]:
        """Number of junk images of every query, ``(n_queries,)`` int64."""
        return np.zeros(len(self), dtype=np.int64)

    def _check(self, qi: int) -> int:
        n = len(self)
        i = int(qi)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"query {qi} out of range for {n} queries")
        return i

    def entry(self, qi: int) -> dict[str, Any]:
        """Query ``qi``'s dict: ``ok``, ``junk`` (int lists), ``bbx`` and ``graded`` if any."""
        i = self._check(qi)
        out: dict[str, Any] = {
            "ok": self.positives(i).tolist(),
            "junk": self.junk(i).tolist(),
        }
        box = self.bbx(i)
        if box is not None:
            out["bbx"] = box
        g = self.graded(i)
        if g is not None:
            out["graded"] = [[int(j), float(v)] for j, v in zip(g[0], g[1], strict=True)]
        return out

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...

    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(index, slice):
            return [self.entry(i) for i in range(*index.indices(len(self)))]
        return self.entry(index)

    def __eq__(self, other: object) -> bool:
        """Equal to another ground truth or list holding the same per-query dicts."""
        if not isinstance(other, (GroundTruth, list, tuple)):
            return NotImplemented
        return len(self) == len(other) and all(self[i] == other[i] for i in range(len(self)))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_queries={len(self)}, n_images={self.n_images})"


class ArrayGroundTruth(GroundTruth):
    """Explicit per-query lists stored flat: indices plus ``lims`` offsets.

    Parameters
    ----------
    n_images : int
        Gallery size (every index is in ``0 .. n_images - 1``).
    ok, ok_lims : (n_ok,) and (n_queries + 1,) int64 arrays
        Query ``i``'s positives are ``ok[ok_lims[i]:ok_lims[i + 1]]``.
    junk, junk_lims : int64 arrays
        Likewise for junk.
    bbx : (n_queries, 4) float64 array, optional
        Query boxes; a NaN row means no box.
    graded, graded_values, graded_lims : arrays, optional
        Graded relevance (indices int64, grades float64, offsets); ``graded_mask``
        (bool, one per query) says which queries have a graded list at all.

    Use :meth:`from_entries` to build one from revisitop dicts, with validation.
    """

    def __init__(
        self,
        n_images: int,
        ok: NDArray[np.int64],
        ok_lims: NDArray[np.int64],
        junk: NDArray[np.int64],
        junk_lims: NDArray[np.int64],
        bbx: NDArray[np.float64] | None = None,
        graded: NDArray[np.int64] | None = None,
        graded_values: NDArray[np.float64] | None = None,
        graded_lims: NDArray[np.int64] | None = None,
        graded_mask: NDArray[np.bool_] | None = None,
    ) -> None:
        self.n_images = int(n_images)
        self.ok_ = np.ascontiguousarray(ok, dtype=np.int64)
        self.ok_lims_ = np.ascontiguousarray(ok_lims, dtype=np.int64)
        self.junk_ = np.ascontiguousarray(junk, dtype=np.int64)
        self.junk_lims_ = np.ascontiguousarray(junk_lims, dtype=np.int64)
        self.bbx_ = bbx
        self.graded_ = graded
        self.graded_values_ = graded_values
        self.graded_lims_ = graded_lims
        self.graded_mask_ = graded_mask

    def __len__(self) -> int:
        return len(self.ok_lims_) - 1

    def positives(self, qi: int) -> NDArray[np.int64]:
        i = self._check(qi)
        return self.ok_[self.ok_lims_[i] : self.ok_lims_[i + 1]].copy()

    def junk(self, qi: int) -> NDArray[np.int64]:
        i = self._check(qi)
        return self.junk_[self.junk_lims_[i] : self.junk_lims_[i + 1]].copy()

    def bbx(self, qi: int) -> list[float] | None:
        i = self._check(qi)
        if self.bbx_ is None or np.isnan(self.bbx_[i, 0]):
            return None
        return [float(v) for v in self.bbx_[i]]

    def graded(self, qi: int) -> tuple[NDArray[np.int64], NDArray[np.float64]] | None:
        i = self._check(qi)
        if self.graded_mask_ is None or not self.graded_mask_[i]:
            return None
        assert self.graded_ is not None and self.graded_values_ is not None
        assert self.graded_lims_ is not None
        a, b = self.graded_lims_[i], self.graded_lims_[i + 1]
        return self.graded_[a:b].copy(), self.graded_values_[a:b].copy()

    def has_graded(self) -> bool:
        return self.graded_mask_ is not None and bool(self.graded_mask_.any())

    def n_positives(self) -> NDArray[np.int64]:
        return np.diff(self.ok_lims_)

    def n_junk(self) -> NDArray[np.int64]:
        return np.diff(self.junk_lims_)

    @classmethod
    def from_entries(
        cls, entries: Any, n_images: int, n_queries: int, label: str = "gnd"
    ) -> ArrayGroundTruth:
        """Validate revisitop dicts (one per query) and store them flat.

        Each entry holds ``"ok"`` (gallery indices), optionally ``"junk"``,
        ``"bbx"`` (4 finite numbers) and ``"graded"`` (``[[index, grade], ...]``,
        grades finite and >= 0, no index twice). Without ``"ok"`` and with
        ``"graded"``, the relevant images are those with a grade above 0.
        Repeated ``ok``/``junk`` indices are dropped.

        Raises
        ------
        DatasetError
            One line naming ``label[query][key]`` and the bad value.
        """
        if isinstance(entries, GroundTruth):
            entries = [entries.entry(i) for i in range(len(entries))]
        if not isinstance(entries, (list, tuple)):
            raise DatasetError(
                f"{label} must be a list of per-query objects, got {type(entries).__name__}"
            )
        if len(entries) != n_queries:
            raise DatasetError(
                f"{label} has {len(entries)} entries but qimlist has {n_queries} queries; "
                f"give one {label} entry per query"
            )
        ok_parts: list[NDArray[np.int64]] = []
        junk_parts: list[NDArray[np.int64]] = []
        g_idx: list[NDArray[np.int64]] = []
        g_val: list[NDArray[np.float64]] = []
        g_mask = np.zeros(n_queries, dtype=bool)
        boxes = np.full((n_queries, 4), np.nan)
        any_box = False
        for i, entry in enumerate(entries):
            where = f"{label}[{i}]"
            if not isinstance(entry, dict):
                raise DatasetError(
                    f"{where} is a {type(entry).__name__}; it must be an object "
                    'like {"ok": [...], "junk": [...]}'
                )
            graded = None
            if entry.get("graded") is not None:
                graded = _check_graded(entry["graded"], where, n_images)
                g_mask[i] = True
                g_idx.append(graded[0])
                g_val.append(graded[1])
            else:
                g_idx.append(_EMPTY)
                g_val.append(np.zeros(0))
            if "ok" in entry:
                ok = _check_indices(entry["ok"], f"{where}['ok']", n_images)
            elif graded is not None:
                ok = graded[0][graded[1] > 0]
            else:
                raise DatasetError(
                    f"{where} has no 'ok' key (keys: {short_repr(sorted(map(str, entry)))}); "
                    "list the relevant gallery indices under 'ok' (or grades under 'graded')"
                )
            ok_parts.append(ok)
            junk_parts.append(_check_indices(entry.get("junk", []), f"{where}['junk']", n_images))
            if entry.get("bbx") is not None:
                boxes[i] = _check_bbx(entry["bbx"], where)
                any_box = True
        has_graded = bool(g_mask.any())
        return cls(
            n_images,
            np.concatenate(ok_parts) if ok_parts else _EMPTY,
            _lims([len(p) for p in ok_parts]),
            np.concatenate(junk_parts) if junk_parts else _EMPTY,
            _lims([len(p) for p in junk_parts]),
            bbx=boxes if any_box else None,
            graded=np.concatenate(g_idx) if has_graded else None,
            graded_values=np.concatenate(g_val).astype(np.float64) if has_graded else None,
            graded_lims=_lims([len(p) for p in g_idx]) if has_graded else None,
            graded_mask=g_mask if has_graded else None,
        )


class ClassGroundTruth(GroundTruth):
    """Same class = relevant, stored as labels (memory O(n_images + n_queries)).

    Parameters
    ----------
    labels : (n_images,) int array
        Class code of every gallery image (``>= 0``).
    query_labels : (n_queries,) int array
        Class code of every query (a code no gallery image has: no positives).
    self_index : (n_queries,) int array, optional
        Gallery index of each query's own image (excluded from its positives),
        ``-1`` when the query is not a gallery image. Default: none is.
    class_names : sequence of str, optional
        Name of each class code.
    """

    def __init__(
        self,
        labels: NDArray[np.int64],
        query_labels: NDArray[np.int64],
        self_index: NDArray[np.int64] | None = None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        self.labels_ = np.ascontiguousarray(labels, dtype=np.int64)
        self.query_labels_ = np.ascontiguousarray(query_labels, dtype=np.int64)
        self.n_images = len(self.labels_)
        nq = len(self.query_labels_)
        if self_index is None:
            self_index = np.full(nq, -1, dtype=np.int64)
        self.self_index_ = np.ascontiguousarray(self_index, dtype=np.int64)
        if len(self.self_index_) != nq:
            raise DatasetError(f"self_index has {len(self.self_index_)} entries for {nq} queries")
        if self.n_images and int(self.labels_.min()) < 0:
            raise DatasetError("class labels must be >= 0")
        self.class_names = list(class_names) if class_names is not None else None
        n_classes = int(self.labels_.max()) + 1 if self.n_images else 0
        # images sorted by class (stable: ascending indices within a class) + offsets
        self.order_ = np.argsort(self.labels_, kind="stable").astype(np.int64)
        self.lims_ = _lims(np.bincount(self.labels_, minlength=n_classes))

    def __len__(self) -> int:
        return len(self.query_labels_)

    def _members(self, c: int) -> NDArray[np.int64]:
        if not 0 <= c < len(self.lims_) - 1:
            return _EMPTY
        return self.order_[self.lims_[c] : self.lims_[c + 1]]

    def positives(self, qi: int) -> NDArray[np.int64]:
        i = self._check(qi)
        members = self._members(int(self.query_labels_[i]))
        s = self.self_index_[i]
        return members[members != s] if s >= 0 else members.copy()

    def n_positives(self) -> NDArray[np.int64]:
        sizes = np.diff(self.lims_)
        q = self.query_labels_
        n = np.zeros(len(q), dtype=np.int64)
        valid = (q >= 0) & (q < len(sizes))
        n[valid] = sizes[q[valid]]
        own = self.self_index_ >= 0
        same = np.zeros(len(q), dtype=bool)
        same[own] = self.labels_[self.self_index_[own]] == q[own]
        return (n - same).astype(np.int64)


def _check_indices(values: Any, where: str, n_images: int) -> NDArray[np.int64]:
    """Validated gallery indices (repeats dropped, first occurrence kept)."""
    if isinstance(values, np.ndarray):
        if values.dtype.kind not in "iu" and values.size:
            raise DatasetError(
                f"{where} holds {values.dtype} values; indices must be integers into imlist"
            )
        arr = values.astype(np.int64, copy=False).ravel()
    elif isinstance(values, (list, tuple)):
        for v in values:
            if not (type(v) is int or isinstance(v, np.integer)):
                raise DatasetError(
                    f"{where} holds {short_repr(v)} ({type(v).__name__}); "
                    "indices must be integers into imlist"
                )
        try:
            arr = np.asarray(values, dtype=np.int64).reshape(-1)
        except OverflowError:
            big = next(v for v in values if not -(2**63) <= int(v) < 2**63)
            raise DatasetError(
                f"{where} holds index {short_repr(big)}, out of range for {n_images} gallery "
                f"images (valid: 0..{n_images - 1})"
            ) from None
    else:
        raise DatasetError(
            f"{where} must be a list of image indices, got {type(values).__name__}"
        )
    bad = (arr < 0) | (arr >= n_images)
    if bad.any():
        v = int(arr[np.argmax(bad)])
        raise DatasetError(
            f"{where} holds index {v}, out of range for {n_images} gallery images "
            f"(valid: 0..{n_images - 1})"
        )
    if len(arr) > 1:
        _, first = np.unique(arr, return_index=True)
        if len(first) != len(arr):
            arr = arr[np.sort(first)]
    return arr


def _finite_number(v: Any) -> float | None:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        return None
    try:
        f = float(v)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None


def _check_bbx(value: Any, where: str) -> list[float]:
    if isinstance(value, np.ndarray):
        value = value.ravel().tolist()
    nums = (
        [_finite_number(v) for v in value]
        if isinstance(value, (list, tuple)) and len(value) == 4
        else [None]
    )
    if any(v is None for v in nums):
        raise DatasetError(
            f"{where}['bbx'] is {short_repr(value)}; it must be 4 finite numbers [x1, y1, x2, y2]"
        )
    return [float(v) for v in nums]  # type: ignore[arg-type]


def _check_graded(
    value: Any, where: str, n_images: int
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    if not isinstance(value, (list, tuple)):
        raise DatasetError(
            f"{where}['graded'] must be a list of [gallery_index, grade] pairs, "
            f"got {type(value).__name__}"
        )
    idx = np.empty(len(value), dtype=np.int64)
    val = np.empty(len(value), dtype=np.float64)
    seen: set[int] = set()
    for k, pair in enumerate(value):
        at = f"{where}['graded'][{k}]"
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise DatasetError(
                f"{at} is {short_repr(pair)}; it must be a pair [gallery_index, grade]"
            )
        j, g = pair
        if not (type(j) is int or isinstance(j, np.integer)) or isinstance(j, bool):
            raise DatasetError(f"{at} has index {short_repr(j)}; it must be an integer into imlist")
        if not 0 <= j < n_images:
            raise DatasetError(
                f"{at} has index {short_repr(j)}, out of range for {n_images} gallery images"
            )
        grade = _finite_number(g)
        if grade is None or grade < 0:
            raise DatasetError(f"{at} has grade {short_repr(g)}; grades are finite numbers >= 0")
        if int(j) in seen:
            raise DatasetError(f"{at} grades image {int(j)} a second time; give each image once")
        seen.add(int(j))
        idx[k], val[k] = int(j), grade
    return idx, val
