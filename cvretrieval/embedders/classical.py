"""Classical embedders: HOG and Bag of Visual Words over local features.

References
----------
.. [1] Dalal & Triggs, "Histograms of oriented gradients for human detection", CVPR 2005.
.. [2] Sivic & Zisserman, "Video Google: a text retrieval approach to object matching in
       videos", ICCV 2003.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from ..errors import BundleError, NotFittedError
from ..features import bovw
from ..features.hog import hog, hog_dim
from ..features.local import LocalFeatureExtractor, LocalFeatures, check_detector
from ..features.vocabulary import (
    load_vocabulary,
    make_vocabulary,
    sample_descriptors,
    save_vocabulary,
)
from .base import Embedder, l2_normalize, load_npy

logger = logging.getLogger(__name__)

#: k-means iterations of a BoVW vocabulary of float descriptors: with 20 (and a 200k sample)
#: BoVW matches the straightforward Faiss baseline; 6 lose 0.03 ukbench N-S
#: (``benchmarks/bovw_baseline.py``, docs/notes/asmk.md)
BOVW_KMEANS_NITER = 20


class HOGEmbedder(Embedder):
    """Global HOG vector of the image resized to ``size`` x ``size``, L2-normalised.

    Parameters
    ----------
    size, cell, block, orientations : int
        See :func:`cvretrieval.features.hog.hog`.
    """

    name = "hog"
    grayscale_input: ClassVar[bool] = True

    def __init__(self, size: int = 128, cell: int = 8, block: int = 2, orientations: int = 9):
        self.size = size
        self.cell = cell
        self.block = block
        self.orientations = orientations

    @property
    def dim(self) -> int:
        return hog_dim(self.size, self.cell, self.block, self.orientations)

    def extract(self, image: NDArray[np.uint8]) -> NDArray[np.float32]:
        return hog(image, self.size, self.cell, self.block, self.orientations)

    def encode(self, reduced: Sequence[NDArray[np.float32]]) -> NDArray[np.float32]:
        if len(reduced) == 0:
            return np.zeros((0, self.dim), np.float32)
        return l2_normalize(np.stack(reduced))

    def has_features(self, reduced: NDArray[np.float32]) -> bool:
        """False for an image without gradients (a flat image): its vector is all zeros."""
        return bool(np.any(np.asarray(reduced)))


class LocalFeatureEmbedder(Embedder):
    """Shared plumbing of embedders that aggregate local descriptors through a vocabulary."""

    detector: str
    n_features: int
    n_words: int
    max_descriptors: int
    random_state: int | None
    vocabulary: str | None

    #: k-means iterations when ``niter`` is not given (``None``: the vocabulary's default)
    default_kmeans_niter: ClassVar[int | None] = None
    #: capabilities read by the pipeline (see :class:`~cvretrieval.embedders.base.Embedder`)
    sparse_output: ClassVar[bool] = False
    local_features: ClassVar[bool] = True

    @property  # type: ignore[override]
    def grayscale_input(self) -> bool:
        """As the detector says (OpenCV's look at gray only; a plug-in may want colour)."""
        return self._extractor.grayscale_input

    def _init_local(self) -> None:
        # no I/O here (issue 12): an external vocabulary is read by fit()
        check_detector(self.detector)
        self._extractor = LocalFeatureExtractor(self.detector, self.n_features)
        self.vocabulary_: Any = None

    def _load_external_vocabulary(self, path: Path) -> Any:
        vocab = load_vocabulary(path)
        meta = getattr(vocab, "meta_", None) or {}
        built_with = meta.get("detector")
        if built_with and built_with != self.detector:
            raise BundleError(
                f"vocabulary {path} was built from {built_with} descriptors but this embedder "
                f"uses {self.detector}: pass --detector {built_with} or build a vocabulary for "
                f"{self.detector}"
            )
        if vocab.binary != self._extractor.binary or vocab.dim != self._extractor.dim:
            raise BundleError(
                f"vocabulary {path} holds {vocab.dim}-d "
                f"{'binary' if vocab.binary else 'float'} words; "
                f"{self.detector} gives {self._extractor.dim}-d "
                f"{'binary' if self._extractor.binary else 'float'} descriptors"
            )
        if vocab.n_words != self.n_words:
            logger.info("using the vocabulary's %d words (n_words=%d ignored)",
                        vocab.n_words, self.n_words)
            self.n_words = int(vocab.n_words)
        return vocab

    @property
    def needs_fit(self) -> bool:
        return self.vocabulary_ is None

    def has_features(self, reduced: Any) -> bool:
        """True when the image gave at least one local feature (``reduce``'s output is not
        empty / not all zeros): the core records "no features" for the others."""
        return bool(np.asarray(reduced).size)

    def n_fit_images(self, n_total: int) -> int:
        if self.vocabulary is not None:
            return min(n_total, 1)  # the vocabulary is read, not learnt
        # enough images to offer about twice max_descriptors, and never fewer than 50
        wanted = max(50, math.ceil(2 * self.max_descriptors / max(self.n_features, 1)))
        return min(n_total, wanted)

    @property
    def extract_cache_key(self) -> str:
        return f"{self.detector}-n{self.n_features}"

    def extract(self, image: NDArray[np.uint8]) -> LocalFeatures:
        return self._extractor.extract(image)

    def fit_vocabulary(self, samples: Sequence[LocalFeatures]) -> None:
        if self.vocabulary is not None:
            self.vocabulary_ = self._load_external_vocabulary(Path(self.vocabulary))
            return
        descriptors = sample_descriptors(
            [f.descriptors for f in samples], self.max_descriptors, self.random_state
        )
        niter = getattr(self, "niter", None)
        if niter is None and not self._extractor.binary:
            niter = self.default_kmeans_niter
        vocab = make_vocabulary(
            self.n_words, binary=self._extractor.binary, random_state=self.random_state,
            **({} if niter is None else {"niter": int(niter)}),
        )
        vocab.fit(descriptors)
        vocab.meta_ = {"detector": self.detector, "n_features": self.n_features}
        self.vocabulary_ = vocab

    def fit(self, samples: Sequence[LocalFeatures]) -> LocalFeatureEmbedder:
        if self.vocabulary_ is None:
            self.fit_vocabulary(samples)
        return self

    def _save_vocabulary(self, directory: Path) -> None:
        save_vocabulary(self.vocabulary_, directory / "vocabulary")

    def _load_vocabulary(self, directory: Path) -> None:
        self.vocabulary_ = load_vocabulary(directory / "vocabulary")


#: HNSW assigners built in this process, by vocabulary content: worker processes receive
#: the embedder without its assigner (pickling a graph per chunk would cost more than the
#: work), so each worker builds it once and reuses it for every later chunk
_ASSIGNERS: dict[tuple[str, int], Any] = {}


def _hnsw_assigner(vocabulary: Any, random_state: int) -> Any:
    import hashlib

    from ..features.assign import ApproximateAssigner

    centers = np.ascontiguousarray(vocabulary.centers_)
    key = (hashlib.sha1(centers.tobytes()).hexdigest(), int(random_state))
    if key not in _ASSIGNERS:
        if len(_ASSIGNERS) >= 4:
            _ASSIGNERS.pop(next(iter(_ASSIGNERS)))
        _ASSIGNERS[key] = ApproximateAssigner.from_vocabulary(
            vocabulary, method="hnsw", random_state=random_state
        ).fit()
    return _ASSIGNERS[key]


class BoVWEmbedder(LocalFeatureEmbedder):
    """Bag of Visual Words: hard assignment to a vocabulary, TF-IDF weighting, L2 norm.

    Parameters
    ----------
    detector : {'rootsift', 'sift', 'orb', 'akaze', 'brisk'}, default 'rootsift'
        RootSIFT by default: on the same key points it beats SIFT by 0.05 ukbench N-S and
        0.02 caltech mAP (``benchmarks/bovw_baseline.py``).
    n_features : int, default 1000
        Key points per image.
    n_words : int, default 1000
        Vocabulary size (k-means in float space; k-majority in Hamming space for binary
        descriptors).
    max_descriptors : int, default 200000
        Size of the random descriptor sample the vocabulary is fitted on.
    sublinear : bool, default False
        Use ``1 + log(tf)`` term frequencies.
    idf : bool, default True
        Weight words by inverse document frequency learned from the indexed images.
    random_state : int or None, default 0
    vocabulary : str or None
        A folder written by ``cvret vocab build`` to use instead of fitting one.
    assignment : {'exact', 'hnsw'}, default 'exact'
        Nearest word by exhaustive Faiss search, or through an HNSW graph over the words
        (:class:`~cvretrieval.features.assign.ApproximateAssigner`), which large
        vocabularies (20k-200k words) need.
    power : float or None, default None
        Burstiness handling: term frequencies raised to this power (0.5 = square root,
        Jégou et al. 2009) before TF-IDF.
    niter : int or None, default None
        k-means (or k-majority) iterations of the vocabulary; ``None``: 20 for float
        descriptors (:data:`BOVW_KMEANS_NITER`, measured in ``benchmarks/bovw_baseline.py``),
        k-majority's default (10, stops at convergence) for binary ones.

    Notes
    -----
    With ``cvret index --index sparse`` the vectors stay sparse (``encode_sparse``) and are
    searched through an inverted file, so 100k-word vocabularies fit in memory.

    Examples
    --------
    >>> emb = BoVWEmbedder(detector="orb", n_words=500)
    >>> emb.needs_fit
    True
    """

    name = "bovw"
    sparse_output: ClassVar[bool] = True
    default_kmeans_niter: ClassVar[int | None] = BOVW_KMEANS_NITER

    def __init__(
        self,
        detector: str = "rootsift",
        n_features: int = 1000,
        n_words: int = 1000,
        max_descriptors: int = 200_000,
        sublinear: bool = False,
        idf: bool = True,
        random_state: int | None = 0,
        vocabulary: str | None = None,
        assignment: str = "exact",
        power: float | None = None,
        niter: int | None = None,
    ):
        self.detector = detector
        self.n_features = n_features
        self.n_words = n_words
        self.max_descriptors = max_descriptors
        self.sublinear = sublinear
        self.idf = idf
        self.random_state = random_state
        self.vocabulary = None if vocabulary is None else str(vocabulary)
        self.assignment = assignment
        self.power = power
        self.niter = niter
        if assignment not in ("exact", "hnsw"):
            raise ValueError(f"assignment must be 'exact' or 'hnsw', got {assignment!r}")
        self._init_local()
        self.idf_: NDArray[np.float32] | None = None
        self._assigner: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_assigner": None}  # rebuilt in each worker

    @property
    def dim(self) -> int:
        return int(self.n_words)

    @property
    def is_fitted(self) -> bool:
        return self.vocabulary_ is not None and (self.idf_ is not None or not self.idf)

    def reduce(self, features: LocalFeatures) -> NDArray[np.uint32]:
        """Visual-word ids of the image's descriptors, ``(N,)`` uint32."""
        if self.assignment == "hnsw":
            if self._assigner is None:
                self._assigner = _hnsw_assigner(self.vocabulary_, self.random_state or 0)
            if len(features.descriptors) == 0:
                return np.zeros(0, np.uint32)
            return self._assigner.assign(features.descriptors).astype(np.uint32)
        return self.vocabulary_.assign(features.descriptors).astype(np.uint32)

    def fit_corpus(self, reduced: Sequence[NDArray[np.uint32]]) -> BoVWEmbedder:
        if self.idf and self.idf_ is None:
            tf = bovw.term_frequencies(list(reduced), self.n_words)
            df = bovw.document_frequencies(tf)
            warning = bovw.vocabulary_warning(df, tf.shape[0])
            if warning:
                logger.warning("%s: %s", self.spec()["name"], warning)
            self.idf_ = bovw.idf_weights(df, tf.shape[0]).astype(np.float32)
        return self

    def encode_sparse(self, reduced: Sequence[NDArray[np.uint32]]) -> Any:
        """TF-IDF vectors as a ``(n, n_words)`` scipy.sparse CSR float32 matrix, L2-normalised."""
        tf = bovw.term_frequencies(list(reduced), self.n_words, sublinear=self.sublinear)
        if self.power is not None:
            tf.data = np.power(tf.data, float(self.power)).astype(tf.data.dtype)
        weights = self.idf_ if self.idf else np.ones(self.n_words, np.float32)
        if weights is None:
            raise NotFittedError(
                f"{self!r} has no idf weights yet: call fit_corpus (or build a Retriever with it) "
                "before encoding"
            )
        return bovw.tfidf(tf, weights, normalize=True)

    def encode(self, reduced: Sequence[NDArray[np.uint32]]) -> NDArray[np.float32]:
        return bovw.to_dense(self.encode_sparse(reduced))

    def _save_state(self, directory: Path) -> None:
        self._save_vocabulary(directory)
        if self.idf_ is not None:
            np.save(directory / "idf.npy", self.idf_)

    def _load_state(self, directory: Path) -> None:
        self._load_vocabulary(directory)
        if self.idf:
            idf = load_npy(directory, "idf.npy")
            if idf.shape != (self.n_words,):
                raise BundleError(
                    f"{directory / 'idf.npy'} has shape {idf.shape}, expected ({self.n_words},)"
                )
            self.idf_ = idf.astype(np.float32)
