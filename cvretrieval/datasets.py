"""Retrieval data sets: a gallery, a list of queries and, per query, the relevant images.

A :class:`RetrievalDataset` follows the revisitop convention (``imlist``,
``qimlist``, ``gnd``): every query ``i`` has ``gnd[i]["ok"]`` (indices into
``imlist`` of its relevant images), ``gnd[i]["junk"]`` (indices to ignore when
scoring) and optionally ``gnd[i]["bbx"]`` (a query region ``[x1, y1, x2, y2]``).
A data set may also carry several ground truths (``protocols``, e.g. revisited
Oxford's Easy / Medium / Hard) and the list of what its reader had to skip
(``problems``).

Layouts read (see :data:`DATASET_FORMATS`):

``class-folders``
    ``root/<class>/<images...>``: every image is a query, the other images of its
    class are its positives.
``json``
    a ground-truth file ``{"imlist": [...], "qimlist": [...], "gnd": [...]}`` with
    paths relative to the file's folder (written by :meth:`RetrievalDataset.to_json`).
``ukbench``
    a folder of ``ukbenchNNNNN.jpg``; image ``NNNNN`` belongs to group ``NNNNN // 4``.
``revisitop``
    revisited Oxford / Paris: ``gnd_roxford5k.pkl`` or ``gnd_rparis6k.pkl`` beside
    ``jpg/<name>.jpg``; protocols ``easy``, ``medium``, ``hard``.
``oxford-gt``
    classic Oxford5k / Paris6k ground-truth text files ``<name>_<n>_{query,good,ok,junk}.txt``
    beside the images.
``holidays``
    INRIA Holidays: ``NNNNNN.jpg``; images ``NNNN00`` are the queries, the rest of
    their hundred are the positives.
``gldv2``
    Google Landmarks v2 retrieval: ``index.csv``, ``test.csv``,
    ``retrieval_solution_v2.1.csv``, images ``index/a/b/c/abc....jpg`` and
    ``test/a/b/c/...jpg``.
``gld-tfrecord``
    TFRecord shards with ``image/encoded`` and ``image/class/label`` (Google
    Landmarks 2020), extracted into a cache folder; same landmark = positive.

References
----------
.. [1] F. Radenović, A. Iscen, G. Tolias, Y. Avrithis, O. Chum, "Revisiting Oxford
       and Paris: Large-Scale Image Retrieval Benchmarking", CVPR 2018.
.. [2] D. Nistér, H. Stewénius, "Scalable Recognition with a Vocabulary Tree",
       CVPR 2006.
.. [3] J. Philbin, O. Chum, M. Isard, J. Sivic, A. Zisserman, "Object retrieval with
       large vocabularies and fast spatial matching", CVPR 2007 (Oxford5k).
.. [4] H. Jégou, M. Douze, C. Schmid, "Hamming embedding and weak geometric
       consistency for large scale image search", ECCV 2008 (INRIA Holidays).
.. [5] T. Weyand, A. Araujo, B. Cao, J. Sim, "Google Landmarks Dataset v2 - A
       Large-Scale Benchmark for Instance-Level Recognition and Retrieval", CVPR 2020.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import importlib
import json
import logging
import os
import pickle
import re
import struct
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from cvretrieval._json import atomic_write, write_json_atomic
from cvretrieval.errors import DatasetError, ImageReadError, MissingExtraError

logger = logging.getLogger(__name__)

__all__ = [
    "DATASET_FORMATS",
    "REVISITOP_PROTOCOLS",
    "RetrievalDataset",
    "check_dataset",
    "format_check",
    "load_dataset",
    "read_class_folders",
    "read_gld_tfrecord",
    "read_gldv2",
    "read_gt_json",
    "read_holidays",
    "read_oxford_gt",
    "read_revisitop",
    "read_ukbench",
    "revisitop_protocols",
    "safe_pickle_load",
]

DATASET_FORMATS: tuple[str, ...] = (
    "class-folders",
    "json",
    "ukbench",
    "revisitop",
    "oxford-gt",
    "holidays",
    "gldv2",
    "gld-tfrecord",
)

#: the revisited Oxford / Paris evaluation protocols, in revisitop's order
REVISITOP_PROTOCOLS: tuple[str, ...] = ("easy", "medium", "hard")

_LAYOUTS_HELP = (
    "supported layouts: a ground-truth .json file (or a folder holding gt.json), "
    "a folder of ukbenchNNNNN.jpg images (ukbench), "
    "a revisitop gnd_*.pkl (or its folder), Oxford/Paris *_query.txt ground truth (oxford-gt), "
    "a folder of NNNNNN.jpg INRIA Holidays images (holidays), "
    "a Google Landmarks v2 folder with index.csv and test.csv (gldv2), "
    "TFRecord shards (gld-tfrecord), "
    "or a folder with one sub-folder of images per class (class-folders)"
)

_FALLBACK_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)
_UKBENCH_RE = re.compile(r"^ukbench(\d{5})$", re.IGNORECASE)
_HOLIDAYS_RE = re.compile(r"^(\d{6})$")
_OXFORD_QUERY_RE = re.compile(r"^(?P<base>(?P<name>.+)_(?P<n>\d+))_query\.txt$")
_GLD_ID_RE = re.compile(r"^[0-9A-Za-z_-]{3,}$")
_TFRECORD_SUFFIXES = (".tfrecord", ".tfrecords", ".tfrec")
_TFRECORD_SHARD_RE = re.compile(r"^[A-Za-z0-9_.-]+-\d{5}-of-\d{5}$")

BBox = tuple[float, float, float, float]


# --------------------------------------------------------------------------- listing images
def _fallback_list_images(root: Path, *, recursive: bool = True) -> list[Path]:
    """Sorted image files under ``root`` (hidden files and folders skipped)."""
    found: list[Path] = []
    if recursive:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                if not name.startswith(".") and Path(name).suffix.lower() in _FALLBACK_EXTENSIONS:
                    found.append(Path(dirpath) / name)
    else:
        for entry in root.iterdir():
            if (
                entry.is_file()
                and not entry.name.startswith(".")
                and entry.suffix.lower() in _FALLBACK_EXTENSIONS
            ):
                found.append(entry)
    return sorted(found)


def _list_images(root: Path, *, recursive: bool = True) -> list[Path]:
    """List image files with :func:`cvretrieval.io.list_images`, or a local fallback."""
    try:
        from cvretrieval.io import list_images
    except ImportError:  # io not available: use the same rule locally
        return _fallback_list_images(root, recursive=recursive)
    return list(list_images(root, recursive=recursive))


def _rel_posix(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


# --------------------------------------------------------------------------- validation
def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


def _check_indices(
    values: Any, key: str, query: int, n_images: int, label: str = "gnd"
) -> list[int]:
    if isinstance(values, np.ndarray):
        values = values.ravel().tolist()
    if not isinstance(values, (list, tuple)):
        raise DatasetError(
            f"{label}[{query}][{key!r}] must be a list of image indices, "
            f"got {type(values).__name__}"
        )
    out: list[int] = []
    for v in values:
        if not _is_int(v):
            raise DatasetError(
                f"{label}[{query}][{key!r}] holds {v!r} ({type(v).__name__}); "
                "indices must be integers into imlist"
            )
        if not 0 <= int(v) < n_images:
            raise DatasetError(
                f"{label}[{query}][{key!r}] holds index {int(v)}, out of range for "
                f"{n_images} gallery images (valid: 0..{n_images - 1})"
            )
        out.append(int(v))
    if len(set(out)) != len(out):
        logger.debug("%s[%d][%r] lists an index twice; duplicates dropped", label, query, key)
        out = list(dict.fromkeys(out))
    return out


def _check_bbx(value: Any, query: int, label: str = "gnd") -> list[float]:
    if isinstance(value, np.ndarray):
        value = value.ravel().tolist()
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 4
        or not all(_is_number(v) and np.isfinite(v) for v in value)
    ):
        raise DatasetError(
            f"{label}[{query}]['bbx'] is {value!r}; it must be 4 finite numbers [x1, y1, x2, y2]"
        )
    return [float(v) for v in value]


def _validate_gnd(entries: Any, n_images: int, n_queries: int, label: str) -> list[dict]:
    """Check one ground truth (a list of per-query dicts) and return a cleaned copy."""
    if not isinstance(entries, (list, tuple)):
        raise DatasetError(f"{label} must be a list of per-query objects")
    if len(entries) != n_queries:
        raise DatasetError(
            f"{label} has {len(entries)} entries but qimlist has {n_queries} queries; "
            f"give one {label} entry per query"
        )
    checked: list[dict] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise DatasetError(
                f"{label}[{i}] is a {type(entry).__name__}; it must be an object "
                'like {"ok": [...], "junk": [...]}'
            )
        if "ok" not in entry:
            raise DatasetError(
                f"{label}[{i}] has no 'ok' key (keys: {sorted(entry)}); "
                "list the relevant gallery indices under 'ok'"
            )
        new = dict(entry)
        new["ok"] = _check_indices(entry["ok"], "ok", i, n_images, label)
        new["junk"] = _check_indices(entry.get("junk", []), "junk", i, n_images, label)
        if entry.get("bbx") is not None:
            new["bbx"] = _check_bbx(entry["bbx"], i, label)
        else:
            new.pop("bbx", None)
        checked.append(new)
    return checked


def _problem(problems: list[dict], kind: str, item: str, message: str) -> None:
    """Record something a reader skipped or could not use (logged at DEBUG, summarised later)."""
    problems.append({"kind": kind, "item": item, "message": message})
    logger.debug("%s: %s: %s", kind, item, message)


def _log_problems(problems: Sequence[dict], source: Any) -> None:
    """One warning per kind of problem (none when there is none)."""
    counts = Counter(p["kind"] for p in problems)
    for kind, n in sorted(counts.items()):
        example = next(p for p in problems if p["kind"] == kind)
        logger.warning(
            "%s: %d %s (e.g. %s: %s); listed in dataset.problems",
            source,
            n,
            kind,
            example["item"],
            example["message"],
        )


# --------------------------------------------------------------------------- the data set
@dataclass
class RetrievalDataset:
    """A gallery, its queries and the ground truth of every query.

    Parameters
    ----------
    root : Path
        Folder that the relative paths of ``imlist`` and ``qimlist`` are relative to.
    imlist : list of str, length n_images
        Gallery images, POSIX paths relative to ``root``.
    qimlist : list of str, length n_queries
        Query images, POSIX paths relative to ``root``.
    gnd : list of dict, length n_queries
        Per query: ``"ok"`` (list of int, indices into ``imlist`` of the relevant
        images), ``"junk"`` (list of int, ignored when scoring) and optionally
        ``"bbx"`` (``[x1, y1, x2, y2]``, the query region in pixels).
    name : str
        A short name (by default the folder's name).
    format : str
        The layout it was read from: one of :data:`DATASET_FORMATS`, or ``""``.
    protocols : dict of str to list of dict, optional
        Alternative ground truths with the same shape as ``gnd`` (revisited
        Oxford / Paris: ``"easy"``, ``"medium"``, ``"hard"``). Empty for most data
        sets. :func:`cvretrieval.evaluation.evaluate` scores every protocol.
    protocol : str, optional
        Which entry of ``protocols`` ``gnd`` is (``""`` when there are none).
    problems : list of dict, optional
        What the reader skipped or found wrong: ``{"kind", "item", "message"}``
        (e.g. ``kind="non-landmark"`` for a GLDv2 query without a solution,
        ``"bad-row"``, ``"missing-image"``, ``"no-positives"``).

    Raises
    ------
    DatasetError
        If there are no gallery images or no queries, ``len(gnd) != len(qimlist)``,
        an index is not an integer or out of range, a ``bbx`` is not 4 numbers, or
        ``protocol`` is not a key of ``protocols``.

    References
    ----------
    .. [1] F. Radenović et al., "Revisiting Oxford and Paris: Large-Scale Image
           Retrieval Benchmarking", CVPR 2018.

    Examples
    --------
    >>> ds = RetrievalDataset(Path("."), ["a.jpg", "b.jpg"], ["a.jpg"], [{"ok": [1]}])
    >>> ds.gnd[0]["junk"], ds.query_self_index()
    ([], [0])
    """

    root: Path
    imlist: list[str]
    qimlist: list[str]
    gnd: list[dict] = field(repr=False)
    name: str = ""
    format: str = ""
    protocols: dict[str, list[dict]] = field(default_factory=dict, repr=False)
    protocol: str = ""
    problems: list[dict] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.imlist = [str(p) for p in self.imlist]
        self.qimlist = [str(p) for p in self.qimlist]
        if not self.imlist:
            raise DatasetError(
                f"data set {self.name or str(self.root)!r} has no gallery images; "
                "check the path and the layout"
            )
        if not self.qimlist:
            raise DatasetError(
                f"data set {self.name or str(self.root)!r} has no query images; "
                "add at least one query"
            )
        if len(self.gnd) != len(self.qimlist):
            raise DatasetError(
                f"gnd has {len(self.gnd)} entries but qimlist has {len(self.qimlist)} queries; "
                "give one gnd entry per query"
            )
        n, nq = len(self.imlist), len(self.qimlist)
        self.gnd = _validate_gnd(self.gnd, n, nq, "gnd")
        if not isinstance(self.protocols, dict):
            raise DatasetError(
                f"protocols must be a dict of name -> gnd list, got {type(self.protocols).__name__}"
            )
        self.protocols = {
            str(name): _validate_gnd(g, n, nq, f"protocols[{name!r}]")
            for name, g in self.protocols.items()
        }
        if self.protocol and self.protocol not in self.protocols:
            raise DatasetError(
                f"protocol {self.protocol!r} is not one of the data set's protocols "
                f"{sorted(self.protocols) or '(none)'}"
            )
        self.problems = [dict(p) for p in self.problems]

    # ------------------------------------------------------------------ accessors
    def image_paths(self) -> list[Path]:
        """Gallery image paths, ``root / imlist[i]`` (length n_images)."""
        return [self.root / p for p in self.imlist]

    def query_paths(self) -> list[Path]:
        """Query image paths, ``root / qimlist[i]`` (length n_queries)."""
        return [self.root / p for p in self.qimlist]

    def query_bboxes(self) -> list[BBox | None]:
        """The query regions ``(x1, y1, x2, y2)``, or ``None`` for a whole-image query."""
        out: list[BBox | None] = []
        for g in self.gnd:
            b = g.get("bbx")
            out.append(None if b is None else (b[0], b[1], b[2], b[3]))
        return out

    def query_self_index(self) -> list[int | None]:
        """Index in ``imlist`` of each query's own image (same relative path), or ``None``."""
        where = {PurePosixPath(p).as_posix(): i for i, p in enumerate(self.imlist)}
        return [where.get(PurePosixPath(q).as_posix()) for q in self.qimlist]

    def with_protocol(self, protocol: str) -> RetrievalDataset:
        """A copy whose ``gnd`` is ``protocols[protocol]`` (e.g. ``"hard"``).

        Raises
        ------
        DatasetError
            If the data set has no such protocol.
        """
        if protocol not in self.protocols:
            raise DatasetError(
                f"data set {self.name!r} has no protocol {protocol!r}; "
                f"available: {sorted(self.protocols) or '(none: it has a single ground truth)'}"
            )
        return dataclasses.replace(self, gnd=self.protocols[protocol], protocol=protocol)

    def summary(self) -> dict[str, int | float]:
        """Counts: ``images``, ``queries``, ``queries_without_positives``, ``mean_positives``.

        ``mean_positives`` is the mean number of ``ok`` images over all queries.
        """
        n_ok = [len(g["ok"]) for g in self.gnd]
        return {
            "images": len(self.imlist),
            "queries": len(self.qimlist),
            "queries_without_positives": sum(1 for n in n_ok if n == 0),
            "mean_positives": float(np.mean(n_ok)) if n_ok else 0.0,
        }

    def to_json(self, path: str | os.PathLike[str]) -> None:
        """Write the data set as a ground-truth JSON file readable by :func:`read_gt_json`.

        Image paths are written relative to the folder holding ``path``;
        ``protocols`` and ``protocol`` are written when the data set has protocols.
        """
        path = Path(path)
        base = path.absolute().parent

        def rel(p: str) -> str:
            full = os.path.abspath(self.root / p)
            return Path(os.path.relpath(full, base)).as_posix()

        def dump(gnd: list[dict]) -> list[dict]:
            out = []
            for g in gnd:
                e: dict[str, Any] = {"ok": list(g["ok"]), "junk": list(g.get("junk", []))}
                if g.get("bbx") is not None:
                    e["bbx"] = list(g["bbx"])
                out.append(e)
            return out

        doc: dict[str, Any] = {
            "imlist": [rel(p) for p in self.imlist],
            "qimlist": [rel(p) for p in self.qimlist],
            "gnd": dump(self.gnd),
        }
        if self.protocols:
            doc["protocols"] = {k: dump(v) for k, v in self.protocols.items()}
            if self.protocol:
                doc["protocol"] = self.protocol
        base.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, doc, indent=1)
        logger.info("wrote ground truth of %d queries to %s", len(self.qimlist), path)


