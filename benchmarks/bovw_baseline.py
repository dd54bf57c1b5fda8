"""Issue 15.3: does ``bovw-*`` score at least as well as a straightforward BoVW?

The straightforward baseline is what anyone would write with Faiss in twenty lines:
RootSIFT (1000 key points), ``faiss.Kmeans(d, 1000, niter=20)`` on 200k randomly sampled
descriptors, hard assignment, TF-IDF with ``ln(N / df)``, L2 normalisation, cosine ranking.
It is compared with the library's ``bovw`` embedder under several settings (detector,
k-means iterations, descriptor sample) on the same key points, on three sets:

* ukbench-56 (mAP and N-S; every photo queries all 56),
* a caltech101-dev subset (``--classes`` classes x ``--per-class`` photos; mAP, each photo
  queries the others, relevant = same class),
* the harsh copy set of ``benchmarks/asmk.py`` (mAP = mean 1/rank of the original).

Run (about 5 minutes on 2 busy cores)::

    nice flock /tmp/cvret-heavy.lock python benchmarks/bovw_baseline.py
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OUT, SHARED, markdown_table, write_json  # noqa: E402
from asmk import build_copy_set, copy_map  # noqa: E402

from cvretrieval.embedders import make_embedder  # noqa: E402
from cvretrieval.features import bovw  # noqa: E402
from cvretrieval.features.local import LocalFeatureExtractor, rootsift  # noqa: E402
from cvretrieval.features.vocabulary import sample_descriptors  # noqa: E402
from cvretrieval.io import list_images, read_image  # noqa: E402


def baseline_vectors(g_sift, q_sift, n_words: int, seed: int):
    """The straightforward RootSIFT + Faiss k-means (20 iterations, 200k) BoVW."""
    g = [rootsift(f.descriptors) for f in g_sift]
    q = [rootsift(f.descriptors) for f in q_sift]
    x = sample_descriptors(g, 200_000, seed)
    km = faiss.Kmeans(x.shape[1], n_words, niter=20, seed=seed)
    km.train(np.ascontiguousarray(x, np.float32))

    def words(d):
        return km.index.search(d, 1)[1][:, 0] if len(d) else np.zeros(0, np.int64)

    tf_g = bovw.term_frequencies([words(d) for d in g], n_words)
    idf = bovw.idf_weights(bovw.document_frequencies(tf_g), tf_g.shape[0], smooth=False)
    tf_q = bovw.term_frequencies([words(d) for d in q], n_words)
    return bovw.tfidf(tf_q, idf), bovw.tfidf(tf_g, idf)


def library_vectors(params: dict[str, Any], g_feats, q_feats):
    emb = make_embedder("bovw", **params)
    emb.fit(g_feats)
    red = [emb.reduce(f) for f in g_feats]
    emb.fit_corpus(red)
    return emb.encode_sparse([emb.reduce(f) for f in q_feats]), emb.encode_sparse(red)


def ranked_by(xq, xb, exclude_self: bool) -> np.ndarray:
    s = (xq @ xb.T).toarray()
    if exclude_self:
        np.fill_diagonal(s, -np.inf)
    return np.argsort(-s, axis=1, kind="stable")


def class_map(ranked: np.ndarray, labels: np.ndarray) -> float:
    aps = []
    for i, row in enumerate(ranked):
        row = row[row != i]
        rel = labels[row] == labels[i]
        if not rel.any():
            continue
        hits = np.cumsum(rel)
        aps.append(float((hits[rel] / (np.flatnonzero(rel) + 1)).mean()))
    return float(np.mean(aps))


def ns_score(ranked: np.ndarray) -> float:
    groups = np.arange(len(ranked)) // 4
    return float(np.mean([(groups[r[:4]] == groups[i]).sum() for i, r in enumerate(ranked)]))


SETTINGS: dict[str, dict[str, Any]] = {
    "bovw-sift (old defaults: 6 it, 100k)": dict(detector="sift", niter=6,
                                                 max_descriptors=100_000),
    "bovw-rootsift (6 it, 100k)": dict(detector="rootsift", niter=6, max_descriptors=100_000),
    "bovw-rootsift 20 it, 100k": dict(detector="rootsift", niter=20, max_descriptors=100_000),
    "bovw-rootsift 6 it, 200k": dict(detector="rootsift", niter=6, max_descriptors=200_000),
    "bovw (new defaults: rootsift, 20 it, 200k)": dict(detector="rootsift"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--per-class", type=int, default=20)
    ap.add_argument("--n-words", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    sift = LocalFeatureExtractor("sift", 1000)
    ukb = [read_image(p, max_side=640)
           for p in sorted(list_images(SHARED / "datasets" / "ukbench-56"))]
    root = SHARED / "datasets" / "caltech101-dev"
    classes = sorted(p for p in root.iterdir() if p.is_dir())
    rng = np.random.default_rng(args.seed)
    picked = rng.choice(len(classes), size=args.classes, replace=False)
    cal_paths, cal_labels = [], []
    for c in picked:
        files = sorted(list_images(classes[c]))[: args.per_class]
        cal_paths += files
        cal_labels += [int(c)] * len(files)
    cal = [read_image(p, max_side=640) for p in cal_paths]
    gallery, queries, truth = build_copy_set(46, 200)
    sets = {"ukbench": (ukb, ukb), "caltech": (cal, cal), "copies": (gallery, queries)}
    feats = {name: ([sift(im) for im in g], None if q is g else [sift(im) for im in q])
             for name, (g, q) in sets.items()}

    def as_root(fs):
        from cvretrieval.features.local import LocalFeatures

        return [LocalFeatures(f.keypoints, rootsift(f.descriptors), f.scales, f.angles,
                              f.image_shape) for f in fs]

    def score(name: str, xq, xb) -> dict[str, float]:
        if name == "ukbench":
            r = ranked_by(xq, xb, False)
            return {"ukbench N-S": round(ns_score(r), 2)}
        if name == "caltech":
            return {"caltech mAP": round(class_map(ranked_by(xq, xb, True),
                                                   np.array(cal_labels)), 3)}
        return {"copies mAP": round(copy_map(ranked_by(xq, xb, False), truth), 3)}

    rows = []
    row: dict[str, Any] = {"method": "straightforward: RootSIFT, faiss k-means 20 it, 200k"}
    t0 = time.perf_counter()
    for name, (g, q) in feats.items():
        row.update(score(name, *baseline_vectors(g, q if q is not None else g,
                                                 args.n_words, args.seed)))
    row["s"] = round(time.perf_counter() - t0, 1)
    rows.append(row)
    print(row, flush=True)  # noqa: T201 - a script
    for label, params in SETTINGS.items():
        row = {"method": label}
        t0 = time.perf_counter()
        for name, (g, q) in feats.items():
            q = q if q is not None else g
            if params["detector"] == "rootsift":
                g, q = as_root(g), (as_root(q) if q is not g else None)
                q = q if q is not None else g
            p = {"n_words": args.n_words, "random_state": args.seed, **params}
            row.update(score(name, *library_vectors(p, g, q)))
        row["s"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        print(row, flush=True)  # noqa: T201
    cols = ["method", "ukbench N-S", "caltech mAP", "copies mAP", "s"]
    print(markdown_table(rows, cols))  # noqa: T201
    write_json(OUT / "bovw_baseline.json", {"rows": rows, "args": vars(args)})


if __name__ == "__main__":
    main()
