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

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .. import __version__
from ..datasets import RetrievalDataset, load_dataset
from ..embedders import Embedder, load_embedder, make_embedder
from ..embedders.base import l2_normalize
from ..embedders.siamese import MODEL_FORMAT, MODEL_FORMAT_VERSION, file_sha256
from ..errors import CVRetrievalError, DatasetError, MissingExtraError
from ..evaluation import compute_map

logger = logging.getLogger(__name__)

#: environment variable holding the path of the model the ``mobilenet`` alias stands for
MOBILENET_ENV = "CVRET_MOBILENET"
#: default margins, on distances between unit vectors (in [0, 2])
DEFAULT_MARGIN = {"triplet": 0.2, "contrastive": 0.8}
#: default AdamW learning rates: the contrastive loss (½ d², ½ max(0, m - d)²) has
#: gradients several times smaller than the triplet hinge, so it takes larger steps
DEFAULT_LR = {"triplet": 3e-4, "contrastive": 1e-3}
#: mixing weights tried on the validation classes when ``mix="auto"``
BETA_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)
#: validation queries are capped to keep an epoch's scoring fast
MAX_VAL_IMAGES = 2000


# --------------------------------------------------------------------------- base
def resolve_base(base: str | Embedder) -> Embedder:
    """An unfitted (or already fitted) base embedder from a spec, an alias or an instance.

    ``"mobilenet"`` stands for the model file named by the environment variable
    ``CVRET_MOBILENET`` (a ``.tflite``, ``.onnx`` or TorchScript ``.pt`` file), e.g. the
    Coral MobileNet v1 embedding extractor; any other string is an embedder spec
    (``"tflite:/path/model.tflite"``, ``"hog"``, ``"bovw-sift"``, ``"vlad"``).
    """
    if isinstance(base, Embedder):
        return base
    if not isinstance(base, str) or not base.strip():
        raise ValueError(f"base must be an embedder spec string or an Embedder, got {base!r}")
    spec = base.strip()
    if spec.lower() == "mobilenet":
        path = os.environ.get(MOBILENET_ENV)
        if not path:
            raise ValueError(
                f"base 'mobilenet' needs the environment variable {MOBILENET_ENV} set to a "
                "MobileNet model file (e.g. mobilenet_v1_1.0_224_quant_embedding_extractor"
                ".tflite), "
                "or pass the spec itself: --base tflite:/path/to/mobilenet.tflite"
            )
        kind = {".tflite": "tflite", ".onnx": "onnx", ".pt": "torchscript"}.get(
            Path(path).suffix.lower(), "tflite"
        )
        spec = f"{kind}:{path}"
    if spec.lower().startswith("siamese:"):
        raise ValueError(f"base {spec!r}: a Siamese model cannot be the base of another one")
    return make_embedder(spec)


def dataset_labels(data: RetrievalDataset) -> tuple[list[Path], NDArray[np.int64], list[str]]:
    """Image paths and class labels of a labelled data set.

    Class folders: the folder of each image. Any other data set whose queries are its
    gallery (UKBench, a ground-truth JSON listing every image as a query): the connected
    groups of the "same object" relation given by ``ok``.

    Returns
    -------
    paths : list of Path
    labels : (n,) int64
    names : list of str
        Class name of each label value.

    Raises
    ------
    DatasetError
        If the data set has queries outside its gallery (no labels for training).
    """
    paths = data.image_paths()
    if data.format == "class-folders":
        names_per_image = [p.split("/")[0] for p in data.imlist]
        names, labels = np.unique(np.asarray(names_per_image), return_inverse=True)
        return paths, labels.astype(np.int64), [str(n) for n in names]
    self_index = data.query_self_index()
    if len(data.qimlist) != len(data.imlist) or any(s is None for s in self_index):
        raise DatasetError(
            f"data set {data.name!r} has queries that are not gallery images, so its images "
            "have no class labels: train on class folders (ROOT/<class>/<images>) or a data "
            "set whose every image is a query (UKBench)"
        )
    parent = np.arange(len(data.imlist))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = int(parent[i])
        return i

    for q, g in enumerate(data.gnd):
        s = int(self_index[q])  # type: ignore[arg-type]
        for j in g["ok"]:
            ri, rj = find(s), find(int(j))
            if ri != rj:
                parent[max(ri, rj)] = min(ri, rj)
    roots = np.array([find(i) for i in range(len(parent))])
    _, labels = np.unique(roots, return_inverse=True)
    return paths, labels.astype(np.int64), [f"group{i}" for i in range(int(labels.max()) + 1)]