# --------------------------------------------------------------------------- readers
def _dataset_from(
    source: Any,
    root: Path,
    imlist: list[str],
    qimlist: list[str],
    gnd: list[dict],
    **kwargs: Any,
) -> RetrievalDataset:
    """``RetrievalDataset(root, imlist, qimlist, gnd, **kwargs)``; its errors name ``source``."""
    try:
        return RetrievalDataset(root, imlist, qimlist, gnd, **kwargs)
    except DatasetError as exc:
        raise DatasetError(f"{source}: {exc}") from None


def _require_dir(root: str | os.PathLike[str], layout: str) -> Path:
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"data set path {str(root)!r} does not exist; check the path")
    if not root.is_dir():
        raise DatasetError(f"the {layout} layout needs a folder, got the file {str(root)!r}")
    return root


def _groups_to_gnd(labels: Sequence[Any]) -> list[dict]:
    """Every item a query; its positives are the other items with the same label."""
    members: dict[Any, list[int]] = defaultdict(list)
    for i, c in enumerate(labels):
        members[c].append(i)
    return [{"ok": [j for j in members[c] if j != i], "junk": []} for i, c in enumerate(labels)]


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
        ``qimlist == imlist`` (sorted POSIX paths relative to ``root``).

    Raises
    ------
    DatasetError
        If ``root`` is missing or no class folder holds an image.
    """
    root = _require_dir(root, "class-folders")
    loose = _list_images(root, recursive=False)
    if loose:
        logger.warning(
            "ignoring %d image(s) directly in %s (e.g. %s): class-folders expects "
            "root/<class>/<images>",
            len(loose),
            root,
            loose[0].name,
        )
    entries: list[tuple[str, str]] = []  # (relative path, class)
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        images = _list_images(sub, recursive=True)
        if not images:
            logger.warning("class folder %s holds no image; skipped", sub)
            continue
        entries.extend((_rel_posix(p, root), sub.name) for p in images)
    if not entries:
        raise DatasetError(
            f"no class sub-folder of {str(root)!r} holds an image; class-folders expects "
            "root/<class>/<images>"
        )
    entries.sort()
    imlist = [p for p, _ in entries]
    labels = [c for _, c in entries]
    gnd = _groups_to_gnd(labels)
    sizes = Counter(labels)
    singles = sum(1 for n in sizes.values() if n == 1)
    if singles:
        logger.warning("%d class(es) have a single image: those queries have no positives", singles)
    logger.info("read %d images in %d classes from %s", len(imlist), len(sizes), root)
    return RetrievalDataset(root, imlist, list(imlist), gnd, name=root.name, format="class-folders")


def _json_path_list(doc: dict, key: str, path: Path) -> list[str]:
    value = doc[key]
    if not isinstance(value, list):
        raise DatasetError(
            f"{path}: {key!r} must be a list of image paths, got {type(value).__name__}"
        )
    for i, p in enumerate(value):
        if not isinstance(p, str) or not p:
            raise DatasetError(f"{path}: {key}[{i}] is {p!r}; it must be a non-empty path string")
    return list(value)


def read_gt_json(path: str | os.PathLike[str]) -> RetrievalDataset:
    """Read a ground-truth JSON file.

    The file holds ``{"imlist": [...], "qimlist": [...], "gnd": [{"ok": [...],
    "junk": [...], "bbx": [x1, y1, x2, y2]}, ...]}`` (``junk`` and ``bbx``
    optional); paths are relative to the JSON file's folder. Optional keys:
    ``name``, ``protocols`` (``{"easy": [gnd...], ...}``) and ``protocol``.

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
        Missing file, invalid JSON, a missing key, a wrong type, ``len(gnd) !=
        len(qimlist)`` or an out-of-range index; the message names the key/query.
    """
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"ground-truth file {str(path)!r} does not exist; check the path")
    if not path.is_file():
        raise DatasetError(f"ground-truth path {str(path)!r} is not a file")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path} is not valid JSON ({exc}); fix the file") from exc
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
    extra = sorted(set(doc) - {"imlist", "qimlist", "gnd", "name", "protocols", "protocol"})
    if extra:
        logger.warning("%s: ignoring unknown top-level keys %s", path, extra)
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
        raise DatasetError(f"{path}: 'protocol' must be a string, got {protocol!r}")
    root = path.parent
    name = doc.get("name") if isinstance(doc.get("name"), str) else None
    if not name:
        name = root.absolute().name if path.stem == "gt" else path.stem
    ds = _dataset_from(
        path, root, imlist, qimlist, gnd,
        name=name, format="json", protocols=protocols, protocol=protocol,
    )
    missing = [p for p in ds.image_paths() if not p.exists()]
    if missing:
        logger.warning(
            "%s: %d of %d gallery images do not exist (e.g. %s)",
            path,
            len(missing),
            len(imlist),
            missing[0],
        )
    return ds


def read_ukbench(root: str | os.PathLike[str]) -> RetrievalDataset:
    """Read a folder of UKBench images ``ukbenchNNNNN.jpg`` (any case).

    Image ``NNNNN`` belongs to group ``NNNNN // 4``. Every image is a query; its
    positives are the other members of its group that are present.

    Parameters
    ----------
    root : path-like
        The folder holding the images (not searched recursively).

    Returns
    -------
    RetrievalDataset
        ``qimlist == imlist``, sorted by image number.

    Raises
    ------
    DatasetError
        If ``root`` is missing or holds no ``ukbenchNNNNN`` image.

    References
    ----------
    .. [1] D. Nistér, H. Stewénius, "Scalable Recognition with a Vocabulary Tree",
           CVPR 2006.
    """
    root = _require_dir(root, "ukbench")
    numbered: list[tuple[int, str]] = []
    other = []
    for p in _list_images(root, recursive=False):
        m = _UKBENCH_RE.match(p.stem)
        if m:
            numbered.append((int(m.group(1)), p.name))
        else:
            other.append(p.name)
    if other:
        logger.warning(
            "ignoring %d image(s) in %s not named ukbenchNNNNN (e.g. %s)",
            len(other),
            root,
            other[0],
        )
    if not numbered:
        raise DatasetError(
            f"no ukbenchNNNNN image in {str(root)!r}; the ukbench layout is a folder of "
            "ukbench00000.jpg, ukbench00001.jpg, ..."
        )
    numbered.sort()
    imlist = [name for _, name in numbered]
    groups = [n // 4 for n, _ in numbered]
    gnd = _groups_to_gnd(groups)
    logger.info("read %d UKBench images in %d groups from %s", len(imlist), len(set(groups)), root)
    return RetrievalDataset(root, imlist, list(imlist), gnd, name=root.name, format="ukbench")


# --------------------------------------------------------------------------- revisitop pickle
_PLAIN_GLOBALS = {
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("__builtin__", "set"),
    ("__builtin__", "frozenset"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),  # how protocol 2 spells a bytes object
}
_NUMPY_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
}


def _numpy_global(module: str, name: str) -> Any:
    if module == "numpy":
        return getattr(np, name)
    modern = module.replace("numpy.core.", "numpy._core.")
    try:
        return getattr(importlib.import_module(modern), name)
    except ImportError:  # numpy < 2 has no numpy._core
        return getattr(importlib.import_module(module.replace("numpy._core.", "numpy.core.")), name)


class _RefusedGlobal(pickle.UnpicklingError):
    """A pickle referenced a global that :class:`_RestrictedUnpickler` does not admit."""


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds plain containers and numpy arrays, and nothing else.

    Lists, dicts, tuples, strings, numbers and ``None`` need no global at all;
    ``find_class`` admits only sets, ``OrderedDict``, ``_codecs.encode`` (bytes
    in protocol 2) and the few numpy functions that rebuild an array or a
    scalar. Any other global (``os.system``, ``builtins.eval``, a class...) is
    refused before it is imported.
    """

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _NUMPY_GLOBALS:
            return _numpy_global(module, name)
        if (module, name) in _PLAIN_GLOBALS:
            return super().find_class(module, name)
        raise _RefusedGlobal(
            f"refusing to load the global {module}.{name}: a ground-truth pickle holds only "
            "lists, dicts, numbers, strings and numpy arrays"
        )


