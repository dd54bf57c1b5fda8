"""Layout detection and :func:`load_dataset`, the one entry point every caller uses."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from cvretrieval.errors import DatasetError

from .base import DATASET_FORMATS, RetrievalDataset, file_kind, list_images
from .classfolders import is_query_gallery, read_class_folders, read_query_gallery
from .gldv2 import read_gldv2
from .holidays import is_holidays_folder, read_holidays
from .jsongt import read_gt_json
from .oxford import find_oxford_gt_dir, read_oxford_gt
from .revisitop import read_revisitop
from .tfrecord import TFRECORD_SHARD_RE, TFRECORD_SUFFIXES, read_gld_tfrecord, tfrecord_files
from .ukbench import UKBENCH_RE, read_ukbench

logger = logging.getLogger(__name__)

_LAYOUTS_HELP = (
    "supported layouts: a ground-truth .json file (or a folder holding gt.json), "
    "a folder of ukbenchNNNNN.jpg images (ukbench), "
    "a revisitop gnd_*.pkl (or its folder), Oxford/Paris *_query.txt ground truth (oxford-gt), "
    "a folder of NNNNNN.jpg INRIA Holidays images (holidays), "
    "a Google Landmarks v2 folder with index.csv and test.csv (gldv2), "
    "TFRecord shards (gld-tfrecord), "
    "query/<class>/ and gallery/<class>/ folders of images (query-gallery), "
    "or a folder with one sub-folder of images per class (class-folders)"
)


def _detect_format(path: Path) -> str:
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot stat {str(path)!r} ({type(exc).__name__})") from None
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise DatasetError(
            f"{str(path)!r} is a {file_kind(mode)}, neither a file nor a folder; "
            "give a ground-truth file or a data set folder"
        )
    if stat.S_ISREG(mode):
        suffix = path.suffix.lower()
        if suffix == ".json":
            return "json"
        if suffix == ".pkl":
            return "revisitop"
        if suffix in TFRECORD_SUFFIXES or TFRECORD_SHARD_RE.match(path.name):
            return "gld-tfrecord"
        raise DatasetError(f"cannot read the file {str(path)!r} as a data set; {_LAYOUTS_HELP}")
    if (path / "gt.json").is_file():
        return "json"
    if any(path.glob("gnd_*.pkl")):
        return "revisitop"
    if (path / "index.csv").is_file() and (path / "test.csv").is_file():
        return "gldv2"
    if is_query_gallery(path):
        return "query-gallery"
    if find_oxford_gt_dir(path) is not None:
        return "oxford-gt"
    if tfrecord_files(path):
        return "gld-tfrecord"
    direct = list_images(path, recursive=False)
    if direct and all(UKBENCH_RE.match(p.stem) for p in direct):
        return "ukbench"
    if is_holidays_folder(path):
        return "holidays"
    for sub in path.iterdir():
        if sub.is_dir() and not sub.name.startswith(".") and list_images(sub, recursive=True):
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
    ``index.csv`` and ``test.csv`` gldv2, one with ``query/`` (or ``queries/``) and
    ``gallery/`` (or ``galleries/``) folders query-gallery, one with ``*_query.txt`` (in it or in a
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
    elif fmt == "query-gallery":
        ds = read_query_gallery(path)
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
