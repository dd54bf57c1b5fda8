"""The feature store's file names, format version and the strongest-key-point rule."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

FORMAT_VERSION = 1
META_FILE = "featurestore.json"
_REBUILD_HINT = "rebuild it with store_features"
OFFSETS_FILE = "offsets.npy"
KEYPOINTS_FILE = "keypoints.npy"
DESCRIPTORS_FILE = "descriptors.npy"
WORDS_FILE = "words.npy"

_KEYPOINT_DTYPES = ("float16", "float32")
_DESCRIPTOR_MODES = ("auto", "uint8", "float16", "none")
#: float16 has a spacing of 1 pixel from 2048 on; beyond this a warning suggests float32
_FLOAT16_EXACT_BELOW = 2048.0
_FLOAT16_MAX = float(np.finfo(np.float16).max)


def strongest_indices(
    features: Any, max_keypoints: int | None, strength: NDArray[np.floating] | None = None
) -> NDArray[np.int64]:
    """Indices of the ``max_keypoints`` strongest key points, in their original order.

    Parameters
    ----------
    features : LocalFeatures
        Anything with ``keypoints`` (N, 2) and ``scales`` (N,); an attribute
        ``responses`` (N,) is used when present.
    max_keypoints : int or None
        ``None`` keeps every key point.
    strength : (N,) float ndarray, optional
        Explicit strengths (e.g. detector responses), overriding the above.

    Returns
    -------
    (n,) int64 ndarray
        Sorted indices, ``n = min(N, max_keypoints)``. Strength is, in order of
        preference: ``strength``, ``features.responses``, ``features.scales`` (key
        points detected at coarse scales survive the downscaling of copies best).
        Ties keep the earlier key point.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> f = SimpleNamespace(keypoints=np.zeros((4, 2)), scales=np.array([1.0, 5, 3, 4]))
    >>> strongest_indices(f, 2).tolist()
    [1, 3]
    """
    n = len(features.keypoints)
    if max_keypoints is None or n <= max_keypoints:
        return np.arange(n, dtype=np.int64)
    if strength is None:
        strength = getattr(features, "responses", None)
    if strength is None:
        strength = features.scales
    strength = np.asarray(strength, np.float64).reshape(-1)
    if strength.shape[0] != n:
        raise ValueError(f"strength has {strength.shape[0]} values for {n} key points")
    keep = np.argsort(-strength, kind="stable")[: int(max_keypoints)]
    return np.sort(keep).astype(np.int64)


# --------------------------------------------------------------------------- npy growth


# --------------------------------------------------------------------------- writer
