"""Spatial verification of candidate duplicate pairs (used by :mod:`cvretrieval.dedup`).

A candidate pair is *confirmed* when a homography fitted with MAGSAC on the ratio-test
matches of the two images has at least ``min_inliers`` inliers **and** those inliers are
at least ``min_inlier_ratio`` of the tentative matches. The second condition rejects
pairs of different pictures that share only a part (the lettering of two different stop
signs, the same logo on two products, stickers rearranged on two collages): their
matches are many, but one plane explains only a minority of them, whereas a copy's
matches are mostly consistent with one transformation (docs/notes/dedup.md).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

from .errors import ImageReadError
from .io import read_image

__all__ = ["PairVerifier", "is_confirmed"]

logger = logging.getLogger(__name__)

_DETECTORS = ("sift", "rootsift", "orb", "akaze", "brisk")


def is_confirmed(inliers: int, matches: int, min_inliers: int,
                 min_inlier_ratio: float) -> bool:
    """Whether ``inliers`` of ``matches`` tentative matches confirm a pair.

    Examples
    --------
    >>> is_confirmed(40, 50, 12, 0.5), is_confirmed(40, 120, 12, 0.5)
    (True, False)
    >>> is_confirmed(11, 11, 12, 0.5)
    False
    """
    return inliers >= min_inliers and inliers >= min_inlier_ratio * matches


def detector_of(features: Any) -> str:
    """The local detector an embedder spec or object uses (``"sift"`` when unknown)."""
    if isinstance(features, str):
        from .embedders import parse_spec

        _, params = parse_spec(features)
        det = params.get("detector")
    else:
        det = getattr(features, "detector", None)
    return str(det) if det in _DETECTORS else "sift"


class PairVerifier:
    """Spatial verification of image pairs; local features cached (LRU, bounded)."""

    def __init__(self, detector: str, n_features: int, max_side: int | None,
                 min_inliers: int, min_inlier_ratio: float = 0.0,
                 cache_size: int = 512) -> None:
        from .features.local import LocalFeatureExtractor

        self.extractor = LocalFeatureExtractor(detector, n_features)
        self.max_side = max_side
        self.min_inliers = int(min_inliers)
        self.min_inlier_ratio = float(min_inlier_ratio)
        self.cache_size = int(cache_size)
        self.cache: OrderedDict[str, Any] = OrderedDict()

    def features(self, path: str) -> Any:
        if path in self.cache:
            self.cache.move_to_end(path)
            return self.cache[path]
        try:
            feats = self.extractor.extract(read_image(path, max_side=self.max_side))
        except (ImageReadError, ValueError, OSError) as exc:
            logger.warning("no spatial verification for %s: %s", path, exc)
            feats = None
        self.cache[path] = feats
        if len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
        return feats

    def check(self, path_a: str, path_b: str) -> tuple[int, int]:
        """``(inliers, tentative matches)`` of the pair (``(0, m)`` below ``min_inliers``)."""
        from .rerank.spatial import tentative_matches_ratio, verify

        fa, fb = self.features(path_a), self.features(path_b)
        if fa is None or fb is None:
            return 0, 0
        matches = tentative_matches_ratio(fa.descriptors, fb.descriptors, ratio=0.8,
                                          binary=self.extractor.binary)
        n_matches = int(matches.shape[0])
        if n_matches < self.min_inliers:
            return 0, n_matches
        n = verify(fa.keypoints, fb.keypoints, matches, threshold=5.0)
        assert isinstance(n, int)  # return_model=False: the count only
        return n, n_matches

    def confirms(self, path_a: str, path_b: str) -> bool:
        """Whether the pair passes both the inlier count and the inlier ratio."""
        inliers, matches = self.check(path_a, path_b)
        return is_confirmed(inliers, matches, self.min_inliers, self.min_inlier_ratio)
