"""Siamese training: a projection head learned on frozen base embeddings.

A *base* embedder (any spec: ``tflite:mobilenet.tflite``, ``hog``, ``bovw-sift``, ...)
embeds every training image once; a small shared-weight head is then trained on those
vectors with a triplet or contrastive loss over P×K batches, mined ``batch-hard``,
``semi-hard`` or ``random``. The head is exported to ONNX so that the resulting model
(``siamese:MODEL_DIR``) embeds images with onnxruntime, without PyTorch.

Training needs the ``siamese`` extra (PyTorch); this package imports it only when a
training function is used: ``import cvretrieval.siamese`` works without it.

References
----------
.. [1] R. Hadsell, S. Chopra, Y. LeCun, "Dimensionality Reduction by Learning an
       Invariant Mapping", CVPR 2006 (contrastive loss).
.. [2] F. Schroff, D. Kalenichenko, J. Philbin, "FaceNet: A Unified Embedding for Face
       Recognition and Clustering", CVPR 2015 (triplet loss, semi-hard mining).
.. [3] A. Hermans, L. Beyer, B. Leibe, "In Defense of the Triplet Loss for Person
       Re-Identification", arXiv:1703.07737, 2017 (P×K batches, batch-hard mining).
"""

from __future__ import annotations

from typing import Any

from .._lazy import lazy_exports
from ..errors import MissingExtraError

_EXPORTS = {
    "train_siamese": "train",
    "fit_head": "fit",
    "resolve_base": "data",
    "dataset_labels": "data",
    "embed_base": "data",
    "split_classes": "data",
    "class_retrieval_metrics": "data",
    "fit_backbone": "backbone",
    "ProjectionHead": "head",
    "SiameseModel": "head",
    "export_onnx": "export",
    "export_backbone_onnx": "export",
    "pca_init": "whiten",
    "lw_init": "whiten",
    "choose_shrinkage": "whiten",
    "parse_head": "head",
    "triplet_loss": "losses",
    "contrastive_loss": "losses",
    "batch_loss": "losses",
    "LOSSES": "losses",
    "pairwise_distances": "mining",
    "mine_triplets": "mining",
    "batch_hard": "mining",
    "semi_hard": "mining",
    "random_triplets": "mining",
    "PKSampler": "mining",
    "MINING": "mining",
}

__all__ = ["require_torch", *_EXPORTS]


def require_torch() -> Any:
    """Import and return :mod:`torch`, or raise :class:`MissingExtraError` naming the extra."""
    try:
        import torch
    except ImportError as exc:
        raise MissingExtraError(
            "Siamese training needs PyTorch (the 'siamese' extra): "
            "pip install 'cvretrieval[siamese]' "
            f"(pip install torch first for the CPU build) ({exc})"
        ) from None
    return torch


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
