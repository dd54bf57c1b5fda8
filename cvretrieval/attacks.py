"""Image attacks for copy-detection benchmarks (INRIA Copydays style).

An *attack* is a pure function ``attack(image, rng) -> image`` on an RGB uint8
array with an explicit :class:`numpy.random.Generator`; the same generator
state always gives the same output. :func:`cvretrieval.copies.make_copies`
applies them to build a benchmark folder.

References
----------
.. [1] M. Douze, H. Jégou, H. Sandhawalia, L. Amsaleg, C. Schmid. "Evaluation
       of GIST descriptors for web-scale image search", CIVR 2009 (Copydays).
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
from numpy.typing import NDArray

__all__ = [
    "ATTACKS",
    "apply_attack",
    "attack_crop",
    "attack_downscale",
    "attack_jpeg",
    "attack_perspective",
    "attack_photometric",
    "attack_rotate",
]

Image = NDArray[np.uint8]

# --------------------------------------------------------------------------- attacks


def _check_rgb(image: np.ndarray, what: str) -> None:
    if not (
        isinstance(image, np.ndarray)
        and image.dtype == np.uint8
        and image.ndim == 3
        and image.shape[2] == 3
    ):
        desc = (
            f"{image.dtype} array of shape {image.shape}"
            if isinstance(image, np.ndarray)
            else type(image).__name__
        )
        raise ValueError(
            f"{what} needs an RGB uint8 (H, W, 3) array, got {desc}; "
            "use cvretrieval.io.read_image to get one"
        )
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise ValueError(f"{what} needs an image of at least 2x2 pixels, got shape {image.shape}")


def _check_range(
    value: tuple[float, float], name: str, lo: float, hi: float
) -> tuple[float, float]:
    a, b = float(value[0]), float(value[1])
    if not (lo <= a <= b <= hi):
        raise ValueError(
            f"{name} must be a range (low, high) with {lo} <= low <= high <= {hi}, got {value!r}"
        )
    return a, b


def attack_crop(
    image: Image, rng: np.random.Generator, *, keep: tuple[float, float] = (0.5, 0.8)
) -> Image:
    """Keep a random window whose area is a random fraction of the image.

    Parameters
    ----------
    image : (H, W, 3) ndarray of uint8
        RGB image.
    rng : numpy.random.Generator
        Source of randomness.
    keep : (low, high) tuple of float, optional
        The kept area fraction is drawn uniformly in this range, ``0 < low <=
        high <= 1``. The window has the image's aspect ratio (each side scaled
        by ``sqrt(fraction)``) and a uniformly random position.

    Returns
    -------
    copy : (h, w, 3) ndarray of uint8
        A view-free copy of the window, ``h * w ~= fraction * H * W``.
    """
    _check_rgb(image, "attack_crop")
    lo, hi = _check_range(keep, "keep", 1e-6, 1.0)
    h, w = image.shape[:2]
    side = float(np.sqrt(rng.uniform(lo, hi)))
    ch = int(np.clip(round(h * side), 1, h))
    cw = int(np.clip(round(w * side), 1, w))
    y0 = int(rng.integers(0, h - ch + 1))
    x0 = int(rng.integers(0, w - cw + 1))
    return image[y0 : y0 + ch, x0 : x0 + cw].copy()


def _inscribed_size(w: int, h: int, angle_rad: float) -> tuple[int, int]:
    """Largest axis-aligned rectangle inside a w x h rectangle rotated by angle."""
    sin_a, cos_a = abs(np.sin(angle_rad)), abs(np.cos(angle_rad))
    long_side, short_side = max(w, h), min(w, h)
    if short_side <= 2.0 * sin_a * cos_a * long_side or abs(sin_a - cos_a) < 1e-10:
        # half-constrained: two corners of the rectangle touch the longer side
        x = 0.5 * short_side
        if w >= h:
            wr, hr = x / sin_a, x / cos_a
        else:
            wr, hr = x / cos_a, x / sin_a
    else:
        cos_2a = cos_a * cos_a - sin_a * sin_a
        wr = (w * cos_a - h * sin_a) / cos_2a
        hr = (h * cos_a - w * sin_a) / cos_2a
    return max(1, int(np.floor(wr))), max(1, int(np.floor(hr)))


def attack_rotate(
    image: Image,
    rng: np.random.Generator,
    *,
    max_angle: float = 25.0,
    min_angle: float | None = None,
) -> Image:
    """Rotate about the centre and crop to the largest valid (border-free) rectangle.

    Parameters
    ----------
    image : (H, W, 3) ndarray of uint8
        RGB image.
    rng : numpy.random.Generator
        Source of randomness.
    max_angle : float, optional
        The angle in degrees has a random sign and a magnitude drawn uniformly
        in ``[min_angle, max_angle]`` (so the copy is never a near no-op).
    min_angle : float or None, optional
        Smallest magnitude; ``None`` means ``max_angle / 5``.

    Returns
    -------
    copy : (h, w, 3) ndarray of uint8
        The rotated image cropped to the largest axis-aligned rectangle that
        holds only image pixels (no black corners), so ``h <= H`` and ``w <= W``.
    """
    _check_rgb(image, "attack_rotate")
    if not (0.0 < max_angle <= 90.0):
        raise ValueError(f"max_angle must be in (0, 90] degrees, got {max_angle!r}")
    lo = max_angle / 5.0 if min_angle is None else float(min_angle)
    if not 0.0 <= lo <= max_angle:
        raise ValueError(f"min_angle must be in [0, max_angle={max_angle}], got {min_angle!r}")
    h, w = image.shape[:2]
    angle = float(rng.uniform(lo, max_angle)) * (1.0 if rng.random() < 0.5 else -1.0)
    wr, hr = _inscribed_size(w, h, np.deg2rad(angle))
    matrix = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), angle, 1.0)
    matrix[0, 2] += wr / 2.0 - w / 2.0
    matrix[1, 2] += hr / 2.0 - h / 2.0
    out = cv2.warpAffine(
        image, matrix, (wr, hr), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
    )
    return np.asarray(out, dtype=np.uint8)


def attack_perspective(image: Image, rng: np.random.Generator, *, strength: float = 0.12) -> Image:
    """Warp a random quadrilateral inside the image onto the full frame.

    Each corner is moved inwards by a random fraction in ``[strength / 4,
    strength]`` of the width and of the height; the homography mapping that
    quadrilateral to the image rectangle is applied, so the copy has the
    input's size and no empty borders (a viewpoint change plus a slight zoom).

    Parameters
    ----------
    image : (H, W, 3) ndarray of uint8
        RGB image.
    rng : numpy.random.Generator
        Source of randomness.
    strength : float, optional
        Largest corner displacement as a fraction of the side, in ``(0, 0.5)``.

    Returns
    -------
    copy : (H, W, 3) ndarray of uint8
    """
    _check_rgb(image, "attack_perspective")
    if not (0.0 < strength < 0.5):
        raise ValueError(f"strength must be in (0, 0.5), got {strength!r}")
    h, w = image.shape[:2]
    frame = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float32)
    inward = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], np.float32)
    shift = rng.uniform(strength / 4.0, strength, size=(4, 2)) * np.array([w - 1, h - 1])
    quad = (frame + inward * shift.astype(np.float32)).astype(np.float32)
    homography = cv2.getPerspectiveTransform(quad, frame)
    out = cv2.warpPerspective(
        image, homography, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
    )
    return np.asarray(out, dtype=np.uint8)


def attack_photometric(image: Image, rng: np.random.Generator) -> Image:
    """Random gamma, contrast, brightness and per-channel colour gains.

    With ``x`` in [0, 1]: ``y = clip(gain_c * (contrast * (x ** gamma - 0.5) +
    0.5 + brightness))``, gamma in [0.6, 1.6], contrast in [0.6, 1.4],
    brightness in [-0.15, 0.15], gains in [0.85, 1.15] per channel; applied as
    a lookup table.

    Parameters
    ----------
    image : (H, W, 3) ndarray of uint8
        RGB image.
    rng : numpy.random.Generator
        Source of randomness.

    Returns
    -------
    copy : (H, W, 3) ndarray of uint8
    """
    _check_rgb(image, "attack_photometric")
    gamma = rng.uniform(0.6, 1.6)
    contrast = rng.uniform(0.6, 1.4)
    brightness = rng.uniform(-0.15, 0.15)
    gains = rng.uniform(0.85, 1.15, size=3)
    x = np.arange(256, dtype=np.float64) / 255.0
    base = contrast * (x**gamma - 0.5) + 0.5 + brightness
    lut = np.clip(np.rint(255.0 * base[:, None] * gains[None, :]), 0, 255).astype(np.uint8)
    return np.asarray(cv2.LUT(np.ascontiguousarray(image), lut.reshape(256, 1, 3)), np.uint8)


def attack_jpeg(
    image: Image, rng: np.random.Generator, *, quality: tuple[int, int] = (10, 30)
) -> Image:
    """Re-encode as a low-quality JPEG (OpenCV's libjpeg) and decode again.

    Parameters
    ----------
    image : (H, W, 3) ndarray of uint8
        RGB image.
    rng : numpy.random.Generator
        Source of randomness.
    quality : (low, high) tuple of int, optional
        The JPEG quality is drawn uniformly from ``low..high`` inclusive.

    Returns
    -------
    copy : (H, W, 3) ndarray of uint8
    """
    _check_rgb(image, "attack_jpeg")
    lo, hi = _check_range(quality, "quality", 1, 100)
    q = int(rng.integers(int(lo), int(hi) + 1))
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, q]
    )
    if not ok:  # pragma: no cover - OpenCV always encodes a valid uint8 image
        raise RuntimeError(f"OpenCV could not JPEG-encode an image of shape {image.shape}")
    decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if decoded is None:  # pragma: no cover - we just encoded it
        raise RuntimeError("OpenCV could not decode its own JPEG encoding")
    return np.asarray(cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB), dtype=np.uint8)


def attack_downscale(
    image: Image, rng: np.random.Generator, *, factor: tuple[float, float] = (0.45, 0.65)
) -> Image:
    """Shrink both sides by a random factor drawn uniformly in ``factor`` (area interpolation).

    Returns
    -------
    copy : (h, w, 3) ndarray of uint8
        ``h = max(1, round(H * f))``, ``w = max(1, round(W * f))``.
    """
    _check_rgb(image, "attack_downscale")
    lo, hi = _check_range(factor, "factor", 1e-3, 1.0)
    f = float(rng.uniform(lo, hi))
    h, w = image.shape[:2]
    size = (max(1, round(w * f)), max(1, round(h * f)))
    return np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA), np.uint8)


ATTACKS: dict[str, Callable[[Image, np.random.Generator], Image]] = {
    "crop": attack_crop,
    "rotate": attack_rotate,
    "perspective": attack_perspective,
    "photometric": attack_photometric,
    "jpeg": attack_jpeg,
    "downscale": attack_downscale,
}
"""The attacks by name, each with its default parameters."""


def apply_attack(image: Image, name: str, rng: np.random.Generator) -> Image:
    """Apply the attack called ``name`` (a key of :data:`ATTACKS`) with default parameters.

    Raises
    ------
    ValueError
        ``name`` is not a known attack; the message lists the valid names.
    """
    try:
        attack = ATTACKS[name]
    except KeyError:
        raise ValueError(
            f"unknown attack {name!r}; valid names are: {', '.join(sorted(ATTACKS))}"
        ) from None
    return attack(image, rng)
