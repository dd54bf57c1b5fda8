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

Only regular files are ever opened (see :mod:`cvretrieval._files`): a FIFO, socket
or device raises ImageReadError at once instead of blocking. Every error is one
line that names the file and says what to do.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Iterable
from io import BytesIO
from pathlib import Path
from typing import Union

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps

from cvretrieval import _files
from cvretrieval._jpeg import decode_jpeg
from cvretrieval._pixels import array_to_image, pil_to_array, to_uint8
from cvretrieval.errors import ImageReadError

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageSource",
    "list_images",
    "read_bytes_and_image",
    "read_image",
    "scan_images",
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
    max_pixels: int | None = None,
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
    max_pixels : int, optional
        Refuse files whose header declares more pixels than this, before decoding
        them (arrays are not checked). Pillow's own limit against decompression
        bombs (``2 * PIL.Image.MAX_IMAGE_PIXELS``) always applies.

    Returns
    -------
    image : (H, W, 3) or (H, W) ndarray of uint8
        C-contiguous; RGB channel order; never shares memory with an input array.

    Raises
    ------
    ImageReadError
        The file is missing, empty, not a regular file (a directory, a FIFO, a
        device; these are never opened for reading), not an image, truncated, or
        too large (``max_pixels``, or Pillow's decompression-bomb limit). The
        message is one line, names the file (``<bytes>`` for bytes input) and
        says what to do.
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
        image = array_to_image(source, grayscale=grayscale)
        out = _finish(image, name=_ARRAY_NAME, max_side=max_side, bbox=bbox)
        return out.copy() if np.shares_memory(out, source) else out  # never alias the input
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _decode(bytes(source), _BYTES_NAME, max_side=max_side, grayscale=grayscale,
                       bbox=bbox, max_pixels=max_pixels)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        data = _read_file(path)
        return _decode(data, _files.shown(path), max_side=max_side, grayscale=grayscale, bbox=bbox,
                       max_pixels=max_pixels)
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
    path = os.fspath(path)  # a str is all the read needs: no Path per image
    data = _read_file(path)
    image = _decode(data, _files.shown(path), max_side=max_side, grayscale=grayscale, bbox=None)
    return hashlib.sha1(data).hexdigest(), len(data), image


def scan_images(
    root: str | os.PathLike[str],
    *,
    recursive: bool = True,
    extensions: Iterable[str] = IMAGE_EXTENSIONS,
) -> tuple[list[Path], list[tuple[Path, str]]]:
    """List the image files under a folder, and the entries skipped with the reason.

    Returns ``(paths, skipped)``: ``paths`` as :func:`list_images` returns them;
    ``skipped`` a sorted list of ``(path, reason)`` (one line) for entries that look
    like images but cannot be read as files: broken links, link loops, FIFOs,
    sockets, devices, links to folders (never followed) and sub-folders that cannot
    be listed; ``root`` itself when it is one of those. Hidden names and files
    without an image suffix are ignored, not reported. A link to an image file is
    followed wherever it points (the path listed is the link's own); a folder named
    like an image (``x.jpg/``) is a folder. Raises FileNotFoundError when ``root``
    does not exist.
    """
    return _files.scan_images(root, recursive=recursive, extensions=extensions)


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
        Descend into sub-folders (links to folders are not followed).
    extensions : iterable of str, optional
        Suffixes that count as images, compared case-insensitively; a leading
        dot is optional (``"jpg"`` and ``".JPG"`` both work).

    Returns
    -------
    paths : list of pathlib.Path
        ``root / relative_path`` for every regular image file (links to files
        followed), sorted by the POSIX relative path string. Files and folders
        whose name starts with ``.`` are skipped. When ``root`` is a file:
        ``[root]`` if it has an image suffix, else ``[]``. :func:`scan_images`
        also says which entries were skipped and why.

    Raises
    ------
    FileNotFoundError
        ``root`` does not exist.
    """
    return _files.list_images(root, recursive=recursive, extensions=extensions)


# --------------------------------------------------------------------------- internals


def _check_max_side(max_side: int | None) -> None:
    if max_side is None:
        return
    if isinstance(max_side, bool) or not isinstance(max_side, (int, np.integer)) or max_side < 1:
        raise ValueError(f"max_side must be a positive integer or None, got {max_side!r}")


def _read_file(path: str | Path) -> bytes:
    """The bytes of regular file ``path``, or an ImageReadError that names it and says why."""
    try:
        data = _files.read_regular_file(path, what="an image file")
    except _files.FileProblem as err:
        raise ImageReadError(f"cannot read image {_files.shown(path)}: {err.reason}") from None
    if not data:
        raise ImageReadError(
            f"cannot read image {_files.shown(path)}: file is empty (0 bytes); "
            "copy or download it again"
        )
    return data


def _decode(
    data: bytes,
    name: str,
    *,
    max_side: int | None,
    grayscale: bool,
    bbox: Box | None,
    max_pixels: int | None = None,
) -> NDArray[np.uint8]:
    if not data:
        raise ImageReadError(f"cannot read image {name}: empty (0 bytes); give an image file")
    fast = decode_jpeg(data, max_side=max_side, grayscale=grayscale, draft=bbox is None,
                       max_pixels=max_pixels)
    if fast is not None:
        return _finish(fast, name=name, max_side=max_side, bbox=bbox)
    try:
        im = Image.open(BytesIO(data))
    except Image.UnidentifiedImageError as err:
        raise ImageReadError(
            f"cannot read image {name}: not a recognised image format ({len(data)} bytes); "
            "give a JPEG, PNG, TIFF, WebP, BMP, GIF or PNM file"
        ) from err
    except Exception as err:  # Pillow raises many types on malformed headers
        raise _decode_error(name, err, "corrupt header") from err
    try:
        with im:
            if max_pixels is not None and im.width * im.height > max_pixels:
                raise ImageReadError(
                    f"cannot read image {name}: too large ({im.width}x{im.height} = "
                    f"{im.width * im.height:,} pixels; the limit here is {max_pixels:,} pixels); "
                    "give a smaller image"
                )
            if max_side is not None and bbox is None and im.format == "JPEG":
                _jpeg_draft(im, max_side=max_side, grayscale=grayscale)
            im.load()  # raises OSError on truncated data (LOAD_TRUNCATED_IMAGES is False)
            upright = ImageOps.exif_transpose(im)
            image = pil_to_array(upright if upright is not None else im, grayscale=grayscale)
    except ImageReadError:
        raise
    except Exception as err:
        raise _decode_error(name, err, "truncated or corrupt image data") from err
    return _finish(image, name=name, max_side=max_side, bbox=bbox)


def _decode_error(name: str, err: Exception, what: str) -> ImageReadError:
    """The one-line error for an exception Pillow raised while opening or decoding."""
    if isinstance(err, Image.DecompressionBombError):
        limit = 2 * Image.MAX_IMAGE_PIXELS if Image.MAX_IMAGE_PIXELS else 0
        found = re.search(r"\((\d+) pixels\)", str(err))
        size = f"{int(found.group(1)):,} pixels, " if found else ""
        return ImageReadError(
            f"cannot read image {name}: too large ({size}more than Pillow's limit of "
            f"{limit:,} pixels against decompression bombs); if you trust the file, raise "
            "PIL.Image.MAX_IMAGE_PIXELS (half that limit) or downscale the file"
        )
    if isinstance(err, ValueError) and "too large" in str(err).lower():  # PNG text bombs
        return ImageReadError(f"cannot read image {name}: part of it is too large to decode "
                              f"safely ({_files.one_line(err)}); if you trust the file, raise "
                              "that Pillow limit or re-save the file without its metadata")
    if isinstance(err, MemoryError):
        return ImageReadError(f"cannot read image {name}: too large to decode in memory")
    if what.startswith("truncated"):
        return ImageReadError(f"cannot read image {name}: {what} ({_files.one_line(err)}); "
                              "the file is damaged or incomplete: copy or download it again")
    return ImageReadError(f"cannot read image {name}: {what} ({_files.one_line(err)}); the file "
                          "is damaged or not an image: replace it")


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


def _crop(image: NDArray[np.uint8], bbox: Box, *, name: str) -> NDArray[np.uint8]:
    h, w = image.shape[:2]
    shown_box = " ".join(repr(bbox).split())  # one line, bounded, whatever was passed
    shown_box = shown_box if len(shown_box) <= 80 else shown_box[:77] + "..."
    try:
        if isinstance(bbox, (str, bytes)):
            raise TypeError("a string is not a box")
        x0, y0, x1, y1 = (float(v) for v in bbox)
    except (TypeError, ValueError, OverflowError) as err:
        raise ValueError(
            f"bbox must be four numbers: give (x0, y0, x1, y1) in pixels, got {shown_box} "
            f"for image {name}"
        ) from err
    if not all(np.isfinite(v) for v in (x0, y0, x1, y1)):
        raise ValueError(f"bbox {shown_box} has a non-finite value for image {name}; give four "
                         "finite pixel coordinates (x0, y0, x1, y1)")
    cx0 = int(np.clip(np.floor(x0), 0, w))
    cy0 = int(np.clip(np.floor(y0), 0, h))
    cx1 = int(np.clip(np.ceil(x1), 0, w))
    cy1 = int(np.clip(np.ceil(y1), 0, h))
    if cx1 <= cx0 or cy1 <= cy0:
        raise ValueError(
            f"bbox ({x0:g}, {y0:g}, {x1:g}, {y1:g}) is empty after clipping to image {name} of "
            f"size {w}x{h} (width x height); give (x0, y0, x1, y1) with x0 < x1 and y0 < y1 "
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
