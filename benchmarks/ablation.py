"""Ablation: what each classical step adds, in one table per data set, in one run.

    python benchmarks/ablation.py ../shared/datasets/ukbench-56
    python benchmarks/ablation.py --copies ../shared/datasets/caltech101-dev   # builds the set
    python benchmarks/ablation.py ../shared/datasets/caltech101-dev --steps bovw1k,vlad,vlad+pcaw

Steps (``--steps``, default all, in this order):

=============  ==========================================================================
bovw1k         BoVW-SIFT, 1,000 words, flat index (the plain baseline)
rootsift       BoVW-RootSIFT, 1,000 words
sparse20k      BoVW-RootSIFT, 20,000 words (HNSW assignment, square-rooted tf), sparse
               inverted file
+sv            ... + spatial verification of the top 100 (``--rerank sv``)
+sv+qe         ... + alpha query expansion with the verified images (``--rerank sv,qe``)
vlad           VLAD-RootSIFT, 64 words, flat index
vlad+pcaw      ... + PCA-whitening to ``--pca-dim`` dimensions (learned on the gallery)
vlad+pcaw+qe   ... + alpha query expansion (``--rerank qe``)
=============  ==========================================================================

``+sv`` and ``+sv+qe`` reuse the ``sparse20k`` build (same vectors, re-ranking only), and
RootSIFT key points are extracted once and shared (feature cache). Columns: mAP, P@10,
N-S (4 = every group found), query ms (the whole search per query, re-ranking included,
with the query's features extracted anew), build seconds.

``--copies PHOTOS`` builds a Copydays-style set first (``cvret datasets make-copies``:
100 queries x 4 attacked copies among 1,000 distractors, seed 0) under benchmarks/out.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import OUT, machine, markdown_table, write_json

from cvretrieval.datasets import load_dataset
from cvretrieval.embedders import make_embedder
from cvretrieval.evaluation import evaluate
from cvretrieval.retriever import Retriever

STEPS = ["bovw1k", "rootsift", "sparse20k", "+sv", "+sv+qe", "vlad", "vlad+pcaw", "vlad+pcaw+qe"]
COLUMNS = ["step", "mAP", "P@10", "ns_score", "query_ms", "build_s"]


def configs(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Each step: the embedder, the retriever options, and the build it may reuse."""
    big = {"n_words": args.big_words, "assignment": "hnsw", "power": 0.5,
           "max_descriptors": args.big_descriptors}
    return {
        "bovw1k": {"spec": "bovw-sift", "emb": {"n_words": 1000}, "ret": {}},
        "rootsift": {"spec": "bovw-rootsift", "emb": {"n_words": 1000}, "ret": {}},
        "sparse20k": {"spec": "bovw-rootsift", "emb": big,
                      "ret": {"index": "sparse", "store_features": True}},
        "+sv": {"reuse": "sparse20k", "rerank": ("sv",)},
        "+sv+qe": {"reuse": "sparse20k", "rerank": ("sv", "qe")},
        "vlad": {"spec": "vlad-rootsift", "emb": {"n_words": 64}, "ret": {}},
        "vlad+pcaw": {"spec": "vlad-rootsift", "emb": {"n_words": 64},
                      "ret": {"pca_whiten": args.pca_dim}},
        "vlad+pcaw+qe": {"reuse": "vlad+pcaw", "rerank": ("qe",)},
    }


def run_step(name: str, cfg: dict[str, Any], data: Any, built: dict[str, Retriever],
             args: argparse.Namespace, cache: Path) -> dict[str, Any]:
    build_s = None
    if "reuse" in cfg:
        if cfg["reuse"] not in built:
            raise SystemExit(f"step {name} reuses {cfg['reuse']}: run that step too")
        ret = built[cfg["reuse"]]
        ret.rerank = cfg["rerank"]
        if "sv" in ret.rerank and not ret.store_features:
            raise SystemExit(f"step {name}: the reused build keeps no key points")
        # vectors from the sparse build cannot be expanded: QE runs on the dense copy
    else:
        ret_opts = dict(cfg["ret"])
        index = ret_opts.pop("index", "flat")
        emb = make_embedder(cfg["spec"], random_state=args.seed, **cfg["emb"])
        ret = Retriever(emb, index=index, n_jobs=args.n_jobs, random_state=args.seed,
                        feature_cache=cache, **ret_opts)
        t0 = time.perf_counter()
        ret.build(data.image_paths(), progress=False)
        build_s = round(time.perf_counter() - t0, 1)
        built[name] = ret
    ret.feature_cache = None  # queries pay their own extraction
    ret._vectors = {}
    report = evaluate(ret, data, k=args.k, progress=False)
    m = report["metrics"]
    row = {"step": name, "mAP": m["mAP"], "P@10": m["P@10"], "ns_score": m["ns_score"],
           "query_ms": round(1000 * report["search_seconds"] / max(1, len(data.qimlist)), 1),
           "build_s": build_s if build_s is not None else "(reused)"}
    print(f"  {name}: mAP {m['mAP']:.4f}  P@10 {m['P@10']:.4f}  {row['query_ms']} ms/query",
          flush=True)
    return row


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", type=Path, nargs="?", help="anything `cvret eval` reads")
    ap.add_argument("--copies", type=Path, default=None,
                    help="build a Copydays-style set from these photos and use it")
    ap.add_argument("--steps", default=",".join(STEPS))
    ap.add_argument("--big-words", type=int, default=20_000)
    ap.add_argument("--big-descriptors", type=int, default=400_000,
                    help="descriptors sampled for the large vocabulary")
    ap.add_argument("--pca-dim", type=int, default=256)
    ap.add_argument("-k", type=int, default=100, help="results ranked per query")
    ap.add_argument("--n-jobs", type=int, default=-1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.copies is not None:
        from cvretrieval.copies import make_copies
        from cvretrieval.io import list_images

        target = OUT / f"copies_{args.copies.name}"
        gt = target / "gt.json"
        if not gt.exists():
            print(f"building a copy-detection set from {args.copies} in {target}", flush=True)
            make_copies(list_images(args.copies), target, n_queries=100, copies_per_query=4,
                        n_distractors=1000, seed=args.seed)
        args.dataset = gt
    if args.dataset is None:
        ap.error("give DATASET or --copies PHOTOS")
    data = load_dataset(args.dataset)
    name = f"copies-{args.copies.name}" if args.copies else (data.name or args.dataset.stem)
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        ap.error(f"unknown steps {unknown}; known: {STEPS}")
    cfgs = configs(args)
    print(f"{name}: {len(data.qimlist)} queries, {len(data.imlist)} images", flush=True)
    cache = Path(tempfile.mkdtemp(prefix="cvret-ablation-"))
    built: dict[str, Retriever] = {}
    rows = []
    try:
        for step in steps:
            rows.append(run_step(step, cfgs[step], data, built, args, cache))
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    table = markdown_table(rows, COLUMNS)
    print(f"\n{name} (k={args.k}, {args.big_words} words for the sparse steps, "
          f"PCA-w to {args.pca_dim})\n")
    print(table)
    out = args.out or OUT / f"ablation_{name}.json"
    write_json(out, {"dataset": str(args.dataset), "summary": data.summary(), "rows": rows,
                     "table": table, "args": {k: str(v) for k, v in vars(args).items()},
                     "machine": machine()})
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()