def safe_pickle_load(path: str | os.PathLike[str]) -> Any:
    """Load a pickle that may hold only plain containers, numbers, strings and numpy arrays.

    Parameters
    ----------
    path : path-like
        The pickle file (e.g. revisitop's ``gnd_roxford5k.pkl``).

    Returns
    -------
    object
        The unpickled lists / dicts / arrays.

    Raises
    ------
    DatasetError
        If the file is missing, not a pickle, or references any other global
        (a pickle that would run code, e.g. ``os.system``, is refused unloaded).
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"pickle file {str(path)!r} does not exist; check the path")
    try:
        with path.open("rb") as f:
            return _RestrictedUnpickler(f, encoding="latin1").load()
    except _RefusedGlobal as exc:
        raise DatasetError(f"{path}: {exc}") from None
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
    ) as exc:
        raise DatasetError(
            f"{path} is not a readable ground-truth pickle ({type(exc).__name__}: {exc})"
        ) from None


def revisitop_protocols(gnd: Sequence[dict]) -> dict[str, list[dict]]:
    """The Easy / Medium / Hard ground truths from revisitop's ``easy``/``hard``/``junk``.

    Exactly as revisitop's ``example_evaluate.py``: Easy: ok = easy, junk = junk +
    hard; Medium: ok = easy + hard, junk = junk; Hard: ok = hard, junk = junk + easy.
    ``bbx`` is kept.

    Parameters
    ----------
    gnd : sequence of dict
        Per query ``"easy"``, ``"hard"``, ``"junk"`` (lists or arrays of indices)
        and optionally ``"bbx"``.

    Returns
    -------
    dict
        ``{"easy": [...], "medium": [...], "hard": [...]}``, each a list of
        ``{"ok", "junk"[, "bbx"]}`` with plain int lists.

    References
    ----------
    .. [1] F. Radenović et al., "Revisiting Oxford and Paris", CVPR 2018
           (``revisitop/python/example_evaluate.py``).

    Examples
    --------
    >>> p = revisitop_protocols([{"easy": [0], "hard": [1], "junk": [2]}])
    >>> p["easy"][0], p["medium"][0], p["hard"][0]
    ({'ok': [0], 'junk': [2, 1]}, {'ok': [0, 1], 'junk': [2]}, {'ok': [1], 'junk': [2, 0]})
    """

    def ints(v: Any) -> list[int]:
        return [int(x) for x in np.asarray(v if v is not None else [], dtype=np.int64).ravel()]

    out: dict[str, list[dict]] = {"easy": [], "medium": [], "hard": []}
    for g in gnd:
        easy, hard, junk = ints(g.get("easy")), ints(g.get("hard")), ints(g.get("junk"))
        extra = {"bbx": g["bbx"]} if g.get("bbx") is not None else {}
        out["easy"].append({"ok": easy, "junk": junk + hard, **extra})
        out["medium"].append({"ok": easy + hard, "junk": list(junk), **extra})
        out["hard"].append({"ok": hard, "junk": junk + easy, **extra})
    return out


def _find_gnd_pickle(path: Path) -> Path:
    if path.is_file():
        return path
    found = sorted(path.glob("gnd_*.pkl"))
    if not found:
        raise DatasetError(
            f"no gnd_*.pkl in {str(path)!r}; the revisitop layout is gnd_roxford5k.pkl "
            "(or gnd_rparis6k.pkl) beside a jpg/ folder of images"
        )
    if len(found) > 1:
        raise DatasetError(
            f"{str(path)!r} holds several ground-truth pickles "
            f"({', '.join(p.name for p in found)}); pass the one to use"
        )
    return found[0]


def read_revisitop(path: str | os.PathLike[str], protocol: str | None = None) -> RetrievalDataset:
    """Read revisited Oxford / Paris (``gnd_roxford5k.pkl``, ``gnd_rparis6k.pkl``).

    The pickle (read with a restricted unpickler, see :func:`safe_pickle_load`)
    holds ``imlist`` and ``qimlist`` (image names without extension) and ``gnd``
    (per query ``easy``, ``hard``, ``junk`` index lists and ``bbx``). Images are
    ``<folder of the pickle>/jpg/<name>.jpg`` (or beside the pickle when there is
    no ``jpg/`` folder). The three protocols are built by
    :func:`revisitop_protocols`. A pickle whose entries hold ``ok``/``junk``
    instead (the classic ``gnd_oxford5k.pkl``) gives a data set without protocols.

    Parameters
    ----------
    path : path-like
        The pickle, or the folder holding exactly one ``gnd_*.pkl``.
    protocol : {"easy", "medium", "hard"}, optional
        Which protocol ``gnd`` is; default ``"medium"``. All three stay in
        ``dataset.protocols``.

    Returns
    -------
    RetrievalDataset
        ``format="revisitop"``; queries are not in the gallery.

    Raises
    ------
    DatasetError
        Missing or refused pickle, missing keys, out-of-range indices, unknown
        protocol.

    References
    ----------
    .. [1] F. Radenović et al., "Revisiting Oxford and Paris: Large-Scale Image
           Retrieval Benchmarking", CVPR 2018.
    """
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"data set path {str(path)!r} does not exist; check the path")
    pkl = _find_gnd_pickle(path)
    doc = safe_pickle_load(pkl)
    if not isinstance(doc, dict):
        raise DatasetError(
            f"{pkl}: expected a dict with imlist, qimlist and gnd, got {type(doc).__name__}"
        )
    for key in ("imlist", "qimlist", "gnd"):
        if key not in doc:
            raise DatasetError(f"{pkl}: missing key {key!r} (keys: {sorted(map(str, doc))})")
    names: dict[str, list[str]] = {}
    for key in ("imlist", "qimlist"):
        value = doc[key]
        if isinstance(value, np.ndarray):
            value = value.tolist()
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
            raise DatasetError(f"{pkl}: {key!r} must be a list of image names")
        names[key] = list(value)
    gnd_raw = doc["gnd"]
    if not isinstance(gnd_raw, (list, tuple)) or not all(isinstance(g, dict) for g in gnd_raw):
        raise DatasetError(f"{pkl}: 'gnd' must be a list of dicts (one per query)")
    root = pkl.parent
    prefix = "jpg/" if (root / "jpg").is_dir() else ""

    def image(name: str) -> str:  # revisitop: cfg["ext"] = ".jpg", names have none
        return prefix + (
            name if Path(name).suffix.lower() in _FALLBACK_EXTENSIONS else name + ".jpg"
        )

    imlist = [image(n) for n in names["imlist"]]
    qimlist = [image(n) for n in names["qimlist"]]
    stem = pkl.stem[4:] if pkl.stem.startswith("gnd_") else pkl.stem
    problems: list[dict] = []
    has_levels = bool(gnd_raw) and all("easy" in g and "hard" in g for g in gnd_raw)
    if has_levels:
        protocols = revisitop_protocols(gnd_raw)
        chosen = protocol or "medium"
        if chosen not in protocols:
            raise DatasetError(
                f"unknown protocol {chosen!r} for {pkl.name}; choose one of {REVISITOP_PROTOCOLS}"
            )
        gnd = protocols[chosen]
        for pname in REVISITOP_PROTOCOLS:
            for i, g in enumerate(protocols[pname]):
                if not g["ok"]:
                    _problem(
                        problems,
                        "no-positives",
                        qimlist[i] if i < len(qimlist) else str(i),
                        f"query {i} has no positives in the {pname} protocol (left out of its mAP)",
                    )
    else:
        if protocol is not None:
            raise DatasetError(
                f"{pkl.name} has no easy/hard annotation, so no protocol {protocol!r}; "
                "leave protocol unset"
            )
        protocols, chosen = {}, ""
        gnd = [dict(g) for g in gnd_raw]
    ds = _dataset_from(
        pkl, root, imlist, qimlist, gnd,
        name=stem, format="revisitop", protocols=protocols, protocol=chosen, problems=problems,
    )
    missing = sum(1 for p in ds.image_paths() if not p.exists())
    if missing:
        logger.warning(
            "%s: %d of %d gallery images are not in %s (run `cvret datasets check`)",
            pkl.name,
            missing,
            len(imlist),
            root / prefix,
        )
    _log_problems(problems, pkl.name)
    logger.info(
        "read %s: %d images, %d queries, protocol %s", stem, len(imlist), len(qimlist), chosen
    )
    return ds


# --------------------------------------------------------------------------- Oxford / Paris text
def _find_oxford_gt_dir(root: Path) -> Path | None:
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
        _problem(problems, "missing-file", path.name, "ground-truth file missing; read as empty")
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
    root = _require_dir(root, "oxford-gt")
    gt_dir = _find_oxford_gt_dir(root)
    if gt_dir is None:
        raise DatasetError(
            f"no *_query.txt file in {str(root)!r} or its sub-folders; the oxford-gt layout "
            "is <name>_<n>_query.txt/_good.txt/_ok.txt/_junk.txt beside the images"
        )
    problems: list[dict] = []
    by_name: dict[str, str] = {}
    for p in _list_images(root, recursive=True):
        rel = _rel_posix(p, root)
        if p.stem in by_name:
            _problem(problems, "duplicate-name", rel, f"same name as {by_name[p.stem]}; ignored")
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
                _problem(problems, "missing-image", n, f"listed in {where} but no such image")
        return out

    query_files = []
    for f in gt_dir.glob("*_query.txt"):
        m = _OXFORD_QUERY_RE.match(f.name)
        if m:
            query_files.append((m.group("name"), int(m.group("n")), m.group("base"), f))
    query_files.sort()
    qimlist: list[str] = []
    gnd: list[dict] = []
    for _, _, base, qfile in query_files:
        fields = qfile.read_text(encoding="utf-8", errors="replace").split()
        if len(fields) != 5:
            _problem(problems, "bad-row", qfile.name, "expected '<image> x1 y1 x2 y2'; skipped")
            continue
        qname = fields[0]
        if qname not in index and qname.startswith("oxc1_"):
            qname = qname[len("oxc1_") :]
        try:
            bbx = [float(v) for v in fields[1:]]
        except ValueError:
            _problem(problems, "bad-row", qfile.name, f"non-numeric box {fields[1:]}; skipped")
            continue
        if qname not in index:
            _problem(
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
            _problem(
                problems, "no-positives", base, "no positive image found (left out of the mAP)"
            )
        qimlist.append(imlist[index[qname]])
        gnd.append({"ok": positives, "junk": junk_i, "bbx": bbx})
    if not qimlist:
        raise DatasetError(
            f"no usable query in {str(gt_dir)!r} ({len(query_files)} query files, "
            f"{len(problems)} problems, e.g. {problems[0]['message'] if problems else 'none'})"
        )
    _log_problems(problems, gt_dir)
    logger.info("read %d images and %d queries from %s", len(imlist), len(qimlist), root)
    return RetrievalDataset(
        root, imlist, qimlist, gnd, name=root.name, format="oxford-gt", problems=problems
    )


# --------------------------------------------------------------------------- INRIA Holidays
def _holidays_images(root: Path) -> tuple[list[tuple[int, str]], list[str]]:
    numbered: list[tuple[int, str]] = []
    other: list[str] = []
    for p in _list_images(root, recursive=True):
        m = _HOLIDAYS_RE.match(p.stem)
        if m:
            numbered.append((int(m.group(1)), _rel_posix(p, root)))
        else:
            other.append(p.name)
    return sorted(numbered), other


def read_holidays(root: str | os.PathLike[str]) -> RetrievalDataset:
    """Read INRIA Holidays: images ``NNNNNN.jpg`` (anywhere under ``root``).

    Image ``id`` belongs to group ``id // 100``; the image with ``id % 100 == 0``
    is the group's query and the other images of the group are its positives.
    Every image is in the gallery; the query's own image is left out of its
    ranking (the standard protocol). A group without a ``NN00`` image gives no
    query (reported in ``problems``), a group with only its query gives a query
    without positives (reported, left out of the mAP).

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
    root = _require_dir(root, "holidays")
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
        queries = [i for i in members if ids[i] % 100 == 0]
        if not queries:
            _problem(
                problems,
                "no-query",
                imlist[members[0]],
                f"group {g} has no {g:04d}00 image: its {len(members)} image(s) are gallery only",
            )
            continue
        q = queries[0]
        ok = [i for i in members if i != q]
        if not ok:
            _problem(problems, "no-positives", imlist[q], "the group has no other image")
        qimlist.append(imlist[q])
        gnd.append({"ok": ok, "junk": []})
    if not qimlist:
        raise DatasetError(
            f"no query image (NNNN00.jpg) under {str(root)!r}; Holidays queries end in 00"
        )
    _log_problems(problems, root)
    logger.info("read %d Holidays images, %d queries from %s", len(imlist), len(qimlist), root)
    return RetrievalDataset(
        root, imlist, qimlist, gnd, name=root.name, format="holidays", problems=problems
    )


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
            _problem(
                problems,
                "bad-row",
                f"{path.name}:{line}",
                f"{len(row)} fields, expected {len(header)}; skipped",
            )
            continue
        image_id = row[col].strip()
        if not _GLD_ID_RE.match(image_id):
            _problem(problems, "bad-row", f"{path.name}:{line}", f"bad id {image_id!r}; skipped")
            continue
        if image_id in seen:
            _problem(problems, "bad-row", f"{path.name}:{line}", f"id {image_id} repeated; skipped")
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
    root = _require_dir(root, "gldv2")
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
            _problem(problems, "bad-row", where, f"{len(row)} fields, expected {len(header)}")
            if len(row) > c_id:
                reported.add(row[c_id].strip())
            continue
        test_id = row[c_id].strip()
        usage = row[c_usage].strip() if c_usage is not None else "Public"
        images = row[c_images].strip()
        if test_id not in test_set:
            _problem(problems, "bad-row", where, f"test id {test_id!r} is not in test.csv")
            continue
        if test_id in solution or test_id in reported:
            _problem(problems, "bad-row", where, f"test id {test_id} repeated; first row kept")
            continue
        if usage == "Ignored" or not images or images == "None":
            continue  # a non-landmark query: reported below with the test ids lacking a solution
        if usage not in ("Public", "Private"):
            _problem(
                problems, "bad-row", where, f"unknown Usage {usage!r} (Public/Private/Ignored)"
            )
            reported.add(test_id)
            continue
        ok = []
        for image_id in images.split():
            if image_id in index_pos:
                ok.append(index_pos[image_id])
            else:
                _problem(problems, "unknown-index-id", where, f"{image_id} is not in index.csv")
        if not ok:
            _problem(problems, "no-positives", where, f"no solution image of {test_id} is indexed")
            reported.add(test_id)
            continue
        solution[test_id] = list(dict.fromkeys(ok))
    qimlist, gnd = [], []
    for test_id in test_ids:
        if test_id in solution:
            qimlist.append(_gld_image("test", test_id))
            gnd.append({"ok": solution[test_id], "junk": []})
        elif test_id not in reported:
            _problem(problems, "non-landmark", test_id, "no landmark in the solution; skipped")
    if not qimlist:
        raise DatasetError(
            f"no test image of {str(root)!r} has a solution with indexed images; "
            f"check {sol_path.name}"
        )
    _log_problems(problems, root)
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


