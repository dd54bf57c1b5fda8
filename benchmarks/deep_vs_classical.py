"""Classical features vs MobileNet vs Siamese heads, on UKBench and on Caltech-101 split by class.

    python benchmarks/deep_vs_classical.py
    python benchmarks/deep_vs_classical.py --features hog,mobilenet --siamese mobilenet-triplet
    python benchmarks/deep_vs_classical.py --features mobilenet \
        --siamese mobilenet-triplet,mobilenet-lw,mobilenet-lw-closed --no-speed

Protocol. Caltech-101 (``../shared/datasets/caltech101-dev``) is split by class with
``--random-state``: half of the classes are *seen*, the other half *unseen*. Siamese heads
train (``train_siamese``, which itself holds out 20% of its classes to pick the epoch and
the mixing weight) on half of the images of every seen class. Every configuration is then
scored, with the evaluation harness (class-folder protocol: every image is a query, the
other images of its class are relevant), on

* ``seen``: the other half of the images of the seen classes (new images, known classes),
* ``unseen``: every image of the unseen classes (classes never seen in training),
* ``ukbench``: the 56 UKBench images (groups of 4), with heads trained on Caltech.

Base embeddings are computed once per (features, image list) and cached under
``benchmarks/out/cache``; vocabularies (BoVW, VLAD) are fitted on each data set's own
images. ``ms/img`` is the time to decode and embed one image, one at a time, in this
process (median of 20 Caltech images). ``train s`` is the whole ``train_siamese`` call on
cached base embeddings. Finally one head is trained on all Caltech embeddings (about
3,700) to time training at that size.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import OUT, SHARED, machine, markdown_table, write_json

from cvretrieval.datasets import load_dataset
from cvretrieval.embedders import make_embedder
from cvretrieval.embedders.base import l2_normalize
from cvretrieval.embedders.siamese import SiameseEmbedder
from cvretrieval.evaluation import compute_metrics
from cvretrieval.io import read_image
from cvretrieval.siamese.train import dataset_labels, embed_base, fit_head, train_siamese

MOBILENET = (SHARED / "models" / "coral-mobilenet"
             / "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite")
NAMES = {"hog": "HOG", "bovw-orb": "BoVW-ORB", "bovw-sift": "BoVW-SIFT", "vlad": "VLAD-RootSIFT",
         "mobilenet": "MobileNet", "mobilenet-views": "MobileNet, 2 views (full + crop 0.8)"}
#: test-time views of a network base (``DeepEmbedder(views=...)``), by feature name
VIEWS = {"mobilenet-views": "full,crop0.8"}
#: Siamese configurations: name -> (base, train_siamese keyword arguments)
SIAMESE = {
    "mobilenet-triplet": ("mobilenet", {"loss": "triplet"}),
    "mobilenet-contrastive": ("mobilenet", {"loss": "contrastive"}),
    "hog-triplet": ("hog", {"loss": "triplet"}),
    "mobilenet-plain": ("mobilenet", {"loss": "triplet", "residual": False, "mix": 1.0}),
    "mobilenet-lw": ("mobilenet", {"loss": "triplet", "init": "lw", "head": (1024, 512)}),
    # the recipe for unseen classes: learned whitening alone (closed form, no epochs),
    # its ridge cross-validated over held-out training classes, fitted on every class
    "mobilenet-lw-closed": ("mobilenet", {"init": "lw", "shrinkage": "auto", "head": (512,),
                                          "epochs": 0, "val_split": 0}),
    # the same closed form over the base's mean of two views (the image, its central 80%)
    "mobilenet-views-lw-closed": ("mobilenet-views", {"init": "lw", "shrinkage": "auto",
                                                      "head": (512,), "epochs": 0,
                                                      "val_split": 0}),
}
SIAMESE_NAMES = {
    "mobilenet-triplet": "MobileNet+Siamese (triplet)",
    "mobilenet-contrastive": "MobileNet+Siamese (contrastive)",
    "hog-triplet": "HOG+Siamese (triplet)",
    "mobilenet-plain": "MobileNet+plain MLP (triplet, reference)",
    "mobilenet-lw": "MobileNet+Siamese (triplet, learned-whitening init)",
    "mobilenet-lw-closed": "MobileNet+Siamese (learned whitening, closed form)",
    "mobilenet-views-lw-closed": "MobileNet 2 views+Siamese (learned whitening, closed form)",
}
COLUMNS = ["features", "dim", "ukb mAP", "ukb N-S", "seen mAP", "seen P@10", "unseen mAP",
           "unseen P@10", "ms/img", "train s"]


def spec_of(name: str, args: argparse.Namespace) -> str:
    return f"tflite:{args.mobilenet}" if name.startswith("mobilenet") else name


def base_embedder(name: str, args: argparse.Namespace) -> Any:
    return make_embedder(spec_of(name, args), views=VIEWS.get(name))


def score(X: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Harness metrics of class retrieval among the rows of X (self left out; N-S counts it)."""
    Xn = l2_normalize(X)
    order = np.argsort(-(Xn @ Xn.T), axis=1, kind="stable")
    members = {c: np.flatnonzero(labels == c) for c in np.unique(labels)}
    gnd = [{"ok": members[c].tolist(), "junk": []} for c in labels]
    m, _ = compute_metrics(list(order), gnd, list(range(len(labels))), ks=(10,))
    return {"mAP": m["mAP"], "P@10": m["P@10"], "N-S": m["ns_score"]}


