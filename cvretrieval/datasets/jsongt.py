"""The ground-truth JSON reader, with the checks that make an untrusted file harmless.

A ground-truth file may only name images inside its own folder (no absolute
path, no ``..`` leaving it), is opened only when it is a regular file, and any
listed path that exists but is not a regular file (a FIFO, a device, a folder)
is skipped and reported instead of being opened later.
"""

from __future__ import annotations

import json
import logging
import os
import re
import stat
from pathlib import Path
from typing import Any

from cvretrieval.errors import DatasetError

from .base import (
    RetrievalDataset,
    dataset_from,
    file_kind,
    log_problems,
    problem,
    require_regular_file,
)
from .groundtruth import short_repr

logger = logging.getLogger(__name__)

_KNOWN_KEYS = {"imlist", "qimlist", "gnd", "name", "protocols", "protocol"}


def unsafe_reason(rel: str) -> str | None:
    """Why a ground-truth path would leave its data set's folder, or None if it stays inside."""
    if "\x00" in rel:
        return "it contains a NUL character"
    try:
        os.fsencode(rel)
    except UnicodeError:
        return "it is not a valid file name"
    text = rel.replace("\\", "/")
    if text.startswith("/") or re.match(r"^[A-Za-z]:", text):
        return "it is an absolute path"
    depth = 0
    for part in text.split("/"):
        if part in ("", "."):
            continue
        depth += -1 if part == ".." else 1
        if depth < 0:
            return "its '..' leads out of the folder"
    return None


def _json_path_list(doc: dict, key: str, path: Path) -> list[str]:
    value = doc[key]
    if not isinstance(value, list):
        raise DatasetError(
            f"{path}: {key!r} must be a list of image paths, got {type(value).__name__}"
        )
    root = path.parent
    for i, p in enumerate(value):
        if not isinstance(p, str) or not p:
            raise DatasetError(
                f"{path}: {key}[{i}] is {short_repr(p)}; it must be a non-empty path string"
            )
        why = unsafe_reason(p)
        if why:
            raise DatasetError(
                f"{path}: {key}[{i}] {short_repr(p)} is refused: {why}; ground-truth paths "
                f"must be relative and stay inside the data set's folder {str(root)!r}"
            )
    return list(value)


def _load_json(path: Path) -> Any:
    require_regular_file(path, "ground-truth file")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise DatasetError(f"cannot read {path} ({type(exc).__name__}: {exc.strerror})") from None
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise DatasetError(
            f"{path} is not UTF-8 text (bad byte at offset {exc.start}); fix the file"
        ) from None
    except RecursionError:
        raise DatasetError(
            f"{path} nests arrays/objects too deeply to be a ground-truth file; fix the file"
        ) from None
    except ValueError as exc:  # JSONDecodeError, too many digits in a number
        msg = " ".join(str(exc).split())[:120]
        raise DatasetError(f"{path} is not valid JSON ({msg}); fix the file") from None


def _drop_non_regular(ds: RetrievalDataset, source: Path) -> RetrievalDataset:
    """Skip (and report) listed paths that exist but are not regular files; warn on missing."""
    problems = list(ds.problems)
    bad: set[str] = set()
    missing: list[str] = []
    for rel in dict.fromkeys(ds.imlist + ds.qimlist):
        try:
            st = os.stat(ds.root / rel)
        except (OSError, ValueError):
            missing.append(rel)
            continue
        if not stat.S_ISREG(st.st_mode):
            bad.add(rel)
            problem(
                problems,
                "not-a-file",
                rel,
                f"a {file_kind(st.st_mode)}, not a regular file: skipped, never opened",
            )
    if missing:
        logger.warning(
            "%s: %d of %d listed images do not exist (e.g. %s)",
            source,
            len(missing),
            len(set(ds.imlist) | set(ds.qimlist)),
            missing[0],
        )
    if not bad:
        return ds
    keep = [i for i, p in enumerate(ds.imlist) if p not in bad]
    new_index = {old: new for new, old in enumerate(keep)}
    queries = [q for q, p in enumerate(ds.qimlist) if p not in bad]

    def remap(gnd: Any) -> list[dict]:
        out = []
        for q in queries:
            e = gnd.entry(q)
            e["ok"] = [new_index[j] for j in e["ok"] if j in new_index]
            e["junk"] = [new_index[j] for j in e["junk"] if j in new_index]
            if "graded" in e:
                e["graded"] = [[new_index[j], g] for j, g in e["graded"] if j in new_index]
            out.append(e)
        return out

    log_problems([p for p in problems if p["kind"] == "not-a-file"], source)
    return dataset_from(
        source,
        ds.root,
        [ds.imlist[i] for i in keep],
        [ds.qimlist[q] for q in queries],
        remap(ds.gnd),
        name=ds.name,
        format=ds.format,
        protocols={k: remap(v) for k, v in ds.protocols.items()},
        protocol=ds.protocol,
        problems=problems,
    )


