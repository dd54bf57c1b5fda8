"""Preprocessing for networks: resize an image to a model's input and build the input batch.

Pure functions on numpy arrays, shared by every deep runtime (ONNX, TFLite, TorchScript)
and by the Siamese backbone's training loop.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from ..errors import ModelError
from .pooling import LAYOUTS

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_MODES = ("squash", "center-crop", "letterbox")
CHANNEL_ORDERS = ("rgb", "bgr")

logger = logging.getLogger(__name__)

__all__ = [
    "CHANNEL_ORDERS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "RESIZE_MODES",
    "as_hw",
    "as_rgb",
    "channel_triple",
    "format_shape",
    "guess_layout",
    "image_views",
    "input_geometry",
    "parse_views",
    "prepare_batch",
    "resize_image",
]


def parse_views(views: str | Sequence[str]) -> tuple[tuple[float, bool], ...]:
    """Parse the views of an image a network embeds (test-time augmentation).

    A view is ``full`` (the image), ``flip`` (mirrored left-right), ``cropF`` (the central
    part keeping the fraction ``0 < F < 1`` of each side) or ``cropF-flip``; several are
    given comma-separated or as a sequence.

    Returns
    -------
    tuple of (fraction, flipped)
        One per view, in order (fraction 1 for the whole image).

    Examples
    --------
    >>> parse_views("full,crop0.8")
    ((1.0, False), (0.8, False))
    >>> parse_views(["flip", "crop0.5-flip"])
    ((1.0, True), (0.5, True))
    """
    items = views.split(",") if isinstance(views, str) else list(views)
    out = []
    for item in items:
        v = str(item).strip().lower()
        flipped = v == "flip" or v.endswith("-flip")
        core = "full" if v == "flip" else v.removesuffix("-flip")
        if core == "full":
            fraction = 1.0
        else:
            try:
                fraction = float(core.removeprefix("crop")) if core.startswith("crop") else -1.0
            except ValueError:
                fraction = -1.0
            if not 0.0 < fraction < 1.0:
                raise ValueError(
                    f"unknown view {item!r}: write full, flip, cropF or cropF-flip (0 < F < 1)"
                )
        out.append((fraction, flipped))
    if not out:
        raise ValueError("views names no view: write e.g. full or full,crop0.8")
    return tuple(out)


def image_views(
    image: NDArray[Any], views: Sequence[tuple[float, bool]]
) -> list[NDArray[Any]]:
    """The views of one image parsed by :func:`parse_views` (contiguous arrays).

    A crop keeps ``round(F * side)`` pixels (at least 1) of each side, centred.

    Examples
    --------
    >>> img = np.arange(20).reshape(4, 5)
    >>> [v.tolist() for v in image_views(img, ((0.5, False), (1.0, True)))][0]
    [[6, 7], [11, 12]]
    >>> image_views(img, ((1.0, True),))[0][0].tolist()
    [4, 3, 2, 1, 0]
    """
    out = []
    h, w = image.shape[:2]
    for fraction, flipped in views:
        v = image
        if fraction < 1.0:
            ch, cw = max(1, int(round(h * fraction))), max(1, int(round(w * fraction)))
            top, left = (h - ch) // 2, (w - cw) // 2
            v = v[top : top + ch, left : left + cw]
        if flipped:
            v = v[:, ::-1]
        out.append(np.ascontiguousarray(v))
    return out


def as_hw(size: int | Sequence[int]) -> tuple[int, int]:
    """``(height, width)`` from an int or a pair; a ``ValueError`` for anything else."""
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        h = w = int(size)
    elif isinstance(size, Sequence) and len(size) == 2 and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in size
    ):
        h, w = int(size[0]), int(size[1])
    else:
        raise ValueError(f"input_size must be an int or a (height, width) pair, got {size!r}")
    if h < 1 or w < 1:
        raise ValueError(f"input_size must be positive, got {size!r}")
    return h, w


def _resize(image: NDArray[np.uint8], w: int, h: int) -> NDArray[np.uint8]:
    shrink = w <= image.shape[1] and h <= image.shape[0]
    interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    out = np.asarray(cv2.resize(image, (w, h), interpolation=interp), np.uint8)
    return out if out.ndim == image.ndim else out[..., None]


def resize_image(
    image: NDArray[np.uint8], size: int | Sequence[int], mode: str = "squash", pad_value: int = 0
) -> NDArray[np.uint8]:
    """Bring an image to ``size`` for a network.

    Parameters
    ----------
    image : (H, W, C) ndarray of uint8
    size : int or (height, width)
    mode : {'squash', 'center-crop', 'letterbox'}
        ``squash`` resizes to the size ignoring the aspect ratio; ``center-crop`` scales
        so the image covers the size (short side fits) and crops the centre;
        ``letterbox`` scales so the whole image fits and pads the rest with ``pad_value``.
        Shrinking uses area interpolation, enlarging bilinear.

    Returns
    -------
    (height, width, C) ndarray of uint8

    Examples
    --------
    >>> img = np.zeros((100, 200, 3), np.uint8); img[:, 50:150] = 255
    >>> int(resize_image(img, 50, "center-crop").min())
    255
    >>> box = resize_image(img, 50, "letterbox")
    >>> box.shape, int(box[:12].max()), int(box[13:37, 25].min())
    ((50, 50, 3), 0, 255)
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"unknown resize mode {mode!r}; choose one of {', '.join(RESIZE_MODES)}")
    th, tw = as_hw(size)
    h, w = image.shape[:2]
    if (h, w) == (th, tw):
        return image
    if mode == "squash":
        return _resize(image, tw, th)
    if mode == "center-crop":
        s = max(th / h, tw / w)
        nh, nw = max(th, round(h * s)), max(tw, round(w * s))
        scaled = _resize(image, nw, nh)
        y0, x0 = (nh - th) // 2, (nw - tw) // 2
        return np.ascontiguousarray(scaled[y0 : y0 + th, x0 : x0 + tw])
    s = min(th / h, tw / w)
    nh, nw = min(th, max(1, round(h * s))), min(tw, max(1, round(w * s)))
    scaled = _resize(image, nw, nh)
    out = np.full((th, tw, image.shape[2]), pad_value, np.uint8)
    y0, x0 = (th - nh) // 2, (tw - nw) // 2
    out[y0 : y0 + nh, x0 : x0 + nw] = scaled
    return out


