"""Spatial verification: re-rank a short list by the number of geometrically consistent matches.

A global vector (BoVW, VLAD, a CNN) ignores where things are. Spatial re-ranking [1]_
takes the top ``N`` results, finds *tentative* correspondences between the query's key
points and each candidate's, fits a geometric model (homography or affine) robustly with
RANSAC / MAGSAC [2]_, and re-orders the candidates by their number of inliers. A true
copy or view of the same object keeps tens to hundreds of inliers; an unrelated image a
handful.

Three ways to get tentative matches (:mod:`cvretrieval.rerank.matching`):

* ``"words"`` (default, fast): key points sharing a visual word [1]_, a sorted-array
  intersection; words occurring more than ``max_per_word`` times in either image are
  bursts [3]_ and give no match.
* ``"words+desc"``: the pairs sharing a word resolved by the stored descriptors (mutual
  nearest within the word, ratio test), all candidates in one vectorised pass: a coarse
  vocabulary (1k words) no longer loses the matches of bursty words, which on strongly
  degraded copies are most of them. Needs words and descriptors in the store.
* ``"ratio"``: brute-force descriptor nearest neighbours with Lowe's ratio test [4]_
  (Faiss exact k-NN, L2 or Hamming). Needs no vocabulary; much slower.

Speed: fewer tentative matches than ``min_inliers`` skip RANSAC; a similarity RANSAC
(2-point samples, 100 iterations) must find ``min_inliers`` before the final model (MAGSAC
homography, ``max_iters``); an inlier counts once per key point.

References
----------
.. [1] J. Philbin, O. Chum, M. Isard, J. Sivic, A. Zisserman, "Object retrieval with large
       vocabularies and fast spatial matching", CVPR 2007.
.. [2] D. Baráth, J. Matas, J. Noskova, "MAGSAC: marginalizing sample consensus",
       CVPR 2019; M. A. Fischler, R. C. Bolles, "Random sample consensus", CACM 1981.
.. [3] H. Jégou, M. Douze, C. Schmid, "On the burstiness of visual elements", CVPR 2009.
.. [4] D. G. Lowe, "Distinctive image features from scale-invariant keypoints", IJCV 2004.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from .matching import (
    Matches,
    _check_limit,
    _descriptor_scale,
    _distinct_inliers,
    _match_query,
    inlier_coverage,
    tentative_matches_ratio,
    tentative_matches_words,
    tentative_matches_words_desc,
    tentative_matches_words_desc_many,
)
from .matching import query_words as group_query_words

__all__ = [
    "MODELS",
    "SpatialVerifier",
    "spatial_rerank",
    "tentative_matches_ratio",
    "tentative_matches_words",
    "tentative_matches_words_desc",
    "verify",
]

logger = logging.getLogger(__name__)

#: geometric model -> minimal sample size
MODELS: dict[str, int] = {"homography": 4, "affine": 3, "similarity": 2}
MATCHERS = ("words", "ratio", "words+desc")

# --------------------------------------------------------------------------- verification


def _check_model(model: str) -> str:
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    return model


def verify(
    q_kp: NDArray[np.floating],
    c_kp: NDArray[np.floating],
    matches: Matches,
    *,
    model: str = "homography",
    method: int = cv2.USAC_MAGSAC,
    threshold: float = 5.0,
    max_iters: int = 500,
    confidence: float = 0.99,
    refine_iters: int = 10,
    return_model: bool = False,
) -> int | tuple[int, NDArray[np.float64] | None, NDArray[np.bool_]]:
    """Number of tentative matches consistent with one geometric transformation.

    Parameters
    ----------
    q_kp : (n_q, 2) float ndarray
        Query key points (x, y).
    c_kp : (n_c, 2) float ndarray
        Candidate key points.
    matches : (M, 2) int ndarray
        Tentative matches ``(query row, candidate row)``.
    model : {"homography", "affine", "similarity"}, default "homography"
        ``cv2.findHomography`` (8 dof, 4-point samples; a plane seen from anywhere,
        which covers crops, rotations and perspective changes of a copy),
        ``cv2.estimateAffine2D`` (6 dof, 3 points) or ``cv2.estimateAffinePartial2D``
        (4 dof, 2 points; OpenCV offers it with ``cv2.RANSAC`` / ``cv2.LMEDS`` only, so
        other methods fall back to RANSAC).
    method : int, default cv2.USAC_MAGSAC
        OpenCV robust estimator: ``cv2.USAC_MAGSAC`` [2]_, ``cv2.RANSAC``,
        ``cv2.USAC_FAST``, ``cv2.USAC_ACCURATE``...
    threshold : float, default 5.0
        Maximum reprojection error of an inlier, in pixels of the candidate image
        (suits images of about 300 to 1000 pixels; scale it with the image size).
    max_iters : int, default 500
        Cap on RANSAC iterations (OpenCV stops earlier once ``confidence`` is reached,
        which is fast for true matches; the cap bounds the time spent on wrong ones).
    confidence : float, default 0.99
    refine_iters : int, default 10
        Levenberg-Marquardt refinement steps of the affine / similarity model on its
        inliers (0: none, faster). OpenCV always refines homographies.
    return_model : bool, default False
        Also return the 2x3 / 3x3 matrix (None if none was found) and the inlier mask.

    Returns
    -------
    n_inliers : int
        Inliers counted once per key point: ``min(#distinct query points, #distinct
        candidate points)`` among the inlier matches. 0 when there are fewer matches
        than the model's minimal sample or no model was found.
    (n_inliers, matrix, mask) : tuple
        With ``return_model=True``; ``mask`` is (M,) bool.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> q = rng.uniform(0, 500, (40, 2)).astype(np.float32)
    >>> c = q @ np.array([[0.9, 0.2], [-0.2, 0.9]], np.float32).T + 30
    >>> matches = np.stack([np.arange(40), np.arange(40)], 1)
    >>> verify(q, c, matches, threshold=2.0)
    40
    """
    result = _verify(
        q_kp, c_kp, matches, model, method, threshold, max_iters, confidence, refine_iters
    )
    return result if return_model else result[0]


def _verify(
    q_kp: NDArray[np.floating],
    c_kp: NDArray[np.floating],
    matches: Matches,
    model: str,
    method: int,
    threshold: float,
    max_iters: int,
    confidence: float,
    refine_iters: int,
) -> tuple[int, NDArray[np.float64] | None, NDArray[np.bool_]]:
    """:func:`verify` with ``return_model=True``."""
    _check_model(model)
    matches = np.asarray(matches, np.int64).reshape(-1, 2)
    m = matches.shape[0]
    mask = np.zeros(m, bool)
    if m < MODELS[model]:
        return (0, None, mask)
    src = np.ascontiguousarray(np.asarray(q_kp, np.float32)[matches[:, 0]])
    dst = np.ascontiguousarray(np.asarray(c_kp, np.float32)[matches[:, 1]])
    thr, iters, conf = float(threshold), int(max_iters), float(confidence)
    try:
        if model == "homography":
            M, inl = cv2.findHomography(src, dst, method, thr, maxIters=iters, confidence=conf)
        else:
            if model != "affine":  # the partial (similarity) estimator: RANSAC or LMedS only
                method = method if method in (cv2.RANSAC, cv2.LMEDS) else cv2.RANSAC
            estimate = cv2.estimateAffine2D if model == "affine" else cv2.estimateAffinePartial2D
            M, inl = estimate(
                src,
                dst,
                method=method,
                ransacReprojThreshold=thr,
                maxIters=iters,
                confidence=conf,
                refineIters=int(refine_iters),
            )
    except cv2.error as exc:  # degenerate samples (e.g. all points equal)
        logger.debug("%s estimation failed on %d matches: %s", model, m, exc)
        return (0, None, mask)
    if M is None or inl is None:
        return (0, None, mask)
    mask = np.asarray(inl).reshape(-1).astype(bool)
    n = _distinct_inliers(matches[mask], len(q_kp), len(c_kp))
    return (n, np.asarray(M, np.float64), mask)


# --------------------------------------------------------------------------- re-ranking


_PARAMS = ("top_n", "min_inliers", "matcher", "model", "method", "threshold", "max_iters",
           "confidence", "max_per_word", "max_matches", "ratio", "early_exit", "prefilter_iters",
           "desc_max_per_word", "max_pairs", "max_keypoints", "order", "min_coverage")
ORDERS = ("inliers", "rank", "coverage")


class SpatialVerifier:
    """Spatial re-ranking of a short list against a :class:`~cvretrieval.featurestore.FeatureStore`.

    Parameters
    ----------
    top_n : int, default 100
        Candidates verified (the rest keep their order after them).
    min_inliers : int, default 12
        A candidate is *verified* with at least this many inliers; verified candidates
        move to the front, by decreasing inliers.
    matcher : {"words", "words+desc", "ratio"}, default "words"
        Tentative matches by shared visual word (needs words in the store and for the
        query), by shared word resolved by descriptors (needs both), or by descriptor
        ratio test (needs descriptors); see :mod:`cvretrieval.rerank.matching`.
    model, method, threshold, max_iters, confidence
        See :func:`verify`.
    max_per_word : int or None, default 5
        Burstiness limit of word matching (:func:`tentative_matches_words`).
    max_matches : int or None, default 1000
        Cap on tentative matches per candidate (word matching).
    ratio : float, default 0.8
        Ratio test of the ``"ratio"`` and ``"words+desc"`` matchers.
    early_exit : int or None, default None
        Stop verifying once this many candidates are verified (e.g. the ``k`` results
        to show): faster, but a later candidate with more inliers is then missed.
    prefilter_iters : int or None, default 100
        Before the ``model`` (unless it is ``"similarity"``), a cheap similarity
        RANSAC (2-point samples, this many iterations, threshold ``2 * threshold``, no
        refinement) must find ``min_inliers`` inliers; most wrong candidates stop there.
        2-point samples need few iterations: with 20% inliers, 100 draws miss an
        all-inlier sample with probability ``0.96**100 < 2%``. ``None``: no prefilter.
    desc_max_per_word : int or None, default 50
        ``"words+desc"``: words more frequent than this in either image are skipped.
    max_pairs : int or None, default 20000
        ``"words+desc"``: cap on word pairs whose descriptor distance is computed.
    max_keypoints : int or None, default None
        Use only the query's strongest key points (by score), bounding the query's cost.
    order : {"inliers", "rank", "coverage"}, default "inliers"
        Verified candidates first, by decreasing inliers, in their input (first-stage)
        order (verification as a filter), or by decreasing :func:`inlier_coverage`.
    min_coverage : float or None, default None
        Copy detection: a candidate is verified only if its inliers' convex hull covers at
        least this fraction of the hull of all its key points (a copy is the query's content
        throughout; another photo of the same scene or object matches on a part). A
        candidate failing it counts ``min(inliers, min_inliers - 1)``.

    Attributes
    ----------
    stats_ : dict
        After :meth:`rerank`: ``examined``, ``ransac`` (candidates that reached the
        final model), ``verified``, ``seconds``.

    Examples
    --------
    >>> SpatialVerifier(top_n=50, model="homography").min_inliers
    12
    """

    def __init__(
        self,
        top_n: int = 100,
        min_inliers: int = 12,
        *,
        matcher: str = "words",
        model: str = "homography",
        method: int = cv2.USAC_MAGSAC,
        threshold: float = 5.0,
        max_iters: int = 500,
        confidence: float = 0.99,
        max_per_word: int | None = 5,
        max_matches: int | None = 1000,
        ratio: float = 0.8,
        early_exit: int | None = None,
        prefilter_iters: int | None = 100,
        desc_max_per_word: int | None = 50,
        max_pairs: int | None = 20_000,
        max_keypoints: int | None = None,
        order: str = "inliers",
        min_coverage: float | None = None,
    ) -> None:
        self.top_n = top_n
        self.min_inliers = min_inliers
        self.matcher = matcher
        self.model = model
        self.method = method
        self.threshold = threshold
        self.max_iters = max_iters
        self.confidence = confidence
        self.max_per_word = max_per_word
        self.max_matches = max_matches
        self.ratio = ratio
        self.early_exit = early_exit
        self.prefilter_iters = prefilter_iters
        self.desc_max_per_word = desc_max_per_word
        self.max_pairs = max_pairs
        self.max_keypoints = max_keypoints
        self.order = order
        self.min_coverage = min_coverage
        self.stats_: dict[str, Any] = {}

    def get_params(self) -> dict[str, Any]:
        """Constructor parameters (JSON-serialisable), e.g. for a bundle manifest."""
        return {k: getattr(self, k) for k in _PARAMS}

    def _check(self) -> None:
        if self.matcher not in MATCHERS:
            raise ValueError(
                f"unknown matcher {self.matcher!r}; choose one of {', '.join(MATCHERS)}"
            )
        _check_model(self.model)
        if self.order not in ORDERS:
            raise ValueError(f"unknown order {self.order!r}; choose one of {', '.join(ORDERS)}")
        for name in ("top_n", "min_inliers", "max_iters"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        for name in ("max_per_word", "max_matches", "early_exit", "prefilter_iters",
                     "desc_max_per_word", "max_pairs", "max_keypoints"):
            _check_limit(getattr(self, name), name)

    def _query(self, query_features: Any, query_words: Any, store: Any) -> dict[str, Any]:
        """The query's key points, word groups and descriptors, checked against the store."""
        q_kp = np.asarray(query_features.keypoints, np.float32).reshape(-1, 2)
        keep = None
        if self.max_keypoints is not None and q_kp.shape[0] > self.max_keypoints:
            scores = np.asarray(getattr(query_features, "scores", np.ones(len(q_kp))))
            keep = np.sort(np.argsort(-scores, kind="stable")[: int(self.max_keypoints)])
            q_kp = q_kp[keep]
        q: dict[str, Any] = {"kp": q_kp, "groups": None, "desc": None}
        if self.matcher in ("words", "words+desc"):
            if not store.has_words:
                raise ValueError(
                    f"matcher={self.matcher!r} needs a feature store written with words=True; "
                    "use matcher='ratio' or rebuild the store with words"
                )
            if query_words is None:
                raise ValueError(f"matcher={self.matcher!r} needs query_words (the query's "
                                 "visual words)")
            qw = np.asarray(query_words)
            qw = qw.reshape(qw.shape[0], -1) if qw.ndim else qw.reshape(-1, 1)
            if qw.shape[0] != len(query_features.keypoints):
                raise ValueError(f"{qw.shape[0]} query words for {len(query_features.keypoints)} "
                                 "query key points")
            q["groups"] = group_query_words(qw if keep is None else qw[keep])
        if self.matcher in ("ratio", "words+desc"):
            if not store.has_descriptors:
                raise ValueError(
                    f"matcher={self.matcher!r} needs a feature store with descriptors; "
                    "use matcher='words' or rebuild the store with descriptors"
                )
            desc = np.asarray(query_features.descriptors)
            desc = desc if keep is None else desc[keep]
            q["binary"] = bool(store.binary)
            q["desc"] = desc if q["binary"] else desc.astype(np.float32, copy=False)
        return q

    def _batch(self, q: dict[str, Any], store: Any, cids: list[int]) -> dict[int, Matches]:
        """``"words+desc"`` matches of all candidates in one vectorised pass, on the stored
        (raw) descriptors: the query is quantised as the store did (4x less memory)."""
        qd = q["desc"]
        scale = None if q["binary"] else _descriptor_scale(store)
        raw = [store.get_descriptors(c, raw=scale is not None) for c in cids]
        if scale is not None and raw and raw[0].dtype == np.uint8:
            qd = np.clip(np.rint(qd * np.float32(scale)), 0, 255).astype(np.uint8)
        found = tentative_matches_words_desc_many(
            q["groups"], [store.get_words(c) for c in cids], qd, raw, ratio=self.ratio,
            max_per_word=self.desc_max_per_word, max_pairs=self.max_pairs, binary=q["binary"])
        return dict(zip(cids, found, strict=True))

    def _matches(self, q: dict[str, Any], store: Any, cid: int) -> Matches:
        if "batch" in q:
            return q["batch"][cid]
        if self.matcher == "words":
            return _match_query(q["groups"], store.get_words(cid), self.max_per_word,
                                self.max_matches)
        if self.matcher == "words+desc":
            return tentative_matches_words_desc(
                q["groups"], store.get_words(cid), q["desc"], store.get_descriptors(cid),
                ratio=self.ratio, max_per_word=self.desc_max_per_word,
                max_pairs=self.max_pairs, binary=q["binary"])
        return tentative_matches_ratio(q["desc"], store.get_descriptors(cid), ratio=self.ratio,
                                       binary=q["binary"])

    def rerank(
        self,
        query_features: Any,
        candidate_ids: NDArray[np.integer],
        store: Any,
        *,
        query_words: NDArray[np.integer] | None = None,
    ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """Re-order ``candidate_ids``; see :func:`spatial_rerank`. ``query_words`` may be
        ``(n_q, m)``: ``m`` words per query key point (multiple assignment)."""
        self._check()
        t0 = time.perf_counter()
        ids = np.asarray(candidate_ids, np.int64).reshape(-1)
        q = self._query(query_features, query_words, store)
        q_kp = q["kp"]
        n_head = min(int(self.top_n), ids.shape[0])
        inliers = np.full(ids.shape[0], -1, np.int64)
        cover = np.zeros(ids.shape[0])
        n_store = len(store)
        if self.matcher == "words+desc":
            q["batch"] = self._batch(q, store, sorted({int(c) for c in ids[:n_head]
                                                        if 0 <= c < n_store}))
        min_sample = max(MODELS[self.model], int(self.min_inliers))
        examined = ransac = verified = 0
        for j in range(n_head):
            cid = int(ids[j])
            if cid < 0 or cid >= n_store:
                continue
            examined += 1
            c_kp = store.get_keypoints(cid)
            matches = self._matches(q, store, cid)
            if matches.shape[0] < min_sample:
                inliers[j] = 0
                continue
            if self.prefilter_iters and self.model != "similarity":
                pre = _verify(q_kp, c_kp, matches, "similarity", cv2.RANSAC, 2.0 * self.threshold,
                              self.prefilter_iters, self.confidence, 0)[0]
                if pre < self.min_inliers:
                    inliers[j] = pre
                    continue
            ransac += 1
            inliers[j], _, mask = _verify(q_kp, c_kp, matches, self.model, self.method,
                                          self.threshold, self.max_iters, self.confidence, 10)
            if inliers[j] >= self.min_inliers and (self.min_coverage or self.order == "coverage"):
                cover[j] = inlier_coverage(c_kp, matches[mask, 1])
                if self.min_coverage and cover[j] < self.min_coverage:
                    inliers[j] = self.min_inliers - 1
            if inliers[j] >= self.min_inliers:
                verified += 1
                if self.early_exit is not None and verified >= self.early_exit:
                    break
        head = np.arange(n_head)
        good = head[inliers[:n_head] >= self.min_inliers]
        if self.order != "rank":
            key = cover if self.order == "coverage" else inliers
            good = good[np.argsort(-key[good], kind="stable")]
        rest = head[inliers[:n_head] < self.min_inliers]
        order = np.concatenate([good, rest, np.arange(n_head, ids.shape[0])]).astype(np.int64)
        self.stats_ = {"examined": examined, "ransac": ransac, "verified": verified,
                       "seconds": time.perf_counter() - t0}
        logger.debug("spatial re-ranking: %s", self.stats_)
        return ids[order], inliers[order]


def spatial_rerank(
    query_features: Any,
    candidate_ids: NDArray[np.integer],
    store: Any,
    *,
    query_words: NDArray[np.integer] | None = None,
    top_n: int = 100,
    min_inliers: int = 12,
    matcher: str = "words",
    early_exit: int | None = None,
    **params: Any,
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Re-rank the top ``top_n`` candidates by their number of spatially verified matches [1]_.

    Parameters
    ----------
    query_features : LocalFeatures
        The query's key points (and descriptors, for ``matcher="ratio"``), in the
        coordinates of the image that was searched (e.g. the query crop).
    candidate_ids : (n,) int ndarray
        Ranked candidates (best first), as rows of ``store``; ``-1`` entries (missing
        results) are left unverified.
    store : FeatureStore
        The database images' key points, words and/or descriptors, row = candidate id.
    query_words : (n_q,) int ndarray, optional
        The query key points' visual words (required by ``matcher="words"``).
    top_n, min_inliers, matcher, early_exit, **params
        See :class:`SpatialVerifier` (``model``, ``threshold``, ``order``...).

    Returns
    -------
    new_order : (n,) int64 ndarray
        The candidate ids re-ordered: first the verified ones (``>= min_inliers``) by
        decreasing inliers (ties, or ``order="rank"``: the original order), then the
        other examined candidates of the top ``top_n`` in their original order, then the rest.
    inlier_counts : (n,) int64 ndarray
        Inliers of each entry of ``new_order``; ``0`` when it had fewer tentative
        matches than ``min_inliers`` (RANSAC skipped), ``-1`` when not examined
        (beyond ``top_n``, after an early exit, or an invalid id).
    """
    sv = SpatialVerifier(
        top_n=top_n, min_inliers=min_inliers, matcher=matcher, early_exit=early_exit, **params
    )
    return sv.rerank(query_features, candidate_ids, store, query_words=query_words)