# --------------------------------------------------------------------------- GLD TFRecords
def _tfrecord_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = [
        p
        for p in sorted(path.iterdir())
        if p.is_file()
        and not p.name.startswith(".")
        and (p.suffix.lower() in _TFRECORD_SUFFIXES or _TFRECORD_SHARD_RE.match(p.name))
    ]
    return files


def _image_suffix(data: bytes) -> str:
    if data[:3] == b"\xff\xd8\xff":
        return ".jpg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return ".png"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return ".gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    return ""


def _safe_name(text: str) -> str:
    return re.sub(r"[^0-9A-Za-z_.-]", "_", text).strip(".") or "x"


def _write_if_changed(path: Path, data: bytes) -> None:
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write(data))


def _import_tfrecord() -> tuple[Any, Any]:
    """``tfrecord.example_pb2`` and ``tfrecord.reader.tfrecord_iterator``, imported lazily.

    ``tfrecord/__init__.py`` also imports its optional PyTorch data loader, hence
    all of torch (seconds) whenever torch is installed; the reader needs none of
    it, so that one optional submodule is masked while the package is first
    imported (``tfrecord`` skips it on ImportError) and unmasked right after.
    """
    masked = "tfrecord" not in sys.modules and "tfrecord.torch" not in sys.modules
    if masked:
        sys.modules["tfrecord.torch"] = None  # type: ignore[assignment]
    try:
        from tfrecord import example_pb2
        from tfrecord.reader import tfrecord_iterator
    except ImportError as exc:
        raise MissingExtraError(
            f"reading TFRecords needs the tfrecord package ({exc}); "
            "install it with: pip install 'cvretrieval[gld]'"
        ) from None
    finally:
        if masked and sys.modules.get("tfrecord.torch", 0) is None:
            del sys.modules["tfrecord.torch"]
    return example_pb2, tfrecord_iterator


