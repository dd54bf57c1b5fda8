"""Readers of class-labelled folders: ``ROOT/<class>/...`` and ``ROOT/query|gallery/<class>/...``.

Both store their ground truth as class labels
(:class:`~cvretrieval.datasets.groundtruth.ClassGroundTruth`), so memory stays
O(n_images) however large the classes are.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path

import numpy as np

from cvretrieval.errors import DatasetError

from .base import (
    RetrievalDataset,
    class_ground_truth,
    list_images,
    log_problems,
    problem,
    rel_posix,
    require_dir,
)
from .groundtruth import ClassGroundTruth

logger = logging.getLogger(__name__)

#: folder names of the query-gallery layout (first match wins)
QUERY_DIRS = ("query", "queries")
GALLERY_DIRS = ("gallery", "galleries")


def _class_entries(root: Path, prefix: str = "") -> list[tuple[str, str]]:
    """``(path relative to the data set root, class)`` of every image in ``root/<class>/``."""
    entries: list[tuple[str, str]] = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        images = list_images(sub, recursive=True)
        if not images:
            logger.warning("class folder %s holds no image; skipped", sub)
            continue
        entries.extend((prefix + rel_posix(p, root), sub.name) for p in images)
    return entries


def read_class_folders(root: str | os.PathLike[str]) -> RetrievalDataset:
    """Read ``root/<class>/<images...>``: same folder means relevant.

    Images are found recursively inside each class folder; images lying directly
    in ``root`` are ignored with a warning. Every image is a query; its positives
    are the other images of its class (never itself), junk is empty. A class with a
    single image gives a query without positives (excluded from the mAP).

    Parameters
    ----------
    root : path-like
        The folder holding one sub-folder per class.

    Returns
    -------
    RetrievalDataset
        ``qimlist == imlist`` (sorted POSIX paths relative to ``root``);
        ``labels`` / ``query_labels`` are the class codes, ``class_names`` their names.

    Raises
    ------
    DatasetError
        If ``root`` is missing or no class folder holds an image.
    """
    root = require_dir(root, "class-folders")
    loose = list_images(root, recursive=False)
    if loose:
        logger.warning(
            "ignoring %d image(s) directly in %s (e.g. %s): class-folders expects "
            "root/<class>/<images>",
            len(loose),
            root,
            loose[0].name,
        )
    entries = _class_entries(root)
    if not entries:
        raise DatasetError(
            f"no class sub-folder of {str(root)!r} holds an image; class-folders expects "
            "root/<class>/<images>"
        )
    entries.sort()
    imlist = [p for p, _ in entries]
    labels = [c for _, c in entries]
    gnd = class_ground_truth(labels)
    sizes = Counter(labels)
    singles = sum(1 for n in sizes.values() if n == 1)
    if singles:
        logger.warning("%d class(es) have a single image: those queries have no positives", singles)
    logger.info("read %d images in %d classes from %s", len(imlist), len(sizes), root)
    return RetrievalDataset(root, imlist, list(imlist), gnd, name=root.name, format="class-folders")


def _find_sub(root: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        if (root / name).is_dir():
            return root / name
    return None


def is_query_gallery(root: Path) -> bool:
    """Whether ``root`` holds a ``query``/``queries`` and a ``gallery``/``galleries`` folder."""
    return _find_sub(root, QUERY_DIRS) is not None and _find_sub(root, GALLERY_DIRS) is not None


def read_query_gallery(root: str | os.PathLike[str]) -> RetrievalDataset:
    """Read ``root/query/<class>/<images>`` + ``root/gallery/<class>/<images>``.

    ``queries/`` and ``galleries/`` are accepted too. The queries are the images
    of the query folders, the gallery the images of the gallery folders; the
    images relevant to a query are the gallery images of its class. A query is
    never its own gallery image here, even when the same file name appears on both
    sides. A query class absent from the gallery gives a query without positives
    (reported in ``problems``, left out of the mAP).

    Parameters
    ----------
    root : path-like
        The folder holding the query and gallery folders.

    Returns
    -------
    RetrievalDataset
        ``format="query-gallery"``; ``imlist`` = ``gallery/<class>/...`` paths,
        ``qimlist`` = ``query/<class>/...`` paths (sorted); ``labels`` and
        ``query_labels`` share one class numbering (``class_names``).

    Raises
    ------
    DatasetError
        If a folder is missing or either side holds no image.

    Examples
    --------
    >>> read_query_gallery("no/such/folder")
    Traceback (most recent call last):
    ...
    cvretrieval.errors.DatasetError: data set path 'no/such/folder' does not exist; check the path
    """
    root = require_dir(root, "query-gallery")
    qdir, gdir = _find_sub(root, QUERY_DIRS), _find_sub(root, GALLERY_DIRS)
    if qdir is None or gdir is None:
        raise DatasetError(
            f"{str(root)!r} needs a query/ (or queries/) and a gallery/ (or galleries/) folder, "
            "each holding one sub-folder of images per class"
        )
    queries = sorted(_class_entries(qdir, qdir.name + "/"))
    gallery = sorted(_class_entries(gdir, gdir.name + "/"))
    for side, items, folder in (("query", queries, qdir), ("gallery", gallery, gdir)):
        if not items:
            raise DatasetError(
                f"no class sub-folder of {str(folder)!r} holds an image; the {side} side of "
                "the query-gallery layout is <folder>/<class>/<images>"
            )
    names = sorted({c for _, c in gallery} | {c for _, c in queries})
    code = {c: i for i, c in enumerate(names)}
    labels = np.array([code[c] for _, c in gallery], dtype=np.int64)
    qlabels = np.array([code[c] for _, c in queries], dtype=np.int64)
    gnd = ClassGroundTruth(labels, qlabels, None, names)
    problems: list[dict] = []
    in_gallery = set(labels.tolist())
    for (rel, c), qc in zip(queries, qlabels, strict=True):
        if int(qc) not in in_gallery:
            problem(problems, "no-positives", rel, f"class {c!r} has no gallery image")
    log_problems(problems, root)
    logger.info(
        "read %d queries and %d gallery images in %d classes from %s",
        len(queries), len(gallery), len(names), root,
    )
    return RetrievalDataset(
        root,
        [p for p, _ in gallery],
        [p for p, _ in queries],
        gnd,
        name=root.name,
        format="query-gallery",
        problems=problems,
    )
