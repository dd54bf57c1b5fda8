"""The :class:`RetrievalDataset` type, its validation, and helpers every reader shares."""

from __future__ import annotations

import dataclasses
import logging
import os
import stat
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from numpy.typing import NDArray

from cvretrieval._json import write_json_atomic
from cvretrieval.errors import DatasetError

from .groundtruth import ArrayGroundTruth, ClassGroundTruth, GroundTruth, short_repr

logger = logging.getLogger(__name__)

DATASET_FORMATS: tuple[str, ...] = (
    "class-folders",
    "query-gallery",
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

#: reader problems that mean a file of the data set is absent or unusable
#: (``cvret datasets check`` fails on them)
FILE_PROBLEMS = frozenset({"missing-image", "not-a-file", "missing-file"})

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)

BBox = tuple[float, float, float, float]


# --------------------------------------------------------------------------- shared helpers
def list_images(root: Path, *, recursive: bool = True) -> list[Path]:
    """Sorted image files under ``root`` (:func:`cvretrieval.io.list_images`)."""
    from cvretrieval.io import list_images as _io_list

    return list(_io_list(root, recursive=recursive))


def rel_posix(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def problem(problems: list[dict], kind: str, item: str, message: str) -> None:
    """Record something a reader skipped or could not use (logged at DEBUG, summarised later)."""
    problems.append({"kind": kind, "item": item, "message": message})
    logger.debug("%s: %s: %s", kind, item, message)


def log_problems(problems: Sequence[dict], source: Any) -> None:
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


def require_dir(root: str | os.PathLike[str], layout: str) -> Path:
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"data set path {str(root)!r} does not exist; check the path")
    if not root.is_dir():
        raise DatasetError(f"the {layout} layout needs a folder, got the file {str(root)!r}")
    return root


def file_kind(mode: int) -> str:
    """A word for what a ``st_mode`` is (``"FIFO"``, ``"folder"``...)."""
    for test, word in (
        (stat.S_ISDIR, "folder"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISSOCK, "socket"),
    ):
        if test(mode):
            return word
    return "special file"