def _cache_key(embedder: Embedder, paths: Sequence[Path], max_side: int | None) -> str:
    h = hashlib.sha1()
    h.update(json.dumps({"spec": embedder.spec(), "max_side": max_side}, sort_keys=True,
                        default=str).encode())
    for p in paths:
        h.update(str(Path(p).resolve()).encode() + b"\0")
    return h.hexdigest()[:16]


def embed_base(
    embedder: Embedder,
    paths: Sequence[str | os.PathLike],
    *,
    cache_dir: str | os.PathLike | None = None,
    max_side: int | None = 640,
    n_jobs: int = -1,
    random_state: int = 0,
    progress: bool | None = None,
) -> tuple[Embedder, NDArray[np.float32], NDArray[np.int64]]:
    """Embed images once with the base embedder (fitting it if it needs fitting), cached.

    The images go through :meth:`cvretrieval.Retriever.build` (parallel extraction,
    unreadable images skipped). With ``cache_dir``, the vectors (``base-KEY.npy``), the
    rows that could be read (``base-KEY-rows.npy``) and the fitted embedder
    (``base-KEY/``) are stored under a key of the embedder's spec, ``max_side`` and the
    image paths, and reused on the next call with the same key.

    Returns
    -------
    embedder : Embedder
        Fitted (loaded from the cache on a hit).
    X : (m, dim) float32
        Vectors of the images that could be read.
    rows : (m,) int64
        Their positions in ``paths``.
    """
    from ..retriever import Retriever

    image_paths = [Path(p) for p in paths]
    cache = Path(cache_dir) if cache_dir is not None else None
    if cache is not None:
        key = _cache_key(embedder, image_paths, max_side)
        xf, rf = cache / f"base-{key}.npy", cache / f"base-{key}-rows.npy"
        ed = cache / f"base-{key}"
        if xf.is_file() and rf.is_file() and (ed / "embedder.json").is_file():
            try:
                X = np.load(xf, allow_pickle=False)
                rows = np.load(rf, allow_pickle=False).astype(np.int64)
                fitted = load_embedder(ed)
                if X.ndim == 2 and len(X) == len(rows) and X.shape[1] == fitted.dim:
                    logger.info("reusing %d cached base embeddings from %s", len(X), xf)
                    return fitted, np.ascontiguousarray(X, np.float32), rows
            except CVRetrievalError as exc:
                logger.warning("ignoring the unusable cache %s (%s)", xf, exc)
    ret = Retriever(embedder, index="flat", max_side=max_side, n_jobs=n_jobs,
                    random_state=random_state).build(image_paths, progress=progress)
    X, rows_list, _ = ret.embed_queries(image_paths)  # the vectors computed by build, in order
    rows = np.asarray(rows_list, np.int64)
    X = np.ascontiguousarray(X, np.float32)
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        if ed.exists():
            shutil.rmtree(ed)
        ret.embedder.save(ed)
        np.save(rf, rows)
        np.save(xf, X)
    return ret.embedder, X, rows


# --------------------------------------------------------------------------- splits, scores
def split_classes(
    labels: Sequence[int] | NDArray[np.integer], val_split: float = 0.2, random_state: int = 0
) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """Hold out whole classes for validation.

    ``round(val_split * n_classes)`` classes (at least 2 when ``val_split > 0``), drawn at
    random among the classes with at least 2 images, go to validation; every other
    class trains.

    Returns
    -------
    train, val : (n,) bool masks

    Raises
    ------
    ValueError
        If fewer than 2 classes would remain for training or validation.

    Examples
    --------
    >>> labels = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    >>> tr, va = split_classes(labels, val_split=0.5)
    >>> int(tr.sum()), int(va.sum()), set(labels[tr]) & set(labels[va])
    (4, 4, set())
    """
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    if not 0.0 <= float(val_split) < 1.0:
        raise ValueError(f"val_split must be in [0, 1), got {val_split!r}")
    if val_split == 0:
        return np.ones(labels.shape, bool), np.zeros(labels.shape, bool)
    eligible = classes[counts >= 2]
    n_val = max(2, int(round(val_split * len(classes))))
    if len(eligible) < n_val or len(classes) - n_val < 2:
        raise ValueError(
            f"cannot hold out {n_val} validation classes out of {len(classes)} "
            f"({len(eligible)} with 2+ images) and keep 2 for training: use more classes or "
            "val_split=0"
        )
    rng = np.random.default_rng(random_state)
    val_classes = rng.choice(eligible, size=n_val, replace=False)
    val = np.isin(labels, val_classes)
    return ~val, val


