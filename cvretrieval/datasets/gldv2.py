"""Google Landmarks v2 retrieval: ``index.csv``, ``test.csv``, the solution CSV, images."""

from __future__ import annotations

import csv
import logging
import os
import re
from pathlib import Path

from cvretrieval.errors import DatasetError

from .base import RetrievalDataset, log_problems, problem, require_dir

logger = logging.getLogger(__name__)

_GLD_ID_RE = re.compile(r"^[0-9A-Za-z_-]{3,}$")

# --------------------------------------------------------------------------- Google Landmarks v2
def _gld_image(split: str, image_id: str) -> str:
    return f"{split}/{image_id[0]}/{image_id[1]}/{image_id[2]}/{image_id}.jpg"


def _read_csv_rows(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header (lower-cased) and the data rows with their 1-based line numbers."""
    if not path.is_file():
        raise DatasetError(f"{str(path)!r} does not exist; the gldv2 layout needs it")
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise DatasetError(f"{path} is empty; it needs a header row")
            rows = [(reader.line_num, row) for row in reader if row and any(c.strip() for c in row)]
    except (csv.Error, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path} is not a readable CSV file ({exc})") from None
    return [h.strip().lower() for h in header], rows


def _column(header: list[str], name: str, path: Path) -> int:
    if name not in header:
        raise DatasetError(f"{path}: no {name!r} column (header: {header}); check the file")
    return header.index(name)


def _read_gld_ids(path: Path, problems: list[dict]) -> list[str]:
    header, rows = _read_csv_rows(path)
    col = _column(header, "id", path)
    ids: list[str] = []
    seen: set[str] = set()
    for line, row in rows:
        if len(row) != len(header):
            problem(
                problems,
                "bad-row",
                f"{path.name}:{line}",
                f"{len(row)} fields, expected {len(header)}; skipped",
            )
            continue
        image_id = row[col].strip()
        if not _GLD_ID_RE.match(image_id):
            problem(problems, "bad-row", f"{path.name}:{line}", f"bad id {image_id!r}; skipped")
            continue
        if image_id in seen:
            problem(problems, "bad-row", f"{path.name}:{line}", f"id {image_id} repeated; skipped")
            continue
        seen.add(image_id)
        ids.append(image_id)
    return ids


def read_gldv2(root: str | os.PathLike[str]) -> RetrievalDataset:
    """Read the Google Landmarks v2 retrieval layout.

    ``root`` holds ``index.csv`` (column ``id``), ``test.csv`` (column ``id``), a
    solution ``retrieval_solution_v2.1.csv`` (any ``retrieval_solution*.csv``
    when that is absent; columns ``id``, ``images`` = space-separated index ids,
    ``Usage``) and the images ``index/a/b/c/abc....jpg`` and ``test/a/b/c/....jpg``
    (``a``, ``b``, ``c`` = the first three characters of the id).

    Queries are the test images with a solution (``Usage`` ``Public`` or
    ``Private``). Test images whose solution is ``None``, empty, ``Ignored`` or
    absent are non-landmark queries: skipped and listed in ``problems`` with kind
    ``"non-landmark"``. Malformed rows (wrong field count, bad or repeated id,
    unknown ``Usage``) and solution ids missing from ``index.csv`` are listed with
    kind ``"bad-row"`` / ``"unknown-index-id"`` and skipped.

    Parameters
    ----------
    root : path-like
        The folder holding the CSV files and the ``index/`` and ``test/`` folders.

    Returns
    -------
    RetrievalDataset
        ``format="gldv2"``; :func:`cvretrieval.evaluation.evaluate` then also
        reports the challenge's ``mAP@100 (GLDv2)``.

    Raises
    ------
    DatasetError
        A missing CSV file or column, an empty index, or no usable query.

    References
    ----------
    .. [1] T. Weyand et al., "Google Landmarks Dataset v2", CVPR 2020.
    """
    root = require_dir(root, "gldv2")
    problems: list[dict] = []
    index_ids = _read_gld_ids(root / "index.csv", problems)
    test_ids = _read_gld_ids(root / "test.csv", problems)
    if not index_ids:
        raise DatasetError(f"{root / 'index.csv'} lists no valid index image id")
    sol_path = root / "retrieval_solution_v2.1.csv"
    if not sol_path.is_file():
        found = sorted(root.glob("retrieval_solution*.csv"))
        if len(found) != 1:
            raise DatasetError(
                f"no retrieval solution in {str(root)!r}: expected retrieval_solution_v2.1.csv "
                f"(found {[p.name for p in found]})"
            )
        sol_path = found[0]
    header, rows = _read_csv_rows(sol_path)
    c_id, c_images = _column(header, "id", sol_path), _column(header, "images", sol_path)
    c_usage = header.index("usage") if "usage" in header else None
    index_pos = {image_id: i for i, image_id in enumerate(index_ids)}
    test_set = set(test_ids)
    solution: dict[str, list[int]] = {}
    reported: set[str] = set()  # test ids whose row was already reported as a problem
    for line, row in rows:
        where = f"{sol_path.name}:{line}"
        if len(row) != len(header):
            problem(problems, "bad-row", where, f"{len(row)} fields, expected {len(header)}")
            if len(row) > c_id:
                reported.add(row[c_id].strip())
            continue
        test_id = row[c_id].strip()
        usage = row[c_usage].strip() if c_usage is not None else "Public"
        images = row[c_images].strip()
        if test_id not in test_set:
            problem(problems, "bad-row", where, f"test id {test_id!r} is not in test.csv")
            continue
        if test_id in solution or test_id in reported:
            problem(problems, "bad-row", where, f"test id {test_id} repeated; first row kept")
            continue
        if usage == "Ignored" or not images or images == "None":
            continue  # a non-landmark query: reported below with the test ids lacking a solution
        if usage not in ("Public", "Private"):
            problem(
                problems, "bad-row", where, f"unknown Usage {usage!r} (Public/Private/Ignored)"
            )
            reported.add(test_id)
            continue
        ok = []
        for image_id in images.split():
            if image_id in index_pos:
                ok.append(index_pos[image_id])
            else:
                problem(problems, "unknown-index-id", where, f"{image_id} is not in index.csv")
        if not ok:
            problem(problems, "no-positives", where, f"no solution image of {test_id} is indexed")
            reported.add(test_id)
            continue
        solution[test_id] = list(dict.fromkeys(ok))
    qimlist, gnd = [], []
    for test_id in test_ids:
        if test_id in solution:
            qimlist.append(_gld_image("test", test_id))
            gnd.append({"ok": solution[test_id], "junk": []})
        elif test_id not in reported:
            problem(problems, "non-landmark", test_id, "no landmark in the solution; skipped")
    if not qimlist:
        raise DatasetError(
            f"no test image of {str(root)!r} has a solution with indexed images; "
            f"check {sol_path.name}"
        )
    log_problems(problems, root)
    imlist = [_gld_image("index", image_id) for image_id in index_ids]
    logger.info(
        "read GLDv2 %s: %d index images, %d landmark queries of %d test images",
        root,
        len(imlist),
        len(qimlist),
        len(test_ids),
    )
    return RetrievalDataset(
        root, imlist, qimlist, gnd, name=root.name, format="gldv2", problems=problems
    )