def read_gt_json(path: str | os.PathLike[str]) -> RetrievalDataset:
    """Read a ground-truth JSON file.

    The file holds ``{"imlist": [...], "qimlist": [...], "gnd": [{"ok": [...],
    "junk": [...], "bbx": [x1, y1, x2, y2], "graded": [[index, grade], ...]},
    ...]}`` (``junk``, ``bbx`` and ``graded`` optional; without ``ok``, the
    images graded above 0 are relevant); paths are relative to the JSON file's
    folder and must stay inside it. Optional keys: ``name``, ``protocols``
    (``{"easy": [gnd...], ...}``) and ``protocol``.

    Only a regular file is opened. A listed path that exists but is not a
    regular file (FIFO, device, folder) is skipped (a gallery image is dropped
    from every query's lists, a query is dropped) and reported in
    ``problems`` with kind ``"not-a-file"``; missing images are logged (``cvret
    datasets check`` lists them).

    Parameters
    ----------
    path : path-like
        The JSON file.

    Returns
    -------
    RetrievalDataset
        With ``root`` = the JSON file's folder.

    Raises
    ------
    DatasetError
        Missing or non-regular file, invalid JSON (or nested too deeply), a
        missing key, a wrong type, a path that is absolute or leaves the folder,
        ``len(gnd) != len(qimlist)``, an out-of-range index, a bad grade; one line
        naming the file and the key/query.
    """
    path = Path(path)
    doc = _load_json(path)
    if not isinstance(doc, dict):
        raise DatasetError(
            f"{path}: the top level must be an object with keys imlist, qimlist, gnd, "
            f"got {type(doc).__name__}"
        )
    for key in ("imlist", "qimlist", "gnd"):
        if key not in doc:
            raise DatasetError(
                f"{path}: missing key {key!r}; the file needs imlist, qimlist and gnd"
            )
    extra = sorted(map(str, set(doc) - _KNOWN_KEYS))
    if extra:
        logger.warning("%s: ignoring unknown top-level keys %s", path, short_repr(extra))
    imlist = _json_path_list(doc, "imlist", path)
    qimlist = _json_path_list(doc, "qimlist", path)
    gnd = doc["gnd"]
    if not isinstance(gnd, list):
        raise DatasetError(f"{path}: 'gnd' must be a list of objects, got {type(gnd).__name__}")
    protocols = doc.get("protocols") or {}
    if not isinstance(protocols, dict):
        raise DatasetError(
            f"{path}: 'protocols' must be an object of name -> gnd list, "
            f"got {type(protocols).__name__}"
        )
    protocol = doc.get("protocol") or ""
    if not isinstance(protocol, str):
        raise DatasetError(f"{path}: 'protocol' must be a string, got {short_repr(protocol)}")
    root = path.parent
    name = doc.get("name") if isinstance(doc.get("name"), str) else None
    if not name:
        name = root.absolute().name if path.stem == "gt" else path.stem
    ds = dataset_from(
        path, root, imlist, qimlist, gnd,
        name=name, format="json", protocols=protocols, protocol=protocol,
    )
    return _drop_non_regular(ds, path)