def class_retrieval_metrics(
    X: NDArray[np.floating] | None, labels: Sequence[int] | NDArray[np.integer],
    S: NDArray[np.floating] | None = None,
) -> dict[str, float]:
    """mAP and P@10 of class-level retrieval among the rows of ``X``, by the harness.

    Every row is a query; the other rows of its class are relevant; the query itself is
    left out (the class-folder protocol of :func:`cvretrieval.datasets.read_class_folders`),
    ranked by cosine similarity (or by the given similarity matrix ``S``). The mAP is the
    harness's :func:`cvretrieval.evaluation.compute_map` (revisitop's AP; a query whose
    class has no other image is left out of the mean), P@10 the fraction of relevant
    images among each query's first 10 results.

    Parameters
    ----------
    X : (n, d) array or None
        Vectors (ignored when ``S`` is given).
    labels : (n,) array_like
    S : (n, n) array, optional
        Similarities, larger is closer.

    Returns
    -------
    dict
        ``mAP``, ``P@10``.
    """
    labels = np.asarray(labels)
    if S is None:
        Xn = l2_normalize(X)  # type: ignore[arg-type]
        S = Xn @ Xn.T
    S = np.array(S, dtype=np.float64)
    n = len(labels)
    if S.shape != (n, n) or n < 2:
        raise ValueError(f"need an (n, n) similarity matrix for n >= 2 labels, got {S.shape}")
    np.fill_diagonal(S, -np.inf)  # the query itself goes last, then is dropped
    order = np.argsort(-S, axis=1, kind="stable")[:, :-1]
    same = labels[None, :] == labels[:, None]
    np.fill_diagonal(same, False)
    gnd = [{"ok": np.flatnonzero(row)} for row in same]
    mAP, _, _, _ = compute_map(order.T, gnd, kappas=())
    hits10 = np.take_along_axis(same, order[:, :10], axis=1)
    has_pos = same.any(axis=1)
    p10 = float(hits10.sum(axis=1)[has_pos].mean() / 10) if has_pos.any() else 0.0
    return {"mAP": float(mAP) if np.isfinite(mAP) else 0.0, "P@10": p10}