def read_gld_tfrecord(
    path: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str] | None,
    *,
    max_records: int | None = None,
) -> RetrievalDataset:
    """Extract Google Landmarks TFRecords into ``cache_dir`` and group images by landmark.

    Every record is a ``tf.train.Example`` with ``image/encoded`` (the image file's
    bytes) and ``image/class/label`` (int64 landmark id), optionally ``image/id``
    (the GLD image id), as written by the DELF ``build_image_dataset.py`` script.
    They are read with the ``tfrecord`` package (extra ``gld``), without
    TensorFlow. Images are written to ``cache_dir/images/<label>/<id>.<ext>``
    (never anywhere else; unchanged files are not rewritten, so a second call
    resumes) and the ground truth to ``cache_dir/gt.json``, so
    ``load_dataset(cache_dir)`` reads it back without the TFRecords.

    Every image is a query; the other images of its landmark are its positives.
    Records without an image or a label, undecodable records and truncated files
    are listed in ``problems`` and skipped.

    Parameters
    ----------
    path : path-like
        A TFRecord file, or a folder of them (``*.tfrecord``, ``*.tfrec``,
        ``*.tfrecords`` or ``<name>-NNNNN-of-NNNNN``).
    cache_dir : path-like
        Folder to extract the images into (created when needed). Required.
    max_records : int, optional
        Stop after this many records in total (for a quick look).

    Returns
    -------
    RetrievalDataset
        ``format="gld-tfrecord"``, ``root = cache_dir``, ``qimlist == imlist``.

    Raises
    ------
    DatasetError
        No ``cache_dir``, no TFRecord file, or no usable record.
    MissingExtraError
        If the ``tfrecord`` package is not installed.

    References
    ----------
    .. [1] T. Weyand et al., "Google Landmarks Dataset v2", CVPR 2020.
    """
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"data set path {str(path)!r} does not exist; check the path")
    if cache_dir is None:
        raise DatasetError(
            "reading TFRecords extracts their images: give a cache folder "
            "(cache_dir=..., or --cache DIR on the command line)"
        )
    if max_records is not None and max_records < 1:
        raise ValueError(f"max_records must be a positive integer, got {max_records!r}")
    example_pb2, tfrecord_iterator = _import_tfrecord()
    from google.protobuf.message import DecodeError

    files = _tfrecord_files(path)
    if not files:
        raise DatasetError(
            f"no TFRecord file in {str(path)!r} (*.tfrecord, *.tfrec, *.tfrecords or "
            "name-NNNNN-of-NNNNN)"
        )
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    problems: list[dict] = []
    entries: list[tuple[str, int]] = []  # (path relative to cache, label)
    used: set[str] = set()
    n_read = 0
    for file in files:
        records = tfrecord_iterator(str(file))
        i = -1
        while max_records is None or n_read < max_records:
            try:
                raw = next(records)
            except StopIteration:
                break
            except (RuntimeError, OSError, struct.error) as exc:
                _problem(
                    problems,
                    "truncated",
                    file.name,
                    f"unreadable after record {i + 1} ({exc}); the rest of the file is skipped",
                )
                break
            i += 1
            n_read += 1
            where = f"{file.name}#{i}"
            try:
                example = example_pb2.Example.FromString(bytes(raw))
            except DecodeError as exc:
                _problem(problems, "bad-record", where, f"not a tf.train.Example ({exc})")
                continue
            feats = example.features.feature
            if "image/encoded" not in feats or not feats["image/encoded"].bytes_list.value:
                _problem(problems, "bad-record", where, "no image/encoded bytes; skipped")
                continue
            if "image/class/label" not in feats or not feats["image/class/label"].int64_list.value:
                _problem(problems, "bad-record", where, "no int64 image/class/label; skipped")
                continue
            data = bytes(feats["image/encoded"].bytes_list.value[0])
            label = int(feats["image/class/label"].int64_list.value[0])
            ids = feats["image/id"].bytes_list.value if "image/id" in feats else []
            image_id = _safe_name(ids[0].decode("utf-8", "replace")) if ids else ""
            image_id = image_id or f"{_safe_name(file.stem)}-{i:06d}"
            suffix = _image_suffix(data)
            if not suffix:
                _problem(problems, "bad-record", where, "image/encoded is not JPEG/PNG/GIF/WebP")
                suffix = ".bin"
            rel = f"images/{label}/{image_id}{suffix}"
            if rel in used:
                rel = f"images/{label}/{image_id}-{_safe_name(file.stem)}-{i}{suffix}"
            used.add(rel)
            _write_if_changed(cache / rel, data)
            entries.append((rel, label))
        records.close()
    if not entries:
        raise DatasetError(
            f"no usable record in {len(files)} TFRecord file(s) under {str(path)!r} "
            f"({len(problems)} problems)"
        )
    entries.sort()
    imlist = [rel for rel, _ in entries]
    labels = [label for _, label in entries]
    gnd = _groups_to_gnd(labels)
    for i, g in enumerate(gnd):
        if not g["ok"]:
            _problem(problems, "no-positives", imlist[i], f"landmark {labels[i]} has one image")
    ds = RetrievalDataset(
        cache,
        imlist,
        list(imlist),
        gnd,
        name=path.stem if path.is_file() else path.name,
        format="gld-tfrecord",
        problems=problems,
    )
    ds.to_json(cache / "gt.json")
    _log_problems(problems, path)
    logger.info(
        "extracted %d images of %d landmarks from %d TFRecord file(s) into %s",
        len(imlist),
        len(set(labels)),
        len(files),
        cache,
    )
    return ds


