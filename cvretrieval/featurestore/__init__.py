"""A compact, memory-mapped store of the indexed images' key points, for re-ranking.

Spatial verification needs, for every database image, its key point positions and
either its visual words or its descriptors. :class:`FeatureStoreWriter` streams them to
a folder as flat arrays plus offsets (the ``lims`` layout of Faiss range search): the
rows of image ``i`` are ``offsets[i]:offsets[i + 1]`` of every array. Nothing is held in
memory while writing; :meth:`FeatureStore.open` maps the files read-only
(``np.load(mmap_mode="r")``), so opening a store of millions of images is instant and
only the rows that are read are paged in.

Folder layout::

    featurestore.json   format_version, counts, dtypes, parameters, meta (written last)
    offsets.npy         (n_images + 1,) int64; offsets[0] == 0, offsets[-1] == n_keypoints
    keypoints.npy       (n_keypoints, 2) float16 or float32: x, y in pixels
    descriptors.npy     (n_keypoints, D) uint8 or float16 (optional)
    words.npy           (n_keypoints,) uint32 visual word of each key point (optional)

Binary descriptors (ORB, AKAZE, BRISK: packed bits) are kept as they are. Float
descriptors are quantised to uint8 by ``round(x * descriptor_scale)`` (OpenCV's SIFT
values are already integers in [0, 255], so scale 1 is lossless; RootSIFT lies in
[0, 1] and gets scale 255), or stored as float16. When words are stored, the rows of
each image are sorted by word, which lets matching by shared words skip a sort.

Each ``.npy`` file is written with a header padded for growth (NumPy reserves room for
a 21-digit first dimension), data is appended as it comes and the header is rewritten
with the final shape on :meth:`FeatureStoreWriter.close`; ``featurestore.json`` is
written last, so a folder without it is an interrupted write.

References
----------
.. [1] J. Johnson, M. Douze, H. Jégou, "Billion-scale similarity search with GPUs",
       IEEE Trans. Big Data 2019 (Faiss; the ``lims`` layout of variable-length results).
.. [2] J. Philbin, O. Chum, M. Isard, J. Sivic, A. Zisserman, "Object retrieval with
       large vocabularies and fast spatial matching", CVPR 2007 (what the store is for).
"""

from __future__ import annotations

from ._format import strongest_indices
from .reader import FeatureStore
from .writer import FeatureStoreWriter

__all__ = ["FeatureStore", "FeatureStoreWriter", "strongest_indices"]
