"""Training data for Siamese models: the base embedder, labels, cached base embeddings,
class splits and the class-level retrieval score used for validation.

Nothing here needs PyTorch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..datasets import RetrievalDataset, load_dataset
from ..embedders import Embedder, load_embedder, make_embedder
from ..embedders.base import l2_normalize
from ..errors import CVRetrievalError, DatasetError
from ..evaluation import compute_map

logger = logging.getLogger(__name__)

#: environment variable holding the path of the model the ``mobilenet`` alias stands for
MOBILENET_ENV = "CVRET_MOBILENET"

__all__ = [
    "MOBILENET_ENV",
    "as_training_set",
    "class_retrieval_metrics",
    "dataset_labels",
    "embed_base",
    "resolve_base",
    "split_classes",
]


def resolve_base(base: str | Embedder, views: str | None = None) -> Embedder:
    """An unfitted (or already fitted) base embedder from a spec, an alias or an instance.

    ``"mobilenet"`` stands for the model file named by the environment variable
    ``CVRET_MOBILENET`` (a ``.tflite``, ``.onnx`` or TorchScript ``.pt`` file), e.g. the
    Coral MobileNet v1 embedding extractor; any other string is an embedder spec
    (``"tflite:/path/model.tflite"``, ``"hog"``, ``"bovw-sift"``, ``"vlad"``). ``views``
    (a network base's test-time views, e.g. ``"full,crop0.8"``; see
    :func:`cvretrieval.embedders.preprocess.parse_views`) is passed to the spec's embedder.
    """
    if isinstance(base, Embedder):
        if views is not None:
            raise ValueError("views applies to a base given as a spec, not as an instance")
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
    return make_embedder(spec, views=views)


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

    The images go through the streaming pipeline
    (:func:`cvretrieval.pipeline.embed_paths`: parallel extraction, the embedder fitted on a
    sample, unreadable images skipped). With ``cache_dir``, the vectors (``base-KEY.npy``),
    the rows that could be read (``base-KEY-rows.npy``) and the fitted embedder
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
    from ..pipeline import embed_paths

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
    X, rows, errors = embed_paths(embedder, image_paths, max_side=max_side, n_jobs=n_jobs,
                                  random_state=random_state, progress=progress)
    for position, error in errors[:20]:
        logger.warning("skipped %s: %s", image_paths[position], error)
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        if ed.exists():
            shutil.rmtree(ed)
        embedder.save(ed)
        np.save(rf, rows)
        np.save(xf, X)
    return embedder, X, rows


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


def as_training_set(
    data: RetrievalDataset | str | os.PathLike | tuple[Sequence[Any], Sequence[Any]],
) -> tuple[list[Path], NDArray[np.int64], list[str], str]:
    """``(paths, labels, class names, data set name)`` of a data set, a path to one, or a
    ``(paths, labels)`` pair."""
    if isinstance(data, tuple):
        paths, labels = data
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} image paths but {len(labels)} labels")
        names, lab = np.unique(np.asarray([str(v) for v in labels]), return_inverse=True)
        return [Path(p) for p in paths], lab.astype(np.int64), [str(n) for n in names], "images"
    if not isinstance(data, RetrievalDataset):
        data = load_dataset(data)
    return (*dataset_labels(data), data.name)
