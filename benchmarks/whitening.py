"""Issue 15.4: when does PCA-whitening help, and where should it be learned?

VLAD-RootSIFT (64 words, 8192-d) vectors of three collections, ranked by cosine:
unwhitened; whitened with a whitening learned on the gallery itself (what
``--pca-whiten`` does); and learned on a separate training set of other images
(``fit_whitening_on``, what ``--whiten-on DIR`` does), with shrinkage 0.5 and 0.

* ukbench-56 (instances; N-S), training set: 300 caltech101-dev photos;
* the harsh copy set of ``benchmarks/asmk.py`` (instances; mAP = mean 1/rank),
  training set: 300 other caltech101-dev photos;
* a caltech101-dev subset, 10 classes x 20 photos (classes; mAP), training set:
  300 photos of the other classes.

Run (about 4 minutes on 2 busy cores)::

    nice flock /tmp/cvret-heavy.lock python benchmarks/whitening.py
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OUT, SHARED, markdown_table, write_json  # noqa: E402
from asmk import build_copy_set, copy_map, copy_set_paths  # noqa: E402
from bovw_baseline import class_map, ns_score  # noqa: E402

from cvretrieval.embedders import make_embedder  # noqa: E402
from cvretrieval.io import list_images, read_image  # noqa: E402
from cvretrieval.whitening import PCAWhitening  # noqa: E402


def ranked(xq: np.ndarray, xb: np.ndarray, exclude_self: bool) -> np.ndarray:
    s = xq @ xb.T
    if exclude_self:
        np.fill_diagonal(s, -np.inf)
    return np.argsort(-s, axis=1, kind="stable")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rng = np.random.default_rng(args.seed)
    root = SHARED / "datasets" / "caltech101-dev"
    classes = sorted(p for p in root.iterdir() if p.is_dir())
    picked = set(rng.choice(len(classes), size=10, replace=False).tolist())
    cal_paths, labels, others = [], [], []
    for c, folder in enumerate(classes):
        files = sorted(list_images(folder))
        if c in picked:
            cal_paths += files[:20]
            labels += [c] * len(files[:20])
        else:
            others += files
    gallery, queries, truth = build_copy_set(46, 200)
    used = {str(p) for part in copy_set_paths(46, 200) for p in part}
    pool = [p for p in others if str(p) not in used]
    order = rng.permutation(len(pool))
    train_a = [pool[i] for i in order[: args.train]]
    train_b = [pool[i] for i in order[args.train : 2 * args.train]]
    ukb = [read_image(p, max_side=640)
           for p in sorted(list_images(SHARED / "datasets" / "ukbench-56"))]
    cal = [read_image(p, max_side=640) for p in cal_paths]
    sets = {
        "ukbench N-S": (ukb, None, train_a),
        "copies mAP": (gallery, queries, train_b),
        "caltech (classes) mAP": (cal, None, train_b),
    }

    def score(name, xq, xb):
        if name.startswith("ukbench"):
            return round(ns_score(ranked(xq, xb, False)), 3)
        if name.startswith("copies"):
            return round(copy_map(ranked(xq, xb, False), truth), 3)
        return round(class_map(ranked(xq, xb, True), np.array(labels)), 3)

    rows = {k: {"whitening": k} for k in (
        "none", "gallery, shrinkage 0.5", "gallery, shrinkage 0",
        "separate set, shrinkage 0.5", "separate set, shrinkage 0")}
    for name, (g, q, train_paths) in sets.items():
        emb = make_embedder("vlad-rootsift", n_words=64, random_state=args.seed)
        g_feats = [emb.extract(im) for im in g]
        emb.fit(g_feats)
        xb = emb.encode([emb.reduce(f) for f in g_feats])
        xq = xb if q is None else emb.embed(q)
        xt = emb.embed([read_image(p, max_side=640) for p in train_paths])
        rows["none"][name] = score(name, xq, xb)
        for s in (0.5, 0.0):
            w = PCAWhitening(shrinkage=s).fit(xb)
            rows[f"gallery, shrinkage {s:g}"][name] = score(name, w.transform(xq), w.transform(xb))
            w = PCAWhitening(shrinkage=s).fit(xt)
            rows[f"separate set, shrinkage {s:g}"][name] = score(
                name, w.transform(xq), w.transform(xb))
        print(name, {k: r[name] for k, r in rows.items()}, flush=True)  # noqa: T201
    table = list(rows.values())
    print(markdown_table(table, ["whitening", *sets]))  # noqa: T201
    write_json(OUT / "whitening.json", {"rows": table, "args": vars(args)})


if __name__ == "__main__":
    main()
