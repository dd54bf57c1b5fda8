"""The ASMK embedder: local descriptors -> visual words + aggregated Hamming codes [1]_ [2]_.

The per-image result is not a vector but an :class:`~cvretrieval.asmk_index.AsmkCodes`
(distinct words and one binary code per word), searched with
:class:`~cvretrieval.asmk_index.AsmkIndex` (:meth:`ASMKEmbedder.make_index`):

* gallery images (``reduce``): single assignment to the nearest word;
* queries (``embed`` / ``reduce(..., query=True)``): multiple assignment to the
  ``multiple_assignment`` nearest words whose distance is within ``ma_ratio`` of the
  nearest one, as in [2]_.

References
----------
.. [1] H. Jégou, M. Douze and C. Schmid, "Hamming embedding and weak geometric consistency
   for large scale image search", ECCV 2008.
.. [2] G. Tolias, Y. Avrithis and H. Jégou, "To aggregate or not to aggregate: selective
   match kernels for image search", ICCV 2013; IJCV 116(3), 2016.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from .._json import read_json_manifest, write_json_atomic
from ..asmk_index import AsmkCodes, AsmkIndex
from ..errors import BundleError, NotFittedError
from ..features.asmk import HammingEmbedding, aggregate_residuals, as_float_descriptors
from ..features.local import LocalFeatures
from ..features.vocabulary import KMeansVocabulary, sample_descriptors
from .base import load_npy
from .classical import LocalFeatureEmbedder, _hnsw_assigner

__all__ = ["ASMKEmbedder"]

logger = logging.getLogger(__name__)

#: from this many words assignment goes through an HNSW graph over the centres
HNSW_FROM = 16384


class ASMKEmbedder(LocalFeatureEmbedder):
    """Aggregated Selective Match Kernel (ASMK*, binary) over local descriptors [2]_.

    Parameters
    ----------
    detector : {'rootsift', 'sift', 'orb', 'akaze', 'brisk'}, default 'rootsift'
        Binary descriptors are used as ``+-1`` vectors.
    n_features : int, default 1000
    n_words : int, default 4096
        Vocabulary size (Faiss k-means on a sample). 65k words as in [2]_ need
        ``assignment='hnsw'`` (automatic from 16384 words) and a big descriptor sample.
    max_descriptors : int, default 200000
    niter : int, default 10
        k-means iterations.
    n_bits : int, default 128
        Bits of a Hamming code (at most the descriptor dimension).
    alpha, tau : float, default 3.0, 0.0
        Selective kernel ``sign(u)|u|^alpha`` for ``u > tau``.
    multiple_assignment : int, default 5
        Words per query descriptor (1 disables multiple assignment).
    ma_ratio : float, default 1.2
        A further word is kept when its distance is at most ``ma_ratio`` times the nearest.
    assignment : {'auto', 'exact', 'hnsw'}, default 'auto'
    random_state : int or None, default 0
    vocabulary : str or None
        A float vocabulary folder (``cvret vocab build``) to use instead of fitting one.

    Examples
    --------
    >>> emb = ASMKEmbedder(n_words=64)
    >>> emb.needs_fit, emb.sparse_output
    (True, True)
    """

    name = "asmk"
    sparse_output: ClassVar[bool] = True
    #: per-image results are AsmkCodes for an AsmkIndex, not rows of a vector matrix
    vector_output: ClassVar[bool] = False
    keypoint_word_output: ClassVar[bool] = True

    def __init__(
        self,
        detector: str = "rootsift",
        n_features: int = 1000,
        n_words: int = 4096,
        max_descriptors: int = 200_000,
        niter: int = 10,
        n_bits: int = 128,
        alpha: float = 3.0,
        tau: float = 0.0,
        multiple_assignment: int = 5,
        ma_ratio: float = 1.2,
        assignment: str = "auto",
        random_state: int | None = 0,
        vocabulary: str | None = None,
    ):
        self.detector = detector
        self.n_features = n_features
        self.n_words = n_words
        self.max_descriptors = max_descriptors
        self.niter = niter
        self.n_bits = n_bits
        self.alpha = alpha
        self.tau = tau
        self.multiple_assignment = multiple_assignment
        self.ma_ratio = ma_ratio
        self.assignment = assignment
        self.random_state = random_state
        self.vocabulary = None if vocabulary is None else str(vocabulary)
        if assignment not in ("auto", "exact", "hnsw"):
            raise ValueError(f"assignment must be 'auto', 'exact' or 'hnsw', got {assignment!r}")
        if int(multiple_assignment) < 1:
            raise ValueError(f"multiple_assignment must be at least 1, got {multiple_assignment}")
        self._init_local()
        self.he_: HammingEmbedding | None = None
        self._assigner: Any = None
        self._nearest: Any = None  # (descriptors, their nearest words) of the last reduce

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_assigner": None, "_nearest": None}  # rebuilt in each worker

    @property
    def dim(self) -> int:
        """Bits per code (the per-image result is variable-length; see :class:`AsmkCodes`)."""
        return int(self.n_bits)

    @property
    def needs_fit(self) -> bool:
        return self.vocabulary_ is None or self.he_ is None

    def n_fit_images(self, n_total: int) -> int:
        # the Hamming embedding's medians are learned even with an external vocabulary
        return min(n_total, max(50, -(-2 * int(self.max_descriptors) // max(self.n_features, 1))))

    def make_index(self) -> AsmkIndex:
        """An empty :class:`AsmkIndex` matching this embedder."""
        return AsmkIndex(int(self.n_words), int(self.n_bits), float(self.alpha), float(self.tau))

    # ------------------------------------------------------------------ fitting
    def fit(self, samples: Sequence[LocalFeatures]) -> ASMKEmbedder:
        """Learn the vocabulary (k-means on a descriptor sample) and the Hamming embedding."""
        x = sample_descriptors([f.descriptors for f in samples], self.max_descriptors,
                               self.random_state)
        x = as_float_descriptors(x)
        if self.vocabulary_ is None:
            if self.vocabulary is not None:
                self.vocabulary_ = self._load_external_vocabulary(Path(self.vocabulary))
            else:
                vocab = KMeansVocabulary(int(self.n_words), niter=int(self.niter),
                                         random_state=self.random_state)
                vocab.fit(x)
                vocab.meta_ = {"detector": self.detector, "n_features": self.n_features}
                self.vocabulary_ = vocab
        if self.vocabulary_.centers_.shape[1] != x.shape[1]:
            raise BundleError(f"the vocabulary holds {self.vocabulary_.centers_.shape[1]}-d words "
                              f"but {self.detector} gives {x.shape[1]}-d descriptors")
        words = self._assign(x, 1)[:, 0]
        self.he_ = HammingEmbedding(int(self.n_bits), self.random_state).fit(
            x, words, self.vocabulary_.centers_)
        return self

    def _load_external_vocabulary(self, path: Path) -> Any:
        from ..features.vocabulary import load_vocabulary

        vocab = load_vocabulary(path)
        if vocab.binary:
            raise BundleError(f"vocabulary {path} is binary (k-majority); ASMK needs float words")
        if vocab.n_words != self.n_words:
            logger.info("using the vocabulary's %d words (n_words=%d ignored)",
                        vocab.n_words, self.n_words)
            self.n_words = int(vocab.n_words)
        return vocab

    # ------------------------------------------------------------------ per image
    def _uses_hnsw(self) -> bool:
        return self.assignment == "hnsw" or (
            self.assignment == "auto" and int(self.n_words) >= HNSW_FROM)

    def _assign(self, x: NDArray[np.float32], m: int) -> NDArray[np.int64]:
        """``(n, m)`` word ids; ``-1`` where a further word is beyond ``ma_ratio``."""
        m = min(int(m), int(self.n_words))
        if len(x) == 0:
            return np.zeros((0, m), np.int64)
        if self._uses_hnsw():
            if self._assigner is None:
                self._assigner = _hnsw_assigner(self.vocabulary_, self.random_state or 0)
            ids, dist = self._assigner.assign_multi(x, m)
        else:
            ids, dist = self.vocabulary_.assign_multi(x, m)
        if m > 1:
            far = dist > (float(self.ma_ratio) ** 2) * dist[:, :1]  # squared distances
            ids = np.where(far, -1, ids)
        return ids

    def reduce(self, features: LocalFeatures, query: bool = False) -> AsmkCodes:
        """The image's :class:`AsmkCodes`; ``query=True`` uses multiple assignment."""
        self._check_fitted()
        x = as_float_descriptors(features.descriptors)
        words = self._assign(x, int(self.multiple_assignment) if query else 1)
        self._nearest = (features.descriptors, words[:, 0].copy())
        uniq, agg = aggregate_residuals(x, words, self.vocabulary_.centers_)
        assert self.he_ is not None
        codes = (self.he_.encode(agg, uniq) if len(uniq)
                 else np.zeros((0, int(self.n_bits) // 8), np.uint8))
        return AsmkCodes(uniq.astype(np.uint32), codes)

    def keypoint_words(self, features: LocalFeatures) -> NDArray[np.int64]:
        """``(n,)`` nearest word of each key point (single assignment): the words that
        spatial verification with ``matcher="words+desc"`` pairs key points by (those of
        the last :meth:`reduce` when it was given the same features: no second search)."""
        self._check_fitted()
        last = getattr(self, "_nearest", None)
        if last is not None and last[0] is features.descriptors:
            return last[1].copy()
        return self._assign(as_float_descriptors(features.descriptors), 1)[:, 0]

    def has_features(self, reduced: AsmkCodes) -> bool:
        """False for an image without local features (no words)."""
        return len(reduced) > 0

    def encode(self, reduced: Sequence[AsmkCodes]) -> list[AsmkCodes]:  # type: ignore[override]
        """The items an :class:`AsmkIndex` takes (checked, unchanged)."""
        out = list(reduced)
        for r in out:
            if not isinstance(r, AsmkCodes):
                raise TypeError(f"ASMK encodes AsmkCodes from reduce(), got {type(r).__name__}")
        return out

    def embed(self, images: Sequence[NDArray[np.uint8]]) -> list[AsmkCodes]:  # type: ignore[override]
        """Query-side codes (multiple assignment) of decoded images."""
        self._check_fitted()
        return [self.reduce(f, query=True) for f in self.extract_batch(list(images))]

    def _check_fitted(self) -> None:
        if self.needs_fit:
            raise NotFittedError(f"{self!r} is not fitted: call fit on local features first")

    # ------------------------------------------------------------------ persistence
    def _save_state(self, directory: Path) -> None:
        assert self.he_ is not None
        self._save_vocabulary(directory)
        np.save(directory / "he_projection.npy", self.he_.projection_)
        np.save(directory / "he_medians.npy", self.he_.medians_)
        write_json_atomic(directory / "he.json", {"format_version": 1, **self.he_.get_params()})

    def _load_state(self, directory: Path) -> None:
        self._load_vocabulary(directory)
        meta = read_json_manifest(directory / "he.json", format_version=1,
                                  hint="rebuild the ASMK embedder")
        he = HammingEmbedding(int(meta["n_bits"]), meta.get("random_state"))
        he.projection_ = load_npy(directory, "he_projection.npy").astype(np.float32)
        he.medians_ = load_npy(directory, "he_medians.npy").astype(np.float32)
        k, d = self.vocabulary_.centers_.shape
        if he.projection_.shape != (he.n_bits, d) or he.medians_.shape != (k, he.n_bits):
            raise BundleError(f"{directory}: Hamming embedding arrays do not fit a vocabulary of "
                              f"{k} words of dim {d}; rebuild the embedder")
        self.he_ = he
