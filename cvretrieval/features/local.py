"""Local features: key points and descriptors from OpenCV detectors.

Every detector returns a :class:`LocalFeatures`; an image without key points gives
an empty result of the right shape, never ``None``.

References
----------
.. [1] Lowe, "Distinctive image features from scale-invariant keypoints", IJCV 2004 (SIFT).
.. [2] Rublee et al., "ORB: an efficient alternative to SIFT or SURF", ICCV 2011.
.. [3] Arandjelović & Zisserman, "Three things everyone should know to improve object
       retrieval", CVPR 2012 (RootSIFT).
.. [4] Alcantarilla et al., "Fast explicit diffusion for accelerated features in nonlinear
       scale spaces", BMVC 2013 (AKAZE).
.. [5] Leutenegger et al., "BRISK: Binary robust invariant scalable keypoints", ICCV 2011.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np
from numpy.typing import NDArray

logger = logging.getLogger(__name__)

#: detector name -> (descriptor width, binary?)
DETECTORS: dict[str, tuple[int, bool]] = {
    "sift": (128, False),
    "rootsift": (128, False),
    "orb": (32, True),
    "akaze": (61, True),
    "brisk": (64, True),
}

MIN_SIDE = {"sift": 1, "rootsift": 1, "orb": 2, "akaze": 2, "brisk": 6}
"""Smallest image side (pixels) each detector runs on; OpenCV asserts in ``resize`` below it."""


@dataclass(frozen=True)
class LocalFeatures:
    """Key points and their descriptors for one image.

    Attributes
    ----------
    keypoints : (N, 2) float32 ndarray
        ``x, y`` pixel coordinates in the image the features were extracted from.
    descriptors : (N, D) ndarray
        float32 for SIFT/RootSIFT, uint8 (packed bits) for ORB/AKAZE/BRISK.
    scales : (N,) float32 ndarray
        Key point diameters (OpenCV ``size``; 0 when the detector gives none).
    angles : (N,) float32 ndarray
        Key point orientations in degrees (-1 when undefined).
    image_shape : tuple of int
        ``(height, width)`` of the image the key points refer to.
    scores : (N,) float32 ndarray
        Detector confidence of each key point (OpenCV ``response``, a network's score);
        ones when not given.
    """

    keypoints: NDArray[np.float32]
    descriptors: NDArray[Any]
    scales: NDArray[np.float32]
    angles: NDArray[np.float32]
    image_shape: tuple[int, int]
    scores: NDArray[np.float32] = field(default=None)  # type: ignore[arg-type]

    def __post_init__(self) -> None:
        if self.scores is None:
            object.__setattr__(self, "scores", np.ones(len(self.keypoints), np.float32))

    def __len__(self) -> int:
        return int(self.keypoints.shape[0])

    @classmethod
    def empty(cls, dim: int, binary: bool, image_shape: tuple[int, int] = (0, 0)) -> LocalFeatures:
        """An empty result: ``(0, 2)`` key points and ``(0, dim)`` descriptors."""
        dtype = np.uint8 if binary else np.float32
        z = np.zeros(0, np.float32)
        return cls(np.zeros((0, 2), np.float32), np.zeros((0, dim), dtype), z, z.copy(),
                   image_shape, z.copy())


def save_features(path: str | os.PathLike[str], features: LocalFeatures) -> None:
    """Write ``features`` to an ``.npz`` file (no pickle), atomically (temporary + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    np.savez(
        tmp,
        keypoints=features.keypoints,
        descriptors=features.descriptors,
        scales=features.scales,
        angles=features.angles,
        scores=features.scores,
        image_shape=np.asarray(features.image_shape, np.int64),
    )
    os.replace(tmp, path)


def load_features(path: str | os.PathLike[str]) -> LocalFeatures:
    """Read what :func:`save_features` wrote."""
    with np.load(path, allow_pickle=False) as z:
        shape = tuple(int(v) for v in z["image_shape"])
        scores: Any = z["scores"] if "scores" in z.files else None  # older files have none
        return LocalFeatures(
            z["keypoints"], z["descriptors"], z["scales"], z["angles"], (shape[0], shape[1]),
            scores,
        )


def check_detector(name: str) -> str:
    """Return the normalised detector spec or raise a ``ValueError`` listing the valid ones.

    Accepts the built-in names, ``onnx:PATH`` and the names of installed plug-ins (see
    :mod:`cvretrieval.features.detectors`).
    """
    from .detectors import normalize_detector

    return normalize_detector(name)


def rootsift(descriptors: NDArray[np.float32], eps: float = 1e-7) -> NDArray[np.float32]:
    """RootSIFT: L1-normalise each SIFT descriptor, then take the element-wise square root.

    Parameters
    ----------
    descriptors : (N, 128) float32 ndarray

    Returns
    -------
    (N, 128) float32 ndarray
        Hellinger-mapped descriptors; each row has unit L2 norm (zero rows stay zero).

    Examples
    --------
    >>> import numpy as np
    >>> d = rootsift(np.array([[1.0, 3.0, 0.0]], np.float32))
    >>> np.round(d.astype(float), 3).tolist()
    [[0.5, 0.866, 0.0]]
    """
    d = np.asarray(descriptors, np.float32)
    l1 = np.abs(d).sum(axis=1, keepdims=True)
    return np.sqrt(d / np.maximum(l1, eps)).astype(np.float32)


class LocalFeatureExtractor:
    """A detector with fixed parameters, callable on an image; see
    :func:`~cvretrieval.features.detectors.make_detector` for the detectors.

    Parameters
    ----------
    detector : str, default 'sift'
        ``sift``, ``rootsift``, ``orb``, ``akaze``, ``brisk``, ``onnx:PATH`` or a plug-in
        of the entry-point group ``cvretrieval.detectors``.
    n_features : int, default 1000
        Maximum number of key points kept (the strongest).
    options : dict, optional
        Detector options (ONNX input/output settings, a plug-in's keyword arguments).

    Examples
    --------
    >>> import numpy as np
    >>> extractor = LocalFeatureExtractor("orb", n_features=50)
    >>> feats = extractor(np.zeros((64, 64), np.uint8))   # a flat image has no key points
    >>> feats.descriptors.shape
    (0, 32)
    """

    def __init__(
        self, detector: str = "sift", n_features: int = 1000, options: dict[str, Any] | None = None
    ) -> None:
        self.detector = check_detector(detector)
        if int(n_features) < 1:
            raise ValueError(f"n_features must be a positive integer, got {n_features}")
        self.n_features = int(n_features)
        self.options = dict(options) if options else None
        self._impl: Any = None

    @property
    def impl(self) -> Any:
        """The :class:`~cvretrieval.features.detectors.LocalFeatureDetector`, built on first use."""
        if self._impl is None:
            from .detectors import make_detector

            self._impl = make_detector(self.detector, self.n_features, self.options)
        return self._impl

    @property
    def dim(self) -> int:
        if self.detector in DETECTORS:
            return DETECTORS[self.detector][0]
        return int(self.impl.descriptor_dim)

    @property
    def binary(self) -> bool:
        if self.detector in DETECTORS:
            return DETECTORS[self.detector][1]
        return bool(self.impl.binary)

    @property
    def grayscale_input(self) -> bool:
        """Whether the detector only looks at the gray image (the OpenCV ones do; a
        plug-in says so with its own ``grayscale_input``)."""
        if self.detector in DETECTORS:
            return True
        return bool(getattr(self.impl, "grayscale_input", False))

    def __getstate__(self) -> dict[str, Any]:  # sessions and OpenCV objects are rebuilt lazily
        return {**self.__dict__, "_impl": None}

    def __call__(self, image: NDArray[np.uint8]) -> LocalFeatures:
        return self.extract(image)

    def extract(self, image: NDArray[np.uint8]) -> LocalFeatures:
        """Detect and describe key points of an ``(H, W)`` or ``(H, W, 3)`` uint8 image.

        An image smaller than the detector can handle (:data:`MIN_SIDE`) is a one-line
        ValueError saying so, not an OpenCV assertion.
        """
        h, w = int(image.shape[0]), int(image.shape[1])
        need = MIN_SIDE.get(str(self.detector), 1)
        if min(h, w) < need:
            raise ValueError(
                f"the image is {w}x{h} pixels, too small for {str(self.detector).upper()}, which "
                f"needs at least {need} pixels on each side (after any box crop and "
                "downscaling); give a larger image or box"
            )
        return self.impl.detect(image)


def extract_local_features(
    image: NDArray[np.uint8], detector: str = "sift", n_features: int = 1000
) -> LocalFeatures:
    """Function form of :class:`LocalFeatureExtractor` (builds the detector each call)."""
    return LocalFeatureExtractor(detector, n_features).extract(image)


def to_gray(image: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """RGB/RGBA/gray uint8 -> (H, W) uint8."""
    img = np.asarray(image)
    if img.dtype != np.uint8:
        raise TypeError(
            f"expected a uint8 image, got dtype {img.dtype}; decode with cvretrieval.io.read_image"
        )
    if img.ndim == 2:
        return img
    if img.ndim == 3 and img.shape[2] == 3:  # cvtColor keeps the uint8 dtype
        return cast(NDArray[np.uint8], cv2.cvtColor(img, cv2.COLOR_RGB2GRAY))
    if img.ndim == 3 and img.shape[2] == 4:
        return cast(NDArray[np.uint8], cv2.cvtColor(img, cv2.COLOR_RGBA2GRAY))
    if img.ndim == 3 and img.shape[2] == 1:
        return img[:, :, 0]
    raise ValueError(f"expected an image of shape (H, W) or (H, W, 3), got {img.shape}")
