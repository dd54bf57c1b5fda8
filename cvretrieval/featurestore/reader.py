"""Reading a feature store (see :mod:`cvretrieval.featurestore`)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .._json import check_format_version, read_json_manifest
from ..errors import BundleError
from ._format import (
    _REBUILD_HINT,
    DESCRIPTORS_FILE,
    FORMAT_VERSION,
    KEYPOINTS_FILE,
    META_FILE,
    OFFSETS_FILE,
    WORDS_FILE,
)

logger = logging.getLogger("cvretrieval.featurestore")


class FeatureStore:
    """Read-only, memory-mapped access to a folder written by :class:`FeatureStoreWriter`.

    Use :meth:`open`; the constructor takes the already-loaded parts.

    Attributes
    ----------
    offsets : (n_images + 1,) int64 ndarray
    keypoints : (n_keypoints, 2) float16/float32 memmap
    descriptors : (n_keypoints, D) uint8/float16 memmap, or None
    words : (n_keypoints,) uint32 memmap, or None
    info : dict
        The content of ``featurestore.json``.
    """

    def __init__(
        self,
        directory: Path,
        info: dict[str, Any],
        offsets: NDArray[np.int64],
        keypoints: NDArray[Any],
        descriptors: NDArray[Any] | None,
        words: NDArray[np.uint32] | None,
    ) -> None:
        self.directory = directory
        self.info = info
        self.offsets = offsets
        self.keypoints = keypoints
        self.descriptors = descriptors
        self.words = words

    @classmethod
    def open(cls, directory: str | os.PathLike[str]) -> FeatureStore:
        """Map a store's files read-only and check that they agree.

        Raises
        ------
        BundleError
            Missing or unreadable files, a different format version, or arrays whose
            shapes disagree with ``featurestore.json`` (e.g. an interrupted write).
        """
        directory = Path(directory)

        def fail(what: str) -> BundleError:
            return BundleError(f"feature store {directory}: {what}; {_REBUILD_HINT}")

        meta_path = directory / META_FILE
        if not meta_path.is_file():
            raise fail(f"no {META_FILE} (not a feature store, or its writing was interrupted)")
        info = read_json_manifest(meta_path, hint=_REBUILD_HINT)
        if info.get("format") != "cvretrieval-featurestore":
            raise fail(f"{META_FILE} does not describe a cvretrieval feature store")
        check_format_version(info, meta_path, FORMAT_VERSION, hint=_REBUILD_HINT)
        n_images, n_kp = int(info["n_images"]), int(info["n_keypoints"])

        def load(name: str) -> NDArray[Any]:
            path = directory / name
            if not path.is_file():
                raise fail(f"{name} is missing")
            try:
                return np.load(path, mmap_mode="r" if n_kp else None, allow_pickle=False)
            except (OSError, ValueError, EOFError) as exc:
                raise fail(f"{name} cannot be read ({exc})") from None

        offsets = np.asarray(load(OFFSETS_FILE), np.int64)
        if (
            offsets.shape != (n_images + 1,)
            or offsets[0] != 0
            or offsets[-1] != n_kp
            or np.any(np.diff(offsets) < 0)
        ):
            raise fail(
                f"{OFFSETS_FILE} does not hold {n_images + 1} increasing offsets from 0 to {n_kp}"
            )
        keypoints = load(KEYPOINTS_FILE)
        if keypoints.shape != (n_kp, 2) or str(keypoints.dtype) != info["keypoint_dtype"]:
            raise fail(
                f"{KEYPOINTS_FILE} has shape {keypoints.shape} {keypoints.dtype}, "
                f"expected ({n_kp}, 2) {info['keypoint_dtype']}"
            )
        words = None
        if info.get("words"):
            words = load(WORDS_FILE)
            if words.shape != (n_kp,) or words.dtype != np.uint32:
                raise fail(
                    f"{WORDS_FILE} has shape {words.shape} {words.dtype}, expected ({n_kp},) uint32"
                )
        descriptors = None
        dinfo = info.get("descriptors", {})
        if dinfo.get("stored"):
            descriptors = load(DESCRIPTORS_FILE)
            dim = dinfo.get("dim") or 0
            if descriptors.shape != (n_kp, dim) or str(descriptors.dtype) != dinfo.get("dtype"):
                raise fail(
                    f"{DESCRIPTORS_FILE} has shape {descriptors.shape} "
                    f"{descriptors.dtype}, expected ({n_kp}, {dim}) {dinfo.get('dtype')}"
                )
        return cls(directory, info, offsets, keypoints, descriptors, words)

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return int(self.offsets.shape[0] - 1)

    def __repr__(self) -> str:
        return (
            f"FeatureStore({str(self.directory)!r}, n_images={len(self)}, "
            f"n_keypoints={self.n_keypoints}, words={self.has_words}, "
            f"descriptors={self.has_descriptors})"
        )

    @property
    def n_keypoints(self) -> int:
        return int(self.offsets[-1])

    @property
    def has_words(self) -> bool:
        return self.words is not None

    @property
    def has_descriptors(self) -> bool:
        return self.descriptors is not None

    @property
    def binary(self) -> bool | None:
        """True for binary descriptors (Hamming matching), None when unknown."""
        return self.info["descriptors"]["binary"]

    @property
    def meta(self) -> dict[str, Any]:
        return dict(self.info.get("meta", {}))

    def _span(self, i: int) -> tuple[int, int]:
        n = len(self)
        j = int(i)
        if not -n <= j < n:
            raise IndexError(f"image {i} is out of range: the store holds {n} images")
        j %= n
        return int(self.offsets[j]), int(self.offsets[j + 1])

    def n_keypoints_of(self, i: int) -> int:
        lo, hi = self._span(i)
        return hi - lo

    def get_keypoints(self, i: int) -> NDArray[np.float32]:
        """``(n, 2)`` float32 key points of image ``i``."""
        lo, hi = self._span(i)
        return np.asarray(self.keypoints[lo:hi], np.float32)

    def get_words(self, i: int) -> NDArray[np.uint32] | None:
        """``(n,)`` uint32 words of image ``i`` (sorted), or None when not stored."""
        if self.words is None:
            return None
        lo, hi = self._span(i)
        return np.asarray(self.words[lo:hi])

    def get_descriptors(self, i: int, *, raw: bool = False) -> NDArray[Any] | None:
        """Descriptors of image ``i``, or None when not stored.

        Binary descriptors come back as uint8; float ones as float32 (de-quantised:
        divided by the scale), or in their stored dtype with ``raw=True``.
        """
        if self.descriptors is None:
            return None
        lo, hi = self._span(i)
        d = np.asarray(self.descriptors[lo:hi])
        if raw or self.binary:
            return d
        out = d.astype(np.float32)
        scale = self.info["descriptors"].get("scale")
        if d.dtype == np.uint8 and scale:
            out /= np.float32(scale)
        return out

    def get(
        self, i: int
    ) -> tuple[NDArray[np.float32], NDArray[Any] | None, NDArray[np.uint32] | None]:
        """``(keypoints, descriptors, words)`` of image ``i``.

        Returns
        -------
        keypoints : (n, 2) float32 ndarray
        descriptors : (n, D) ndarray or None
            uint8 for binary descriptors, float32 otherwise; None when not stored.
        words : (n,) uint32 ndarray or None
            None when not stored. Rows are sorted by word when words are stored.
        """
        return self.get_keypoints(i), self.get_descriptors(i), self.get_words(i)

    # ------------------------------------------------------------------ size
    @property
    def nbytes(self) -> int:
        """Bytes of all arrays on disk (headers excluded)."""
        total = self.offsets.nbytes + self.keypoints.nbytes
        for a in (self.descriptors, self.words):
            if a is not None:
                total += a.nbytes
        return int(total)

    def stats(self) -> dict[str, Any]:
        """Sizes for reports: images, key points, bytes in total, per image and per key point."""
        n, k = len(self), self.n_keypoints
        return {
            "n_images": n,
            "n_keypoints": k,
            "mean_keypoints": k / n if n else 0.0,
            "bytes": self.nbytes,
            "bytes_per_image": self.nbytes / n if n else 0.0,
            "bytes_per_keypoint": (self.nbytes - self.offsets.nbytes) / k if k else 0.0,
        }
