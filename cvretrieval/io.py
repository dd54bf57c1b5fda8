"""Decoding images into numpy arrays and listing image files.

Every image in cvretrieval is a C-contiguous ``numpy.uint8`` array, either RGB
``(H, W, 3)`` or grayscale ``(H, W)``. This module is the only place that turns
files, bytes or foreign arrays into that form.

Decoding uses Pillow, because Pillow notices truncated files: a JPEG or PNG cut
short raises :class:`~cvretrieval.errors.ImageReadError` instead of decoding as
grey fill. ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` is read, never changed.

Conversion rules (files and arrays alike)
-----------------------------------------
* Output shape depends only on ``grayscale``: ``(H, W)`` when true, else
  ``(H, W, 3)`` RGB (grey images are replicated into three channels).
* Transparency (RGBA, LA, palette with a transparent colour, arrays with four
  channels) is composited on a **white** background, so transparent regions
  look like paper rather than black.
* High bit depth (16-bit PNG/TIFF, 32-bit integer, float) is mapped to 8 bits
  by :func:`to_uint8`: values already within 0..255 (0..1 for floats) keep
  their scale, larger ranges are scaled by the image's actual maximum.
* CMYK, YCbCr, LAB, HSV and 1-bit images are converted by Pillow.
* Multi-frame files (GIF, TIFF): the first frame.
* EXIF orientation is applied, so arrays are upright as a viewer shows them.
* Arrays are assumed to be RGB(A) channel order, not OpenCV's BGR.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable
from io import BytesIO
from pathlib import Path
from typing import Union

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps

from cvretrieval.errors import ImageReadError

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageSource",
    "list_images",
    "read_bytes_and_image",
    "read_image",
    "to_uint8",
]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".tif",
    ".tiff",
    ".webp",
    ".ppm",
    ".pgm",
    ".pbm",
    ".gif",
)
"""File suffixes (lower case, with the dot) that :func:`list_images` treats as images."""

ImageSource = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, np.ndarray]
"""What :func:`read_image` accepts: a path, the encoded bytes of a file, or an array."""

Box = tuple[float, float, float, float]

_BYTES_NAME = "<bytes>"
_ARRAY_NAME = "<array>"


# --------------------------------------------------------------------------- public API


def read_image(
    source: ImageSource,
    *,
    max_side: int | None = 640,
    grayscale: bool = False,
    bbox: Box | None = None,
) -> NDArray[np.uint8]:
    """Decode an image file, encoded bytes or an array into a uint8 array.

    Parameters
    ----------
    source : str, os.PathLike, bytes or ndarray
        A path to an image file (any unicode name), the encoded bytes of an
        image file, or an array ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` RGB or
        ``(H, W, 4)`` RGBA of any real dtype (converted by :func:`to_uint8`).
    max_side : int or None, optional
        Downscale (``cv2.INTER_AREA``, aspect ratio kept) so that the longer
        side is at most this many pixels. Images are never upscaled.
        ``None`` keeps the decoded size.
    grayscale : bool, optional
        Return a grayscale ``(H, W)`` array instead of RGB ``(H, W, 3)``.
    bbox : (x0, y0, x1, y1) tuple of float, optional
        Crop to this box, in pixel coordinates of the full-resolution,
        orientation-corrected image (``x1``, ``y1`` exclusive), before any
        downscaling. The box is clipped to the image; fractional edges are
        widened outwards to whole pixels.

    Returns
    -------
    image : (H, W, 3) or (H, W) ndarray of uint8
        C-contiguous; RGB channel order; never shares memory with an input array.

    Raises
    ------
    ImageReadError
        The file is missing, empty, a directory, not an image, or truncated.
        The message names the file (``<bytes>`` for bytes input).
    ValueError
        ``bbox`` is empty after clipping to the image, or ``max_side`` is not
        a positive integer.

    Examples
    --------
    >>> import numpy as np
    >>> rgb = read_image(np.zeros((100, 400), np.uint8), max_side=200)
    >>> rgb.shape, rgb.dtype
    ((50, 200, 3), dtype('uint8'))
    >>> read_image(np.zeros((100, 400), np.uint8), grayscale=True, bbox=(10, 0, 30, 5)).shape
    (5, 20)
    """
    _check_max_side(max_side)
    if isinstance(source, np.ndarray):
        image = _array_to_uint8_image(source, grayscale=grayscale)
        out = _finish(image, name=_ARRAY_NAME, max_side=max_side, bbox=bbox)
        return out.copy() if np.shares_memory(out, source) else out  # never alias the input
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _decode(
            bytes(source), _BYTES_NAME, max_side=max_side, grayscale=grayscale, bbox=bbox
        )
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        data = _read_file(path)
        return _decode(data, str(path), max_side=max_side, grayscale=grayscale, bbox=bbox)
    raise TypeError(
        f"cannot read image from a {type(source).__name__}: pass a path (str or Path), "
        "the file's bytes, or a numpy array"
    )


def read_bytes_and_image(
    path: str | os.PathLike[str],
    *,
    max_side: int | None = 640,
    grayscale: bool = False,
) -> tuple[str, int, NDArray[np.uint8]]:
    """Read a file once and return its content hash, its size and the decoded image.

    Parameters
    ----------
    path : str or os.PathLike
        The image file.
    max_side, grayscale
        As in :func:`read_image`.

    Returns
    -------
    sha1 : str
        Hex SHA-1 digest (40 characters) of the file's bytes.
    n_bytes : int
        File size in bytes.
    image : (H, W, 3) or (H, W) ndarray of uint8
        As returned by :func:`read_image`.

    Raises
    ------
    ImageReadError
        As in :func:`read_image`.
    """
    _check_max_side(max_side)
    path = Path(path)
    data = _read_file(path)
    image = _decode(data, str(path), max_side=max_side, grayscale=grayscale, bbox=None)
    return hashlib.sha1(data).hexdigest(), len(data), image


def list_images(
    root: str | os.PathLike[str],
    *,
    recursive: bool = True,
    extensions: Iterable[str] = IMAGE_EXTENSIONS,
) -> list[Path]:
    """List the image files under a folder, in a deterministic order.

    Parameters
    ----------
    root : str or os.PathLike
        A folder, or a single file.
    recursive : bool, optional
        Descend into sub-folders.
    extensions : iterable of str, optional
        Suffixes that count as images, compared case-insensitively; a leading
        dot is optional (``"jpg"`` and ``".JPG"`` both work).

    Returns
    -------
    paths : list of pathlib.Path
        ``root / relative_path`` for every image file, sorted by the POSIX
        relative path string. Files and folders whose name starts with ``.``
        are skipped. When ``root`` is a file: ``[root]`` if it has an image
        suffix, else ``[]``.

    Raises
    ------
    FileNotFoundError
        ``root`` does not exist.
    """
    root = Path(root)
    suffixes = _normalise_extensions(extensions)
    if not root.exists():
        raise FileNotFoundError(
            f"cannot list images: {root} does not exist; pass an existing folder or image file"
        )
    if root.is_file():
        return [root] if root.suffix.lower() in suffixes else []

    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if recursive else []
        here = Path(dirpath)
        for name in filenames:
            if name.startswith(".") or Path(name).suffix.lower() not in suffixes:
                continue
            path = here / name
            if not path.is_file():
                continue
            found.append((path.relative_to(root).as_posix(), path))
    found.sort(key=lambda item: item[0])
    logger.debug("found %d image files under %s", len(found), root)
    return [path for _, path in found]


def to_uint8(array: NDArray[np.generic]) -> NDArray[np.uint8]:
    """Convert an array of any real dtype to uint8 intensities.

    Parameters
    ----------
    array : ndarray
        Any shape; bool, integer or floating dtype.

    Returns
    -------
    out : ndarray of uint8
        Same shape. ``uint8`` is returned unchanged; ``bool`` maps to 0/255.
        Other dtypes: negative values and NaN become 0; floats whose maximum
        is at most 1 are taken as 0..1 and multiplied by 255; values whose
        maximum is at most 255 are kept; larger ranges (16-bit, 32-bit) are
        scaled by the array's actual maximum, so that maximum becomes 255.

    Examples
    --------
    >>> to_uint8(np.array([0, 1000, 65535], np.uint16)).tolist()
    [0, 4, 255]
    >>> to_uint8(np.array([0.0, 0.5, 1.0])).tolist()
    [0, 128, 255]
    """
    array = np.asarray(array)
    if array.dtype == np.uint8:
        return array.astype(np.uint8, copy=False)
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * np.uint8(255)
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise TypeError(
            f"cannot convert an array of dtype {array.dtype} to an image; "
            "pass integer, float or bool pixel values"
        )
    values = np.nan_to_num(array.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    np.maximum(values, 0.0, out=values)
    peak = float(values.max()) if values.size else 0.0
    if np.issubdtype(array.dtype, np.floating) and peak <= 1.0:
        values *= 255.0
    elif peak > 255.0:
        values *= 255.0 / peak
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- internals


def _check_max_side(max_side: int | None) -> None:
    if max_side is None:
        return
    if isinstance(max_side, bool) or not isinstance(max_side, (int, np.integer)) or max_side < 1:
        raise ValueError(f"max_side must be a positive integer or None, got {max_side!r}")


def _normalise_extensions(extensions: Iterable[str]) -> frozenset[str]:
    if isinstance(extensions, str):
        extensions = [extensions]
    out = set()
    for ext in extensions:
        ext = ext.lower()
        out.add(ext if ext.startswith(".") else "." + ext)
    return frozenset(out)


def _read_file(path: Path) -> bytes:
    """The bytes of ``path``, or an ImageReadError that names it and says why."""
    if not path.exists():
        raise ImageReadError(f"cannot read image {path}: file does not exist")
    if path.is_dir():
        raise ImageReadError(f"cannot read image {path}: it is a directory, not an image file")
    if not path.is_file():  # a FIFO or a device: opening it could block or never end
        raise ImageReadError(f"cannot read image {path}: not a regular file; it is not opened")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ImageReadError(f"cannot read image {path}: {_one_line(err)}") from err
    if not data:
        raise ImageReadError(f"cannot read image {path}: file is empty (0 bytes)")
    return data


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _decode(
    data: bytes,
    name: str,
    *,
    max_side: int | None,
    grayscale: bool,
    bbox: Box | None,
) -> NDArray[np.uint8]:
    if not data:
        raise ImageReadError(f"cannot read image {name}: no data (0 bytes)")
    try:
        im = Image.open(BytesIO(data))
    except Image.UnidentifiedImageError as err:
        raise ImageReadError(
            f"cannot read image {name}: not a recognised image format ({len(data)} bytes)"
        ) from err
    except Exception as err:  # Pillow raises many types on malformed headers
        raise ImageReadError(
            f"cannot read image {name}: corrupt header ({_one_line(err)})"
        ) from err
    try:
        with im:
            if max_side is not None and bbox is None and im.format == "JPEG":
                _jpeg_draft(im, max_side=max_side, grayscale=grayscale)
            im.load()  # raises OSError on truncated data (LOAD_TRUNCATED_IMAGES is False)
            upright = ImageOps.exif_transpose(im)
            image = _pil_to_array(upright if upright is not None else im, grayscale=grayscale)
    except ImageReadError:
        raise
    except Exception as err:
        raise ImageReadError(
            f"cannot read image {name}: truncated or corrupt image data ({_one_line(err)})"
        ) from err
    return _finish(image, name=name, max_side=max_side, bbox=bbox)


def _jpeg_draft(im: Image.Image, *, max_side: int, grayscale: bool) -> None:
    """Let libjpeg decode at 1/2, 1/4 or 1/8 scale while the long side stays >= max_side."""
    w, h = im.size
    long_side = max(w, h)
    if long_side < 2 * max_side:
        return
    ratio = max_side / long_side
    request = (max(1, int(np.ceil(w * ratio))), max(1, int(np.ceil(h * ratio))))
    mode = "L" if grayscale and im.mode in ("RGB", "L") else None
    before = im.size
    im.draft(mode, request)
    logger.debug("JPEG draft decode %s -> %s", before, im.size)


def _composite_on_white(rgb: NDArray[np.uint8], alpha: NDArray[np.uint8]) -> NDArray[np.uint8]:
    a = alpha.astype(np.float32)[..., None] / 255.0
    out = rgb.astype(np.float32) * a + 255.0 * (1.0 - a)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _pil_to_array(im: Image.Image, *, grayscale: bool) -> NDArray[np.uint8]:
    """An RGB (H, W, 3) or gray (H, W) uint8 array from any Pillow mode."""
    mode = im.mode
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode == "PA":
        im = im.convert("RGBA")
    elif mode == "1":
        im = im.convert("L")
    elif mode in ("I", "F") or mode.startswith("I;"):
        gray = to_uint8(np.asarray(im))
        return gray if grayscale else np.repeat(gray[..., None], 3, axis=2)
    elif mode in ("La",):
        im = im.convert("LA")
    elif mode == "RGBa":
        im = im.convert("RGBA")
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        im = im.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGBX, ...

    arr = np.asarray(im)
    if im.mode == "LA":
        gray = _composite_on_white(arr[..., :1], arr[..., 1])[..., 0]
        return gray if grayscale else np.repeat(gray[..., None], 3, axis=2)
    if im.mode == "RGBA":
        arr = _composite_on_white(arr[..., :3], arr[..., 3])
    if arr.ndim == 2:
        return arr if grayscale else np.repeat(arr[..., None], 3, axis=2)
    return _rgb_to_gray(arr) if grayscale else arr


def _array_to_uint8_image(array: np.ndarray, *, grayscale: bool) -> NDArray[np.uint8]:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise ImageReadError(
            f"cannot read image {_ARRAY_NAME}: shape {array.shape} is not an image; "
            "pass (H, W) gray, (H, W, 3) RGB or (H, W, 4) RGBA"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageReadError(f"cannot read image {_ARRAY_NAME}: shape {array.shape} is empty")
    image = to_uint8(array)
    if image.ndim == 3 and image.shape[2] == 4:
        image = _composite_on_white(image[..., :3], image[..., 3])
    if image.ndim == 2:
        return image if grayscale else np.repeat(image[..., None], 3, axis=2)
    return _rgb_to_gray(image) if grayscale else image


def _rgb_to_gray(rgb: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """ITU-R BT.601 luma of an RGB uint8 image (OpenCV), shape (H, W)."""
    return np.asarray(cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY), dtype=np.uint8)


def _crop(image: NDArray[np.uint8], bbox: Box, *, name: str) -> NDArray[np.uint8]:
    h, w = image.shape[:2]
    try:
        x0, y0, x1, y1 = (float(v) for v in bbox)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"bbox must be four numbers (x0, y0, x1, y1), got {bbox!r} for image {name}"
        ) from err
    if not all(np.isfinite(v) for v in (x0, y0, x1, y1)):
        raise ValueError(f"bbox {bbox!r} has a non-finite value for image {name}")
    cx0 = int(np.clip(np.floor(x0), 0, w))
    cy0 = int(np.clip(np.floor(y0), 0, h))
    cx1 = int(np.clip(np.ceil(x1), 0, w))
    cy1 = int(np.clip(np.ceil(y1), 0, h))
    if cx1 <= cx0 or cy1 <= cy0:
        raise ValueError(
            f"bbox {tuple(bbox)!r} is empty after clipping to image {name} of size "
            f"{w}x{h} (width x height); give (x0, y0, x1, y1) with x0 < x1 and y0 < y1 "
            "overlapping the image"
        )
    return image[cy0:cy1, cx0:cx1]


def _finish(
    image: NDArray[np.uint8], *, name: str, max_side: int | None, bbox: Box | None
) -> NDArray[np.uint8]:
    if bbox is not None:
        image = _crop(image, bbox, name=name)
    if max_side is not None:
        h, w = image.shape[:2]
        long_side = max(h, w)
        if long_side > max_side:
            scale = max_side / long_side
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            if w >= h:
                size = (max_side, size[1])
            else:
                size = (size[0], max_side)
            image = np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA), np.uint8)
    return np.ascontiguousarray(image)
