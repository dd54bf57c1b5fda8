"""The ``Embedder`` contract: anything that turns images into one vector each.

An embedder works in stages so that a :class:`~cvretrieval.retriever.Retriever` can run
the expensive per-image work in parallel worker processes and keep only compact
results in memory:

1. ``extract(image)``   per image, needs no fitted state (key points, a HOG vector, ...);
2. ``fit(samples)``     learns what must be learned from a sample of extracted features
                        (a visual vocabulary); a no-op for embedders with nothing to learn;
3. ``reduce(features)`` per image, with the fitted state, to something compact (word ids);
4. ``fit_corpus(reduced)`` statistics over the whole indexed corpus (idf weights);
5. ``encode(reduced)``  ``(n, dim)`` float32 vectors, ready for the index.

``embed(images)`` runs the whole chain for query images. Parameters are explicit
keyword arguments of ``__init__`` (no work there); learned state ends with ``_``;
``save``/``load`` write JSON plus ``.npy`` arrays, never pickle.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from .._json import read_json_manifest, write_json_atomic
from .._params import ParamsMixin
from ..errors import BundleError, NotFittedError

FORMAT_VERSION = 1


def l2_normalize(x: NDArray[np.floating], eps: float = 1e-12) -> NDArray[np.float32]:
    """Row-wise L2 normalisation; all-zero rows stay zero.

    Examples
    --------
    >>> l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]])).tolist()
    [[0.6000000238418579, 0.800000011920929], [0.0, 0.0]]
    """
    x = np.asarray(x, np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, eps), dtype=np.float32)


class Embedder(ParamsMixin):
    """Base class of every embedder; see the module docstring for the stages."""

    #: registry name, e.g. ``"hog"`` or ``"bovw"``
    name: ClassVar[str] = ""

    # --- declared capabilities (read these; never probe with hasattr) --------------------
    #: ``encode_sparse(reduced)`` exists and returns a scipy.sparse CSR matrix that a sparse
    #: inverted file can index (BoVW)
    sparse_output: ClassVar[bool] = False
    #: ``extract`` returns :class:`~cvretrieval.features.local.LocalFeatures` (key points,
    #: descriptors) that spatial verification can use directly
    local_features: ClassVar[bool] = False
    #: ``extract`` only looks at a grayscale version of the image, so the pipeline decodes
    #: files as grayscale ``(H, W)`` uint8 (a JPEG's luma plane alone: a third less
    #: decoding, no colour conversion)
    grayscale_input: ClassVar[bool] = False
    #: ``keypoint_words(features)`` gives each key point's visual word, so spatial
    #: verification can pair key points by word (ASMK); BoVW's reduced result is its words
    keypoint_word_output: ClassVar[bool] = False

    # --- parameters -------------------------------------------------------------------
    def spec(self) -> dict[str, Any]:
        """``{"name": ..., "params": {...}}``: enough to rebuild an unfitted copy."""
        return {"name": self.name, "params": self.get_params()}

    # --- stages -----------------------------------------------------------------------
    @property
    def needs_fit(self) -> bool:
        """True when ``fit`` must run before ``reduce`` (e.g. no vocabulary yet)."""
        return False

    @property
    def is_fitted(self) -> bool:
        return not self.needs_fit

    def n_fit_images(self, n_total: int) -> int:
        """How many images ``fit`` wants to see out of ``n_total`` (a random sample)."""
        return n_total

    @property
    def extract_cache_key(self) -> str | None:
        """A name for what ``extract`` computes when it is worth caching on disk and
        shareable between embedders (e.g. ``"sift-n1000"``), else ``None``."""
        return None

    def extract(self, image: NDArray[np.uint8]) -> Any:
        raise NotImplementedError

    def extract_batch(self, images: Sequence[NDArray[np.uint8]]) -> list[Any]:
        """Extract several images; adapters with batched inference override this."""
        return [self.extract(im) for im in images]

    def fit(self, samples: Sequence[Any]) -> Embedder:
        return self

    def reduce(self, features: Any) -> Any:
        return features

    def fit_corpus(self, reduced: Sequence[Any]) -> Embedder:
        return self

    def encode(self, reduced: Sequence[Any]) -> NDArray[np.float32]:
        raise NotImplementedError

    @property
    def dim(self) -> int:
        raise NotImplementedError

    def embed(self, images: Sequence[NDArray[np.uint8]]) -> NDArray[np.float32]:
        """Vectors of decoded images, ``(len(images), dim)`` float32."""
        self._check_fitted()
        return self.encode([self.reduce(f) for f in self.extract_batch(list(images))])

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(
                f"{self!r} is not fitted: build a Retriever with it (or call fit) before embedding"
            )

    # --- persistence ------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        """Write ``embedder.json`` (name, params) and the fitted arrays into ``directory``."""
        self._check_fitted()
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self._save_state(d)
        meta = {"format_version": FORMAT_VERSION, **self.spec(), "dim": self.dim}
        write_json_atomic(d / "embedder.json", meta, default=str)

    def _save_state(self, directory: Path) -> None:
        """Write fitted arrays (``.npy``); nothing for stateless embedders."""

    def _load_state(self, directory: Path) -> None:
        """Read what ``_save_state`` wrote."""


def read_embedder_meta(directory: str | Path) -> dict[str, Any]:
    """Read and check ``embedder.json``; raise :class:`BundleError` when it is unusable."""
    path = Path(directory) / "embedder.json"
    meta = read_json_manifest(
        path,
        format_version=FORMAT_VERSION,
        missing="the folder holds no saved embedder",
        hint="rebuild it with this version",
    )
    if not isinstance(meta.get("name"), str) or not isinstance(meta.get("params"), dict):
        raise BundleError(f"{path} lacks the embedder's name or params")
    return meta


def load_npy(directory: Path, name: str) -> NDArray[Any]:
    """Load one saved array without pickle; a clear error when it is missing or corrupt."""
    path = directory / name
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise BundleError(f"{path} is missing: the saved embedder is incomplete") from None
    except (OSError, ValueError) as exc:
        raise BundleError(f"{path} cannot be read ({exc})") from None
