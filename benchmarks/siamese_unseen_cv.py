"""Choosing a Siamese head for unseen classes by cross-validation over TRAINING classes only.

    python benchmarks/siamese_unseen_cv.py                  # closed-form maps and views
    python benchmarks/siamese_unseen_cv.py --proxy          # + proxy losses on the whitening

The training images are those of ``deep_vs_classical.py`` (half of the images of the 25
*seen* Caltech-101 classes of ``--random-state``); the unseen test classes are never
touched. The training classes are dealt into 5 folds, twice in two orders (seed
``--fold-seed``, not the library's); each candidate is fitted on 4/5 of the classes and
scored by class-retrieval mAP (cosine, :func:`class_retrieval_metrics`) among the images
of the other fifth; the table gives the mean over the 10 folds and its standard error.

Candidates: the base raw and centred; learned whitening (``lw_init``, Radenović et al.
2018) with its ridge; ``Sw`` from the k nearest same-class neighbours only, or from all
same-class pairs; rotations after whitening onto the between-class means or onto the
differences of the nearest non-matching pairs (Mikolajczyk & Matas, ICCV 2007); a power
map before the whitening; the base's mean over test-time views (``DeepEmbedder(views=)``);
with ``--proxy``, a linear map on the whitened vectors trained with normalised softmax
(Zhai & Wu, BMVC 2019) or Proxy-Anchor (Kim et al., CVPR 2020), scored after 0 to 400
full-batch Adam steps.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _common import OUT, SHARED, write_json
from deep_vs_classical import MOBILENET, split_caltech

from cvretrieval.datasets import load_dataset
from cvretrieval.embedders import make_embedder
from cvretrieval.embedders.base import l2_normalize
from cvretrieval.siamese.data import class_retrieval_metrics
from cvretrieval.siamese.train import dataset_labels, embed_base
from cvretrieval.siamese.whiten import lw_init

Map = Callable[[np.ndarray], np.ndarray]


def unit(X: np.ndarray) -> np.ndarray:
    return l2_normalize(np.asarray(X, np.float64))


def class_folds(y: np.ndarray, k: int = 5, repeats: int = 2, seed: int = 1234) -> list:
    rng = np.random.default_rng(seed)
    classes, out = np.unique(y), []
    for _ in range(repeats):
        order = rng.permutation(classes)
        out += [np.isin(y, order[f::k]) for f in range(k)]
    return out


def nearest_pairs(X: np.ndarray, y: np.ndarray, k: int, same: bool) -> tuple:
    """Index pairs (i, j): j among the k nearest same-class (or other-class) rows of i."""
    S = X @ X.T
    np.fill_diagonal(S, -np.inf)
    S = np.where((y[:, None] == y[None, :]) == same, S, -np.inf)
    j = np.argsort(-S, axis=1)[:, :k]
    i = np.repeat(np.arange(len(X)), j.shape[1])
    ok = np.isfinite(S[i, j.ravel()])
    return i[ok], j.ravel()[ok]


def whitening(X: np.ndarray, y: np.ndarray, *, dim: int = 512, s: float = 3.0,
              sw: str = "class", rot: str = "data", k: int = 3) -> Map:
    """Learned whitening with a choice of within-class scatter and of rotation."""
    d, mean = X.shape[1], X.mean(axis=0)
    if sw == "class":
        D = np.concatenate([X[y == c] - X[y == c].mean(axis=0) for c in np.unique(y)])
    elif sw == "knn":
        i, j = nearest_pairs(X, y, k, True)
        D = (X[i] - X[j]) / np.sqrt(2)
    else:  # all same-class pairs
        parts = []
        for c in np.unique(y):
            a, b = np.triu_indices(int((y == c).sum()), 1)
            parts.append((X[y == c][a] - X[y == c][b]) / np.sqrt(2))
        D = np.concatenate(parts)
    Sw = D.T @ D / len(D)
    e, U = np.linalg.eigh(Sw + s * np.trace(Sw) / d * np.eye(d))
    P = U / np.sqrt(np.maximum(e, 1e-12))
    Z = (X - mean) @ P
    if rot == "data":
        M = Z - Z.mean(axis=0)
    elif rot == "means":
        M = np.stack([Z[y == c].mean(axis=0) for c in np.unique(y)])
        M = M - M.mean(axis=0)
    else:  # differences of the 5 nearest non-matching pairs
        i, j = nearest_pairs(X, y, 5, False)
        M = Z[i] - Z[j]
    _, V = np.linalg.eigh(M.T @ M)
    W = P @ V[:, ::-1][:, :dim]
    return lambda A: (A - mean) @ W


def proxy_curves(Y: np.ndarray, y: np.ndarray, Yh: np.ndarray, yh: np.ndarray, *, loss: str,
                 T: float, lr: float, checkpoints: tuple) -> list:
    """Held-out mAP of ``A`` (identity at first) after each checkpoint of full-batch Adam on
    a proxy loss over the whitened training vectors ``Y``."""
    import torch

    torch.set_num_threads(1)
    torch.set_flush_denormal(True)  # Adam's second moments underflow otherwise (10x slower)
    torch.manual_seed(0)
    classes, yi = np.unique(y, return_inverse=True)
    Yt, yt = torch.tensor(Y, dtype=torch.float32), torch.tensor(yi)
    A = torch.eye(Y.shape[1], requires_grad=True)
    Yn = torch.nn.functional.normalize(Yt, dim=1)
    P = torch.stack([Yn[yt == c].mean(0) for c in range(len(classes))]).requires_grad_(True)
    opt = torch.optim.Adam([A, P], lr=lr)
    pos = torch.nn.functional.one_hot(yt, len(classes)).bool()
    out = []
    for step in range(max(checkpoints) + 1):
        if step in checkpoints:
            Z = unit(Yh @ A.detach().numpy().astype(np.float64).T)
            out.append(class_retrieval_metrics(Z, yh, Z @ Z.T)["mAP"])
        cos = torch.nn.functional.normalize(Yt @ A.T, dim=1) @ \
            torch.nn.functional.normalize(P, dim=1).T
        if loss == "normsoftmax":
            value = torch.nn.functional.cross_entropy(cos / T, yt)
        else:  # Proxy-Anchor, alpha = 1/T, delta = 0.1
            zero = torch.zeros_like(cos)
            lp = torch.where(pos, torch.exp(-(cos - 0.1) / T), zero).sum(0)
            ln = torch.where(~pos, torch.exp((cos + 0.1) / T), zero).sum(0)
            value = torch.log1p(lp).mean() + torch.log1p(ln).mean()
        opt.zero_grad()
        value.backward()
        opt.step()
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--caltech", type=Path, default=SHARED / "datasets" / "caltech101-dev")
    ap.add_argument("--mobilenet", type=Path, default=MOBILENET)
    ap.add_argument("--random-state", type=int, default=0, help="the benchmark's class split")
    ap.add_argument("--fold-seed", type=int, default=1234)
    ap.add_argument("--proxy", action="store_true", help="also train proxy-loss maps (torch)")
    ap.add_argument("--n-jobs", type=int, default=-1)
    ap.add_argument("--out", type=Path, default=OUT / "siamese_unseen_cv.json")
    args = ap.parse_args(argv)
    paths, labels, _ = dataset_labels(load_dataset(args.caltech))
    train = split_caltech(labels, args.random_state)["train"]
    paths = [p for p, t in zip(paths, train, strict=True) if t]
    y = labels[train]
    views = {}
    for v in ("full", "full,flip", "full,crop0.8", "full,flip,crop0.8,crop0.8-flip"):
        emb = make_embedder(f"tflite:{args.mobilenet}", views=v)
        _, X, rows = embed_base(emb, paths, cache_dir=OUT / "cache", n_jobs=args.n_jobs)
        if len(rows) != len(paths):
            raise SystemExit("some training images could not be embedded")
        views[v] = unit(X)
    folds = class_folds(y, seed=args.fold_seed)
    rows_out: list[dict] = []

    def run(name: str, fit: Callable[[np.ndarray, np.ndarray], Map], view: str = "full") -> None:
        X = views[view]
        scores = []
        for held in folds:
            f = fit(X[~held], y[~held])
            Z = unit(f(X[held]))
            scores.append(class_retrieval_metrics(Z, y[held], Z @ Z.T)["mAP"])
        m, se = float(np.mean(scores)), float(np.std(scores) / np.sqrt(len(scores)))
        rows_out.append({"candidate": name, "views": view, "cv_mAP": m, "se": se})
        print(f"{name:58s} {view:32s} {m:.4f} ± {se:.4f}", flush=True)

    t0 = time.perf_counter()
    for view in views:
        run("raw", lambda X, y: (lambda A: A), view)
        run("centred", lambda X, y: (lambda A: A - X.mean(axis=0)), view)
        run("learned whitening, ridge 3, 512 dims", lambda X, y: whitening(X, y), view)
    for s in (1.0, 10.0):
        run(f"learned whitening, ridge {s:g}", lambda X, y, s=s: whitening(X, y, s=s))
    for p in (0.5, 0.75):
        run(f"power {p} then learned whitening",
            lambda X, y, p=p: (lambda f: lambda A: f(unit(np.maximum(A, 0) ** p)))(
                whitening(unit(np.maximum(X, 0) ** p), y)))
    for k in (1, 3, 10):
        run(f"Sw from the {k} nearest same-class neighbours",
            lambda X, y, k=k: whitening(X, y, sw="knn", k=k))
    run("Sw from all same-class pairs", lambda X, y: whitening(X, y, sw="pairs"))
    for rot in ("means", "negatives"):
        for dim in (256, 1024):
            run(f"whitening then rotation onto {rot}, {dim} dims",
                lambda X, y, rot=rot, dim=dim: whitening(X, y, rot=rot, dim=dim))
    proxy = []
    if args.proxy:
        checkpoints = (0, 10, 25, 50, 100, 200, 400)
        X = views["full"]
        for loss in ("normsoftmax", "proxy-anchor"):
            for T in (0.05, 0.1):
                curves = []
                for held in folds:
                    W0, m = lw_init(X[~held], y[~held], 512, shrinkage=3.0)
                    curves.append(proxy_curves((X[~held] - m) @ W0.T, y[~held],
                                               (X[held] - m) @ W0.T, y[held], loss=loss, T=T,
                                               lr=1e-4, checkpoints=checkpoints))
                mean = np.mean(curves, axis=0)
                proxy.append({"loss": loss, "T": T, "lr": 1e-4,
                              "mAP_by_step": dict(zip(checkpoints, mean.tolist(), strict=True))})
                print(f"{loss} T={T} lr=1e-4: " + " ".join(
                    f"{c}:{v:.4f}" for c, v in zip(checkpoints, mean, strict=True)), flush=True)
    print(f"{time.perf_counter() - t0:.0f} s")
    write_json(args.out, {"rows": rows_out, "proxy": proxy, "random_state": args.random_state,
                          "fold_seed": args.fold_seed, "n_train": int(len(y)),
                          "n_classes": int(len(np.unique(y)))})
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
