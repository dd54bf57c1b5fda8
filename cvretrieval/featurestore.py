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
import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._json import atomic_write, check_format_version, read_json_manifest, write_json_atomic
from ._npyfile import GrowingNpy
from .errors import BundleError

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
