"""Copy detection end to end through a bundle (what ``cvret index`` / ``cvret search`` do).

The harsh copy set of ``benchmarks/sv_speed.py`` (same photos, seed and attacks: 50 query
photos, 4 harsh copies each, 500 distractors) is written as PNG files under ``--work``
(the decoded pixels of the JPEG-attacked copies, so nothing changes), indexed with
:class:`~cvretrieval.retriever.Retriever` exactly as::

    cvret index GALLERY -o B --features asmk-sift --rerank sv,qe --sv-matcher words+desc \\
        --sv-min-coverage 0.5 --sv-order rank --qe-k 3

and every query searched one at a time (``Retriever.search``, k = 100) with the
re-ranking steps of each row. ms/query is the whole search of one decoded query image in
one process: key points, ASMK codes, the index, verification and expansion.

Run::

    nice flock /tmp/cvret-heavy.lock python benchmarks/copydet_bundle.py
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OUT, SHARED, markdown_table, write_json  # noqa: E402
from sv_speed import make_harsh_set  # noqa: E402

from cvretrieval.evaluation import compute_map  # noqa: E402
from cvretrieval.io import list_images  # noqa: E402
from cvretrieval.retriever import Retriever  # noqa: E402

ROWS = {  # name -> (rerank steps, sv_order, sv_min_coverage)
    "ASMK alone": ("none", "rank", 0.5),
    "+ SV words+desc": ("sv", "inliers", None),
    "+ SV words+desc, coverage 0.5, rank order": ("sv", "rank", 0.5),
    "+ SV + QE words+desc, coverage 0.5, rank order": ("sv,qe", "rank", 0.5),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=Path, nargs="+",
                    default=[SHARED / "datasets" / "ukbench-56",
                             SHARED / "datasets" / "caltech101-dev"])
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--distractors", type=int, default=500)
    ap.add_argument("--features", default="asmk-sift")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--assignment", default=None, choices=("exact", "hnsw"),
                    help="ASMK word assignment (default: the embedder's, exact for 4096 words)")
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--work", type=Path, default=Path("/tmp/copydet-bundle"))
    ap.add_argument("--out", type=Path, default=OUT / "copydet_bundle.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    photos = [p for folder in args.photos for p in list_images(folder)]
    queries, gallery, gnd = make_harsh_set(photos, args.queries, args.distractors, 640, args.seed)
    folder = args.work / "gallery"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, im in enumerate(gallery):
        p = folder / f"{i:04d}.png"
        if not p.exists():
            cv2.imwrite(str(p), im[:, :, ::-1])
        paths.append(str(p.resolve()))
    del gallery
    t0 = time.perf_counter()
    from cvretrieval.embedders import make_embedder

    emb = make_embedder(args.features, **({"assignment": args.assignment} if args.assignment
                                          else {}))
    ret = Retriever(emb, n_jobs=args.n_jobs, rerank=["sv", "qe"], qe_k=3,
                    sv_matcher="words+desc", sv_min_coverage=0.5, sv_order="rank").build(
        paths, output=args.work / "bundle", progress=False)
    build_s = time.perf_counter() - t0
    pos = {p: i for i, p in enumerate(paths)}
    rows = []
    for name, (steps, order, cover) in ROWS.items():
        ret.sv_order, ret.sv_min_coverage = order, cover
        ranked = np.full((len(queries), args.k), -1, np.int64)
        t0 = time.perf_counter()
        for qi, q in enumerate(queries):
            hits = ret.search(q, k=args.k, rerank=steps)
            ranked[qi, : len(hits)] = [pos[h.path] for h in hits]
        ms = 1000 * (time.perf_counter() - t0) / len(queries)
        m, _, pr, _ = compute_map(ranked.T, gnd, kappas=[1, 5])
        rows.append({"pipeline": name, "rerank": steps, "ms/query (all)": round(ms, 1),
                     "mAP": round(float(m), 4), "P@1": round(float(pr[0]), 3),
                     "P@5": round(float(pr[1]), 3)})
        print(rows[-1], flush=True)  # noqa: T201 - a script
    cols = ["pipeline", "rerank", "ms/query (all)", "mAP", "P@1", "P@5"]
    print(markdown_table(rows, cols))  # noqa: T201
    print(f"build {build_s:.1f} s, {len(paths)} images")  # noqa: T201
    write_json(args.out, {"rows": rows, "build_s": round(build_s, 1),
                                             "args": {k: str(v) for k, v in vars(args).items()}})


if __name__ == "__main__":
    main()
