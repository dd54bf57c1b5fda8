"""Retrieval data sets: a gallery, a list of queries and, per query, the relevant images.

A :class:`RetrievalDataset` follows the revisitop convention (``imlist``,
``qimlist``, ``gnd``): every query ``i`` has ``gnd[i]["ok"]`` (indices into
``imlist`` of its relevant images), ``gnd[i]["junk"]`` (indices to ignore when
scoring) and optionally ``gnd[i]["bbx"]`` (a query region ``[x1, y1, x2, y2]``).

Three layouts are read:

``class-folders``
    ``root/<class>/<images...>``: every image is a query, the other images of its
    class are its positives.
``json``
    a ground-truth file ``{"imlist": [...], "qimlist": [...], "gnd": [...]}`` with
    paths relative to the file's folder (written by :meth:`RetrievalDataset.to_json`).
``ukbench``
    a folder of ``ukbenchNNNNN.jpg``; image ``NNNNN`` belongs to group ``NNNNN // 4``.

References
----------
.. [1] F. Radenović, A. Iscen, G. Tolias, Y. Avrithis, O. Chum, "Revisiting Oxford
       and Paris: Large-Scale Image Retrieval Benchmarking", CVPR 2018.
.. [2] D. Nistér, H. Stewénius, "Scalable Recognition with a Vocabulary Tree",
       CVPR 2006.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from cvretrieval.errors import DatasetError

logger = logging.getLogger(__name__)

__all__ = [
    "DATASET_FORMATS",
    "RetrievalDataset",
    "load_dataset",
    "read_class_folders",
    "read_gt_json",
    "read_ukbench",
]

DATASET_FORMATS: tuple[str, ...] = ("class-folders", "json", "ukbench")

_LAYOUTS_HELP = (
    "supported layouts: a ground-truth .json file (or a folder holding gt.json), "
    "a folder of ukbenchNNNNN.jpg images (ukbench), "
    "or a folder with one sub-folder of images per class (class-folders)"
)

_FALLBACK_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)
_UKBENCH_RE = re.compile(r"^ukbench(\d{5})$", re.IGNORECASE)

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


def _check_indices(values: Any, key: str, query: int, n_images: int) -> list[int]:
    if isinstance(values, np.ndarray):
        values = values.tolist()
    if not isinstance(values, (list, tuple)):
        raise DatasetError(
            f"gnd[{query}][{key!r}] must be a list of image indices, got {type(values).__name__}"
        )
    out: list[int] = []
    for v in values:
        if not _is_int(v):
            raise DatasetError(
                f"gnd[{query}][{key!r}] holds {v!r} ({type(v).__name__}); "
                "indices must be integers into imlist"
            )
        if not 0 <= int(v) < n_images:
            raise DatasetError(
                f"gnd[{query}][{key!r}] holds index {int(v)}, out of range for "
                f"{n_images} gallery images (valid: 0..{n_images - 1})"
            )
        out.append(int(v))
    if len(set(out)) != len(out):
        logger.debug("gnd[%d][%r] lists an index twice; duplicates dropped", query, key)
        out = list(dict.fromkeys(out))
    return out


def _check_bbx(value: Any, query: int) -> list[float]:
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 4
        or not all(_is_number(v) and np.isfinite(v) for v in value)
    ):
        raise DatasetError(
            f"gnd[{query}]['bbx'] is {value!r}; it must be 4 finite numbers [x1, y1, x2, y2]"
        )
    return [float(v) for v in value]


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

    Raises
    ------
    DatasetError
        If there are no gallery images or no queries, ``len(gnd) != len(qimlist)``,
        an index is not an integer or out of range, or a ``bbx`` is not 4 numbers.

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
        n = len(self.imlist)
        checked: list[dict] = []
        for i, entry in enumerate(self.gnd):
            if not isinstance(entry, dict):
                raise DatasetError(
                    f"gnd[{i}] is a {type(entry).__name__}; it must be an object "
                    'like {"ok": [...], "junk": [...]}'
                )
            if "ok" not in entry:
                raise DatasetError(
                    f"gnd[{i}] has no 'ok' key (keys: {sorted(entry)}); "
                    "list the relevant gallery indices under 'ok'"
                )
            new = dict(entry)
            new["ok"] = _check_indices(entry["ok"], "ok", i, n)
            new["junk"] = _check_indices(entry.get("junk", []), "junk", i, n)
            if entry.get("bbx") is not None:
                new["bbx"] = _check_bbx(entry["bbx"], i)
            else:
                new.pop("bbx", None)
            checked.append(new)
        self.gnd = checked

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

        Image paths are written relative to the folder holding ``path``.
        """
        path = Path(path)
        base = path.absolute().parent

        def rel(p: str) -> str:
            full = os.path.abspath(self.root / p)
            return Path(os.path.relpath(full, base)).as_posix()

        gnd_out = []
        for g in self.gnd:
            e: dict[str, Any] = {"ok": list(g["ok"]), "junk": list(g.get("junk", []))}
            if g.get("bbx") is not None:
                e["bbx"] = list(g["bbx"])
            gnd_out.append(e)
        doc = {
            "imlist": [rel(p) for p in self.imlist],
            "qimlist": [rel(p) for p in self.qimlist],
            "gnd": gnd_out,
        }
        base.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        logger.info("wrote ground truth of %d queries to %s", len(self.qimlist), path)


