"""Spatial re-ranking speed and quality, and the sparse inverted file at scale.

Usage (from the checkout; the defaults are the full run, slow on 2 cores)::

    python benchmarks/sv_speed.py
    python benchmarks/sv_speed.py --queries 8 --distractors 40 --words 2000 \\
        --sparse-images 20000 --sparse-words 20000            # a quick check
    python benchmarks/sv_speed.py --skip-sparse                # part (a) only

Part (a), spatial verification. A Copydays-style set is built with
:func:`cvretrieval.copies.make_copies` from Caltech-101 photos (``--photos``, default
``../shared/datasets/caltech101-dev``): ``--queries`` photos, 4 attacked copies each
(crop, rotation, perspective, photometric, JPEG), ``--distractors`` other photos. SIFT
key points (``--detector``) of the gallery are quantised on a ``--words`` k-means
vocabulary (assigned with an HNSW :class:`~cvretrieval.features.assign.ApproximateAssigner`),
indexed as TF-IDF in a :class:`~cvretrieval.sparse.SparseIndex`, and kept in a
:class:`~cvretrieval.featurestore.FeatureStore` (words + uint8 descriptors). Every query
retrieves its top ``--top-n`` (100), which is then re-ranked by

* ``words (default)``: the default :class:`~cvretrieval.rerank.spatial.SpatialVerifier`
  (tentative matches by shared word, a 100-iteration similarity RANSAC prefilter, then
  a MAGSAC homography with at most 500 iterations); ``words, no prefilter`` without
  the prefilter;
* ``ratio + MAGSAC``: the obvious approach, brute-force descriptor matching with Lowe's
  ratio test and a MAGSAC homography (``max_iters=2000``, no prefilter) on every
  candidate.

Reported: milliseconds of re-ranking per query (feature extraction excluded, the same
for all), mAP and P@1 over the top-``top_n`` list before/after (a copy outside the list
counts as not found, for every row alike).

Part (b), the sparse inverted file: ``--sparse-images`` synthetic L2-normalised vectors
over ``--sparse-words`` words with ``--nnz`` non-zeros each (word ids uniform, or Zipf
with ``--zipf s``), queries made from database rows (half their words kept, half
replaced by random words). Reported: build seconds, memory of the vectors + inverted
file (against a dense float32 matrix, computed, not allocated), milliseconds per query
one at a time and in a batch of ``--sparse-queries``.

Timings are wall-clock, one run, on this machine; run it when the machine is quiet.
Results: a markdown table on standard output and JSON in ``benchmarks/out/sv_speed.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from _common import OUT, SHARED, machine, markdown_table, write_json

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(HERE.parent))

from cvretrieval.copies import make_copies  # noqa: E402
from cvretrieval.evaluation import compute_map  # noqa: E402
from cvretrieval.features import bovw  # noqa: E402
from cvretrieval.features.assign import ApproximateAssigner  # noqa: E402
from cvretrieval.features.local import LocalFeatureExtractor  # noqa: E402
from cvretrieval.features.vocabulary import KMeansVocabulary, sample_descriptors  # noqa: E402
from cvretrieval.featurestore import FeatureStore, FeatureStoreWriter  # noqa: E402
from cvretrieval.io import list_images, read_image  # noqa: E402
from cvretrieval.rerank.spatial import SpatialVerifier  # noqa: E402
from cvretrieval.sparse import SparseIndex  # noqa: E402

logger = logging.getLogger("sv_speed")

SV_COLUMNS = ["rerank", "ms_per_query", "ransac_per_query", "mAP", "P@1", "P@5"]
SPARSE_COLUMNS = [
    "images",
    "words",
    "nnz_per_image",
    "build_s",
    "index_MB",
    "dense_MB",
    "ms_per_query",
    "ms_per_query_batched",
]


# --------------------------------------------------------------------------- part (a)


def _extract(paths: list[Path], detector: str, n_features: int, max_side: int, n_jobs: int):
    from joblib import Parallel, delayed

    def one(p: Path):
        import cv2

        cv2.setNumThreads(1)
        return LocalFeatureExtractor(detector, n_features).extract(read_image(p, max_side=max_side))

    return Parallel(n_jobs=n_jobs)(delayed(one)(p) for p in paths)


def _ranks_and_scores(ranked: np.ndarray, gnd: list[dict]) -> dict[str, float]:
    m, _, pr, _ = compute_map(ranked.T, gnd, kappas=[1, 5])
    return {"mAP": float(m), "P@1": float(pr[0]), "P@5": float(pr[1])}


def run_sv(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    photos = list_images(args.photos)
    if not photos:
        raise SystemExit(f"no photos under {args.photos}")
    t0 = time.perf_counter()
    gt_path = make_copies(
        photos,
        work / "copies",
        n_queries=args.queries,
        copies_per_query=4,
        n_distractors=args.distractors,
        max_side=args.max_side,
        seed=args.seed,
    )
    gt = json.loads(gt_path.read_text())
    root = gt_path.parent
    gallery = [root / p for p in gt["imlist"]]
    queries = [root / p for p in gt["qimlist"]]
    logger.warning(
        "copies: %d queries, %d gallery images (%.1f s)",
        len(queries),
        len(gallery),
        time.perf_counter() - t0,
    )

    t0 = time.perf_counter()
    g_feats = _extract(gallery, args.detector, args.n_features, args.max_side, args.n_jobs)
    q_feats = _extract(queries, args.detector, args.n_features, args.max_side, args.n_jobs)
    extract_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    sample = sample_descriptors([f.descriptors for f in g_feats], args.max_descriptors, args.seed)
    n_words = min(args.words, len(sample))
    vocab = KMeansVocabulary(n_words, niter=args.niter, random_state=args.seed).fit(sample)
    vocab_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    assigner = ApproximateAssigner(vocab.centers_, "hnsw").fit()
    g_words = [assigner.assign(f.descriptors) for f in g_feats]
    q_words = [assigner.assign(f.descriptors) for f in q_feats]
    assign_s = time.perf_counter() - t0

    tf = bovw.term_frequencies(g_words, n_words)
    idf = bovw.idf_weights(bovw.document_frequencies(tf), tf.shape[0])
    index = SparseIndex(n_words).build(bovw.tfidf(tf, idf))
    xq = bovw.tfidf(bovw.term_frequencies(q_words, n_words), idf)
    top_n = min(args.top_n, len(gallery))
    _, shortlist = index.search(xq, top_n)

    store_dir = work / "store"
    with FeatureStoreWriter(
        store_dir, words=True, max_keypoints=args.n_features, meta={"detector": args.detector}
    ) as writer:
        for f, w in zip(g_feats, g_words, strict=True):
            writer.append(f, words=w)
    store = FeatureStore.open(store_dir)

    configs = {
        "none (BoVW top-n)": None,
        "words (default)": SpatialVerifier(top_n=top_n),
        "words, no prefilter": SpatialVerifier(top_n=top_n, prefilter_iters=None),
        "ratio + MAGSAC": SpatialVerifier(
            top_n=top_n, matcher="ratio", model="homography", max_iters=2000, prefilter_iters=None
        ),
    }
    rows = []
    for name, sv in configs.items():
        ranked = shortlist.copy()
        seconds, ransac = 0.0, 0
        if sv is not None:
            for qi in range(len(queries)):
                t = time.perf_counter()
                order, _ = sv.rerank(q_feats[qi], shortlist[qi], store, query_words=q_words[qi])
                seconds += time.perf_counter() - t
                ransac += sv.stats_["ransac"]
                ranked[qi] = order
        row = {"rerank": name, **_ranks_and_scores(ranked, gt["gnd"])}
        row["ms_per_query"] = round(1000 * seconds / len(queries), 1) if sv else 0.0
        row["ransac_per_query"] = round(ransac / len(queries), 1)
        rows.append(row)
        logger.warning("%s: %s", name, row)
    return {
        "params": {
            "queries": len(queries),
            "gallery": len(gallery),
            "top_n": top_n,
            "detector": args.detector,
            "n_features": args.n_features,
            "words": n_words,
            "max_side": args.max_side,
            "seed": args.seed,
        },
        "seconds": {
            "extract": round(extract_s, 1),
            "vocabulary": round(vocab_s, 1),
            "assign": round(assign_s, 1),
        },
        "store": store.stats(),
        "rows": rows,
        "table": markdown_table(rows, SV_COLUMNS),
    }


# --------------------------------------------------------------------------- part (b)


def synthetic_bovw(n: int, n_words: int, nnz: int, zipf: float, rng: np.random.Generator):
    """``(n, n_words)`` CSR with ``nnz`` distinct-ish words per row, L2-normalised rows."""
    if zipf > 0:
        p = 1.0 / np.arange(1, n_words + 1) ** zipf
        cols = rng.choice(n_words, size=n * nnz, p=p / p.sum())
    else:
        cols = rng.integers(0, n_words, size=n * nnz)
    rows = np.repeat(np.arange(n), nnz)
    data = rng.random(n * nnz).astype(np.float32) + 0.1
    x = sp.csr_matrix((data, (rows, cols)), shape=(n, n_words), dtype=np.float32)
    x.sum_duplicates()
    return bovw.tfidf(x, np.ones(n_words, np.float32))


def run_sparse(args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(args.seed)
    n, v, nnz = args.sparse_images, args.sparse_words, args.nnz
    t0 = time.perf_counter()
    xb = synthetic_bovw(n, v, nnz, args.zipf, rng)
    gen_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    index = SparseIndex(v).build(xb)
    _ = index.inverted_
    build_s = time.perf_counter() - t0
    # queries: half the words of a database row, half random words
    nq = args.sparse_queries
    src = rng.integers(0, n, nq)
    noise = synthetic_bovw(nq, v, nnz // 2, args.zipf, rng)
    keep = xb[src].tocoo()
    half = rng.random(keep.nnz) < 0.5
    kept = sp.csr_matrix((keep.data[half], (keep.row[half], keep.col[half])), shape=(nq, v))
    xq = bovw.tfidf(kept + noise, np.ones(v, np.float32))
    k = 100
    t0 = time.perf_counter()
    for i in range(nq):
        index.search(xq[i], k)
    single_ms = 1000 * (time.perf_counter() - t0) / nq
    t0 = time.perf_counter()
    _, I = index.search(xq, k)  # noqa: E741
    batch_ms = 1000 * (time.perf_counter() - t0) / nq
    found = float(np.mean(I[:, 0] == src))
    row = {
        "images": n,
        "words": v,
        "nnz_per_image": round(xb.nnz / n, 1),
        "build_s": round(build_s, 2),
        "index_MB": round(index.nbytes / 2**20, 1),
        "dense_MB": round(n * v * 4 / 2**20, 1),
        "ms_per_query": round(single_ms, 2),
        "ms_per_query_batched": round(batch_ms, 2),
    }
    logger.warning("sparse: %s (source image ranked first for %.0f%% of queries)", row, 100 * found)
    return {
        "generate_s": round(gen_s, 1),
        "zipf": args.zipf,
        "queries": nq,
        "source_first": found,
        "rows": [row],
        "table": markdown_table([row], SPARSE_COLUMNS),
    }


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--photos", type=Path, default=SHARED / "datasets" / "caltech101-dev")
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--distractors", type=int, default=1000)
    ap.add_argument("--detector", default="sift")
    ap.add_argument("--n-features", type=int, default=1000)
    ap.add_argument("--max-side", type=int, default=640)
    ap.add_argument("--words", type=int, default=20000)
    ap.add_argument("--niter", type=int, default=10, help="k-means iterations")
    ap.add_argument("--max-descriptors", type=int, default=200_000)
    ap.add_argument("--top-n", type=int, default=100)
    ap.add_argument("--n-jobs", type=int, default=-1)
    ap.add_argument("--sparse-images", type=int, default=100_000)
    ap.add_argument("--sparse-words", type=int, default=100_000)
    ap.add_argument("--nnz", type=int, default=100, help="non-zeros per synthetic image")
    ap.add_argument(
        "--zipf", type=float, default=0.0, help="Zipf exponent of word ids (0: uniform)"
    )
    ap.add_argument("--sparse-queries", type=int, default=200)
    ap.add_argument("--skip-sv", action="store_true")
    ap.add_argument("--skip-sparse", action="store_true")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp dir)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=OUT / "sv_speed.json")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    result: dict[str, Any] = {
        "machine": machine(),
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    with tempfile.TemporaryDirectory(prefix="sv_speed-") as tmp:
        work = args.work or Path(tmp)
        if not args.skip_sv:
            result["spatial"] = run_sv(args, work)
            p = result["spatial"]["params"]
            print(
                f"\n(a) spatial re-ranking: {p['queries']} queries, {p['gallery']} gallery "
                f"images, top {p['top_n']}, {p['detector']} + {p['words']} words; store "
                f"{result['spatial']['store']['bytes_per_image'] / 1024:.1f} kB/image\n"
            )
            print(result["spatial"]["table"])
    if not args.skip_sparse:
        result["sparse"] = run_sparse(args)
        print(f"\n(b) sparse inverted file, k=100, {args.sparse_queries} queries\n")
        print(result["sparse"]["table"])
    print(f"\nwritten {write_json(args.out, result)}")


if __name__ == "__main__":
    main()
