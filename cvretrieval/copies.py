"""Copy-detection benchmarks in the style of INRIA Copydays: image attacks and a demo set.

An *attack* is a pure function ``attack(image, rng) -> image`` on an RGB uint8
array with an explicit :class:`numpy.random.Generator`; the same generator
state always gives the same output. :func:`make_copies` turns a list of photos
into a benchmark folder (queries, attacked copies, distractors and a
revisitop-style ``gt.json``), and :func:`build_demo_dataset` does so with the
real photographs that ship inside scikit-image and scikit-learn, offline.

References
----------
.. [1] M. Douze, H. Jégou, H. Sandhawalia, L. Amsaleg, C. Schmid. "Evaluation
       of GIST descriptors for web-scale image search", CIVR 2009 (Copydays).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Union

import cv2
import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

from cvretrieval.errors import DatasetError, ImageReadError
from cvretrieval.io import read_image

__all__ = [
    "ATTACKS",
    "apply_attack",
    "attack_crop",
    "attack_jpeg",
    "attack_perspective",
    "attack_photometric",
    "attack_rotate",
    "build_demo_dataset",
    "demo_photos",
    "make_copies",
]

logger = logging.getLogger(__name__)

Image = NDArray[np.uint8]
Photo = Union[str, "os.PathLike[str]", tuple[str, np.ndarray]]

#: JPEG quality of every image file make_copies writes (queries, copies, distractors).
WRITE_QUALITY = 90

_FORMAT_VERSION = 1


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


def attack_rotate(image: Image, rng: np.random.Generator, *, max_angle: float = 25.0) -> Image:
    """Rotate about the centre and crop to the largest valid (border-free) rectangle.

    Parameters
    ----------
    image : (H, W, 3) ndarray of uint8
        RGB image.
    rng : numpy.random.Generator
        Source of randomness.
    max_angle : float, optional
        The angle in degrees has a random sign and a magnitude drawn uniformly
        in ``[max_angle / 5, max_angle]`` (so the copy is never a near no-op).

    Returns
    -------
    copy : (h, w, 3) ndarray of uint8
        The rotated image cropped to the largest axis-aligned rectangle that
        holds only image pixels (no black corners), so ``h <= H`` and ``w <= W``.
    """
    _check_rgb(image, "attack_rotate")
    if not (0.0 < max_angle <= 90.0):
        raise ValueError(f"max_angle must be in (0, 90] degrees, got {max_angle!r}")
    h, w = image.shape[:2]
    angle = float(rng.uniform(max_angle / 5.0, max_angle)) * (1.0 if rng.random() < 0.5 else -1.0)
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


ATTACKS: dict[str, Callable[[Image, np.random.Generator], Image]] = {
    "crop": attack_crop,
    "rotate": attack_rotate,
    "perspective": attack_perspective,
    "photometric": attack_photometric,
    "jpeg": attack_jpeg,
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


# --------------------------------------------------------------------------- benchmark folder

_OUR_FILE = re.compile(r"^(q\d{4}(_c\d+_[a-z]+)?|d\d{5}(_c\d+_crop)?)\.jpg$")


def _encode_jpeg(image: Image) -> bytes:
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, WRITE_QUALITY]
    )
    if not ok:  # pragma: no cover
        raise RuntimeError(f"OpenCV could not JPEG-encode an image of shape {image.shape}")
    return buf.tobytes()


def _photo_label(photo: Photo) -> str:
    if isinstance(photo, tuple):
        return str(photo[0])
    return str(photo)


def _load_photo(photo: Photo, max_side: int) -> Image:
    if isinstance(photo, tuple):
        if len(photo) != 2:
            raise TypeError(f"a photo pair must be (name, ndarray or path), got {len(photo)} items")
        return read_image(photo[1], max_side=max_side)
    return read_image(photo, max_side=max_side)


def _clear_previous(out_dir: Path) -> None:
    """Remove files a previous make_copies run wrote (only names matching our pattern)."""
    for sub in ("queries", "gallery"):
        folder = out_dir / sub
        if folder.is_dir():
            for path in folder.iterdir():
                if path.is_file() and _OUR_FILE.match(path.name):
                    path.unlink()
    for name in ("gt.json", "copies.json", "README.txt"):
        path = out_dir / name
        if path.is_file():
            path.unlink()


def make_copies(
    photos: Sequence[Photo],
    out_dir: str | os.PathLike[str],
    *,
    n_queries: int | None = None,
    copies_per_query: int = 4,
    n_distractors: int | None = None,
    attacks: Sequence[str] = ("crop", "rotate", "perspective", "photometric", "jpeg"),
    max_side: int = 640,
    seed: int = 0,
    distractor_crops: int = 0,
) -> Path:
    """Write a copy-detection benchmark: queries, their attacked copies, distractors.

    Photos are visited in a random order (from ``seed``): the first
    ``n_queries`` readable ones become queries, the next ``n_distractors``
    readable ones distractors. Unreadable photos are skipped with a warning and
    counted (in ``README.txt`` and ``copies.json``).

    Layout written into ``out_dir`` (nothing is written elsewhere)::

        queries/qNNNN.jpg              the query photos, long side <= max_side
        gallery/qNNNN_cK_<attack>.jpg  copy K of query NNNN, made by one attack
        gallery/dNNNNN.jpg             distractor photos
        gallery/dNNNNN_cK_crop.jpg     extra crops of distractor NNNNN (distractor_crops > 0)
        gt.json                        {"imlist", "qimlist", "gnd": [{"ok", "junk"}]}
        copies.json                    parameters, counts, sources, skipped photos
        README.txt                     how the folder was made

    Copy K of query number i uses exactly one attack, ``attacks[(i + K) %
    len(attacks)]`` (the start rotates with the query, so every attack is used
    even when ``copies_per_query < len(attacks)``), with its default
    parameters. Every written image is additionally a JPEG of quality
    :data:`WRITE_QUALITY`; there is no other combination of attacks. The
    randomness of each image comes from ``numpy.random.default_rng([seed, ...])``
    keyed by its role and number, so results do not depend on processing order.
    ``gt.json`` paths are POSIX paths relative to ``out_dir``; ``imlist`` is in
    a seeded random order (so gallery position carries no hint about copies)
    and ``gnd[i]["ok"]`` holds the sorted ``imlist`` indices of query i's copies.

    Files of a previous run (names matching the patterns above) are removed
    first; other files in ``out_dir`` are left alone.

    Parameters
    ----------
    photos : sequence of path or (name, ndarray) pairs
        Input photos; arrays as accepted by :func:`cvretrieval.io.read_image`.
    out_dir : str or os.PathLike
        Output folder, created if needed.
    n_queries : int or None, optional
        Number of queries; ``None`` means every photo not used as a distractor.
    copies_per_query : int, optional
        Attacked copies written per query (at least 1).
    n_distractors : int or None, optional
        Number of distractor photos; ``None`` means all photos not used as queries.
    attacks : sequence of str, optional
        Attack names, keys of :data:`ATTACKS`.
    max_side : int, optional
        Photos are downscaled so their long side is at most this before attacks.
    seed : int, optional
        Same seed and inputs give byte-identical output files.
    distractor_crops : int, optional
        Extra distractors per distractor photo, made as random crops (25 to 60
        % of the area) of that distractor photo, never of a query photo.

    Returns
    -------
    gt_path : pathlib.Path
        ``out_dir / "gt.json"``.

    Raises
    ------
    DatasetError
        Fewer readable photos than ``n_queries + n_distractors`` (or no query).
    ValueError
        A bad parameter, e.g. an unknown attack name.
    """
    out_dir = Path(out_dir)
    attacks = list(attacks)
    for name in attacks:
        if name not in ATTACKS:
            raise ValueError(
                f"unknown attack {name!r}; valid names are: {', '.join(sorted(ATTACKS))}"
            )
    if not attacks:
        raise ValueError(f"attacks must name at least one of: {', '.join(sorted(ATTACKS))}")
    if copies_per_query < 1:
        raise ValueError(f"copies_per_query must be at least 1, got {copies_per_query}")
    if distractor_crops < 0:
        raise ValueError(f"distractor_crops must be >= 0, got {distractor_crops}")
    if max_side < 16:
        raise ValueError(f"max_side must be at least 16 pixels, got {max_side}")
    for label, value in (("n_queries", n_queries), ("n_distractors", n_distractors)):
        if value is not None and value < 0:
            raise ValueError(f"{label} must be >= 0 or None, got {value}")
    if n_queries == 0:
        raise ValueError("n_queries must be at least 1 (a benchmark needs a query)")

    n_photos = len(photos)
    if n_queries is None:
        n_queries = n_photos - (n_distractors or 0)
    needed = n_queries + (n_distractors or 0)
    if n_queries < 1 or n_photos < needed:
        raise DatasetError(
            f"too few photos: {n_photos} given, {max(needed, 1)} needed "
            f"({n_queries} queries + {n_distractors or 0} distractors); "
            "pass more photos or lower n_queries / n_distractors"
        )
    # None: every remaining readable photo becomes a distractor (no shortfall possible)
    n_distractors_target = n_photos - n_queries if n_distractors is None else n_distractors

    order = np.random.default_rng(seed).permutation(n_photos)
    out_dir.mkdir(parents=True, exist_ok=True)
    _clear_previous(out_dir)
    (out_dir / "queries").mkdir(exist_ok=True)
    (out_dir / "gallery").mkdir(exist_ok=True)

    written: list[Path] = []
    skipped: list[dict[str, str]] = []
    query_sources: dict[str, str] = {}
    distractor_sources: dict[str, str] = {}
    copies_of: list[list[str]] = []
    gallery: list[str] = []

    def write(rel: str, image: Image) -> None:
        path = out_dir / rel
        path.write_bytes(_encode_jpeg(image))
        written.append(path)

    total = n_queries + n_distractors_target
    with tqdm(total=total, desc="make_copies", unit="photo", disable=None, leave=False) as bar:
        for idx in order:
            n_q, n_d = len(query_sources), len(distractor_sources)
            if n_q >= n_queries and n_d >= n_distractors_target:
                break
            photo = photos[int(idx)]
            label = _photo_label(photo)
            try:
                image = _load_photo(photo, max_side)
            except (ImageReadError, TypeError) as err:
                logger.warning("skipping unreadable photo %s: %s", label, err)
                skipped.append({"photo": label, "error": str(err)})
                continue
            if n_q < n_queries:
                stem = f"q{n_q:04d}"
                rel = f"queries/{stem}.jpg"
                write(rel, image)
                query_sources[rel] = label
                names = []
                for k in range(copies_per_query):
                    attack = attacks[(n_q + k) % len(attacks)]
                    rng = np.random.default_rng([seed, 1, n_q, k])
                    copy_rel = f"gallery/{stem}_c{k}_{attack}.jpg"
                    write(copy_rel, apply_attack(image, attack, rng))
                    names.append(copy_rel)
                copies_of.append(names)
                gallery.extend(names)
            else:
                stem = f"d{n_d:05d}"
                rel = f"gallery/{stem}.jpg"
                write(rel, image)
                distractor_sources[rel] = label
                gallery.append(rel)
                for k in range(distractor_crops):
                    rng = np.random.default_rng([seed, 2, n_d, k])
                    crop_rel = f"gallery/{stem}_c{k}_crop.jpg"
                    write(crop_rel, attack_crop(image, rng, keep=(0.25, 0.6)))
                    gallery.append(crop_rel)
            bar.update(1)

    n_q, n_d = len(query_sources), len(distractor_sources)
    if n_q < n_queries or (n_distractors is not None and n_d < n_distractors):
        for path in written:
            path.unlink(missing_ok=True)
        raise DatasetError(
            f"too few readable photos: {n_photos} given, {len(skipped)} unreadable, "
            f"{n_queries + (n_distractors or 0)} readable needed ({n_queries} queries + "
            f"{n_distractors or 0} distractors); pass more photos or lower the counts"
        )
    if skipped:
        logger.warning("make_copies skipped %d unreadable photo(s) of %d", len(skipped), n_photos)

    shuffle = np.random.default_rng([seed, 3]).permutation(len(gallery))
    imlist = [gallery[int(i)] for i in shuffle]
    position = {rel: i for i, rel in enumerate(imlist)}
    gt = {
        "imlist": imlist,
        "qimlist": list(query_sources),
        "gnd": [{"ok": sorted(position[rel] for rel in names), "junk": []} for names in copies_of],
    }
    gt_path = out_dir / "gt.json"
    gt_path.write_text(json.dumps(gt, indent=1) + "\n", encoding="utf-8")

    params = {
        "n_queries": n_queries,
        "copies_per_query": copies_per_query,
        "n_distractors": n_distractors,
        "distractor_crops": distractor_crops,
        "attacks": attacks,
        "max_side": max_side,
        "seed": seed,
        "write_quality": WRITE_QUALITY,
    }
    counts = {
        "photos": n_photos,
        "skipped": len(skipped),
        "queries": n_q,
        "copies": n_q * copies_per_query,
        "distractors": n_d,
        "distractor_crops": n_d * distractor_crops,
        "gallery": len(imlist),
    }
    manifest = {
        "format_version": _FORMAT_VERSION,
        "params": params,
        "counts": counts,
        "skipped": skipped,
        "query_sources": query_sources,
        "distractor_sources": distractor_sources,
    }
    (out_dir / "copies.json").write_text(
        json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    (out_dir / "README.txt").write_text(_readme(params, counts), encoding="utf-8")
    logger.info(
        "wrote %d queries, %d gallery images (%d skipped photos) to %s",
        n_q,
        len(imlist),
        len(skipped),
        out_dir,
    )
    return gt_path


def _readme(params: dict, counts: dict) -> str:
    return (
        "Copy-detection benchmark written by cvretrieval.copies.make_copies.\n"
        "\n"
        f"seed: {params['seed']}\n"
        f"photos given: {counts['photos']} (unreadable, skipped: {counts['skipped']})\n"
        f"queries: {counts['queries']} (queries/qNNNN.jpg, long side <= {params['max_side']})\n"
        f"copies: {counts['copies']} ({params['copies_per_query']} per query, "
        "gallery/qNNNN_cK_<attack>.jpg)\n"
        f"attacks: {', '.join(params['attacks'])}; copy K of query i uses "
        "attacks[(i + K) % len(attacks)]\n"
        f"distractors: {counts['distractors']} (gallery/dNNNNN.jpg) plus "
        f"{counts['distractor_crops']} crops of distractors (gallery/dNNNNN_cK_crop.jpg)\n"
        f"all images JPEG quality {params['write_quality']}\n"
        "\n"
        "gt.json: imlist (gallery), qimlist (queries), gnd[i].ok = imlist indices of\n"
        "query i's copies, gnd[i].junk = []. Paths are relative to this folder.\n"
        "copies.json: the parameters, counts, sources and skipped photos.\n"
    )


# --------------------------------------------------------------------------- demo data

#: Real photographs shipped inside scikit-image's wheel: name -> file in skimage/data.
#: Synthetic drawings (colorwheel, logo, horse silhouette, phantom, chessboard)
#: and the near-duplicate right view of the stereo motorcycle are left out.
SKIMAGE_PHOTOS: dict[str, str] = {
    "astronaut": "astronaut.png",
    "brick": "brick.png",
    "camera": "camera.png",
    "cell": "cell.png",
    "chelsea": "chelsea.png",
    "clock": "clock_motion.png",
    "coffee": "coffee.png",
    "coins": "coins.png",
    "grass": "grass.png",
    "gravel": "gravel.png",
    "hubble_deep_field": "hubble_deep_field.jpg",
    "immunohistochemistry": "ihc.png",
    "moon": "moon.png",
    "motorcycle": "motorcycle_left.png",
    "page": "page.png",
    "retina": "retina.jpg",
    "rocket": "rocket.jpg",
    "text": "text.png",
}

#: Photographs shipped inside scikit-learn (``sklearn/datasets/images``).
SKLEARN_PHOTOS: dict[str, str] = {"china": "china.jpg", "flower": "flower.jpg"}


def _skimage_data_dir() -> Path | None:
    try:
        import skimage.data
    except ImportError:  # pragma: no cover - scikit-image is a core dependency
        return None
    return Path(skimage.data.__file__).parent


def _sklearn_images_dir() -> Path | None:
    try:
        import sklearn.datasets
    except ImportError:  # pragma: no cover - scikit-learn is a core dependency
        return None
    return Path(sklearn.datasets.__file__).parent / "images"


def demo_photos() -> list[tuple[str, Image]]:
    """Real photographs that ship inside installed packages, read without any network.

    The files are read directly from the installed scikit-image
    (``skimage/data``, see :data:`SKIMAGE_PHOTOS`) and scikit-learn
    (``sklearn/datasets/images``: china, flower) packages; pooch is never
    called, and a file that is absent or unreadable is skipped with a warning.

    Returns
    -------
    photos : list of (name, (H, W, 3) ndarray of uint8)
        RGB at full resolution (grey photos replicated to three channels),
        sorted by name.
    """
    candidates: list[tuple[str, Path]] = []
    for folder, table in (
        (_skimage_data_dir(), SKIMAGE_PHOTOS),
        (_sklearn_images_dir(), SKLEARN_PHOTOS),
    ):
        if folder is None:
            continue
        candidates.extend((name, folder / filename) for name, filename in table.items())
    photos: list[tuple[str, Image]] = []
    for name, path in sorted(candidates):
        if not path.is_file():
            logger.warning("demo photo %s is not installed (%s absent); skipping it", name, path)
            continue
        try:
            photos.append((name, read_image(path, max_side=None)))
        except ImageReadError as err:
            logger.warning("skipping demo photo %s: %s", name, err)
    return photos


def build_demo_dataset(
    out_dir: str | os.PathLike[str], *, n_queries: int = 8, seed: int = 0
) -> Path:
    """Build (or reuse) the offline demo copy-detection benchmark.

    Queries are ``n_queries`` of :func:`demo_photos`; the gallery holds 4
    attacked copies of each query, every other demo photo as a distractor and
    3 random crops of each distractor photo (never of a query photo). Made by
    :func:`make_copies` with ``max_side=640``.

    If ``out_dir`` already holds a benchmark made with the same parameters and
    photos (checked against ``copies.json``) whose files all exist, it is
    reused without rewriting anything.

    Parameters
    ----------
    out_dir : str or os.PathLike
        Output folder.
    n_queries : int, optional
        Number of query photos.
    seed : int, optional
        Random seed for the choice of queries and the attacks.

    Returns
    -------
    gt_path : pathlib.Path
        ``out_dir / "gt.json"``.

    Raises
    ------
    DatasetError
        Fewer than ``n_queries + 1`` demo photos are installed.
    """
    out_dir = Path(out_dir)
    photos = demo_photos()
    copies_per_query, distractor_crops, max_side = 4, 3, 640
    attacks = ["crop", "rotate", "perspective", "photometric", "jpeg"]
    n_distractors = len(photos) - n_queries
    params = {
        "n_queries": n_queries,
        "copies_per_query": copies_per_query,
        "n_distractors": n_distractors,
        "distractor_crops": distractor_crops,
        "attacks": attacks,
        "max_side": max_side,
        "seed": seed,
        "write_quality": WRITE_QUALITY,
    }
    if len(photos) < n_queries + 1:
        raise DatasetError(
            f"the demo needs at least {n_queries + 1} photos ({n_queries} queries + 1 distractor) "
            f"but only {len(photos)} are installed; lower n_queries"
        )
    gt_path = out_dir / "gt.json"
    if _demo_cache_valid(out_dir, params, photos):
        logger.info("reusing the demo benchmark in %s", out_dir)
        return gt_path
    return make_copies(
        photos,
        out_dir,
        n_queries=n_queries,
        copies_per_query=copies_per_query,
        n_distractors=n_distractors,
        attacks=attacks,
        max_side=max_side,
        seed=seed,
        distractor_crops=distractor_crops,
    )


def _demo_cache_valid(out_dir: Path, params: dict, photos: list[tuple[str, Image]]) -> bool:
    try:
        manifest = json.loads((out_dir / "copies.json").read_text(encoding="utf-8"))
        gt = json.loads((out_dir / "gt.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if manifest.get("format_version") != _FORMAT_VERSION or manifest.get("params") != params:
        return False
    if manifest.get("counts", {}).get("photos") != len(photos):
        return False
    sources = set(manifest.get("query_sources", {}).values()) | set(
        manifest.get("distractor_sources", {}).values()
    )
    if sources != {name for name, _ in photos}:
        return False
    try:
        listed = list(gt["imlist"]) + list(gt["qimlist"])
    except (KeyError, TypeError):
        return False
    return all((out_dir / rel).is_file() for rel in listed)