def channel_triple(value: float | Sequence[float], name: str) -> NDArray[np.float32]:
    """One value per channel (3) from one number or three; ``name`` is for the error."""
    arr = np.atleast_1d(np.asarray(value, np.float32)).ravel()
    if arr.size == 1:
        arr = np.repeat(arr, 3)
    if arr.size != 3:
        raise ValueError(f"{name} must be one number or one per channel (3), got {value!r}")
    return arr


def prepare_batch(
    images: Sequence[NDArray[np.uint8]],
    size: int | Sequence[int],
    *,
    resize: str = "squash",
    channels: str = "rgb",
    layout: str = "nchw",
    mean: float | Sequence[float] | None = IMAGENET_MEAN,
    std: float | Sequence[float] | None = IMAGENET_STD,
    dtype: Any = np.float32,
    quantization: tuple[float, int] | None = None,
    n_channels: int = 3,
) -> NDArray[Any]:
    """Turn RGB uint8 images into one input batch for a network.

    Float inputs: pixels / 255, minus ``mean``, divided by ``std`` (per channel, in the
    order of ``channels``). Integer inputs: raw pixels when ``mean`` and ``std`` are
    ``None`` (``pixel - 128`` for int8); otherwise the normalised values are quantised with
    ``quantization = (scale, zero_point)``.

    Parameters
    ----------
    images : sequence of (H, W, 3) ndarray of uint8
        RGB images, any size.
    size : int or (height, width)
    resize : {'squash', 'center-crop', 'letterbox'}
    channels : {'rgb', 'bgr'}
    layout : {'nchw', 'nhwc'}
    mean, std : float, 3 floats or None
        In units of pixel / 255. ``None`` means no normalisation.
    dtype : numpy dtype
        The model's input dtype.
    quantization : (scale, zero_point), optional
        For integer inputs with ``mean``/``std``.
    n_channels : {3, 1}
        1 feeds the grey level (``channels`` is then irrelevant).

    Returns
    -------
    (N, C, H, W) or (N, H, W, C) ndarray of ``dtype``

    Examples
    --------
    >>> img = np.full((4, 4, 3), 255, np.uint8)
    >>> prepare_batch([img], 4, mean=0.5, std=0.5).shape
    (1, 3, 4, 4)
    >>> float(prepare_batch([img], 4, mean=0.5, std=0.5).max())
    1.0
    """
    dtype = np.dtype(dtype)
    if channels not in CHANNEL_ORDERS:
        raise ValueError(f"channels must be one of {', '.join(CHANNEL_ORDERS)}, got {channels!r}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    th, tw = as_hw(size)
    if len(images) == 0:
        shape = (0, n_channels, th, tw) if layout == "nchw" else (0, th, tw, n_channels)
        return np.zeros(shape, dtype)
    batch = np.stack([resize_image(as_rgb(im), (th, tw), resize) for im in images])
    if n_channels == 1:
        batch = np.stack([cv2.cvtColor(b, cv2.COLOR_RGB2GRAY) for b in batch])[..., None]
    elif channels == "bgr":
        batch = batch[..., ::-1]
    normalise = mean is not None or std is not None
    if dtype.kind in "iu" and not normalise:
        x: NDArray[Any] = batch.astype(np.int16) - 128 if dtype == np.int8 else batch
        x = x.astype(dtype)
    else:
        xf = batch.astype(np.float32) / 255.0
        if normalise:
            m = channel_triple(0.0 if mean is None else mean, "mean")[:n_channels]
            s = channel_triple(1.0 if std is None else std, "std")[:n_channels]
            if np.any(s == 0):
                raise ValueError(f"std must not contain 0, got {std!r}")
            if channels == "bgr" and n_channels == 3:
                m, s = m[::-1], s[::-1]
            xf = (xf - m) / s
        if dtype.kind in "iu":
            if quantization is None or not quantization[0]:
                raise ModelError(
                    f"the model takes {dtype} input without quantisation parameters: "
                    "pass mean=None and std=None to feed raw pixels"
                )
            scale, zero = quantization
            info = np.iinfo(dtype)
            x = np.clip(np.round(xf / scale + zero), info.min, info.max).astype(dtype)
        else:
            x = xf.astype(dtype)
    if layout == "nchw":
        x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x)