# --------------------------------------------------------------------------- detection / loading
def _is_holidays_folder(path: Path) -> bool:
    """Most images (directly or in ``jpg/``) are ``NNNNNN`` and one is a query ``NNNN00``."""
    for folder in (path, path / "jpg"):
        if not folder.is_dir():
            continue
        direct = _list_images(folder, recursive=False)
        numbered = [int(p.stem) for p in direct if _HOLIDAYS_RE.match(p.stem)]
        if 2 * len(numbered) > len(direct) and any(n % 100 == 0 for n in numbered):
            return True
    return False


def _detect_format(path: Path) -> str:
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".json":
            return "json"
        if suffix == ".pkl":
            return "revisitop"
        if suffix in _TFRECORD_SUFFIXES or _TFRECORD_SHARD_RE.match(path.name):
            return "gld-tfrecord"
        raise DatasetError(f"cannot read the file {str(path)!r} as a data set; {_LAYOUTS_HELP}")
    if (path / "gt.json").is_file():
        return "json"
    if any(path.glob("gnd_*.pkl")):
        return "revisitop"
    if (path / "index.csv").is_file() and (path / "test.csv").is_file():
        return "gldv2"
    if _find_oxford_gt_dir(path) is not None:
        return "oxford-gt"
    if _tfrecord_files(path):
        return "gld-tfrecord"
    direct = _list_images(path, recursive=False)
    if direct and all(_UKBENCH_RE.match(p.stem) for p in direct):
        return "ukbench"
    if _is_holidays_folder(path):
        return "holidays"
    for sub in path.iterdir():
        if sub.is_dir() and not sub.name.startswith(".") and _list_images(sub, recursive=True):
            return "class-folders"
    raise DatasetError(f"cannot tell the layout of {str(path)!r}; {_LAYOUTS_HELP}")