# --------------------------------------------------------------------------- training
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
    loss, margin, mining, head, residual, mix, center, epochs, patience, batch_p, batch_k,
    lr, weight_decay, random_state, progress
        See :func:`train_siamese`.

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
        ``lr``, ``train_seconds``.
    """
    from tqdm.auto import tqdm

    from . import require_torch
    from .head import ProjectionHead, SiameseModel, embed_numpy, parse_head, pca_init
    from .losses import LOSSES, batch_loss
    from .mining import MINING, PKSampler

    torch = require_torch()
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
                net.init_skip(*pca_init(X, net.out_dim))
            opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
            sampler = PKSampler(y, batch_p, batch_k, random_state=random_state)
            rng = np.random.default_rng(random_state)
            Xt, yt = torch.as_tensor(X), torch.as_tensor(y)
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
            net.eval()
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
        "train_seconds": round(time.perf_counter() - t_start, 2),
    }
    return model, info


def _as_training_set(
    data: RetrievalDataset | str | os.PathLike | tuple[Sequence[Any], Sequence[Any]],
) -> tuple[list[Path], NDArray[np.int64], list[str], str]:
    if isinstance(data, tuple):
        paths, labels = data
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} image paths but {len(labels)} labels")
        names, lab = np.unique(np.asarray([str(v) for v in labels]), return_inverse=True)
        return [Path(p) for p in paths], lab.astype(np.int64), [str(n) for n in names], "images"
    if not isinstance(data, RetrievalDataset):
        data = load_dataset(data)
    return (*dataset_labels(data), data.name)


def _plot_history(history: list[dict[str, Any]], best_epoch: int, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.info("matplotlib is not installed: no training plot (extra 'report')")
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ep = [r["epoch"] for r in history if r["loss"] is not None]
    ax.plot(ep, [r["loss"] for r in history if r["loss"] is not None], "C0-", label="loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss", color="C0")
    if any(r.get("val_mAP") is not None for r in history):
        ax2 = ax.twinx()
        ax2.plot([r["epoch"] for r in history], [r["val_mAP"] for r in history], "C1-o", ms=3)
        ax2.axvline(best_epoch, color="C1", ls=":", lw=1)
        ax2.set_ylabel("validation mAP (held-out classes)", color="C1")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _prepare_out_dir(out_dir: Path) -> None:
    if out_dir.exists():
        if not out_dir.is_dir():
            raise CVRetrievalError(f"{out_dir} is a file: choose a folder for the model")
        allowed = {"siamese.json", "head.onnx", "base", "cache", "training.png"}
        other = sorted(p.name for p in out_dir.iterdir() if p.name not in allowed)
        if other:
            raise CVRetrievalError(
                f"{out_dir} exists and holds files that are not part of a Siamese model "
                f"({', '.join(other[:3])}): choose an empty or new folder"
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "siamese.json").unlink(missing_ok=True)  # the folder is incomplete until the end


def train_siamese(
    dataset_or_path: RetrievalDataset | str | os.PathLike | tuple[Sequence[Any], Sequence[Any]],
    *,
    base: str | Embedder = "mobilenet",
    loss: str = "triplet",
    margin: float | None = None,
    mining: str = "batch-hard",
    head: str | Sequence[int] = (512, 256),
    residual: bool = True,
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
    loss : {'triplet', 'contrastive'}
    margin : float, optional
        Default 0.2 (triplet) or 0.8 (contrastive), on distances between unit vectors.
    mining : {'batch-hard', 'semi-hard', 'random'}
    head : str or sequence of int, default (512, 256)
        Layer sizes of the head's MLP (``"512,256"``); the last is the head's dimension.
    residual : bool, default True
        The recipe that generalises to unseen classes: a PCA-initialised linear skip plus
        the MLP with a zero-initialised last layer. False: a plain MLP.
    mix : 'auto' or float in [0, 1], default 'auto'
        Weight ``beta`` of the head's cosine similarity against the base's in the final
        vector ``[sqrt(1-beta) base, sqrt(beta) head]``; ``auto`` picks it from
        (0, .25, .5, .75, 1) on the validation classes (1 without validation).
    center : 'auto' or bool, default 'auto'
        Subtract the mean of the training embeddings from the base part of the output;
        ``auto`` does it when it scores better on the validation classes.
    epochs : int, optional
        Default 30 for a head, 10 with ``backbone``.
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
    from . import require_torch

    require_torch()
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
    _prepare_out_dir(out)
    paths, labels, names, data_name = _as_training_set(dataset_or_path)
    if backbone is not None:
        return _train_backbone(
            out, paths, labels, names, data_name, arch=backbone, weights=weights,
            input_size=input_size, freeze=freeze, dim=dim, steps_per_epoch=steps_per_epoch,
            loss=loss, margin=margin, mining=mining, epochs=epochs, patience=patience,
            batch_p=batch_p, batch_k=batch_k, lr=lr, weight_decay=weight_decay,
            val_split=val_split, max_side=max_side, random_state=random_state,
            progress=progress, n_jobs=n_jobs,
        )
    embedder = resolve_base(base)

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
        margin=margin, mining=mining, head=head, residual=residual, mix=mix, center=center,
        epochs=epochs,
        patience=patience, batch_p=batch_p, batch_k=batch_k, lr=lr, weight_decay=weight_decay,
        random_state=random_state, progress=progress,
    )

    from .head import export_onnx

    base_dir = out / "base"
    if base_dir.exists():
        shutil.rmtree(base_dir)
    fitted.save(base_dir)
    head_path = export_onnx(model, out / "head.onnx")
    config = {
        "loss": loss, "margin": info["margin"], "mining": mining, "lr": info["lr"],
        "head": list(model.head.hidden), "residual": residual, "mix": mix, "center": center,
        "epochs": epochs,
        "patience": patience, "batch_p": batch_p, "batch_k": batch_k,
        "weight_decay": weight_decay, "val_split": val_split, "max_side": max_side,
        "random_state": random_state,
    }
    base_meta = {**fitted.spec(), "dim": fitted.dim, "dir": "base"}
    head_meta = {"file": "head.onnx", "sha256": file_sha256(head_path), "in_dim": model.in_dim,
                 "out_dim": model.out_dim, "hidden": list(model.head.hidden),
                 "residual": residual, "beta": model.beta, "centered": model.centered}
    return _write_model(out, base_meta, head_meta, model.out_dim, config, info, data_name,
                        max_side, y, train_mask, val_mask, names, skipped, embed_seconds)


def _train_backbone(
    out: Path, paths: list[Path], labels: NDArray[np.int64], names: list[str], data_name: str,
    *, arch: str, weights: str | os.PathLike | None, input_size: int, freeze: int,
    dim: int | None, steps_per_epoch: int | None, loss: str, margin: float | None,
    mining: str, epochs: int, patience: int | None, batch_p: int, batch_k: int,
    lr: float | None, weight_decay: float, val_split: float, max_side: int | None,
    random_state: int, progress: bool | None, n_jobs: int,
) -> dict[str, Any]:
    """``train_siamese(backbone=...)``: fine-tune a ResNet + GeM and write the model folder
    as a base (``backbone.onnx`` through the ONNX adapter) plus a head (the projection)."""
    from ..embedders.deep import ONNXEmbedder
    from .backbone import (
        IMAGENET_MEAN,
        IMAGENET_STD,
        decode_images,
        export_backbone_onnx,
        fit_backbone,
    )
    from .head import export_onnx

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
        random_state=random_state, progress=progress,
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
    return _write_model(out, base_meta, head_meta, model.out_dim, config, info, data_name,
                        max_side, y, train_mask, val_mask, names, errors, embed_seconds, extra)


def _write_model(
    out: Path, base_meta: dict[str, Any], head_meta: dict[str, Any], dim: int,
    config: dict[str, Any], info: dict[str, Any], data_name: str, max_side: int | None,
    y: NDArray[np.int64], train_mask: NDArray[np.bool_], val_mask: NDArray[np.bool_],
    names: list[str], skipped: list[str], embed_seconds: float,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``training.png`` and, last, ``siamese.json`` (the folder is complete once it
    exists); return what :func:`train_siamese` returns."""
    classes_train = sorted({names[c] for c in np.unique(y[train_mask])})
    classes_val = sorted({names[c] for c in np.unique(y[val_mask])})
    figures = []
    fig = _plot_history(info["history"], info["best_epoch"], out / "training.png")
    if fig is not None:
        figures.append(str(fig))
    scores = {k: info[k] for k in ("best_epoch", "val_mAP", "base_val_mAP", "centered_val_mAP")}
    meta = {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cvretrieval": __version__,
        "base": base_meta,
        "head": head_meta,
        **(extra or {}),
        "dim": dim,
        "max_side": max_side,
        "dataset": data_name,
        "training": config,
        "classes_train": classes_train,
        "classes_val": classes_val,
        **scores,
        "history": info["history"],
    }
    (out / "siamese.json").write_text(json.dumps(meta, indent=2, default=str))
    logger.info("wrote the model to %s (best epoch %d)", out, info["best_epoch"])
    base_spec = {k: v for k, v in base_meta.items() if k not in ("dim", "dir", "model_file")}
    return {
        "model_dir": str(out),
        "dim": dim,
        "base": base_spec,
        **(extra or {}),
        **{k: info[k] for k in ("history", "beta", "center", "train_seconds")},
        **scores,
        "n_train": int(train_mask.sum()),
        "n_val": int(val_mask.sum()),
        "classes_train": classes_train,
        "classes_val": classes_val,
        "skipped": skipped,
        "embed_seconds": round(embed_seconds, 2),
        "figures": figures,
    }
