"""``check_dataset``: list everything wrong with a data set; ``format_check``: the same as text."""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cvretrieval._progress import progress_bar
from cvretrieval.errors import ImageReadError

from .base import FILE_PROBLEMS, RetrievalDataset, file_kind
from .groundtruth import GroundTruth
from .load import load_dataset

logger = logging.getLogger(__name__)

__all__ = ["check_dataset", "format_check"]

_SWAPPING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that rotate by 90 degrees


def _stats(values: Sequence[int] | np.ndarray) -> dict[str, float | int]:
    if not len(values):
        return {"min": 0, "mean": 0.0, "max": 0}
    arr = np.asarray(values)
    return {"min": int(arr.min()), "mean": float(arr.mean()), "max": int(arr.max())}


def _upright_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` as a viewer shows the image (EXIF orientation applied), header only."""
    from PIL import Image

    with Image.open(path) as im:
        w, h = im.size
        try:
            orientation = im.getexif().get(0x0112)
        except Exception:  # noqa: BLE001 - a broken EXIF block is not the box's fault
            orientation = None
    return (h, w) if orientation in _SWAPPING_ORIENTATIONS else (w, h)


def _box_error(box: Sequence[float], size: tuple[int, int] | None) -> str | None:
    x1, y1, x2, y2 = box
    if x2 <= x1 or y2 <= y1:
        return "empty or inverted (needs x1 < x2 and y1 < y2)"
    if size is None:
        return None
    w, h = size
    if x1 < 0 or y1 < 0 or x2 > w or y2 > h:
        return f"outside the {w}x{h} image"
    return None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _gnd_stats(gnd: GroundTruth) -> dict[str, Any]:
    n_ok, n_junk = gnd.n_positives(), gnd.n_junk()
    return {
        "positives": _stats(n_ok),
        "junk": {"total": int(n_junk.sum()), **_stats(n_junk)},
        "n_without_positives": int(np.count_nonzero(n_ok == 0)),
    }


def check_dataset(
    path: str | os.PathLike[str] | RetrievalDataset,
    format: str | None = None,
    decode: bool = True,
    *,
    protocol: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    duplicates: bool = True,
    progress: bool | None = False,
) -> dict[str, Any]:
    """Read a data set and report what is wrong with it, without stopping at the first problem.

    Every gallery and query file is looked at once: a path that is missing is
    listed in ``missing``; one that is not a regular file (FIFO, device, folder)
    is listed in ``unreadable`` without being opened; a regular file is decoded
    (:func:`cvretrieval.io.read_bytes_and_image`, downscaled to 128 pixels for
    speed) when ``decode`` is true, or only its header parsed with Pillow
    otherwise; gallery files are hashed (SHA-1 of the content) to find exact
    duplicates. Every query box is checked against its image: empty, inverted
    or outside the (upright) image are listed in ``bad_boxes``. No message
    quotes a file's content.

    Parameters
    ----------
    path : path-like or RetrievalDataset
        What :func:`load_dataset` reads, or an already loaded data set.
    format, protocol, cache_dir
        Passed to :func:`load_dataset`.
    decode : bool
        Decode every image (thorough) instead of only parsing its header (fast).
    duplicates : bool
        Hash the gallery files to find exact duplicates. With ``decode=False`` this
        is what reads every byte; turn it off for a quick check of a huge set.
    progress : bool or None
        Show a progress bar (tqdm) over the files when standard error is a terminal
        (True or None, as the command line passes by default); False: never.

    Returns
    -------
    dict
        ``path``, ``format``, ``name``, ``root``, ``images``, ``queries``,
        ``positives`` (``{"min", "mean", "max"}`` per query), ``junk``
        (``{"total", "min", "mean", "max"}`` per query), ``graded`` (queries with
        graded relevance), ``queries_without_positives`` (list of ``{"query",
        "path"}``), ``protocols`` (per protocol the same positives/junk statistics
        and the count without positives), ``missing`` (relative paths),
        ``unreadable`` (``{"path", "error"}``), ``duplicates`` (lists of gallery
        paths with identical content; ``None`` when not searched), ``bad_boxes``
        (``{"query", "path", "bbx", "error"}``), ``problems`` (from the reader),
        ``decoded`` and ``ok``: no missing, unreadable or duplicate file, no bad
        box and no reader problem about a file (``missing-image``,
        ``not-a-file``, ``missing-file``).

    Raises
    ------
    DatasetError
        If the data set cannot be read at all.
    """
    if isinstance(path, RetrievalDataset):
        ds = path
        where = str(ds.root)
    else:
        ds = load_dataset(path, format, protocol=protocol, cache_dir=cache_dir)
        where = str(path)
    from cvretrieval.io import read_bytes_and_image

    files: dict[str, bool] = {rel: True for rel in ds.imlist}  # rel -> is gallery
    for rel in ds.qimlist:
        files.setdefault(rel, False)
    missing: list[str] = []
    unreadable: list[dict[str, str]] = []
    readable: set[str] = set()
    by_hash: dict[str, list[str]] = defaultdict(list)
    with progress_bar(total=len(files), unit="file", desc="check", enabled=progress) as bar:
        for rel, in_gallery in files.items():
            bar.update(1)
            full = ds.root / rel
            try:
                mode = os.stat(full).st_mode
            except (OSError, ValueError):
                missing.append(rel)
                continue
            if not stat.S_ISREG(mode):
                unreadable.append(
                    {"path": rel, "error": f"a {file_kind(mode)}, not a regular file (not opened)"}
                )
                continue
            try:
                if decode:
                    sha1, _, _ = read_bytes_and_image(full, max_side=128)
                else:
                    from PIL import Image

                    with Image.open(full) as im:
                        im.size  # noqa: B018 - parsing the header is the check
                    hashed = in_gallery and duplicates
                    sha1 = hashlib.sha1(full.read_bytes()).hexdigest() if hashed else ""
            except (ImageReadError, OSError, ValueError, SyntaxError) as exc:
                unreadable.append({"path": rel, "error": _one_line(exc)})
                continue
            readable.add(rel)
            if in_gallery:
                by_hash[sha1].append(rel)
    dup_groups = sorted(sorted(v) for v in by_hash.values() if len(v) > 1) if duplicates else None

    bad_boxes: list[dict[str, Any]] = []
    for qi, rel in enumerate(ds.qimlist):
        box = ds.gnd.bbx(qi)
        if box is None:
            continue
        size = None
        if rel in readable:
            try:
                size = _upright_size(ds.root / rel)
            except (OSError, ValueError, SyntaxError):
                size = None
        error = _box_error(box, size)
        if error:
            bad_boxes.append({"query": qi, "path": rel, "bbx": list(box), "error": error})

    main = _gnd_stats(ds.gnd)
    n_ok = ds.gnd.n_positives()
    file_problems = [p for p in ds.problems if p["kind"] in FILE_PROBLEMS]
    report: dict[str, Any] = {
        "path": where,
        "format": ds.format,
        "name": ds.name,
        "root": str(ds.root),
        "protocol": ds.protocol,
        "images": len(ds.imlist),
        "queries": len(ds.qimlist),
        "positives": main["positives"],
        "junk": main["junk"],
        "graded": sum(ds.gnd.graded(i) is not None for i in range(len(ds.qimlist)))
        if ds.gnd.has_graded()
        else 0,
        "queries_without_positives": [
            {"query": int(i), "path": ds.qimlist[i]} for i in np.flatnonzero(n_ok == 0)
        ],
        "protocols": {name: _gnd_stats(g) for name, g in ds.protocols.items()},
        "missing": missing,
        "unreadable": unreadable,
        "duplicates": dup_groups,
        "bad_boxes": bad_boxes,
        "problems": list(ds.problems),
        "decoded": bool(decode),
    }
    report["ok"] = not (missing or unreadable or dup_groups or bad_boxes or file_problems)
    logger.info(
        "checked %s: %d files, %d missing, %d unreadable, %s duplicate groups, %d bad boxes",
        where,
        len(files),
        len(missing),
        len(unreadable),
        "unsearched" if dup_groups is None else len(dup_groups),
        len(bad_boxes),
    )
    return report


def format_check(report: dict[str, Any], *, max_items: int = 10) -> str:
    """Human-readable text of a :func:`check_dataset` report (at most ``max_items`` per list)."""

    def listing(title: str, items: Sequence[str]) -> list[str]:
        if not items:
            return []
        lines = [f"{title}: {len(items)}"]
        lines += [f"  {x}" for x in items[:max_items]]
        if len(items) > max_items:
            lines.append(f"  ... and {len(items) - max_items} more (see --json)")
        return lines

    pos, junk = report["positives"], report["junk"]
    head = f"{report['name'] or report['path']} ({report['format']}"
    head += f", protocol {report['protocol']})" if report.get("protocol") else ")"
    lines = [
        head,
        f"images: {report['images']}, queries: {report['queries']}",
        f"positives per query: min {pos['min']}, mean {pos['mean']:.2f}, max {pos['max']}",
        f"junk: {junk['total']} in all, mean {junk['mean']:.2f} per query",
    ]
    if report.get("graded"):
        lines.append(f"graded relevance: {report['graded']} queries")
    for name, s in report.get("protocols", {}).items():
        p = s["positives"]
        lines.append(
            f"protocol {name}: positives min {p['min']}, mean {p['mean']:.2f}, max {p['max']}; "
            f"junk mean {s['junk']['mean']:.2f}; {s['n_without_positives']} without positives"
        )
    lines += listing(
        "queries without positives",
        [f"{q['query']}: {q['path']}" for q in report["queries_without_positives"]],
    )
    lines += listing("missing files", report["missing"])
    lines += listing(
        "unreadable files", [f"{u['path']}: {u['error']}" for u in report["unreadable"]]
    )
    if report["duplicates"] is None:
        lines.append("duplicates: not searched")
    else:
        lines += listing(
            "duplicate groups (same content)", [", ".join(d) for d in report["duplicates"]]
        )
    lines += listing(
        "bad query boxes",
        [
            f"query {b['query']} ({b['path']}): bbx {b['bbx']} is {b['error']}"
            for b in report.get("bad_boxes", [])
        ],
    )
    kinds = Counter(p["kind"] for p in report["problems"])
    if kinds:
        lines.append("reader problems: " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())))
        lines += [
            f"  {p['kind']}: {p['item']}: {p['message']}" for p in report["problems"][:max_items]
        ]
    checked = "decoded" if report.get("decoded") else "headers checked"
    lines.append(f"result: {'OK' if report['ok'] else 'PROBLEMS FOUND'} (files {checked})")
    return "\n".join(lines)
