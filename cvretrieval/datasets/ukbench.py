"""UKBench: a folder of ``ukbenchNNNNN.jpg``, groups of four."""

from __future__ import annotations

import logging
import os
import re

import numpy as np

from cvretrieval.errors import DatasetError

from .base import RetrievalDataset, list_images, require_dir
from .groundtruth import ClassGroundTruth

logger = logging.getLogger(__name__)

UKBENCH_RE = re.compile(r"^ukbench(\d{5})$", re.IGNORECASE)


def read_ukbench(root: str | os.PathLike[str]) -> RetrievalDataset:
    """Read a folder of UKBench images ``ukbenchNNNNN.jpg`` (any case).

    Image ``NNNNN`` belongs to group ``NNNNN // 4``. Every image is a query; its
    positives are the other members of its group that are present. The ground
    truth is stored as group labels (``dataset.labels``).

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
    root = require_dir(root, "ukbench")
    numbered: list[tuple[int, str]] = []
    other = []
    for p in list_images(root, recursive=False):
        m = UKBENCH_RE.match(p.stem)
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
    groups = np.array([n // 4 for n, _ in numbered], dtype=np.int64)
    _, codes = np.unique(groups, return_inverse=True)
    codes = codes.astype(np.int64)
    n = len(imlist)
    gnd = ClassGroundTruth(codes, codes, np.arange(n, dtype=np.int64))
    logger.info("read %d UKBench images in %d groups from %s", n, int(codes.max()) + 1, root)
    return RetrievalDataset(root, imlist, list(imlist), gnd, name=root.name, format="ukbench")
