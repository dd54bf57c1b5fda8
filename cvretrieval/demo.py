"""``cvret demo``: a small Copydays-style benchmark from real photos, three methods compared.

The photos are the sample photographs that scikit-image and scikit-learn ship inside
their packages (no download). Attacked copies of some of them are the gallery, the
originals the queries, the other photos and crops of them distractors
(:func:`demo_photos`, :func:`build_demo_dataset`; the attacks and the set builder are in
:mod:`cvretrieval.copies`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from .copies import FORMAT_VERSION, WRITE_QUALITY, make_copies
from .datasets import RetrievalDataset, load_dataset
from .errors import DatasetError, ImageReadError
from .evaluation import evaluate
from .io import read_image
from .retriever import Retriever

logger = logging.getLogger(__name__)

Image = NDArray[np.uint8]

DEMO_CONFIGS = ("hog", "bovw-orb", "bovw-sift")


# --------------------------------------------------------------------------- demo photos

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
        "strength": "default",
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
    if manifest.get("format_version") != FORMAT_VERSION or manifest.get("params") != params:
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


def default_cache_dir() -> Path:
    """``$CVRET_CACHE`` if set, else the user's cache folder for cvretrieval."""
    env = os.environ.get("CVRET_CACHE")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("cvretrieval"))


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A GitHub-flavoured markdown table of ``rows`` (dicts) with the given columns.

    Examples
    --------
    >>> print(markdown_table([{"a": 1, "b": 0.5}], ["a", "b"]))
    | a | b |
    | --- | --- |
    | 1 | 0.500 |
    """

    def fmt(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "| " + " | ".join("---" for _ in columns) + " |"]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


CAPTION_H = 18


def _caption(text: str, width: int) -> NDArray[np.uint8]:
    """A white strip ``CAPTION_H`` pixels high with ``text`` (shortened to fit) in dark grey."""
    strip = np.full((CAPTION_H, width, 3), 255, np.uint8)
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.38
    while text and cv2.getTextSize(text, font, scale, 1)[0][0] > width - 6:
        text = text[:-2] + "~" if len(text) > 2 else ""
    cv2.putText(strip, text, (3, CAPTION_H - 5), font, scale, (40, 40, 40), 1, cv2.LINE_AA)
    return strip


def _thumb(
    path: str | Path, size: int, color: tuple[int, int, int] | None, caption: str = ""
) -> NDArray[np.uint8]:
    """A ``size`` x ``size`` RGB thumbnail, letterboxed, with an optional coloured border,
    above a one-line caption."""
    canvas = np.full((size, size, 3), 255, np.uint8)
    try:
        img = read_image(path, max_side=size - 8)
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        h, w = img.shape[:2]
        y, x = (size - h) // 2, (size - w) // 2
        canvas[y : y + h, x : x + w] = img[:, :, :3]
    except Exception:  # a thumbnail must never stop the demo
        cv2.line(canvas, (0, 0), (size - 1, size - 1), (200, 200, 200), 1)
    if color is not None:
        cv2.rectangle(canvas, (1, 1), (size - 2, size - 2), color, 4)
    return np.concatenate([canvas, _caption(caption, size)], axis=0)


def save_grid(
    dataset: RetrievalDataset,
    report: dict[str, Any],
    path: Path,
    top: int = 5,
    size: int = 128,
    title: str = "",
) -> Path:
    """A PNG: one row per query (query, then its ``top`` results; green = relevant, red = not).

    Every cell is captioned (the query's file name; ``#rank name`` for results) and a title
    line explains the colours.
    """
    rows = []
    gallery = dataset.image_paths()
    blank = np.full((size + CAPTION_H, size, 3), 255, np.uint8)
    for q in report["per_query"]:
        qi = q["query"]
        ok = set(dataset.gnd[qi]["ok"])
        qpath = dataset.query_paths()[qi]
        cells = [_thumb(qpath, size, (40, 40, 40), f"query {Path(qpath).stem}")]
        for rank, g in enumerate(q["top"][:top], start=1):
            if g is None:  # a catalog image outside the data set
                cells.append(blank)
                continue
            color = (0, 170, 0) if g in ok else (220, 0, 0)
            cells.append(_thumb(gallery[g], size, color, f"#{rank} {Path(gallery[g]).stem}"))
        cells += [blank] * (top + 1 - len(cells))
        rows.append(np.concatenate(cells, axis=1))
    grid = np.concatenate(rows, axis=0)
    head = f"{title}: " if title else ""
    banner = _caption(f"{head}query, then top {top} (green = relevant, red = not)", grid.shape[1])
    grid = np.concatenate([banner, grid], axis=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    return path


def run_demo(
    cache_dir: str | Path,
    *,
    configs: Sequence[str] = DEMO_CONFIGS,
    n_jobs: int = -1,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Build (or reuse) the demo benchmark under ``cache_dir/demo`` and compare ``configs``.

    Returns a dict with ``rows`` (per config: mAP, P@5, seconds), ``table`` (markdown),
    ``grid`` (PNG path) and ``results`` (JSON path); both files are written under
    ``cache_dir/demo``.
    """
    root = Path(cache_dir) / "demo"
    gt = build_demo_dataset(root / "data")
    data = load_dataset(gt)
    rows, reports = [], {}
    for name in configs:
        t0 = time.perf_counter()
        ret = Retriever(name, n_jobs=n_jobs).build(data.image_paths(), progress=progress)
        report = evaluate(ret, data, progress=progress)
        seconds = time.perf_counter() - t0
        m = report["metrics"]
        rows.append(
            {"features": name, "mAP": m["mAP"], "P@5": m["P@5"], "seconds": round(seconds, 1)}
        )
        reports[name] = report
        logger.info("%s: mAP %.3f in %.1f s", name, m["mAP"], seconds)
    best = max(rows, key=lambda r: r["mAP"])["features"]
    grid = save_grid(data, reports[best], root / f"top5_{best}.png", title=best)
    table = markdown_table(rows, ["features", "mAP", "P@5", "seconds"])
    result = {
        "dataset": str(gt),
        "n_queries": len(data.qimlist),
        "n_gallery": len(data.imlist),
        "rows": rows,
        "table": table,
        "grid": str(grid),
        "grid_features": best,
    }
    out = root / "results.json"
    out.write_text(json.dumps({**result, "reports": reports}, indent=2, default=str))
    result["results"] = str(out)
    return result