def as_rgb(image: NDArray[Any]) -> NDArray[np.uint8]:
    """An ``(H, W, 3)`` uint8 view of a grey, grey+1, RGB or RGBA uint8 image."""
    im = np.asarray(image)
    if im.dtype != np.uint8:
        raise ValueError(f"images must be uint8 RGB arrays, got dtype {im.dtype}")
    if im.ndim == 2:
        im = np.repeat(im[..., None], 3, axis=2)
    if im.ndim != 3 or im.shape[2] not in (1, 3, 4):
        raise ValueError(f"images must be (H, W, 3) RGB arrays, got shape {im.shape}")
    if im.shape[2] == 1:
        im = np.repeat(im, 3, axis=2)
    return im[..., :3]


def format_shape(shape: Sequence[int | None] | None) -> str:
    """``(1, 3, ?, ?)``: a tensor shape for messages, ``?`` for dynamic sizes."""
    if shape is None:
        return "(unknown)"
    return "(" + ", ".join("?" if v is None else str(v) for v in shape) + ")"


def guess_layout(shape: Sequence[int | None] | None, default: str) -> str:
    """``nchw`` or ``nhwc`` from a 4-d input shape (the axis of size 1 or 3), else ``default``."""
    if shape is None or len(shape) != 4:
        return default
    first, last = shape[1], shape[3]
    if last in (1, 3) and first not in (1, 3):
        return "nhwc"
    if first in (1, 3) and last not in (1, 3):
        return "nchw"
    return default


def input_geometry(
    shape: Sequence[int | None] | None, layout: str | None, input_size: Any,
    default_layout: str, path: str,
) -> tuple[str, int | None, tuple[int, int]]:
    """``(layout, channels, (height, width))`` of a model from its declared input ``shape``
    and the user's ``layout`` and ``input_size`` (``None``: from the shape); a
    :class:`ModelError` naming the fix when they disagree or the size is unknown."""
    if shape is not None and len(shape) != 4:
        raise ModelError(
            f"{path} takes input of shape {format_shape(shape)}; an image model takes a 4-d batch "
            "(N, C, H, W) or (N, H, W, C)"
        )
    layout = layout or guess_layout(shape, default_layout)
    if shape is not None:
        c_axis, hw_axes = (1, (2, 3)) if layout == "nchw" else (3, (1, 2))
        n_channels = shape[c_axis]
        if n_channels not in (None, 1, 3):
            raise ModelError(
                f"{path} takes input of shape {format_shape(shape)}: with layout {layout} that is "
                f"{n_channels} channels, not an RGB or grey image; pass layout="
                f"'{'nhwc' if layout == 'nchw' else 'nchw'}' if the layout is the other one"
            )
        static = tuple(shape[a] for a in hw_axes)
    else:
        n_channels, static = None, (None, None)
    if input_size is not None:
        size = as_hw(input_size)
        if all(v is not None for v in static) and tuple(static) != size:
            raise ModelError(
                f"input_size {input_size!r} disagrees with {path}, whose input is "
                f"fixed at {static[0]}x{static[1]}: drop input_size or pass {static[0]}"
            )
    elif all(v is not None for v in static):
        size = (int(static[0]), int(static[1]))  # type: ignore[arg-type]
    elif shape is None:
        size = (224, 224)
        logger.info("%s declares no input shape: using input_size 224", path)
    else:
        raise ModelError(
            f"{path} has a dynamic input size ({format_shape(shape)}): pass input_size (e.g. 224)"
        )
    return layout, n_channels, size