def split_caltech(labels: np.ndarray, random_state: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(random_state)
    classes = np.unique(labels)
    seen = np.sort(rng.permutation(classes)[: len(classes) // 2])
    train = np.zeros(len(labels), bool)
    for c in seen:
        idx = rng.permutation(np.flatnonzero(labels == c))
        train[idx[: len(idx) // 2]] = True
    is_seen = np.isin(labels, seen)
    return {"train": train, "seen": is_seen & ~train, "unseen": ~is_seen}


def embed_ms(embedder: Any, paths: list[Path]) -> float:
    """Median milliseconds to decode and embed one image, one at a time."""
    embedder.embed([read_image(paths[0])])  # warm-up (sessions, interpreters)
    times = []
    for p in paths:
        t0 = time.perf_counter()
        embedder.embed([read_image(p)])
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--features", default="hog,bovw-orb,bovw-sift,vlad,mobilenet")
    ap.add_argument("--siamese", default=",".join(SIAMESE))
    ap.add_argument("--mobilenet", type=Path, default=MOBILENET, help="MobileNet .tflite file")
    ap.add_argument("--ukbench", type=Path, default=SHARED / "datasets" / "ukbench-56")
    ap.add_argument("--caltech", type=Path, default=SHARED / "datasets" / "caltech101-dev")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--n-jobs", type=int, default=-1)
    ap.add_argument("--random-state", type=int, default=0)
    ap.add_argument("--no-speed", action="store_true",
                    help="skip timing the training on all (about 3,700) Caltech embeddings")
    ap.add_argument("--out", type=Path, default=OUT / "deep_vs_classical.json")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    cache = OUT / "cache"
    ukb, cal = load_dataset(args.ukbench), load_dataset(args.caltech)
    ukb_paths, ukb_labels, _ = dataset_labels(ukb)
    cal_paths, cal_labels, cal_names = dataset_labels(cal)
    split = split_caltech(cal_labels, args.random_state)
    timing_paths = [cal_paths[i] for i in np.linspace(0, len(cal_paths) - 1, 20).astype(int)]
    features = [f.strip() for f in args.features.split(",") if f.strip()]
    siamese = [s.strip() for s in args.siamese.split(",") if s.strip()]
    needed = list(dict.fromkeys(features + [SIAMESE[s][0] for s in siamese]))

    base: dict[str, dict[str, Any]] = {}
    for name in needed:
        t0 = time.perf_counter()
        emb_u, X_u, rows_u = embed_base(base_embedder(name, args), ukb_paths, cache_dir=cache,
                                        n_jobs=args.n_jobs, progress=True)
        emb_c, X_c, rows_c = embed_base(base_embedder(name, args), cal_paths, cache_dir=cache,
                                        n_jobs=args.n_jobs, progress=True)
        if len(rows_u) != len(ukb_paths) or len(rows_c) != len(cal_paths):
            raise SystemExit(f"{name}: some images could not be embedded")
        base[name] = {"X_u": X_u, "X_c": X_c, "emb_c": emb_c}
        print(f"  {name}: embeddings ready ({time.perf_counter() - t0:.0f} s)", flush=True)

    rows: list[dict[str, Any]] = []

    def add_row(label: str, X_u: np.ndarray, X_c: np.ndarray, ms: float, dim: int,
                train_s: float | None, extra: dict[str, Any] | None = None) -> None:
        u = score(X_u, ukb_labels)
        s = score(X_c[split["seen"]], cal_labels[split["seen"]])
        n = score(X_c[split["unseen"]], cal_labels[split["unseen"]])
        row = {"features": label, "dim": dim, "ukb mAP": u["mAP"], "ukb N-S": u["N-S"],
               "seen mAP": s["mAP"], "seen P@10": s["P@10"], "unseen mAP": n["mAP"],
               "unseen P@10": n["P@10"], "ms/img": round(ms, 1),
               "train s": None if train_s is None else round(train_s, 1), **(extra or {})}
        rows.append(row)
        print(f"  {label}: seen {s['mAP']:.3f} unseen {n['mAP']:.3f} ukbench {u['mAP']:.3f}",
              flush=True)

    for name in features:
        b = base[name]
        add_row(NAMES.get(name, name), b["X_u"], b["X_c"], embed_ms(b["emb_c"], timing_paths),
                b["X_c"].shape[1], None)

    # reference: the base centred on the mean of the Siamese training images (no training);
    # the head's output includes this centred base when validation prefers it
    for name in dict.fromkeys(SIAMESE[c][0] for c in siamese):
        b = base[name]
        mean = l2_normalize(b["X_c"])[split["train"]].mean(axis=0)
        add_row(f"{NAMES.get(name, name)}, centred (reference)", l2_normalize(b["X_u"]) - mean,
                l2_normalize(b["X_c"]) - mean, float("nan"), b["X_c"].shape[1], None)

    train_idx = np.flatnonzero(split["train"])
    train_set = ([cal_paths[i] for i in train_idx], [cal_names[cal_labels[i]] for i in train_idx])
    for cfg in siamese:
        base_name, kwargs = SIAMESE[cfg]
        if base_embedder(base_name, args).needs_fit:
            raise SystemExit(f"{cfg}: this benchmark reuses cached base vectors, so the base "
                             "must need no fitting")
        t0 = time.perf_counter()
        result = train_siamese(train_set, base=spec_of(base_name, args),
                               base_views=VIEWS.get(base_name),
                               out_dir=OUT / "siamese" / cfg, cache_dir=cache, n_jobs=args.n_jobs,
                               random_state=args.random_state, progress=True,
                               **{"epochs": args.epochs, **kwargs})
        train_s = time.perf_counter() - t0
        emb = SiameseEmbedder(result["model_dir"])
        b = base[base_name]
        X_u, X_c = emb.apply_head(b["X_u"]), emb.apply_head(b["X_c"])
        # the head on cached base vectors is what the embedder computes from the images
        check = emb.embed([read_image(p) for p in timing_paths[:3]])
        rows_check = [cal_paths.index(p) for p in timing_paths[:3]]
        if not np.allclose(check, X_c[rows_check], atol=1e-4):
            raise SystemExit(f"{cfg}: the embedder disagrees with the head on cached vectors")
        add_row(SIAMESE_NAMES[cfg], X_u, X_c, embed_ms(emb, timing_paths), emb.dim, train_s,
                {"best_epoch": result["best_epoch"], "beta": result["beta"],
                 "center": result["center"], "centered_val_mAP": result["centered_val_mAP"],
                 "val_mAP": result["val_mAP"], "base_val_mAP": result["base_val_mAP"],
                 "shrinkage": result["shrinkage"],
                 "epochs_run": len(result["history"]) - 1, "train_only_s": result["train_seconds"]})

    speed = None
    if not args.no_speed and "mobilenet" in base:
        X = base["mobilenet"]["X_c"]
        from cvretrieval.siamese.train import split_classes

        tr, va = split_classes(cal_labels, 0.2, args.random_state)
        t0 = time.perf_counter()
        _, info = fit_head(X[tr], cal_labels[tr], X_val=X[va], y_val=cal_labels[va],
                           epochs=args.epochs, patience=None, progress=True)
        speed = {"n_embeddings": len(X), "n_train": int(tr.sum()), "n_val": int(va.sum()),
                 "epochs": args.epochs, "seconds": round(time.perf_counter() - t0, 1),
                 "val_seconds": round(sum(h["val_seconds"] for h in info["history"]), 1)}
        print(f"  training on {len(X)} MobileNet embeddings, {args.epochs} epochs: "
              f"{speed['seconds']} s ({speed['val_seconds']} s of it scoring validation)")

    def cell(key: str, value: Any) -> str:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return "-"
        if key in ("ms/img", "train s"):
            return f"{value:.1f}"
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    fmt = [{k: cell(k, v) for k, v in r.items()} for r in rows]
    table = markdown_table(fmt, COLUMNS)
    n_seen = int(split["seen"].sum())
    print(f"\nCaltech-101 dev: {len(np.unique(cal_labels[split['train']]))} seen classes "
          f"({int(split['train'].sum())} training images, {n_seen} held-out images scored), "
          f"{len(np.unique(cal_labels[split['unseen']]))} unseen classes "
          f"({int(split['unseen'].sum())} images); UKBench: {len(ukb_paths)} images\n")
    print(table)
    write_json(args.out, {"rows": rows, "table": table, "speed": speed,
                          "split": {k: int(v.sum()) for k, v in split.items()},
                          "epochs": args.epochs, "random_state": args.random_state,
                          "machine": machine()})
    print(f"\nwritten {args.out}")


if __name__ == "__main__":
    main()
