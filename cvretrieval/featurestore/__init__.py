"""A compact, memory-mapped store of the indexed images' key points, for re-ranking.

Spatial verification needs, for every database image, its key point positions and
either its visual words or its descriptors. :class:`FeatureStoreWriter` streams them to
a folder as flat arrays plus offsets (the ``lims`` layout of Faiss range search): the
rows of image ``i`` are ``offsets[i]:offsets[i + 1]`` of every array. Nothing is held in
memory while writing; :meth:`FeatureStore.open` maps the files read-only
(``np.load(mmap_mode="r")``), so opening a store of millions of images is instant and
only the rows that are read are paged in.

Folder layout::

    featurestore.json   format_version, counts, dtypes, parameters, meta (written last)
    offsets.npy         (n_images + 1,) int64; offsets[0] == 0, offsets[-1] == n_keypoints
    keypoints.npy       (n_keypoints, 2) float16 or float32: x, y in pixels
    descriptors.npy     (n_keypoints, D) uint8 or float16 (optional)
    words.npy           (n_keypoints,) uint32 visual word of each key point (optional)

Binary descriptors (ORB, AKAZE, BRISK: packed bits) are kept as they are. Float
descriptors are quantised to uint8 by ``round(x * descriptor_scale)`` (OpenCV's SIFT
values are already integers in [0, 255], so scale 1 is lossless; RootSIFT lies in
[0, 1] and gets scale 255), or stored as float16. When words are stored, the rows of
each image are sorted by word, which lets matching by shared words skip a sort.

Each ``.npy`` file is written with a header padded for growth (NumPy reserves room for
a 21-digit first dimension), data is appended as it comes and the header is rewritten
with the final shape on :meth:`FeatureStoreWriter.close`; ``featurestore.json`` is
written last, so a folder without it is an interrupted write.

References
----------
.. [1] J. Johnson, M. Douze, H. Jégou, "Billion-scale similarity search with GPUs",
       IEEE Trans. Big Data 2019 (Faiss; the ``lims`` layout of variable-length results).
.. [2] J. Philbin, O. Chum, M. Isard, J. Sivic, A. Zisserman, "Object retrieval with
       large vocabularies and fast spatial matching", CVPR 2007 (what the store is for).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["FeatureStore", "FeatureStoreWriter", "strongest_indices"]

logger = logging.getLogger(__name__)

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


from .reader import FeatureStore  # noqa: E402
from .writer import FeatureStoreWriter  # noqa: E402

__all__ = ["FeatureStore", "FeatureStoreWriter", "strongest_indices"]
