"""Retrieval data sets: a gallery, a list of queries and, per query, the relevant images.

A :class:`RetrievalDataset` follows the revisitop convention (``imlist``,
``qimlist``, ``gnd``): every query ``i`` has ``gnd[i]["ok"]`` (indices into
``imlist`` of its relevant images), ``gnd[i]["junk"]`` (indices to ignore when
scoring) and optionally ``gnd[i]["bbx"]`` (a query region ``[x1, y1, x2, y2]``).
A data set may also carry several ground truths (``protocols``, e.g. revisited
Oxford's Easy / Medium / Hard) and the list of what its reader had to skip
(``problems``).

Ground truth is stored flat (see :mod:`.groundtruth`): ``gnd`` is a lazy,
read-only sequence; :meth:`RetrievalDataset.positives`, ``junk`` and ``graded``
return arrays; class-labelled sets also expose ``labels`` and ``query_labels``.

Modules: ``base`` (the type), ``groundtruth`` (storage), one module per reader
(``classfolders``, ``jsongt``, ``ukbench``, ``revisitop``, ``oxford``,
``holidays``, ``gldv2``, ``tfrecord``), ``load`` (detection) and ``check``.

Layouts read (see :data:`DATASET_FORMATS`):

``class-folders``
    ``root/<class>/<images...>``: every image is a query, the other images of its
    class are its positives.
``query-gallery``
    ``root/query/<class>/...`` + ``root/gallery/<class>/...`` (or ``queries/``,
    ``galleries/``): the query images; relevant = the gallery images of their class.
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

from .base import DATASET_FORMATS, REVISITOP_PROTOCOLS, RetrievalDataset
from .check import check_dataset, format_check
from .classfolders import read_class_folders, read_query_gallery
from .gldv2 import read_gldv2
from .groundtruth import ArrayGroundTruth, ClassGroundTruth, GroundTruth
from .holidays import read_holidays
from .jsongt import read_gt_json
from .load import load_dataset
from .oxford import read_oxford_gt
from .revisitop import read_revisitop, revisitop_protocols, safe_pickle_load
from .tfrecord import _import_tfrecord, read_gld_tfrecord  # noqa: F401 - tests import it
from .ukbench import read_ukbench

__all__ = [
    "DATASET_FORMATS",
    "REVISITOP_PROTOCOLS",
    "ArrayGroundTruth",
    "ClassGroundTruth",
    "GroundTruth",
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
    "read_query_gallery",
    "read_revisitop",
    "read_ukbench",
    "revisitop_protocols",
    "safe_pickle_load",
]