def load_dataset(
    path: str | os.PathLike[str],
    format: str | None = None,
    *,
    protocol: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> RetrievalDataset:
    """Read a data set, detecting its layout unless ``format`` is given.

    Detection, in this order: a ``.json`` file is ground-truth JSON, a ``.pkl``
    file revisitop, a ``.tfrecord``/``.tfrec`` file gld-tfrecord; a folder holding
    ``gt.json`` is JSON, one holding ``gnd_*.pkl`` revisitop, one holding
    ``index.csv`` and ``test.csv`` gldv2, one with ``*_query.txt`` (in it or in a
    sub-folder) oxford-gt, one with TFRecord files gld-tfrecord; a folder whose
    images (directly inside) are all ``ukbenchNNNNN`` is UKBench, all ``NNNNNN``
    (directly or in ``jpg/``) Holidays; a folder with sub-folders holding images
    is class-folders.

    Parameters
    ----------
    path : path-like
        A file or a folder.
    format : str, optional
        Force a layout, one of :data:`DATASET_FORMATS` (for ``"json"`` a folder
        means its ``gt.json``).
    protocol : str, optional
        For a data set with protocols (revisitop: ``"easy"``, ``"medium"``
        (default), ``"hard"``), the one ``gnd`` holds; the others stay in
        ``dataset.protocols``.
    cache_dir : path-like, optional
        Where ``gld-tfrecord`` extracts its images (required for that format).

    Returns
    -------
    RetrievalDataset

    Raises
    ------
    DatasetError
        Missing path, unknown ``format`` or ``protocol``, undetectable layout or
        an empty data set.

    Examples
    --------
    >>> load_dataset("no/such/folder")
    Traceback (most recent call last):
    ...
    cvretrieval.errors.DatasetError: data set path 'no/such/folder' does not exist; check the path
    """
    path = Path(path)
    if format is not None and format not in DATASET_FORMATS:
        raise DatasetError(f"unknown data set format {format!r}; choose one of {DATASET_FORMATS}")
    if not path.exists():
        raise DatasetError(f"data set path {str(path)!r} does not exist; check the path")
    fmt = format or _detect_format(path)
    logger.debug("reading %s as %s", path, fmt)
    if fmt == "revisitop":
        return read_revisitop(path, protocol=protocol)
    if fmt == "json":
        ds = read_gt_json(path / "gt.json" if path.is_dir() else path)
    elif fmt == "ukbench":
        ds = read_ukbench(path)
    elif fmt == "oxford-gt":
        ds = read_oxford_gt(path)
    elif fmt == "holidays":
        ds = read_holidays(path)
    elif fmt == "gldv2":
        ds = read_gldv2(path)
    elif fmt == "gld-tfrecord":
        ds = read_gld_tfrecord(path, cache_dir)
    else:
        ds = read_class_folders(path)
    if protocol is not None and protocol != ds.protocol:
        ds = ds.with_protocol(protocol)
    return ds


# --------------------------------------------------------------------------- checking
def _stats(values: Sequence[int]) -> dict[str, float | int]:
    if not values:
        return {"min": 0, "mean": 0.0, "max": 0}
    return {"min": int(min(values)), "mean": float(np.mean(values)), "max": int(max(values))}


def _header_check(path: Path) -> None:
    from PIL import Image

    with Image.open(path) as im:
        im.size  # noqa: B018 - parsing the header is the check


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

    Every gallery and query file is opened once: its existence is checked, it is
    decoded (:func:`cvretrieval.io.read_bytes_and_image`, downscaled to 128
    pixels for speed) when ``decode`` is true, or only its header parsed with
    Pillow otherwise; gallery files are hashed (SHA-1 of the content) to find
    exact duplicates.

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
        (``{"total", "min", "mean", "max"}`` per query), ``queries_without_positives``
        (list of ``{"query", "path"}``), ``protocols`` (per protocol the same
        positives/junk statistics and the count without positives), ``missing``
        (relative paths), ``unreadable`` (``{"path", "error"}``), ``duplicates``
        (lists of gallery paths with identical content; ``None`` when not
        searched), ``problems`` (from the reader), ``decoded`` and ``ok`` (no
        missing, unreadable or duplicate file).

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
    n_im = len(ds.imlist)
    files: dict[str, bool] = {rel: True for rel in ds.imlist}  # rel -> is gallery
    for rel in ds.qimlist:
        files.setdefault(rel, False)
    missing: list[str] = []
    unreadable: list[dict[str, str]] = []
    by_hash: dict[str, list[str]] = defaultdict(list)
    items: Iterable[tuple[str, bool]] = files.items()
    bar = None
    if progress or progress is None:
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(files), unit="file", desc="check", disable=None)
        except ImportError:  # pragma: no cover - tqdm is a core dependency
            bar = None
    try:
        from cvretrieval.io import read_bytes_and_image

        for rel, in_gallery in items:
            full = ds.root / rel
            if bar is not None:
                bar.update(1)
            if not full.is_file():
                missing.append(rel)
                continue
            try:
                if decode:
                    sha1, _, _ = read_bytes_and_image(full, max_side=128)
                else:
                    _header_check(full)
                    hashed = in_gallery and duplicates
                    sha1 = hashlib.sha1(full.read_bytes()).hexdigest() if hashed else ""
            except (ImageReadError, OSError, ValueError, SyntaxError) as exc:
                message = (
                    str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                )
                unreadable.append({"path": rel, "error": message})
                continue
            if in_gallery:
                by_hash[sha1].append(rel)
    finally:
        if bar is not None:
            bar.close()
    dup_groups = sorted(sorted(v) for v in by_hash.values() if len(v) > 1) if duplicates else None

    def gnd_stats(gnd: list[dict]) -> dict[str, Any]:
        n_ok = [len(g["ok"]) for g in gnd]
        n_junk = [len(g.get("junk", [])) for g in gnd]
        return {
            "positives": _stats(n_ok),
            "junk": {"total": int(sum(n_junk)), **_stats(n_junk)},
            "n_without_positives": sum(1 for n in n_ok if n == 0),
        }

    main = gnd_stats(ds.gnd)
    report: dict[str, Any] = {
        "path": where,
        "format": ds.format,
        "name": ds.name,
        "root": str(ds.root),
        "protocol": ds.protocol,
        "images": n_im,
        "queries": len(ds.qimlist),
        "positives": main["positives"],
        "junk": main["junk"],
        "queries_without_positives": [
            {"query": i, "path": ds.qimlist[i]} for i, g in enumerate(ds.gnd) if not g["ok"]
        ],
        "protocols": {name: gnd_stats(g) for name, g in ds.protocols.items()},
        "missing": missing,
        "unreadable": unreadable,
        "duplicates": dup_groups,
        "problems": list(ds.problems),
        "decoded": bool(decode),
    }
    report["ok"] = not (missing or unreadable or dup_groups)
    logger.info(
        "checked %s: %d files, %d missing, %d unreadable, %s duplicate groups",
        where,
        len(files),
        len(missing),
        len(unreadable),
        "unsearched" if dup_groups is None else len(dup_groups),
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
    kinds = Counter(p["kind"] for p in report["problems"])
    if kinds:
        lines.append("reader problems: " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())))
        lines += [
            f"  {p['kind']}: {p['item']}: {p['message']}" for p in report["problems"][:max_items]
        ]
    checked = "decoded" if report.get("decoded") else "headers checked"
    lines.append(f"result: {'OK' if report['ok'] else 'PROBLEMS FOUND'} (files {checked})")
    return "\n".join(lines)
