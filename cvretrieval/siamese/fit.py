"""Train a projection head on frozen base embeddings (:func:`fit_head`).

A residual head (PCA-initialised linear skip plus an MLP) is trained with a triplet or
contrastive loss over P×K batches; every epoch is scored on held-out classes for a grid
of mixing weights with the base, and the best (epoch, weight) is kept.

References
----------
.. [1] A. Hermans, L. Beyer, B. Leibe, "In Defense of the Triplet Loss for Person
       Re-Identification", arXiv:1703.07737, 2017.
.. [2] R. Hadsell, S. Chopra, Y. LeCun, "Dimensionality Reduction by Learning an
       Invariant Mapping", CVPR 2006.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..embedders.base import l2_normalize
from .data import class_retrieval_metrics

logger = logging.getLogger(__name__)

#: default margins, on distances between unit vectors (in [0, 2])
DEFAULT_MARGIN = {"triplet": 0.2, "contrastive": 0.8}
#: default AdamW learning rates: the contrastive loss (½ d², ½ max(0, m - d)²) has
#: gradients several times smaller than the triplet hinge, so it takes larger steps
DEFAULT_LR = {"triplet": 3e-4, "contrastive": 1e-3}
#: mixing weights tried on the validation classes when ``mix="auto"``
BETA_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)
#: validation queries are capped to keep an epoch's scoring fast
MAX_VAL_IMAGES = 2000

__all__ = ["BETA_GRID", "DEFAULT_LR", "DEFAULT_MARGIN", "MAX_VAL_IMAGES", "fit_head"]


def fit_head(
    X: NDArray[np.floating],
    y: NDArray[np.integer],
    *,
    X_val: NDArray[np.floating] | None = None,
    y_val: NDArray[np.integer] | None = None,
    loss: str = "triplet",
    margin: float | None = None,
    mining: str = "batch-hard",
    head: str | Sequence[int] = (512, 256),
    residual: bool = True,
    init: str = "pca",
    shrinkage: float | str = "auto",
    mix: str | float = "auto",
    center: str | bool = "auto",
    epochs: int = 30,
    patience: int | None = 10,
    batch_p: int = 16,
    batch_k: int = 4,
    lr: float | None = None,
    weight_decay: float = 1e-4,
    random_state: int = 0,
    progress: bool | None = True,
    device: str = "auto",
) -> tuple[Any, dict[str, Any]]:
    """Train a projection head on vectors; return the best model and the history.

    The base part of the output is centred on the training mean when ``center`` is True,
    or with ``"auto"`` when that scores better on the validation classes than the raw
    base (always, without validation data). Epoch 0 scores the untrained head (PCA skip
    only); after each epoch the validation classes are scored for every mixing weight
    ``beta`` (:data:`BETA_GRID`, or the one given) and the best ``(epoch, beta)`` is kept.
    Without validation data the last epoch is kept with ``beta = 1`` (``mix="auto"``) or
    the given ``beta``.

    Parameters
    ----------
    X : (n, d) float array
        Base embeddings of the training images.
    y : (n,) int array
        Their classes.
    X_val, y_val : arrays, optional
        Embeddings and classes of the validation images (classes not in ``y``).
    init : {'pca', 'lw'}, default 'pca'
        How the residual head's linear skip starts: the top principal axes of ``X``, or
        the learned whitening of ``(X, y)`` (:func:`cvretrieval.siamese.head.lw_init`),
        which carries over to unseen classes better.
    shrinkage : float or 'auto', default 'auto'
        With ``init="lw"``: the ridge of the learned whitening, relative to the mean
        within-class eigenvalue; ``auto`` picks it from
        :data:`cvretrieval.siamese.whiten.SHRINKAGE_GRID` by cross-validation over held-out
        *training* classes (:func:`cvretrieval.siamese.whiten.choose_shrinkage`).
    loss, margin, mining, head, residual, mix, center, epochs, patience, batch_p, batch_k,
    lr, weight_decay, random_state, progress
        See :func:`cvretrieval.siamese.train_siamese`.
    device : {'auto', 'cpu', 'cuda'}, default 'auto'
        Where the head trains (``auto``: a CUDA GPU when PyTorch sees one); the returned
        model is on the CPU.

    Returns
    -------
    model : cvretrieval.siamese.head.SiameseModel
        The best epoch's head with the chosen ``beta``.
    info : dict
        ``history`` (per epoch: ``epoch``, ``loss``, ``active``, ``val_mAP`` (at the
        best beta of that epoch), ``val_mAP_by_beta``, ``beta``, ``seconds`` (of which
        ``val_seconds`` scoring the validation classes)),
        ``best_epoch``, ``beta``, ``center`` (whether the base part is centred),
        ``val_mAP``, ``base_val_mAP`` (the raw base), ``centered_val_mAP``, ``margin``,
        ``lr``, ``train_seconds``, ``shrinkage`` and ``shrinkage_scores`` (with
        ``init="lw"``: the ridge used and, when chosen, the cross-validated mAP of each).
    """
    from tqdm.auto import tqdm

    from ..embedders.devices import torch_device
    from . import require_torch
    from .head import (
        ProjectionHead,
        SiameseModel,
        embed_numpy,
        lw_init,
        parse_head,
        pca_init,
    )
    from .losses import LOSSES, batch_loss
    from .mining import MINING, PKSampler
    from .whiten import choose_shrinkage

    torch = require_torch()
    dev = torch_device(device, torch)
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
    if mining not in MINING:
        raise ValueError(f"unknown mining {mining!r}; choose one of {', '.join(MINING)}")
    if int(epochs) < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs!r}")
    margin = DEFAULT_MARGIN[loss] if margin is None else float(margin)
    lr = DEFAULT_LR[loss] if lr is None else float(lr)
    if margin <= 0:
        raise ValueError(f"margin must be positive, got {margin!r}")
    if mix == "auto":
        betas: tuple[float, ...] = BETA_GRID
    else:
        b = float(mix)
        if not 0.0 <= b <= 1.0:
            raise ValueError(f"mix must be 'auto' or a weight in [0, 1], got {mix!r}")
        betas = (b,)
    if init not in ("pca", "lw"):
        raise ValueError(f"init must be 'pca' or 'lw', got {init!r}")
    if shrinkage != "auto" and (isinstance(shrinkage, str) or float(shrinkage) < 0):
        raise ValueError(f"shrinkage must be 'auto' or a number >= 0, got {shrinkage!r}")
    if center not in ("auto", True, False):
        raise ValueError(f"center must be 'auto', True or False, got {center!r}")
    hidden = parse_head(head)
    X = l2_normalize(X)
    y = np.asarray(y)
    has_val = X_val is not None and y_val is not None and len(X_val) > 1
    if has_val:
        Xv, yv = l2_normalize(X_val), np.asarray(y_val)  # type: ignore[arg-type]
        if len(Xv) > MAX_VAL_IMAGES:
            keep = np.sort(np.random.default_rng(random_state).choice(len(Xv), MAX_VAL_IMAGES,
                                                                      replace=False))
            Xv, yv = Xv[keep], yv[keep]
    mean = X.mean(axis=0)
    shrink_scores = None
    if residual and init == "lw" and shrinkage == "auto":
        shrinkage, shrink_scores = choose_shrinkage(X, y, min(hidden[-1], X.shape[1]),
                                                    random_state=random_state)
        logger.info("learned whitening: shrinkage %s by held-out classes %s", shrinkage,
                    shrink_scores)
    centered_val = None
    use_center = bool(center)
    if has_val:
        base_val = class_retrieval_metrics(Xv, yv, Xv @ Xv.T)["mAP"]
        Bv = l2_normalize(Xv - mean)
        centered_val = class_retrieval_metrics(Bv, yv, Bv @ Bv.T)["mAP"]
        if center == "auto":
            use_center = centered_val > base_val
        if not use_center:
            Bv = Xv
        S_base = Bv @ Bv.T

    threads = torch.get_num_threads()
    # the head is small: one thread is fastest, and several threads on a busy machine spin
    # against each other (an epoch measured 17 times slower with 2 threads under load)
    torch.set_num_threads(1)
    history: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(random_state)
            net = ProjectionHead(X.shape[1], hidden, residual=residual)
            if residual:
                net.init_skip(*(lw_init(X, y, net.out_dim, shrinkage=float(shrinkage))
                                if init == "lw"
                                else pca_init(X, net.out_dim)))
            net.to(dev)
            opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
            sampler = PKSampler(y, batch_p, batch_k, random_state=random_state)
            rng = np.random.default_rng(random_state)
            Xt, yt = torch.as_tensor(X).to(dev), torch.as_tensor(y).to(dev)
            best: dict[str, Any] = {"score": -np.inf}
            since_best = 0
            bar = tqdm(range(int(epochs) + 1), desc="siamese", unit="epoch",
                       disable=None if progress is None else not progress)
            for epoch in bar:
                t0 = time.perf_counter()
                losses, active = [], []
                if epoch > 0:
                    net.train()
                    for idx in sampler:
                        value, stats = batch_loss(net(Xt[idx]), yt[idx], loss, margin, mining,
                                                  rng)
                        opt.zero_grad()
                        value.backward()
                        opt.step()
                        losses.append(float(value.detach()))
                        active.append(stats["active"])
                row: dict[str, Any] = {
                    "epoch": epoch,
                    "loss": float(np.mean(losses)) if losses else None,
                    "active": float(np.mean(active)) if active else None,
                }
                t_val = time.perf_counter()
                if has_val:
                    Hv = embed_numpy(net, Xv)
                    S_head = Hv @ Hv.T
                    by_beta = {
                        b: class_retrieval_metrics(Xv, yv, (1 - b) * S_base + b * S_head)["mAP"]
                        for b in betas
                    }
                    # ties go to the smaller weight of the head (the more conservative)
                    beta = max(by_beta, key=lambda b: (by_beta[b], -b))
                    row.update(val_mAP=by_beta[beta], beta=beta,
                               val_mAP_by_beta={str(k): v for k, v in by_beta.items()})
                    score = by_beta[beta]
                else:
                    beta = betas[0] if mix != "auto" else 1.0
                    row.update(val_mAP=None, beta=beta)
                    score = epoch
                row["seconds"] = round(time.perf_counter() - t0, 3)
                row["val_seconds"] = round(time.perf_counter() - t_val, 3)
                history.append(row)
                if score > best["score"]:
                    best = {"score": score, "epoch": epoch, "beta": beta,
                            "state": {k: v.detach().clone() for k, v in net.state_dict().items()}}
                    since_best = 0
                else:
                    since_best += 1
                bar.set_postfix(loss=f"{row['loss']:.4f}" if row["loss"] is not None else "-",
                                val_mAP=f"{row['val_mAP']:.3f}" if has_val else "-")
                logger.info("epoch %d: loss %s, val mAP %s (beta %s)", epoch, row["loss"],
                            row["val_mAP"], beta)
                if has_val and patience is not None and since_best >= int(patience):
                    logger.info("no better validation mAP for %d epochs: stopping", since_best)
                    break
            bar.close()
            net.load_state_dict(best["state"])
            net.cpu().eval()
    finally:
        torch.set_num_threads(threads)
    model = SiameseModel(net, best["beta"], mean=mean if use_center else None)
    info: dict[str, Any] = {
        "history": history,
        "best_epoch": int(best["epoch"]),
        "beta": float(best["beta"]),
        "val_mAP": float(best["score"]) if has_val else None,
        "base_val_mAP": base_val if has_val else None,
        "centered_val_mAP": centered_val,
        "center": use_center,
        "margin": margin,
        "lr": lr,
        "device": dev,
        "train_seconds": round(time.perf_counter() - t_start, 2),
        "shrinkage": float(shrinkage) if init == "lw" and residual else None,
        "shrinkage_scores": shrink_scores,
    }
    return model, info
