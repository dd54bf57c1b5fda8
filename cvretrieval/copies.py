"""Copy-detection benchmarks in the style of INRIA Copydays: the set builder.

The attacks (pure functions ``attack(image, rng) -> image``) live in
:mod:`cvretrieval.attacks` and are re-exported here. :func:`make_copies` turns a list of photos
into a benchmark folder (queries, attacked copies, distractors and a
revisitop-style ``gt.json``). The offline demo set built from the photographs that
ship inside scikit-image and scikit-learn is in :mod:`cvretrieval.demo`.

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
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Union

import cv2
import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

from cvretrieval.attacks import (
    ATTACKS,
    apply_attack,
    attack_crop,
    attack_downscale,
    attack_jpeg,
    attack_perspective,
    attack_photometric,
    attack_rotate,
)
from cvretrieval.errors import DatasetError, ImageReadError
from cvretrieval.io import read_image

__all__ = [
    "ATTACKS",
    "apply_attack",
    "attack_crop",
    "attack_downscale",
    "attack_jpeg",
    "attack_perspective",
    "attack_photometric",
    "attack_rotate",
    "make_copies",
    "STRENGTHS",
]

logger = logging.getLogger(__name__)

Image = NDArray[np.uint8]
Photo = Union[str, "os.PathLike[str]", tuple[str, np.ndarray]]

#: JPEG quality of every image file make_copies writes (queries, copies, distractors).
WRITE_QUALITY = 90

#: Version of the copies.json layout make_copies writes.
FORMAT_VERSION = 1


#: Strength presets of :func:`make_copies`: ``params`` overrides attack parameters;
#: ``downscale`` (a factor range) and ``quality`` (a JPEG quality range for the file
#: written) apply to every copy. ``default`` is each attack's defaults, quality 90.
STRENGTHS: dict[str, dict[str, Any]] = {
    "default": {"params": {}, "downscale": None, "quality": None},
    "harsh": {
        "params": {
            "crop": {"keep": (0.55, 0.75)},
            "rotate": {"min_angle": 10.0, "max_angle": 30.0},
            "perspective": {"strength": 0.2},
            "jpeg": {"quality": (12, 25)},
        },
        "downscale": (0.45, 0.65),
        "quality": (12, 25),
    },
}



# --------------------------------------------------------------------------- benchmark folder

_OUR_FILE = re.compile(r"^(q\d{4}(_c\d+_[a-z]+)?|d\d{5}(_c\d+_crop)?)\.jpg$")


def _encode_jpeg(image: Image, quality: int = WRITE_QUALITY) -> bytes:
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
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
    strength: str = "default",
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
    strength : {"default", "harsh"}, optional
        A key of :data:`STRENGTHS`. ``"harsh"``: crops keep 55-75 % of the area,
        rotations 10-30 degrees, perspective up to 0.2, JPEG attack quality 12-25,
        and every copy is then downscaled by 0.45-0.65 and written at JPEG quality
        12-25 (instead of :data:`WRITE_QUALITY`).

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
    if strength not in STRENGTHS:
        raise ValueError(f"unknown strength {strength!r}; choose one of {', '.join(STRENGTHS)}")
    preset = STRENGTHS[strength]
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

    def write(rel: str, image: Image, quality: int = WRITE_QUALITY) -> None:
        path = out_dir / rel
        path.write_bytes(_encode_jpeg(image, quality))
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
                    copy = ATTACKS[attack](image, rng, **preset["params"].get(attack, {}))
                    if preset["downscale"] is not None:
                        copy = attack_downscale(copy, rng, factor=preset["downscale"])
                    quality = WRITE_QUALITY
                    if preset["quality"] is not None:
                        quality = int(rng.integers(preset["quality"][0], preset["quality"][1] + 1))
                    write(copy_rel, copy, quality)
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
        "strength": strength,
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
        "format_version": FORMAT_VERSION,
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
        f"strength: {params['strength']} (see cvretrieval.copies.STRENGTHS); images JPEG "
        f"quality {params['write_quality']} unless the strength sets the copies' quality\n"
        "\n"
        "gt.json: imlist (gallery), qimlist (queries), gnd[i].ok = imlist indices of\n"
        "query i's copies, gnd[i].junk = []. Paths are relative to this folder.\n"
        "copies.json: the parameters, counts, sources and skipped photos.\n"
    )
