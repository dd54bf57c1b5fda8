"""``cvret demo``: a small Copydays-style benchmark from real photos, three methods compared.

The photos are the sample photographs that scikit-image and scikit-learn ship inside
their packages (no download). Attacked copies of some of them are the gallery, the
originals the queries, the other photos and crops of them distractors.
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

from .copies import build_demo_dataset
from .datasets import RetrievalDataset, load_dataset
from .evaluation import evaluate
from .io import read_image
from .retriever import Retriever

logger = logging.getLogger(__name__)

DEMO_CONFIGS = ("hog", "bovw-orb", "bovw-sift")


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
