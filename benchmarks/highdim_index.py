"""High-dimensional vectors under a memory budget: IVF-SQ8 against IVF-PQ with an exact re-rank.

What ``--index auto --max-memory 2G`` chose for 100k HOG vectors of 8,100 dimensions
(IVF-SQ8, 430 ms a query) against what it chooses now (IVF-PQ whose top candidates are
re-scored by their exact vectors), on the vectors of a bundle ``scale.py`` built:

    python benchmarks/scale.py --n 100000 --pipelines hog --no-raw-gray
    python benchmarks/highdim_index.py --bundle /tmp/cvret-scale/work/hog-100000.cvret
    python benchmarks/highdim_index.py --also IVF212,PQ100np     # and 8-bit codes

The base is the bundle's first segment; the queries are rows of its other segments (the
1,000 images ``scale.py`` added and removed: other photos), or, without any, the last
``--queries`` rows of the base, left out of it. Each index is trained on a sample as a
bundle draws it (:func:`cvretrieval.bundle.build.train_sample`: 256 MB of vectors), with
``auto``'s ``nprobe``. For each re-rank depth (0: the codes alone): recall@10 against
the exact top 10 (:func:`cvretrieval.bundle.build.exact_knn` over the base), median
latency of one query (Faiss on one thread, the exact vectors read by ``Bundle.rows`` as a
bundle's search reads them, as warm as the page cache leaves them), training and adding
seconds (Faiss on every core).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from _common import OUT, machine, markdown_table, write_json


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path,
                    default=Path("/tmp/cvret-scale/work/hog-100000.cvret"))
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--refine", type=int, nargs="+", default=[0, 100, 256])
    ap.add_argument("--also", nargs="*", default=[], metavar="FACTORY",
                    help="More factory strings to measure, e.g. IVF212,PQ100np.")
    ap.add_argument("--random-state", type=int, default=0)
    ap.add_argument("--out", type=Path, default=OUT / "highdim_index.json")
    args = ap.parse_args(argv)

    import faiss

    from cvretrieval.bundle.build import (
        TRAIN_SAMPLE,
        exact_knn,
        iter_live_blocks,
        train_rows,
        train_sample,
    )
    from cvretrieval.index import Index, choose_index, scan_bytes
    from cvretrieval.retriever import Retriever

    bundle = Retriever.load(args.bundle).bundle_
    base, others = bundle.segments[0], [s for s in bundle.segments[1:] if s.n]
    if others:  # other photos: the rows of the later segments
        xq, held = np.concatenate([s.take(np.arange(s.n)) for s in others])[: args.queries], []
    else:  # the base's last rows, left out of it
        held = np.asarray(base.ids[-args.queries :])
        xq = base.take(np.arange(base.n - len(held), base.n))
    held = np.asarray(held, np.int64)
    n, d = base.n - len(held), base.dim
    sample = train_sample([base], train_rows(TRAIN_SAMPLE, d), args.random_state)
    _, truth = exact_knn([base], xq, 10, "ip", held)
    budget = "2G"
    chosen = choose_index(n, d, "ip", budget, n_train=len(sample))[0]
    nlist = int(chosen.split(",")[0].removeprefix("IVF")) if chosen.startswith("IVF") else 256
    factories = list(dict.fromkeys([f"IVF{nlist},SQ8", chosen, *args.also]))
    print(f"{n} base vectors of {d} dims, {len(xq)} queries, {len(sample)} training vectors; "
          f"auto under {budget}: {chosen}")
    rows = []
    for factory in factories:
        index = Index(factory, "ip", random_state=args.random_state)
        t0 = time.perf_counter()
        index.train(sample, n_total=n)
        t_train = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _, ids, block in iter_live_blocks([base], held):
            index.add_with_ids(block, ids)
        t_add = time.perf_counter() - t0
        index.spec = "auto"  # auto's nprobe (the factory is already resolved)
        before = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        for depth in args.refine if "PQ" in factory else [0]:
            index.refine = depth
            found, times = [], []
            for i in range(len(xq)):
                t0 = time.perf_counter()
                _, I = index.search(xq[i : i + 1], 10,  # noqa: E741
                                    vectors=bundle.rows if depth else None)
                times.append(time.perf_counter() - t0)
                found.append(len(set(I[0].tolist()) & set(truth[i].tolist())) / 10)
            rows.append({"factory": factory, "refine": depth,
                         "scan_mb": round(scan_bytes(factory, n, d) / 2**20, 1),
                         "recall@10": round(float(np.mean(found)), 3),
                         "ms_p50": round(1000 * float(np.median(times)), 2),
                         "train_s": round(t_train, 1), "add_s": round(t_add, 1)})
            print(rows[-1])
        faiss.omp_set_num_threads(before)
    print(markdown_table(rows, list(rows[0])))
    write_json(args.out, {"machine": machine(), "bundle": str(args.bundle), "n": n, "d": d,
                          "queries": len(xq), "auto": chosen, "rows": rows})


if __name__ == "__main__":
    main()
