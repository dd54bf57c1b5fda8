"""Classic Oxford5k / Paris6k ground truth: ``<name>_<n>_{query,good,ok,junk}.txt``."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path

from cvretrieval.errors import DatasetError

from .base import RetrievalDataset, list_images, log_problems, problem, rel_posix, require_dir

logger = logging.getLogger(__name__)

OXFORD_QUERY_RE = re.compile(r"^(?P<base>(?P<name>.+)_(?P<n>\d+))_query\.txt$")

# --------------------------------------------------------------------------- Oxford / Paris text
def find_oxford_gt_dir(root: Path) -> Path | None:
    candidates = [root] + sorted(
        p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
    )
    with_queries = [d for d in candidates if any(d.glob("*_query.txt"))]
    if len(with_queries) > 1:
        raise DatasetError(
            f"several folders of {str(root)!r} hold *_query.txt files "
            f"({', '.join(str(d) for d in with_queries)}); keep one ground-truth folder"
        )
    return with_queries[0] if with_queries else None


def _read_name_list(path: Path, problems: list[dict]) -> list[str]:
    if not path.is_file():
        problem(problems, "missing-file", path.name, "ground-truth file missing; read as empty")
        return []
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        name = line.strip()
        if name:
            out.append(name[:-4] if name.lower().endswith(".jpg") else name)
    return out


def read_oxford_gt(root: str | os.PathLike[str]) -> RetrievalDataset:
    """Read classic Oxford5k / Paris6k ground truth (text files) and the images beside it.

    ``<name>_<n>_query.txt`` holds one line ``<image> x1 y1 x2 y2`` (Oxford writes
    the image as ``oxc1_<image>``, Paris without prefix); ``<name>_<n>_good.txt``,
    ``_ok.txt`` and ``_junk.txt`` list image names (no extension). Positives are
    good + ok, junk is junk, the query region is the box of the query file. The
    text files lie in ``root`` or in one sub-folder of it; the images anywhere
    under ``root`` (searched recursively, matched by file name without extension:
    Oxford's flat ``oxbuild_images/`` and Paris's ``paris/<landmark>/`` both work).

    Every image is in the gallery, the queries included; as everywhere in
    cvretrieval, a query's own image is left out of its ranking and of its
    positives (the original Oxford protocol counts it, so published classic
    figures are slightly higher).

    Names listed in the text files but without an image, missing good/ok/junk
    files and unreadable query lines are reported in ``dataset.problems`` (a query
    whose image is missing is skipped).

    Parameters
    ----------
    root : path-like
        The folder holding the images and the ground-truth text files.

    Returns
    -------
    RetrievalDataset
        ``format="oxford-gt"``, queries in (landmark, number) order.

    Raises
    ------
    DatasetError
        No ``*_query.txt``, no image, or no usable query.

    References
    ----------
    .. [1] J. Philbin et al., "Object retrieval with large vocabularies and fast
           spatial matching", CVPR 2007.
    """
    root = require_dir(root, "oxford-gt")
    gt_dir = find_oxford_gt_dir(root)
    if gt_dir is None:
        raise DatasetError(
            f"no *_query.txt file in {str(root)!r} or its sub-folders; the oxford-gt layout "
            "is <name>_<n>_query.txt/_good.txt/_ok.txt/_junk.txt beside the images"
        )
    problems: list[dict] = []
    by_name: dict[str, str] = {}
    for p in list_images(root, recursive=True):
        rel = rel_posix(p, root)
        if p.stem in by_name:
            problem(problems, "duplicate-name", rel, f"same name as {by_name[p.stem]}; ignored")
            continue
        by_name[p.stem] = rel
    if not by_name:
        raise DatasetError(f"no image under {str(root)!r}; put the Oxford/Paris images there")
    imlist = sorted(by_name.values())
    index = {Path(rel).stem: i for i, rel in enumerate(imlist)}

    def to_indices(names: Iterable[str], where: str) -> list[int]:
        out = []
        for n in names:
            if n in index:
                out.append(index[n])
            else:
                problem(problems, "missing-image", n, f"listed in {where} but no such image")
        return out

    query_files = []
    for f in gt_dir.glob("*_query.txt"):
        m = OXFORD_QUERY_RE.match(f.name)
        if m:
            query_files.append((m.group("name"), int(m.group("n")), m.group("base"), f))
    query_files.sort()
    qimlist: list[str] = []
    gnd: list[dict] = []
    for _, _, base, qfile in query_files:
        fields = qfile.read_text(encoding="utf-8", errors="replace").split()
        if len(fields) != 5:
            problem(problems, "bad-row", qfile.name, "expected '<image> x1 y1 x2 y2'; skipped")
            continue
        qname = fields[0]
        if qname not in index and qname.startswith("oxc1_"):
            qname = qname[len("oxc1_") :]
        try:
            bbx = [float(v) for v in fields[1:]]
        except ValueError:
            problem(problems, "bad-row", qfile.name, f"non-numeric box {fields[1:]}; skipped")
            continue
        if qname not in index:
            problem(
                problems, "missing-image", qname, f"query of {qfile.name} has no image; skipped"
            )
            continue
        good = _read_name_list(gt_dir / f"{base}_good.txt", problems)
        ok = _read_name_list(gt_dir / f"{base}_ok.txt", problems)
        junk = _read_name_list(gt_dir / f"{base}_junk.txt", problems)
        where = f"{base}_good/ok/junk.txt"
        positives = list(dict.fromkeys(to_indices(good + ok, where)))
        pos_set = set(positives)
        junk_i = [j for j in dict.fromkeys(to_indices(junk, where)) if j not in pos_set]
        if not [p for p in positives if p != index[qname]]:
            problem(
                problems, "no-positives", base, "no positive image found (left out of the mAP)"
            )
        qimlist.append(imlist[index[qname]])
        gnd.append({"ok": positives, "junk": junk_i, "bbx": bbx})
    if not qimlist:
        raise DatasetError(
            f"no usable query in {str(gt_dir)!r} ({len(query_files)} query files, "
            f"{len(problems)} problems, e.g. {problems[0]['message'] if problems else 'none'})"
        )
    log_problems(problems, gt_dir)
    logger.info("read %d images and %d queries from %s", len(imlist), len(qimlist), root)
    return RetrievalDataset(
        root, imlist, qimlist, gnd, name=root.name, format="oxford-gt", problems=problems
    )