# --------------------------------------------------------------------------- readers
def _require_dir(root: str | os.PathLike[str], layout: str) -> Path:
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"data set path {str(root)!r} does not exist; check the path")
    if not root.is_dir():
        raise DatasetError(f"the {layout} layout needs a folder, got the file {str(root)!r}")
    return root


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
    labels = np.array([c for _, c in entries])
    gnd: list[dict] = []
    members: dict[str, np.ndarray] = {}
    for c in np.unique(labels):
        members[str(c)] = np.flatnonzero(labels == c)
    for i, c in enumerate(labels):
        group = members[str(c)]
        gnd.append({"ok": group[group != i].tolist(), "junk": []})
    singles = sum(1 for g in members.values() if len(g) == 1)
    if singles:
        logger.warning("%d class(es) have a single image: those queries have no positives", singles)
    logger.info("read %d images in %d classes from %s", len(imlist), len(members), root)
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
    optional); paths are relative to the JSON file's folder.

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
    extra = sorted(set(doc) - {"imlist", "qimlist", "gnd", "name"})
    if extra:
        logger.warning("%s: ignoring unknown top-level keys %s", path, extra)
    imlist = _json_path_list(doc, "imlist", path)
    qimlist = _json_path_list(doc, "qimlist", path)
    gnd = doc["gnd"]
    if not isinstance(gnd, list):
        raise DatasetError(f"{path}: 'gnd' must be a list of objects, got {type(gnd).__name__}")
    root = path.parent
    name = doc.get("name") if isinstance(doc.get("name"), str) else None
    if not name:
        name = root.absolute().name if path.stem == "gt" else path.stem
    try:
        ds = RetrievalDataset(root, imlist, qimlist, gnd, name=name, format="json")
    except DatasetError as exc:
        raise DatasetError(f"{path}: {exc}") from None
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
    groups = np.array([n // 4 for n, _ in numbered])
    gnd = []
    for i, g in enumerate(groups):
        same = np.flatnonzero(groups == g)
        gnd.append({"ok": same[same != i].tolist(), "junk": []})
    logger.info("read %d UKBench images in %d groups from %s", len(imlist), len(set(groups)), root)
    return RetrievalDataset(root, imlist, list(imlist), gnd, name=root.name, format="ukbench")


def _detect_format(path: Path) -> str:
    if path.is_file():
        if path.suffix.lower() == ".json":
            return "json"
        raise DatasetError(f"cannot read the file {str(path)!r} as a data set; {_LAYOUTS_HELP}")
    if (path / "gt.json").is_file():
        return "json"
    direct = _list_images(path, recursive=False)
    if direct and all(_UKBENCH_RE.match(p.stem) for p in direct):
        return "ukbench"
    for sub in path.iterdir():
        if sub.is_dir() and not sub.name.startswith(".") and _list_images(sub, recursive=True):
            return "class-folders"
    raise DatasetError(f"cannot tell the layout of {str(path)!r}; {_LAYOUTS_HELP}")


def load_dataset(path: str | os.PathLike[str], format: str | None = None) -> RetrievalDataset:
    """Read a data set, detecting its layout unless ``format`` is given.

    Detection: a ``.json`` file is ground-truth JSON; a folder containing
    ``gt.json`` is read from it; a folder whose images (directly inside) are all
    named ``ukbenchNNNNN`` is UKBench; a folder with sub-folders holding images is
    class-folders.

    Parameters
    ----------
    path : path-like
        A JSON file or a folder.
    format : {"class-folders", "json", "ukbench"}, optional
        Force a layout (for ``"json"`` a folder means its ``gt.json``).

    Returns
    -------
    RetrievalDataset

    Raises
    ------
    DatasetError
        Missing path, unknown ``format``, undetectable layout or an empty data set.

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
    if fmt == "json":
        return read_gt_json(path / "gt.json" if path.is_dir() else path)
    if fmt == "ukbench":
        return read_ukbench(path)
    return read_class_folders(path)
