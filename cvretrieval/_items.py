"""What a worker returns for each image, and how a chunk of them travels back packed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Item", "pack_items", "unpack_items"]


@dataclass
class Item:
    """What a worker returns for one image."""

    position: int
    sha1: str | None = None
    n_bytes: int | None = None
    shape: tuple[int, ...] | None = None
    value: Any = None
    error: str | None = None
    keypoints: Any = None  # LocalFeatures kept for spatial verification
    words: Any = None  # their visual words, when verification matches words


def pack_items(items: Sequence[Item]) -> tuple[Any, ...]:
    """A chunk's items as a few lists and, when every value is a dense vector of one
    shape and dtype, one stacked array: what crosses the process boundary.

    Pickling 64 items one by one (a dataclass and an array each) cost about 6 us an item
    in the worker and more in the caller, whose one core also writes the segments; on
    tiny images that was a third of the caller's time. :func:`unpack_items` inverts it.
    """
    values = [it.value for it in items]
    arrays = [v for v in values if v is not None]
    stacked = None
    if arrays and all(type(v) is np.ndarray and v.ndim == 1 for v in arrays):
        first = arrays[0]
        if all(v.shape == first.shape and v.dtype == first.dtype for v in arrays):
            stacked = np.stack(arrays)
            values = [v is not None for v in values]
    kp = [it.keypoints for it in items]
    words = [it.words for it in items]
    return ([it.position for it in items], [it.sha1 for it in items],
            [it.n_bytes for it in items], [it.shape for it in items],
            [it.error for it in items], stacked, values,
            None if all(k is None for k in kp) else kp,
            None if all(w is None for w in words) else words)


def unpack_items(packed: tuple[Any, ...]) -> list[Item]:
    """The items :func:`pack_items` packed (dense values become rows of one array)."""
    positions, sha1, n_bytes, shapes, errors, stacked, values, kp, words = packed
    n = len(positions)
    if stacked is not None:
        rows = iter(stacked)
        values = [next(rows) if has else None for has in values]
    kp = kp or [None] * n
    words = words or [None] * n
    return [Item(*fields) for fields in zip(positions, sha1, n_bytes, shapes, values,
                                            errors, kp, words, strict=True)]
