"""INRIA Holidays: ``NNNNNN.jpg``; ``NNNN00`` is the query of its hundred."""

from __future__ import annotations

import logging
import os
import re
from collections import Counter, defaultdict
from pathlib import Path

from cvretrieval.errors import DatasetError

from .base import RetrievalDataset, list_images, log_problems, problem, rel_posix, require_dir

logger = logging.getLogger(__name__)

HOLIDAYS_RE = re.compile(r"^(\d{6})$")


def _holidays_images(root: Path) -> tuple[list[tuple[int, str]], list[str]]:
    numbered: list[tuple[int, str]] = []
    other: list[str] = []
    for p in list_images(root, recursive=True):
        m = HOLIDAYS_RE.match(p.stem)
        if m:
            numbered.append((int(m.group(1)), rel_posix(p, root)))
        else:
            other.append(p.name)
    return sorted(numbered), other


def is_holidays_folder(path: Path) -> bool:
    """Most images (directly or in ``jpg/``) are ``NNNNNN`` and one is a query ``NNNN00``."""
    for folder in (path, path / "jpg"):
        if not folder.is_dir():
            continue
        direct = list_images(folder, recursive=False)
        numbered = [int(p.stem) for p in direct if HOLIDAYS_RE.match(p.stem)]
        if 2 * len(numbered) > len(direct) and any(n % 100 == 0 for n in numbered):
            return True
    return False


def read_holidays(root: str | os.PathLike[str]) -> RetrievalDataset:
    """Read INRIA Holidays: images ``NNNNNN.jpg`` (anywhere under ``root``).

    Image ``id`` belongs to group ``id // 100``; the image with ``id % 100 == 0``
    is the group's query and the other images of the group are its positives.
    Every image is in the gallery; the query's own image is left out of its
    ranking (the standard protocol). A group without a ``NN00`` image gives no
    query (reported in ``problems``), a group with only its query gives a query
    without positives (reported, left out of the mAP). Holidays numbers the
    images of a group without gaps, so a number missing between two present
    ones is a missing relevant image: reported as ``"missing-image"`` (the last
    image of a group cannot be told missing this way).

    Parameters
    ----------
    root : path-like
        The folder holding the images (``jpg/`` inside it works too).

    Returns
    -------
    RetrievalDataset
        ``format="holidays"``, 500 queries and 1491 images for the full set.

    Raises
    ------
    DatasetError
        If no ``NNNNNN`` image or no query image is found.

    References
    ----------
    .. [1] H. Jégou, M. Douze, C. Schmid, "Hamming embedding and weak geometric
           consistency for large scale image search", ECCV 2008.
    """
    root = require_dir(root, "holidays")
    numbered, other = _holidays_images(root)
    if other:
        logger.warning(
            "ignoring %d image(s) under %s not named NNNNNN (e.g. %s)", len(other), root, other[0]
        )
    if not numbered:
        raise DatasetError(
            f"no NNNNNN.jpg image under {str(root)!r}; the holidays layout is a folder of "
            "100000.jpg, 100001.jpg, ... (100000 is the query of group 1000)"
        )
    problems: list[dict] = []
    ids = [n for n, _ in numbered]
    if len(set(ids)) != len(ids):
        dup = [n for n, c in Counter(ids).items() if c > 1]
        raise DatasetError(
            f"image number {dup[0]:06d} appears twice under {str(root)!r}; keep one copy"
        )
    imlist = [rel for _, rel in numbered]
    groups: dict[int, list[int]] = defaultdict(list)
    for i, n in enumerate(ids):
        groups[n // 100].append(i)
    qimlist, gnd = [], []
    for g in sorted(groups):
        members = groups[g]
        present = {ids[i] % 100 for i in members}
        suffix = Path(imlist[members[0]]).suffix
        for k in range(1, max(present)):  # 0 missing = no query, reported below
            if k not in present:
                problem(
                    problems,
                    "missing-image",
                    f"{g * 100 + k:06d}{suffix}",
                    f"group {g} has images up to {g * 100 + max(present):06d} but not this one "
                    "(a relevant image is missing)",
                )
        queries = [i for i in members if ids[i] % 100 == 0]
        if not queries:
            problem(
                problems,
                "no-query",
                imlist[members[0]],
                f"group {g} has no {g:04d}00 image: its {len(members)} image(s) are gallery only",
            )
            continue
        q = queries[0]
        ok = [i for i in members if i != q]
        if not ok:
            problem(problems, "no-positives", imlist[q], "the group has no other image")
        qimlist.append(imlist[q])
        gnd.append({"ok": ok, "junk": []})
    if not qimlist:
        raise DatasetError(
            f"no query image (NNNN00.jpg) under {str(root)!r}; Holidays queries end in 00"
        )
    log_problems(problems, root)
    logger.info("read %d Holidays images, %d queries from %s", len(imlist), len(qimlist), root)
    return RetrievalDataset(
        root, imlist, qimlist, gnd, name=root.name, format="holidays", problems=problems
    )
