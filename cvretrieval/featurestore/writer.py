"""Writing a feature store (see :mod:`cvretrieval.featurestore`)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .._json import atomic_write, write_json_atomic
from .._npyfile import GrowingNpy
from ._format import (
    _DESCRIPTOR_MODES,
    _FLOAT16_EXACT_BELOW,
    _FLOAT16_MAX,
    _KEYPOINT_DTYPES,
    DESCRIPTORS_FILE,
    FORMAT_VERSION,
    KEYPOINTS_FILE,
    META_FILE,
    OFFSETS_FILE,
    WORDS_FILE,
    strongest_indices,
)

logger = logging.getLogger("cvretrieval.featurestore")


class FeatureStoreWriter:
    """Stream the key points (and words / descriptors) of many images into a folder.

    Parameters
    ----------
    directory : path
        Created if needed. With ``mode="w"`` a store already there is replaced.
    mode : {"w", "a"}, default "w"
        ``"a"`` continues an existing store: its parameters are read from
        ``featurestore.json`` and the ones given here are ignored (``meta`` is merged).
    max_keypoints : int or None, default 1000
        At most this many key points per image, the strongest (see
        :func:`strongest_indices`); bounds the store's size.
    keypoint_dtype : {"float16", "float32"}, default "float16"
        float16 rounds positions by at most 0.25 px below 1024 px and 0.5 px below
        2048 px (plenty for a RANSAC threshold of several pixels); use float32 for
        images larger than 2048 px.
    descriptors : {"auto", "uint8", "float16", "none"}, default "auto"
        How descriptors are kept. ``"auto"`` and ``"uint8"``: binary descriptors as
        they are, float ones quantised to uint8 with ``descriptor_scale``.
        ``"float16"``: float descriptors as float16. ``"none"``: not stored (word
        matching needs only the words; the smallest store).
    descriptor_scale : float or None, default None
        Quantisation factor of float descriptors; ``None`` picks it from the first
        image: 255 if its values lie in [0, 1] (RootSIFT), 1 if in [0, 255]
        (OpenCV SIFT), else ``255 / max``. Later values are clipped to [0, 255].
    words : bool, default False
        Store a visual word per key point (pass them to :meth:`append`).
    meta : dict, optional
        JSON-serialisable information kept in ``featurestore.json`` (e.g. the
        detector and vocabulary).

    Examples
    --------
    >>> import tempfile
    >>> from cvretrieval.features.local import LocalFeatures
    >>> from cvretrieval.featurestore import FeatureStore
    >>> f = LocalFeatures(np.array([[10, 20], [30, 40]], np.float32),
    ...                   np.array([[1, 2], [3, 4]], np.uint8),
    ...                   np.ones(2, np.float32), np.zeros(2, np.float32), (64, 64))
    >>> d = tempfile.mkdtemp()
    >>> with FeatureStoreWriter(d, words=True) as w:
    ...     _ = w.append(f, words=np.array([7, 3]))
    >>> store = FeatureStore.open(d)
    >>> kp, desc, words = store.get(0)
    >>> words.tolist(), kp.tolist()       # rows sorted by word
    ([3, 7], [[30.0, 40.0], [10.0, 20.0]])
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        mode: str = "w",
        max_keypoints: int | None = 1000,
        keypoint_dtype: str = "float16",
        descriptors: str = "auto",
        descriptor_scale: float | None = None,
        words: bool = False,
        meta: dict[str, Any] | None = None,
    ) -> None:
        if mode not in ("w", "a"):
            raise ValueError(f"mode must be 'w' (new store) or 'a' (append), got {mode!r}")
        if keypoint_dtype not in _KEYPOINT_DTYPES:
            raise ValueError(
                f"keypoint_dtype must be one of {_KEYPOINT_DTYPES}, got {keypoint_dtype!r}"
            )
        if descriptors is None:
            descriptors = "none"
        if descriptors not in _DESCRIPTOR_MODES:
            raise ValueError(f"descriptors must be one of {_DESCRIPTOR_MODES}, got {descriptors!r}")
        if max_keypoints is not None and int(max_keypoints) < 1:
            raise ValueError(
                f"max_keypoints must be a positive integer or None, got {max_keypoints}"
            )
        if descriptor_scale is not None and not float(descriptor_scale) > 0:
            raise ValueError(f"descriptor_scale must be positive, got {descriptor_scale}")
        self.directory = Path(directory)
        self.mode = mode
        self.max_keypoints = None if max_keypoints is None else int(max_keypoints)
        self.keypoint_dtype = keypoint_dtype
        self.descriptors = descriptors
        self.descriptor_scale = None if descriptor_scale is None else float(descriptor_scale)
        self.words = bool(words)
        self.meta = dict(meta or {})
        self._closed = False
        self._warned_range = False
        self._warned_clip = False
        self._binary: bool | None = None  # descriptor kind, fixed by the first image
        self._dim: int | None = None
        self.directory.mkdir(parents=True, exist_ok=True)
        if mode == "a":
            self._resume()
        else:
            self._start()

    # ------------------------------------------------------------------ set-up
    def _start(self) -> None:
        meta_path = self.directory / META_FILE
        if meta_path.exists():
            meta_path.unlink()  # the old store is invalid from now on
        for name in (DESCRIPTORS_FILE, WORDS_FILE, OFFSETS_FILE):
            (self.directory / name).unlink(missing_ok=True)
        self._offsets: list[int] = [0]
        self._kp = GrowingNpy(self.directory / KEYPOINTS_FILE, np.dtype(self.keypoint_dtype), (2,))
        self._words = (
            GrowingNpy(self.directory / WORDS_FILE, np.dtype(np.uint32), ())
            if self.words
            else None
        )
        self._desc: GrowingNpy | None = None  # opened at the first image (dtype, width)
        self._n_images_at_start = 0

    def _resume(self) -> None:
        from .reader import FeatureStore

        store = FeatureStore.open(self.directory)
        doc = store.info
        self.max_keypoints = doc["max_keypoints"]
        self.keypoint_dtype = doc["keypoint_dtype"]
        self.descriptors = doc["descriptors"]["mode"]
        self.descriptor_scale = doc["descriptors"]["scale"]
        self.words = bool(doc["words"])
        self.meta = {**doc.get("meta", {}), **self.meta}
        self._binary = doc["descriptors"]["binary"]
        self._dim = doc["descriptors"]["dim"]
        self._offsets = [int(v) for v in store.offsets]
        n = self._offsets[-1]
        self._n_images_at_start = len(store)
        del store  # release the maps before reopening the files for writing
        self._kp = GrowingNpy(
            self.directory / KEYPOINTS_FILE,
            np.dtype(self.keypoint_dtype),
            (2,),
            rows=n,
            resume=True,
        )
        self._words = (
            GrowingNpy(self.directory / WORDS_FILE, np.dtype(np.uint32), (), rows=n, resume=True)
            if self.words
            else None
        )
        self._desc = None
        if self.descriptors != "none" and self._dim is not None:
            self._desc = GrowingNpy(
                self.directory / DESCRIPTORS_FILE,
                self._desc_dtype(),
                (self._dim,),
                rows=n,
                resume=True,
            )

    def _desc_dtype(self) -> np.dtype:
        if self._binary or self.descriptors in ("auto", "uint8"):
            return np.dtype(np.uint8)
        return np.dtype(np.float16)

    # ------------------------------------------------------------------ appending
    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __enter__(self) -> FeatureStoreWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"this FeatureStoreWriter on {self.directory} is closed")

    def _encode_descriptors(self, desc: NDArray[Any]) -> NDArray[Any]:
        if self._binary:
            return desc
        if self.descriptors == "float16":
            return desc.astype(np.float16)
        x = desc.astype(np.float32, copy=False)
        if self.descriptor_scale is None and x.size:
            top = float(x.max())
            self.descriptor_scale = (
                255.0 if top <= 1.0 + 1e-6 else (1.0 if top <= 255.0 + 1e-3 else 255.0 / top)
            )
            logger.debug("descriptor_scale set to %g from the first image", self.descriptor_scale)
        q = np.rint(x * (self.descriptor_scale or 1.0))
        if q.size and (q.min() < 0 or q.max() > 255) and not self._warned_clip:
            logger.warning(
                "descriptor values outside [0, %g] are clipped when quantised to uint8; "
                "pass descriptor_scale or descriptors='float16'",
                255.0 / (self.descriptor_scale or 1.0),
            )
            self._warned_clip = True
        return np.clip(q, 0, 255).astype(np.uint8)

    def _fix_descriptor_kind(self, desc: NDArray[Any]) -> None:
        binary = desc.dtype == np.uint8
        dim = int(desc.shape[1])
        if self._binary is None:
            self._binary, self._dim = binary, dim
            if not binary and self.descriptors == "auto" and desc.size and float(desc.min()) < 0:
                # signed descriptors (SuperPoint, DELF, ...) would lose their sign in uint8
                self.descriptors = "float16"
                logger.info("signed float descriptors: stored as float16")
            if binary and self.descriptors == "float16":
                logger.info(
                    "binary descriptors are stored as uint8 (float16 applies to float ones)"
                )
            if self.descriptors != "none":
                self._desc = GrowingNpy(
                    self.directory / DESCRIPTORS_FILE, self._desc_dtype(), (dim,)
                )
            return
        if binary != self._binary or dim != self._dim:
            kind = "binary (uint8)" if self._binary else "float"
            raise ValueError(
                f"descriptors of shape (n, {dim}) {desc.dtype} cannot join a store of {kind} "
                f"{self._dim}-d descriptors: one store holds one detector's features"
            )

    def append(
        self,
        features: Any,
        words: NDArray[np.integer] | None = None,
        *,
        strength: NDArray[np.floating] | None = None,
    ) -> int:
        """Add one image; returns its row (0-based, in append order).

        Parameters
        ----------
        features : LocalFeatures or None
            ``None`` (e.g. an unreadable image) adds an empty row, which keeps the
            store's rows aligned with a catalog.
        words : (N,) int array, optional
            Visual word of each key point; required when the store keeps words.
        strength : (N,) float array, optional
            Used to pick the strongest key points when there are more than
            ``max_keypoints`` (see :func:`strongest_indices`).

        Returns
        -------
        int
            The image's row in the store.
        """
        self._check_open()
        if features is None:
            self._offsets.append(self._offsets[-1])
            return len(self) - 1
        kp = np.asarray(features.keypoints, np.float32).reshape(-1, 2)
        desc = np.asarray(features.descriptors)
        n = kp.shape[0]
        if desc.ndim != 2 or desc.shape[0] != n:
            raise ValueError(
                f"{n} key points but descriptors of shape {desc.shape}: they must pair up"
            )
        self._fix_descriptor_kind(desc)
        w = None
        if self.words:
            if words is None:
                raise ValueError(
                    "this store keeps visual words: pass words=vocabulary.assign(descriptors)"
                )
            w = np.asarray(words).reshape(-1)
            if w.shape[0] != n:
                raise ValueError(f"{w.shape[0]} words for {n} key points")
            if n and (not np.issubdtype(w.dtype, np.integer) or w.min() < 0 or w.max() >= 2**32):
                raise ValueError("words must be non-negative integers below 2**32")
        elif words is not None:
            raise ValueError("this store was opened with words=False: words cannot be added")
        keep = strongest_indices(features, self.max_keypoints, strength)
        if w is not None:
            keep = keep[np.argsort(w[keep], kind="stable")]
        kp = kp[keep]
        if kp.size:
            top = float(np.abs(kp).max())
            if self.keypoint_dtype == "float16":
                if top > _FLOAT16_MAX:
                    raise ValueError(
                        f"key point coordinate {top:g} does not fit in float16: "
                        "use keypoint_dtype='float32'"
                    )
                if top >= _FLOAT16_EXACT_BELOW and not self._warned_range:
                    logger.warning(
                        "key points beyond %g px lose sub-pixel precision in float16; "
                        "use keypoint_dtype='float32' for large images",
                        _FLOAT16_EXACT_BELOW,
                    )
                    self._warned_range = True
        self._kp.write(kp)
        if self._words is not None and w is not None:
            self._words.write(w[keep].astype(np.uint32))
        if self._desc is not None:
            self._desc.write(self._encode_descriptors(desc[keep]))
        self._offsets.append(self._offsets[-1] + len(keep))
        return len(self) - 1

    # ------------------------------------------------------------------ closing
    def close(self) -> None:
        """Finish the files and write ``featurestore.json``; the folder then opens."""
        if self._closed:
            return
        if self.descriptors != "none" and self._desc is None:
            # no image ever had descriptors: write an empty (0, 0) array so the layout is fixed
            self._desc = GrowingNpy(self.directory / DESCRIPTORS_FILE, np.dtype(np.uint8), (0,))
        files = [self._kp, self._words, self._desc]
        for f in files:
            if f is not None:
                f.finish()
        offsets = np.asarray(self._offsets, np.int64)
        atomic_write(
            self.directory / OFFSETS_FILE, lambda f: np.save(f, offsets, allow_pickle=False)
        )
        n_images, n_kp = len(offsets) - 1, int(offsets[-1])
        doc = {
            "format": "cvretrieval-featurestore",
            "format_version": FORMAT_VERSION,
            "n_images": n_images,
            "n_keypoints": n_kp,
            "max_keypoints": self.max_keypoints,
            "keypoint_dtype": self.keypoint_dtype,
            "words": self.words,
            "descriptors": {
                "mode": self.descriptors,
                "stored": self.descriptors != "none",
                "binary": self._binary,
                "dim": self._dim,
                "dtype": None if self._desc is None else str(self._desc.dtype),
                "scale": self.descriptor_scale,
            },
            "meta": self.meta,
        }
        write_json_atomic(self.directory / META_FILE, doc)
        self._closed = True
        logger.info("feature store %s: %d images, %d key points", self.directory, n_images, n_kp)

    def abort(self) -> None:
        """Close the files without writing ``featurestore.json`` (an incomplete store)."""
        for f in (self._kp, self._words, self._desc):
            if f is not None:
                f.abort()
        self._closed = True


# --------------------------------------------------------------------------- reader
