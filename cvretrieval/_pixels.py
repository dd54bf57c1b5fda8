"""Pixel conversions behind :mod:`cvretrieval.io` (private; ``to_uint8`` is public there).

Any Pillow mode or array dtype becomes a uint8 RGB ``(H, W, 3)`` or gray ``(H, W)``
array; transparency is composited on white. See the conversion rules in
:mod:`cvretrieval.io`.
"""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image

from cvretrieval.errors import ImageReadError

_ARRAY_NAME = "<array>"


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


def _composite_on_white(rgb: NDArray[np.uint8], alpha: NDArray[np.uint8]) -> NDArray[np.uint8]:
    a = alpha.astype(np.float32)[..., None] / 255.0
    out = rgb.astype(np.float32) * a + 255.0 * (1.0 - a)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def pil_to_array(im: Image.Image, *, grayscale: bool) -> NDArray[np.uint8]:
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


def array_to_image(array: np.ndarray, *, grayscale: bool) -> NDArray[np.uint8]:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise ImageReadError(
            f"cannot read image {_ARRAY_NAME}: shape {array.shape} is not an image; "
            "pass (H, W) gray, (H, W, 3) RGB or (H, W, 4) RGBA"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageReadError(f"cannot read image {_ARRAY_NAME}: shape {array.shape} is empty; "
                             "give an array with at least one pixel")
    image = to_uint8(array)
    if image.ndim == 3 and image.shape[2] == 4:
        image = _composite_on_white(image[..., :3], image[..., 3])
    if image.ndim == 2:
        return image if grayscale else np.repeat(image[..., None], 3, axis=2)
    return _rgb_to_gray(image) if grayscale else image


def _rgb_to_gray(rgb: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """ITU-R BT.601 luma of an RGB uint8 image (OpenCV), shape (H, W)."""
    return np.asarray(cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY), dtype=np.uint8)
