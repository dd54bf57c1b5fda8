"""HOG: a global Histogram of Oriented Gradients descriptor.

The image is converted to grayscale and resized to a fixed window, so every image
gives a vector of the same length. OpenCV's ``HOGDescriptor`` computes it (the
``benchmarks/speed.py`` script measures it against ``skimage.feature.hog`` with the
same cell/block parameters and reports the speed ratio and the agreement).

References
----------
.. [1] Dalal & Triggs, "Histograms of oriented gradients for human detection", CVPR 2005.
"""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import NDArray

from .local import to_gray


def hog_dim(size: int = 128, cell: int = 8, block: int = 2, orientations: int = 9) -> int:
    """Length of the HOG vector for a ``size`` x ``size`` window.

    Examples
    --------
    >>> hog_dim(128, 8, 2, 9)   # 15 x 15 blocks of 2 x 2 cells, 9 bins each
    8100
    """
    blocks = size // cell - block + 1
    return blocks * blocks * block * block * orientations


def _descriptor(size: int, cell: int, block: int, orientations: int) -> cv2.HOGDescriptor:
    return cv2.HOGDescriptor(
        (size, size), (cell * block, cell * block), (cell, cell), (cell, cell), orientations
    )


def hog(
    image: NDArray[np.uint8],
    size: int = 128,
    cell: int = 8,
    block: int = 2,
    orientations: int = 9,
) -> NDArray[np.float32]:
    """HOG descriptor of a whole image.

    Parameters
    ----------
    image : (H, W) or (H, W, 3) uint8 ndarray
    size : int, default 128
        Side of the square window the image is resized to (aspect ratio is not kept).
    cell : int, default 8
        Cell side in pixels.
    block : int, default 2
        Block side in cells; blocks overlap by one cell (stride = ``cell``), L2-Hys normalised.
    orientations : int, default 9
        Unsigned gradient orientation bins.

    Returns
    -------
    (hog_dim(size, cell, block, orientations),) float32 ndarray

    Examples
    --------
    >>> import numpy as np
    >>> hog(np.zeros((100, 150), np.uint8)).shape
    (8100,)
    """
    if size % cell:
        raise ValueError(f"size ({size}) must be a multiple of cell ({cell})")
    gray = to_gray(image)
    window = cv2.resize(gray, (size, size), interpolation=cv2.INTER_AREA)
    values = np.asarray(_descriptor(size, cell, block, orientations).compute(window))
    return values.reshape(-1).astype(np.float32)