def require_regular_file(path: Path, what: str) -> None:
    """Raise DatasetError unless ``path`` is a regular file (stat only: nothing is opened)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DatasetError(f"{what} {str(path)!r} does not exist; check the path") from None
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot stat {what} {str(path)!r} ({type(exc).__name__})") from None
    if not stat.S_ISREG(st.st_mode):
        raise DatasetError(
            f"{what} {str(path)!r} is a {file_kind(st.st_mode)}, not a regular file; "
            "give the path of the file itself"
        )


def label_codes(values: Sequence[Any]) -> tuple[NDArray[np.int64], list[Any]]:
    """Integer codes of hashable labels (codes in order of first sorted appearance)."""
    names = sorted(set(values), key=lambda v: (str(type(v)), v))
    code = {v: i for i, v in enumerate(names)}
    return np.fromiter((code[v] for v in values), dtype=np.int64, count=len(values)), names


def class_ground_truth(labels: Sequence[Any]) -> ClassGroundTruth:
    """Every item a query of itself's class; its positives are the other items of its class."""
    codes, names = label_codes(labels)
    n = len(codes)
    return ClassGroundTruth(
        codes, codes, np.arange(n, dtype=np.int64), [str(c) for c in names]
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
    gnd : list of dict or GroundTruth, length n_queries
        Per query: ``"ok"`` (indices into ``imlist`` of the relevant images),
        ``"junk"`` (ignored when scoring), optionally ``"bbx"`` (``[x1, y1, x2,
        y2]``, the query region in pixels) and ``"graded"`` (``[[index, grade],
        ...]``, grades >= 0; without ``"ok"`` the images graded above 0 are
        relevant). Stored as flat arrays (:class:`~.groundtruth.GroundTruth`):
        ``dataset.gnd`` is a read-only sequence whose item ``i`` is built on
        demand, with plain int lists.
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
        ``"bad-row"``, ``"missing-image"``, ``"not-a-file"``, ``"no-positives"``).

    Raises
    ------
    DatasetError
        If there are no gallery images or no queries, ``len(gnd) != len(qimlist)``,
        an index is not an integer or out of range, a ``bbx`` is not 4 numbers, a
        grade is negative or not finite, or ``protocol`` is not a key of ``protocols``.

    References
    ----------
    .. [1] F. Radenović et al., "Revisiting Oxford and Paris: Large-Scale Image
           Retrieval Benchmarking", CVPR 2018.

    Examples
    --------
    >>> ds = RetrievalDataset(Path("."), ["a.jpg", "b.jpg"], ["a.jpg"], [{"ok": [1]}])
    >>> ds.gnd[0]["junk"], ds.query_self_index(), ds.positives(0)
    ([], [0], array([1]))
    """

    root: Path
    imlist: list[str]
    qimlist: list[str]
    gnd: Any = field(repr=False)
    name: str = ""
    format: str = ""
    protocols: dict[str, Any] = field(default_factory=dict, repr=False)
    protocol: str = ""
    problems: list[dict] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.imlist = [str(p) for p in self.imlist]
        self.qimlist = [str(p) for p in self.qimlist]
        label = self.name or str(self.root)
        if not self.imlist:
            raise DatasetError(
                f"data set {label!r} has no gallery images; check the path and the layout"
            )
        if not self.qimlist:
            raise DatasetError(f"data set {label!r} has no query images; add at least one query")
        n, nq = len(self.imlist), len(self.qimlist)
        if not isinstance(self.gnd, (GroundTruth, list, tuple)):
            raise DatasetError(
                f"gnd must be a list of per-query objects, got {type(self.gnd).__name__}"
            )
        if len(self.gnd) != nq:
            raise DatasetError(
                f"gnd has {len(self.gnd)} entries but qimlist has {nq} queries; "
                "give one gnd entry per query"
            )
        self.gnd = _as_ground_truth(self.gnd, n, nq, "gnd")
        if not isinstance(self.protocols, dict):
            raise DatasetError(
                f"protocols must be a dict of name -> gnd list, got {type(self.protocols).__name__}"
            )
        self.protocols = {
            str(name): _as_ground_truth(g, n, nq, f"protocols[{short_repr(name)}]")
            for name, g in self.protocols.items()
        }
        if self.protocol and self.protocol not in self.protocols:
            raise DatasetError(
                f"protocol {short_repr(self.protocol)} is not one of the data set's protocols "
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

    def positives(self, qi: int) -> NDArray[np.int64]:
        """Indices into ``imlist`` of the images relevant to query ``qi`` (int64)."""
        return self.gnd.positives(qi)

    def junk(self, qi: int) -> NDArray[np.int64]:
        """Indices into ``imlist`` ignored when scoring query ``qi`` (int64)."""
        return self.gnd.junk(qi)

    def graded(self, qi: int) -> tuple[NDArray[np.int64], NDArray[np.float64]] | None:
        """``(indices int64, grades float64)`` of query ``qi``, or None without graded relevance."""
        return self.gnd.graded(qi)

    @property
    def labels(self) -> NDArray[np.int64] | None:
        """Class code of every gallery image for class-labelled sets, else None."""
        return self.gnd.labels_ if isinstance(self.gnd, ClassGroundTruth) else None

    @property
    def query_labels(self) -> NDArray[np.int64] | None:
        """Class code of every query for class-labelled sets, else None."""
        return self.gnd.query_labels_ if isinstance(self.gnd, ClassGroundTruth) else None

    @property
    def class_names(self) -> list[str] | None:
        """Name of each class code (class-labelled sets), else None."""
        return self.gnd.class_names if isinstance(self.gnd, ClassGroundTruth) else None

    def query_bboxes(self) -> list[BBox | None]:
        """The query regions ``(x1, y1, x2, y2)``, or ``None`` for a whole-image query."""
        out: list[BBox | None] = []
        for i in range(len(self.qimlist)):
            b = self.gnd.bbx(i)
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
                f"data set {self.name!r} has no protocol {short_repr(protocol)}; "
                f"available: {sorted(self.protocols) or '(none: it has a single ground truth)'}"
            )
        return dataclasses.replace(self, gnd=self.protocols[protocol], protocol=protocol)

    def summary(self) -> dict[str, int | float]:
        """Counts: ``images``, ``queries``, ``queries_without_positives``, ``mean_positives``.

        ``mean_positives`` is the mean number of ``ok`` images over all queries.
        """
        n_ok = self.gnd.n_positives()
        return {
            "images": len(self.imlist),
            "queries": len(self.qimlist),
            "queries_without_positives": int(np.count_nonzero(n_ok == 0)),
            "mean_positives": float(n_ok.mean()) if len(n_ok) else 0.0,
        }

    def to_json(self, path: str | os.PathLike[str]) -> None:
        """Write the data set as a ground-truth JSON file readable by :func:`read_gt_json`.

        Image paths are written relative to the folder holding ``path``, which
        must hold every image (a ground-truth file may only name images inside
        its folder); ``protocols`` and ``protocol`` are written when the data set
        has protocols, ``graded`` per query when it has graded relevance.

        Raises
        ------
        DatasetError
            If an image lies outside the folder of ``path``.
        """
        path = Path(path)
        base = path.absolute().parent

        def rel(p: str) -> str:
            full = os.path.abspath(self.root / p)
            out = Path(os.path.relpath(full, base)).as_posix()
            if out == ".." or out.startswith("../"):
                raise DatasetError(
                    f"cannot write {path}: image {p!r} lies outside its folder {base} and a "
                    "ground-truth file may only name images inside its folder; write it into "
                    f"{os.path.abspath(self.root)} (or a parent folder) instead"
                )
            return out

        def dump(gnd: GroundTruth) -> list[dict]:
            return [gnd.entry(i) for i in range(len(gnd))]

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


def _as_ground_truth(gnd: Any, n_images: int, n_queries: int, label: str) -> GroundTruth:
    if isinstance(gnd, GroundTruth):
        if len(gnd) != n_queries:
            raise DatasetError(
                f"{label} has {len(gnd)} entries but qimlist has {n_queries} queries; "
                f"give one {label} entry per query"
            )
        if gnd.n_images != n_images:
            raise DatasetError(
                f"{label} was built for {gnd.n_images} gallery images, the data set has "
                f"{n_images}"
            )
        return gnd
    return ArrayGroundTruth.from_entries(gnd, n_images, n_queries, label)


def dataset_from(
    source: Any,
    root: Path,
    imlist: list[str],
    qimlist: list[str],
    gnd: Any,
    **kwargs: Any,
) -> RetrievalDataset:
    """``RetrievalDataset(root, imlist, qimlist, gnd, **kwargs)``; its errors name ``source``."""
    try:
        return RetrievalDataset(root, imlist, qimlist, gnd, **kwargs)
    except DatasetError as exc:
        raise DatasetError(f"{source}: {exc}") from None
