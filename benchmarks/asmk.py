"""ASMK against BoVW on a harsh Copydays-style copy set and on ukbench-56.

Copy set (built here from ``../shared`` photos with :mod:`cvretrieval.copies` attacks at
harsh parameters): originals = the first photo of each ukbench-56 group plus caltech101-dev
photos; each original gets two attacked copies (queries), with two different ones of
crop keeping 55-75 % of the area / rotation 6-30 deg / perspective 0.15-0.25, then
photometric changes half of the time, then always a 0.45-0.65 downscale and JPEG quality
12-25; the gallery holds the originals and caltech distractors. A query's only relevant
image is its original (AP = 1 / rank). ukbench-56: every photo queries all 56,
N-S = mean hits in the top 4.

Run (about 6 minutes on 2 busy cores)::

    nice flock /tmp/cvret-heavy.lock python benchmarks/asmk.py
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OUT, SHARED, markdown_table, write_json  # noqa: E402

from cvretrieval import copies  # noqa: E402
from cvretrieval.embedders import make_embedder  # noqa: E402
from cvretrieval.io import list_images, read_image  # noqa: E402


def harsh_copy(image: np.ndarray, rng: np.random.Generator, kind: str,
               combined: bool = False, harsher: bool = False) -> np.ndarray:
    """One geometric attack (``kind``; with ``combined``, a crop first as well),
    photometric half of the time, then always a 0.45-0.65 downscale and JPEG 12-25.
    ``harsher``: combined, rotations of 10-30 degrees, photometric always."""
    combined = combined or harsher
    out = copies.attack_crop(image, rng, keep=(0.55, 0.75)) if combined else image
    if kind == "crop":
        out = copies.attack_crop(out, rng, keep=(0.55, 0.75))
    elif kind == "rotate":  # 6-30 deg (10-30 with harsher), cropped to the valid rectangle
        rot = copies.attack_rotate(out, rng, max_angle=30.0, min_angle=10.0 if harsher else None)
        out = rot if min(rot.shape[:2]) >= 16 else out
    else:
        out = copies.attack_perspective(out, rng, strength=float(rng.uniform(0.15, 0.25)))
    if harsher or rng.random() < 0.5:
        out = copies.attack_photometric(out, rng)
    f = rng.uniform(0.45, 0.65)
    h, w = out.shape[:2]
    out = cv2.resize(out, (max(8, int(w * f)), max(8, int(h * f))), interpolation=cv2.INTER_AREA)
    return copies.attack_jpeg(out, rng, quality=(12, 25))


KINDS = ("crop", "rotate", "perspective")


def copy_set_paths(n_caltech_originals: int, n_distractors: int, seed: int = 0,
                   shared: Path = SHARED):
    """``(originals, distractors)`` paths of the copy set."""
    ukb = sorted(list_images(shared / "datasets" / "ukbench-56"))[::4]
    cal = list_images(shared / "datasets" / "caltech101-dev")
    pick = np.random.default_rng(seed).permutation(len(cal))
    originals = ukb + [cal[i] for i in pick[:n_caltech_originals]]
    distractors = [cal[i] for i in pick[n_caltech_originals:n_caltech_originals + n_distractors]]
    return originals, distractors


def build_copy_set(n_caltech_originals: int, n_distractors: int, seed: int = 0,
                   combined: bool = False, harsher: bool = False, shared: Path = SHARED):
    originals, distractors = copy_set_paths(n_caltech_originals, n_distractors, seed, shared)
    rng = np.random.default_rng(seed)
    gallery = [read_image(p, max_side=640) for p in originals + distractors]
    queries, truth = [], []
    for j in range(len(originals)):
        for kind in rng.choice(KINDS, size=2, replace=False):
            queries.append(harsh_copy(gallery[j], rng, str(kind), combined, harsher))
            truth.append(j)
    return gallery, queries, np.array(truth)


def copy_map(ranked: np.ndarray, truth: np.ndarray) -> float:
    """Mean AP with one relevant image per query (1 / rank; 0 when not ranked)."""
    ap = []
    for row, t in zip(ranked, truth, strict=True):
        hit = np.flatnonzero(row == t)
        ap.append(1.0 / (hit[0] + 1) if len(hit) else 0.0)
    return float(np.mean(ap))


def run_bovw(params: dict[str, Any], g_feats, q_feats) -> tuple[np.ndarray, float, float]:
    emb = make_embedder("bovw", **params)
    emb.fit(g_feats)
    red = [emb.reduce(f) for f in g_feats]
    emb.fit_corpus(red)
    xb = emb.encode_sparse(red)
    t = time.perf_counter()
    xq = emb.encode_sparse([emb.reduce(f) for f in q_feats])
    s = (xq @ xb.T).toarray()
    ranked = np.argsort(-s, axis=1, kind="stable")
    ms = 1000 * (time.perf_counter() - t) / len(q_feats)
    mem = (xb.data.nbytes + xb.indices.nbytes + xb.indptr.nbytes) / xb.shape[0]
    return ranked, ms, mem


_FITTED: dict[tuple, Any] = {}
#: parameters used only at query / scoring time: variants share one fitted embedder
_QUERY_PARAMS = ("multiple_assignment", "ma_ratio", "alpha", "tau")


def run_asmk(params: dict[str, Any], g_feats, q_feats) -> tuple[np.ndarray, float, float]:
    fit_key = (id(g_feats),) + tuple(sorted((k, v) for k, v in params.items()
                                            if k not in _QUERY_PARAMS))
    if fit_key not in _FITTED:
        base = {k: v for k, v in params.items() if k not in _QUERY_PARAMS}
        _FITTED[fit_key] = make_embedder("asmk", **base).fit(g_feats)
    emb = _FITTED[fit_key]
    defaults = make_embedder("asmk").get_params()
    for k in _QUERY_PARAMS:
        setattr(emb, k, params.get(k, defaults[k]))
    idx = emb.make_index()
    idx.add_with_ids([emb.reduce(f) for f in g_feats], np.arange(len(g_feats)))
    t = time.perf_counter()
    q = [emb.reduce(f, query=True) for f in q_feats]
    _, ranked = idx.search(q, len(g_feats))
    ms = 1000 * (time.perf_counter() - t) / len(q_feats)
    return ranked, ms, idx.memory_bytes() / idx.ntotal


def ns_score(ranked: np.ndarray) -> float:
    groups = np.arange(len(ranked)) // 4
    return float(np.mean([(groups[r[:4]] == groups[i]).sum() for i, r in enumerate(ranked)]))


METHODS: dict[str, tuple[Any, dict[str, Any]]] = {
    "bovw-rootsift 20k (hnsw)": (run_bovw, dict(detector="rootsift", n_words=20000,
                                                assignment="hnsw", max_descriptors=200_000)),
    "bovw-rootsift 1k": (run_bovw, dict(detector="rootsift", n_words=1000)),
    "asmk 4k MA5 (default)": (run_asmk, dict()),
    "asmk 4k MA1": (run_asmk, dict(multiple_assignment=1)),
    "asmk 4k alpha=1 (no selectivity)": (run_asmk, dict(alpha=1.0)),
    "asmk 1k MA5": (run_asmk, dict(n_words=1024)),
    "asmk 4k MA3": (run_asmk, dict(multiple_assignment=3)),
}
#: slower variants, run with --methods
EXTRA: dict[str, tuple[Any, dict[str, Any]]] = {
    "asmk 16k MA5 (hnsw)": (run_asmk, dict(n_words=16384)),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--originals", type=int, default=46, help="caltech originals (+14 ukbench)")
    ap.add_argument("--distractors", type=int, default=200)
    ap.add_argument("--n-features", type=int, default=1000)
    ap.add_argument("--methods", nargs="*", default=list(METHODS),
                    help=f"among: {', '.join([*METHODS, *EXTRA])}")
    ap.add_argument("--skip-ukbench", action="store_true")
    ap.add_argument("--combined", action="store_true",
                    help="crop every copy before its other geometric attack (harsher)")
    ap.add_argument("--shared", type=Path, default=SHARED,
                    help="folder holding datasets/ukbench-56 and datasets/caltech101-dev")
    ap.add_argument("--harsher", action="store_true",
                    help="--combined, rotations of 10-30 degrees, photometric change always")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    ext = make_embedder("asmk", n_features=args.n_features)  # RootSIFT extraction for all
    gallery, queries, truth = build_copy_set(args.originals, args.distractors,
                                             combined=args.combined, harsher=args.harsher,
                                             shared=args.shared)
    g_feats = [ext.extract(im) for im in gallery]
    q_feats = [ext.extract(im) for im in queries]
    ukb = [read_image(p, max_side=640) for p in sorted(list_images(args.shared / "datasets"
                                                                   / "ukbench-56"))]
    u_feats = [] if args.skip_ukbench else [ext.extract(im) for im in ukb]
    rows = []
    for name in args.methods:
        run, params = {**METHODS, **EXTRA}[name]
        params = {"n_features": args.n_features, **params}
        t0 = time.perf_counter()
        ranked, ms, mem = run(params, g_feats, q_feats)
        row = {"method": name, "copies mAP": round(copy_map(ranked, truth), 3),
               "query ms": round(ms, 1), "bytes/image": int(mem)}
        if u_feats:
            ranked_u, _, _ = run(params, u_feats, u_feats)
            row["ukbench N-S"] = round(ns_score(ranked_u), 2)
        row["total s"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        print(row, flush=True)  # noqa: T201 - a script
    cols = ["method", "copies mAP", "ukbench N-S", "query ms", "bytes/image", "total s"]
    print(markdown_table(rows, [c for c in cols if c in rows[0]]))  # noqa: T201
    name = ("asmk-harsher.json" if args.harsher else "asmk-combined.json" if args.combined
            else "asmk.json")
    write_json(OUT / name, {"rows": rows, "queries": len(queries), "gallery": len(gallery),
                            "args": vars(args)})


if __name__ == "__main__":
    main()
