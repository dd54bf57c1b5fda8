"""The VLAD embedder: local float descriptors aggregated by residuals to a k-means vocabulary.

References
----------
.. [1] H. Jégou, M. Douze, C. Schmid and P. Pérez, "Aggregating local descriptors into a
   compact image representation", CVPR 2010.
.. [2] H. Jégou et al., "Aggregating local image descriptors into compact codes",
   IEEE TPAMI 2012.
.. [3] R. Arandjelović and A. Zisserman, "All about VLAD", CVPR 2013.
.. [4] R. Arandjelović and A. Zisserman, "Three things everyone should know to improve
   object retrieval", CVPR 2012 (RootSIFT).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from ..errors import BundleError
from ..features.local import DETECTORS, LocalFeatures
from ..features.vlad import vlad
from .classical import LocalFeatureEmbedder

__all__ = ["VLADEmbedder"]

logger = logging.getLogger(__name__)

FLOAT_DETECTORS = tuple(name for name, (_, binary) in DETECTORS.items() if not binary)


class VLADEmbedder(LocalFeatureEmbedder):
    """VLAD [1]_ over SIFT/RootSIFT descriptors, intra-normalised [3]_ and power-normalised [2]_.

    Stages (see :mod:`cvretrieval.embedders.base`): ``extract`` detects key points;
    ``fit`` learns a k-means vocabulary on a random sample of descriptors; ``reduce``
    turns an image's descriptors into its final VLAD vector (``n_words * 128`` float32,
    unit L2 norm, all zeros for an image without key points); ``encode`` stacks them.

    Parameters
    ----------
    detector : str, default 'rootsift'
        A detector with float descriptors: ``rootsift``, ``sift``, ``onnx:PATH`` or a
        plug-in (:mod:`cvretrieval.features.detectors`); binary ones (ORB, AKAZE, BRISK)
        are refused.
    n_features : int, default 1000
        Key points per image.
    n_words : int, default 64
        Vocabulary size ``k``; the vector has ``k * D`` dimensions (``D = 128`` for SIFT).
    max_descriptors : int, default 100000
        Size of the random descriptor sample the vocabulary is fitted on.
    intra_norm : bool, default True
        L2-normalise each word's residual sum [3]_.
    power : float or None, default 0.5
        Signed power normalisation exponent [2]_ (``None`` or 1 disables it).
    random_state : int or None, default 0
        Seed of the descriptor sample and of k-means.
    vocabulary : str or None
        A folder written by ``cvret vocab build`` (float descriptors of the same
        detector) to use instead of fitting one.

    Attributes
    ----------
    vocabulary_ : KMeansVocabulary
        The fitted visual words (``vocabulary_.centers_``, ``(n_words, 128)`` float32).

    Examples
    --------
    >>> emb = VLADEmbedder(n_words=16)
    >>> emb.dim, emb.needs_fit
    (2048, True)
    """

    name = "vlad"
    local_features = True

    def __init__(
        self,
        detector: str = "rootsift",
        n_features: int = 1000,
        n_words: int = 64,
        max_descriptors: int = 100_000,
        intra_norm: bool = True,
        power: float | None = 0.5,
        random_state: int | None = 0,
        vocabulary: str | None = None,
    ):
        self.detector = detector
        self.n_features = n_features
        self.n_words = n_words
        self.max_descriptors = max_descriptors
        self.intra_norm = intra_norm
        self.power = power
        self.random_state = random_state
        self.vocabulary = None if vocabulary is None else str(vocabulary)
        self._init_local()
        if self._extractor.binary:
            raise ValueError(
                f"VLAD sums residuals of float descriptors, but detector {detector!r} gives binary "
                f"ones: use detector='rootsift' or 'sift' (or the bovw embedder for {detector})"
            )
        if power is not None and not power > 0:
            raise ValueError(
                f"power must be positive (0.5 = signed square root) or None, got {power}"
            )

    @property
    def dim(self) -> int:
        return int(self.n_words) * int(self._extractor.dim)

    def reduce(self, features: LocalFeatures) -> NDArray[np.float32]:
        """The image's VLAD vector, ``(dim,)`` float32 (zeros when it has no key points)."""
        self._check_fitted()
        centers = self.vocabulary_.centers_
        descriptors = np.asarray(features.descriptors, np.float32)
        if len(descriptors) == 0:
            return np.zeros(self.dim, np.float32)
        words = self.vocabulary_.assign(descriptors)
        return vlad(
            descriptors, centers, words, intra_norm=self.intra_norm, power=self.power, l2=True
        )

    def has_features(self, reduced: NDArray[np.float32]) -> bool:
        """False for an image without key points (its VLAD vector is all zeros)."""
        return bool(np.any(np.asarray(reduced)))

    def encode(self, reduced: Sequence[NDArray[np.float32]]) -> NDArray[np.float32]:
        """Stack VLAD vectors into ``(n, dim)`` float32 (already normalised by ``reduce``)."""
        if len(reduced) == 0:
            return np.zeros((0, self.dim), np.float32)
        out = np.stack([np.asarray(r, np.float32).ravel() for r in reduced])
        if out.shape[1] != self.dim:
            raise ValueError(f"VLAD vectors have {out.shape[1]} dimensions, expected {self.dim}")
        return np.ascontiguousarray(out, dtype=np.float32)

    def _save_state(self, directory: Path) -> None:
        self._save_vocabulary(directory)

    def _load_state(self, directory: Path) -> None:
        self._load_vocabulary(directory)
        vocab = self.vocabulary_
        expected = (int(self.n_words), self.dim // int(self.n_words))
        if getattr(vocab, "binary", False) or vocab.centers_.shape != expected:
            shape = vocab.centers_.shape
            self.vocabulary_ = None
            raise BundleError(
                f"{directory / 'vocabulary'} holds centres of shape {shape}, but this VLAD "
                f"embedder expects {expected} float words: the saved embedder is inconsistent, "
                "rebuild it"
            )
