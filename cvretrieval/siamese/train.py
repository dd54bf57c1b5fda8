"""Train a Siamese projection head on frozen base embeddings and save it as a model folder.

``train_siamese`` embeds every training image once with the *base* embedder (cached as
``.npy``), holds out whole classes for validation, trains a shared-weight head with a
triplet or contrastive loss over P×K batches, scores every epoch on the held-out classes
with the evaluation harness's mAP (class-folder protocol), keeps the best epoch and
writes ``MODEL_DIR``:

``siamese.json``
    format version, base spec, dimensions, the training configuration and history;
``base/``
    the base embedder saved with :meth:`Embedder.save` (its fitted vocabulary, if any);
``head.onnx``
    base embedding → final vector, run with onnxruntime by
    :class:`cvretrieval.embedders.siamese.SiameseEmbedder` (no PyTorch needed);
``training.png``
    loss and validation mAP per epoch (when matplotlib is installed);
``cache/``
    the cached base embeddings (safe to delete; reused when training again).

References
----------
.. [1] A. Hermans, L. Beyer, B. Leibe, "In Defense of the Triplet Loss for Person
       Re-Identification", arXiv:1703.07737, 2017.
.. [2] R. Hadsell, S. Chopra, Y. LeCun, "Dimensionality Reduction by Learning an
       Invariant Mapping", CVPR 2006.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..datasets import RetrievalDataset
from ..embedders import Embedder
from ..embedders.runtimes import file_sha256
from ..errors import MissingExtraError
from .data import (
    MOBILENET_ENV,
    as_training_set,
    class_retrieval_metrics,
    dataset_labels,
    embed_base,
    resolve_base,
    split_classes,
)
from .export import prepare_out_dir, write_model_dir
from .fit import BETA_GRID, DEFAULT_LR, DEFAULT_MARGIN, MAX_VAL_IMAGES, fit_head

logger = logging.getLogger(__name__)

__all__ = [  # the training API, whichever module of the package defines it
    "BETA_GRID",
    "DEFAULT_LR",
    "DEFAULT_MARGIN",
    "MAX_VAL_IMAGES",
    "MOBILENET_ENV",
    "class_retrieval_metrics",
    "dataset_labels",
    "embed_base",
    "fit_head",
    "resolve_base",
    "split_classes",
    "train_siamese",
]


def train_siamese(
    dataset_or_path: RetrievalDataset | str | os.PathLike | tuple[Sequence[Any], Sequence[Any]],
    *,
    base: str | Embedder = "mobilenet",
    base_views: str | None = None,
    loss: str = "triplet",
    margin: float | None = None,
    mining: str = "batch-hard",
    head: str | Sequence[int] = (512, 256),
    residual: bool = True,
    init: str = "pca",
    shrinkage: float | str = "auto",
    mix: str | float = "auto",
    center: str | bool = "auto",
    epochs: int | None = None,
    patience: int | str | None = "auto",
    batch_p: int | None = None,
    batch_k: int = 4,
    lr: float | None = None,
    weight_decay: float = 1e-4,
    val_split: float = 0.2,
    max_side: int | None = 640,
    random_state: int = 0,
    out_dir: str | os.PathLike,
    cache_dir: str | os.PathLike | None = None,
    progress: bool | None = True,
    n_jobs: int = -1,
    backbone: str | None = None,
    weights: str | os.PathLike | None = None,
    input_size: int = 224,
    freeze: int = 3,
    dim: int | None = None,
    steps_per_epoch: int | None = None,
    device: str = "auto",
) -> dict[str, Any]:
    """Train a Siamese head on a labelled image set and write ``out_dir`` (a model folder).

    Parameters
    ----------
    dataset_or_path : RetrievalDataset, path or (paths, labels)
        Class folders (``ROOT/<class>/<images>``), any data set whose every image is a
        query (UKBench: its groups are the classes), or image paths with their labels.
    base : str or Embedder, default 'mobilenet'
        The frozen base embedder: a spec (``tflite:/path/mobilenet.tflite``, ``hog``,
        ``bovw-sift``, ``vlad``, ...), ``"mobilenet"`` (the file named by
        ``$CVRET_MOBILENET``) or an instance; fitted on the training images if it needs it.
    base_views : str, optional
        Test-time views of a network base (e.g. ``"full,crop0.8"``: the mean of the
        image's and its central crop's vectors), used for training and kept in the model's
        ``base/``, so embedding with the model computes the same views.
    loss : {'triplet', 'contrastive'}
    margin : float, optional
        Default 0.2 (triplet) or 0.8 (contrastive), on distances between unit vectors.
    mining : {'batch-hard', 'semi-hard', 'random'}
    head : str or sequence of int, default (512, 256)
        Layer sizes of the head's MLP (``"512,256"``); the last is the head's dimension.
    residual : bool, default True
        The recipe that generalises to unseen classes: a PCA-initialised linear skip plus
        the MLP with a zero-initialised last layer. False: a plain MLP.
    init : {'pca', 'lw'}, default 'pca'
        The residual head's linear skip at the start: PCA of the base embeddings, or
        learned whitening from their classes (better on unseen classes).
    shrinkage : float or 'auto', default 'auto'
        With ``init="lw"``: the whitening's ridge; ``auto`` chooses it by cross-validation
        over held-out training classes (:func:`cvretrieval.siamese.whiten.choose_shrinkage`).
        The recipe that carries best to unseen classes in our benchmark is the closed-form
        map alone, fitted on every class: ``init="lw", head=(512,), epochs=0,
        val_split=0`` (docs: "Siamese heads on unseen classes").
    mix : 'auto' or float in [0, 1], default 'auto'
        Weight ``beta`` of the head's cosine similarity against the base's in the final
        vector ``[sqrt(1-beta) base, sqrt(beta) head]``; ``auto`` picks it from
        (0, .25, .5, .75, 1) on the validation classes (1 without validation).
    center : 'auto' or bool, default 'auto'
        Subtract the mean of the training embeddings from the base part of the output;
        ``auto`` does it when it scores better on the validation classes.
    epochs : int, optional
        Default 30 for a head, 10 with ``backbone``; 0 keeps the untrained head (its
        closed-form skip: PCA or learned whitening).
    patience : int, 'auto' or None, default 'auto'
        Stop after this many epochs without a better validation mAP ('auto': 10 for a
        head, 3 with ``backbone``; None: never).
    batch_p, batch_k : int, default 16 (8 with ``backbone``), 4
        Classes per batch and images per class.
    lr : float, optional
        AdamW learning rate; default 3e-4 (triplet) or 1e-3 (contrastive).
    weight_decay : float, default 1e-4
        AdamW weight decay.
    val_split : float, default 0.2
        Fraction of the classes held out (whole) for validation, so that the kept epoch
        is the one that generalises best to unseen classes; 0 to train on every class.
    max_side : int or None, default 640
        Images are downscaled to this long side before the base embedder (as in
        :class:`cvretrieval.Retriever`).
    random_state : int, default 0
    out_dir : path
        The model folder to write (a new or empty folder, or a previous model).
    cache_dir : path, optional
        Where base embeddings are cached; default ``out_dir/cache``.
    progress : bool or None, default True
        Progress bars (embedding, epochs with loss and validation mAP).
    n_jobs : int, default -1
        Worker processes for the base embeddings (-1: all cores). The head trains on one
        PyTorch thread, which is the fastest for a model this small.
    backbone : str, optional
        Fine-tune a CNN end to end instead of training a head on frozen embeddings:
        ``resnet50`` (or ``resnet18/34/101/152``) with GeM pooling and a linear projection
        (:mod:`cvretrieval.siamese.backbone`); ``base``, ``head``, ``residual``, ``mix``
        and ``center`` are then not used.
    weights : path, optional
        With ``backbone``: a torchvision-style state dict of that ResNet (e.g. ImageNet
        weights saved with ``torch.save(model.state_dict(), FILE)``); never downloaded.
        Without it the network starts from random weights.
    input_size, freeze, dim, steps_per_epoch
        With ``backbone``: square input size (224), number of first stages kept frozen
        (3: stem, layer1 and layer2), output dimension (default the trunk's channels),
        batches per epoch (default one pass over the training images).
    device : {'auto', 'cpu', 'cuda'}, default 'auto'
        Where the head or the backbone trains: ``auto`` uses a CUDA GPU when PyTorch sees
        one; ``cuda`` without one is an error. The exported model runs anywhere.

    Returns
    -------
    dict
        ``model_dir``, ``dim``, ``base`` (spec), ``history`` (loss and validation mAP per
        epoch), ``best_epoch``, ``beta``, ``center``, ``val_mAP``, ``base_val_mAP`` (the
        raw base on the validation classes), ``centered_val_mAP``, ``n_train``,
        ``n_val``, ``classes_train``, ``classes_val``, ``skipped`` (unreadable images),
        ``embed_seconds``, ``train_seconds``, ``figures`` (paths of saved plots).

    Raises
    ------
    MissingExtraError
        Without PyTorch (extra ``siamese``) or ONNX (``onnx``, extra ``siamese``).
    DatasetError
        If the data carry no class labels.
    """
    from ..embedders.devices import check_device, torch_device
    from . import require_torch

    torch_device(check_device(device), require_torch())  # a missing GPU fails before any work
    try:
        import onnx  # noqa: F401  (torch.onnx.export needs it)
    except ImportError:
        raise MissingExtraError(
            "exporting the head needs onnx (the 'siamese' extra): "
            "pip install 'cvretrieval[siamese]'"
        ) from None
    heavy = backbone is not None
    epochs = int(epochs if epochs is not None else (10 if heavy else 30))
    batch_p = int(batch_p if batch_p is not None else (8 if heavy else 16))
    if patience == "auto":
        patience = 3 if heavy else 10
    elif patience is not None:
        patience = int(patience)
    out = Path(out_dir)
    if backbone is not None:
        from .backbone import ARCHS

        if backbone not in ARCHS:
            raise ValueError(f"unknown backbone {backbone!r}; choose one of {', '.join(ARCHS)}")
    prepare_out_dir(out)
    paths, labels, names, data_name = as_training_set(dataset_or_path)
    if backbone is not None:
        return _train_backbone(
            out, paths, labels, names, data_name, arch=backbone, weights=weights,
            input_size=input_size, freeze=freeze, dim=dim, steps_per_epoch=steps_per_epoch,
            loss=loss, margin=margin, mining=mining, epochs=epochs, patience=patience,
            batch_p=batch_p, batch_k=batch_k, lr=lr, weight_decay=weight_decay,
            val_split=val_split, max_side=max_side, random_state=random_state,
            progress=progress, n_jobs=n_jobs, device=device,
        )
    embedder = resolve_base(base, views=base_views)

    t0 = time.perf_counter()
    fitted, X, rows = embed_base(
        embedder, paths, cache_dir=cache_dir if cache_dir is not None else out / "cache",
        max_side=max_side, n_jobs=n_jobs, random_state=random_state, progress=progress,
    )
    embed_seconds = time.perf_counter() - t0
    y = labels[rows]
    skipped = [str(paths[i]) for i in sorted(set(range(len(paths))) - set(rows.tolist()))]
    train_mask, val_mask = split_classes(y, val_split, random_state)
    logger.info("training on %d images of %d classes, validating on %d images of %d classes",
                train_mask.sum(), len(np.unique(y[train_mask])), val_mask.sum(),
                len(np.unique(y[val_mask])))
    model, info = fit_head(
        X[train_mask], y[train_mask], X_val=X[val_mask], y_val=y[val_mask], loss=loss,
        margin=margin, mining=mining, head=head, residual=residual, init=init,
        shrinkage=shrinkage, mix=mix,
        center=center,
        epochs=epochs,
        patience=patience, batch_p=batch_p, batch_k=batch_k, lr=lr, weight_decay=weight_decay,
        random_state=random_state, progress=progress, device=device,
    )

    from .export import export_onnx

    base_dir = out / "base"
    if base_dir.exists():
        shutil.rmtree(base_dir)
    fitted.save(base_dir)
    head_path = export_onnx(model, out / "head.onnx")
    config = {
        "loss": loss, "margin": info["margin"], "mining": mining, "lr": info["lr"],
        "head": list(model.head.hidden), "residual": residual, "init": init,
        "shrinkage": info["shrinkage"], "shrinkage_scores": info["shrinkage_scores"], "mix": mix,
        "center": center,
        "epochs": epochs,
        "patience": patience, "batch_p": batch_p, "batch_k": batch_k,
        "weight_decay": weight_decay, "val_split": val_split, "max_side": max_side,
        "random_state": random_state, "base_views": base_views,
    }
    base_meta = {**fitted.spec(), "dim": fitted.dim, "dir": "base"}
    head_meta = {"file": "head.onnx", "sha256": file_sha256(head_path), "in_dim": model.in_dim,
                 "out_dim": model.out_dim, "hidden": list(model.head.hidden),
                 "residual": residual, "beta": model.beta, "centered": model.centered}
    return write_model_dir(out, base_meta, head_meta, model.out_dim, config, info, data_name,
                        max_side, y, train_mask, val_mask, names, skipped, embed_seconds)


def _train_backbone(
    out: Path, paths: list[Path], labels: NDArray[np.int64], names: list[str], data_name: str,
    *, arch: str, weights: str | os.PathLike | None, input_size: int, freeze: int,
    dim: int | None, steps_per_epoch: int | None, loss: str, margin: float | None,
    mining: str, epochs: int, patience: int | None, batch_p: int, batch_k: int,
    lr: float | None, weight_decay: float, val_split: float, max_side: int | None,
    random_state: int, progress: bool | None, n_jobs: int, device: str,
) -> dict[str, Any]:
    """``train_siamese(backbone=...)``: fine-tune a ResNet + GeM and write the model folder
    as a base (``backbone.onnx`` through the ONNX adapter) plus a head (the projection)."""
    from ..embedders.deep import ONNXEmbedder
    from .backbone import IMAGENET_MEAN, IMAGENET_STD, decode_images, fit_backbone
    from .export import export_backbone_onnx, export_onnx

    t0 = time.perf_counter()
    images, rows, errors = decode_images(paths, int(input_size), max_side=max_side,
                                         n_jobs=n_jobs, progress=progress)
    embed_seconds = time.perf_counter() - t0
    y = labels[rows]
    train_mask, val_mask = split_classes(y, val_split, random_state)
    # two copies by mask; the decoded whole is not needed again (about 150 KB an image)
    train_images, val_images = images[train_mask], images[val_mask]
    del images
    model, info = fit_backbone(
        train_images, y[train_mask], images_val=val_images, y_val=y[val_mask],
        arch=arch, weights=weights, dim=dim, freeze=freeze, loss=loss, margin=margin,
        mining=mining, epochs=epochs, steps_per_epoch=steps_per_epoch, patience=patience,
        batch_p=batch_p, batch_k=batch_k, lr=lr, weight_decay=weight_decay,
        random_state=random_state, progress=progress, device=device,
    )
    backbone_path = export_backbone_onnx(model.backbone, out / "backbone.onnx", input_size)
    head_path = export_onnx(model.proj, out / "head.onnx", in_dim=model.backbone.dim)
    base = ONNXEmbedder(str(backbone_path.resolve()), input_size=int(input_size),
                        mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD))
    base.validate()
    base_dir = out / "base"
    if base_dir.exists():
        shutil.rmtree(base_dir)
    base.save(base_dir)
    weights_info = None
    if weights is not None:
        weights_info = {**info["weights"], "sha256": file_sha256(Path(weights).expanduser())}
    config = {
        "backbone": arch, "input_size": int(input_size), "freeze": int(freeze),
        "loss": loss, "margin": info["margin"], "mining": mining, "lr": info["lr"],
        "epochs": epochs, "steps_per_epoch": steps_per_epoch, "patience": patience,
        "batch_p": batch_p, "batch_k": batch_k, "weight_decay": weight_decay,
        "val_split": val_split, "max_side": max_side, "random_state": random_state,
    }
    base_meta = {**base.spec(), "dim": base.dim, "dir": "base", "model_file": "backbone.onnx"}
    head_meta = {"file": "head.onnx", "sha256": file_sha256(head_path),
                 "in_dim": model.backbone.dim, "out_dim": model.out_dim, "hidden": [],
                 "residual": False, "beta": 1.0, "centered": False}
    extra = {"backbone": {"arch": arch, "weights": weights_info, "gem_p": info["gem_p"],
                          "freeze": int(freeze), "input_size": int(input_size)}}
    info = {**info, "beta": 1.0, "center": False, "centered_val_mAP": None}
    return write_model_dir(out, base_meta, head_meta, model.out_dim, config, info, data_name,
                        max_side, y, train_mask, val_mask, names, errors, embed_seconds, extra)
