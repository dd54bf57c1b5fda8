r"""Compare embedders on one data set: quality (mAP, P@k, N-S) and time, one markdown table.

    python benchmarks/compare_features.py ../shared/datasets/ukbench-56
    python benchmarks/compare_features.py ../shared/datasets/caltech101-dev \
        --features hog,bovw-orb,bovw-sift
    python benchmarks/compare_features.py ../shared/datasets/ukbench-56 --seeds 0,1,2,3,4

With several ``--seeds`` every fitted model (vocabulary sample, k-means) is rebuilt per
seed and the table shows the mean over seeds, with the min-max of mAP and N-S beside it:
a vocabulary learned from 56 images varies from seed to seed, and one seed is one draw.
Local features are extracted once and shared between seeds and embedders.

DATASET is anything `cvret eval` reads (class folders, a ground-truth JSON, a UKBench folder).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

from _common import OUT, machine, markdown_table, write_json

from cvretrieval.datasets import load_dataset
from cvretrieval.embedders import make_embedder
from cvretrieval.evaluation import evaluate
from cvretrieval.retriever import Retriever

COLUMNS = ["features", "mAP", "mAP@10", "P@1", "P@10", "R@10", "ns_score", "mean_rank",
           "build_s", "query_ms"]


def run_one(spec: str, data, *, index: str, n_words: int, n_jobs: int, random_state: int,
            cache: Path | None = None) -> dict:
    fitted = spec.startswith(("bovw", "vlad"))
    params = {"n_words": n_words, "random_state": random_state} if fitted else {}
    t0 = time.perf_counter()
    ret = Retriever(make_embedder(spec, **params), index=index, n_jobs=n_jobs,
                    random_state=random_state, feature_cache=cache).build(data.image_paths(),
                                                                          progress=False)
    ret.feature_cache = None
    build_s = time.perf_counter() - t0
    report = evaluate(ret, data, progress=False)
    # query time through the whole pipeline (decode, extract, encode, search) on up to 50
    # queries, one at a time, without the vectors cached when the gallery was embedded
    ret._vectors = {}
    sample = data.query_paths()[:50]
    t1 = time.perf_counter()
    for q in sample:
        ret.search_many([q], k=10, progress=False)
    query_s = (time.perf_counter() - t1) / max(1, len(sample))
    m = report["metrics"]
    row = {"features": spec, **{k: m[k] for k in COLUMNS if k in m}}
    row["build_s"] = round(build_s, 1)
    row["query_ms"] = round(1000 * query_s, 1)
    row["skipped"] = ret.last_run_.get("skipped", 0)
    return row


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--features", default="hog,bovw-orb,bovw-sift")
    ap.add_argument("--index", default="flat")
    ap.add_argument("--words", type=int, default=1000)
    ap.add_argument("--n-jobs", type=int, default=-1)
    ap.add_argument("--random-state", type=int, default=0)
    ap.add_argument("--seeds", default=None, help="comma-separated seeds; the table shows means")
    ap.add_argument("--out", type=Path, default=None,
                    help="JSON output (default benchmarks/out/compare_<name>.json)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    data = load_dataset(args.dataset)
    name = data.name or args.dataset.stem
    seeds = [int(v) for v in args.seeds.split(",")] if args.seeds else [args.random_state]
    rows = []
    with tempfile.TemporaryDirectory(prefix="cvret-compare-") as cache:
        for spec in [s.strip() for s in args.features.split(",") if s.strip()]:
            runs = [run_one(spec, data, index=args.index, n_words=args.words, n_jobs=args.n_jobs,
                            random_state=seed, cache=Path(cache)) for seed in seeds]
            row = {k: (statistics.fmean(r[k] for r in runs) if isinstance(runs[0][k], float)
                       else runs[0][k]) for k in runs[0]}
            if len(runs) > 1:
                for key in ("mAP", "ns_score"):
                    lo, hi = min(r[key] for r in runs), max(r[key] for r in runs)
                    row[f"{key} range"] = f"{lo:.3f}-{hi:.3f}"
                row["per_seed"] = runs
            rows.append(row)
            print(f"  {spec}: mAP {row['mAP']:.3f}", flush=True)
    columns = COLUMNS + (["mAP range", "ns_score range"] if len(seeds) > 1 else [])
    table = markdown_table(rows, columns)
    print(f"\n{name}: {len(data.qimlist)} queries, {len(data.imlist)} images, index {args.index}, "
          f"{args.words} words, seeds {seeds}\n")
    print(table)
    out = args.out or OUT / f"compare_{name}.json"
    write_json(out, {"dataset": str(args.dataset), "summary": data.summary(), "index": args.index,
                     "words": args.words, "seeds": seeds, "rows": rows, "table": table,
                     "machine": machine()})
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()
