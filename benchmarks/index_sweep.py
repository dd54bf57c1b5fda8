"""Index presets on real descriptors: recall@10, latency, build time, bytes per vector.

    nice flock /tmp/cvret-heavy.lock python benchmarks/index_sweep.py --n 100000
    nice flock /tmp/cvret-heavy.lock python benchmarks/index_sweep.py --n 1000000 --presets hnsw

Vectors: RootSIFT descriptors (128-d, L1-normalised SIFT, square-rooted, so of
unit L2 norm) of ``--images`` (default ``../shared/datasets/caltech101-dev``),
read with :func:`cvretrieval.io.read_image` (long side 640, grayscale), SIFT with
up to 1000 key points per image (contrast threshold 0.01). Every 37th image is
held out: ``--queries`` descriptors drawn from those images are the queries (so
no query is in the base). The base is a random sample of ``--n`` descriptors of
the other images. Both are cached under ``benchmarks/out/index_sweep/``.

For each preset the index is trained on the base (``Index.train(xb, n_total=n)``,
which subsamples) and the base added with ids; then, for each search setting
(nprobe / efSearch swept where they exist):

- recall@10: mean fraction of the exact top 10 (``IndexFlatIP``) found in the top 10;
- latency: median milliseconds of ``Index.search`` on ONE query, over the
  queries, Faiss on one thread (``--threads`` for training and adding);
- build: seconds of train + add;
- bytes/vector: ``Index.memory_bytes() / n``.

Prints a markdown table and writes ``benchmarks/out/index_sweep_{n}.json``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import OUT, SHARED, machine, markdown_table, write_json  # noqa: E402

PRESETS = {
    "flat": ("flat", {}),
    "hnsw": ("hnsw", {"ef_search": [16, 32, 64, 128, 256]}),
    "ivf-flat": ("ivf", {"nprobe": [8, 16, 32, 64, 128, 256]}),
    "ivf-sq8": ("IVF{nlist},SQ8", {"nprobe": [16, 32, 64, 128]}),
    "ivf-pq": ("IVF{nlist},PQ32np", {"nprobe": [16, 64, 256]}),
    "opq+ivf-pq": ("OPQ32,IVF{nlist},PQ32np", {"nprobe": [16, 64, 256]}),
    # the top 256 candidates of the PQ codes re-scored by their exact vectors (here read
    # from memory; a bundle reads them from its segments), as auto's PQ choice does
    "ivf-pq+refine": ("IVF{nlist},PQ32np", {"nprobe": [16, 64, 256], "refine": 256}),
    "lsh": ("lsh", {}),
    "auto": ("auto", {}),
    # a budget of 150 bytes per vector: full vectors (520 B) do not fit, 8-bit codes do
    "auto-150B": ("auto", {"max_memory": "{budget}"}),
}

log = logging.getLogger("index_sweep")


def rootsift(desc: np.ndarray) -> np.ndarray:
    desc = desc.astype(np.float32)
    desc /= np.maximum(desc.sum(axis=1, keepdims=True), 1e-12)
    return np.sqrt(desc)


def extract(images: Path, n: int, n_queries: int, cache: Path) -> tuple[np.ndarray, np.ndarray]:
    """Base and query RootSIFT descriptors (cached as .npy)."""
    base_file, query_file = cache / f"rootsift_base_{n}.npy", cache / f"rootsift_q{n_queries}.npy"
    if base_file.is_file() and query_file.is_file():
        return np.load(base_file, mmap_mode="r"), np.load(query_file)
    import cv2

    from cvretrieval.io import list_images, read_image

    paths = list_images(images)
    held = paths[::37]
    rest = [p for i, p in enumerate(paths) if i % 37]
    rng = np.random.default_rng(0)
    rng.shuffle(rest)
    sift = cv2.SIFT_create(nfeatures=1000, contrastThreshold=0.01)

    def describe(path: Path) -> np.ndarray:
        _, d = sift.detectAndCompute(read_image(path, grayscale=True, max_side=640), None)
        return np.zeros((0, 128), np.float32) if d is None else rootsift(d)

    queries = np.concatenate([describe(p) for p in held])
    queries = queries[rng.choice(len(queries), n_queries, replace=False)]
    parts, total, t0 = [], 0, time.perf_counter()
    for i, path in enumerate(rest):
        d = describe(path)
        parts.append(d)
        total += len(d)
        if i % 200 == 0:
            log.info("%d images, %d descriptors, %.0f s", i, total, time.perf_counter() - t0)
        if total >= n * 1.2:  # a random n of a few more than n, so images mix
            break
    base = np.concatenate(parts)
    if len(base) < n:
        raise SystemExit(f"only {len(base)} descriptors in {images}: lower --n")
    base = np.ascontiguousarray(base[np.sort(rng.choice(len(base), n, replace=False))])
    cache.mkdir(parents=True, exist_ok=True)
    np.save(base_file, base)
    np.save(query_file, queries)
    log.info("extracted %d base and %d query descriptors in %.0f s", n, n_queries,
             time.perf_counter() - t0)
    return base, queries


def exact_top(xb: np.ndarray, xq: np.ndarray, k: int) -> np.ndarray:
    import faiss

    flat = faiss.IndexFlatIP(xb.shape[1])
    flat.add(np.ascontiguousarray(xb, dtype=np.float32))
    return flat.search(xq, k)[1]


def recall(I: np.ndarray, truth: np.ndarray) -> float:  # noqa: E741
    return float(np.mean([len(set(a) & set(b)) / truth.shape[1] for a, b in
                          zip(I.tolist(), truth.tolist(), strict=True)]))


def latency_ms(search: Any, xq: np.ndarray, k: int) -> float:
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        times = []
        for i in range(len(xq)):
            t0 = time.perf_counter()
            search(xq[i : i + 1], k)
            times.append(time.perf_counter() - t0)
    finally:
        faiss.omp_set_num_threads(before)
    return 1000 * float(np.median(times))


def run_preset(name: str, xb: np.ndarray, xq: np.ndarray, truth: np.ndarray, k: int,
               threads: int) -> list[dict[str, Any]]:
    import faiss

    from cvretrieval.index import Index, preset_nlist

    spec, opts = PRESETS[name]
    n = len(xb)
    spec = spec.format(nlist=preset_nlist(n))
    sweeps = {key: v for key, v in opts.items() if isinstance(v, list)}
    fixed = {key: v for key, v in opts.items() if not isinstance(v, list)}
    if fixed.get("max_memory") == "{budget}":
        fixed["max_memory"] = 150 * n
    faiss.omp_set_num_threads(threads)
    t0 = time.perf_counter()
    index = Index(spec, "ip", **fixed).train(xb, n_total=n)
    t_train = time.perf_counter() - t0
    index.add_with_ids(xb, np.arange(n, dtype=np.int64))
    build = time.perf_counter() - t0
    log.info("%s: %s built in %.1f s (train %.1f s)", name, index.factory, build, t_train)
    base = {
        "preset": name,
        "factory": index.factory,
        "n": n,
        "build_s": round(build, 2),
        "train_s": round(t_train, 2),
        "bytes_per_vector": round(index.memory_bytes() / n, 1),
        "reason": index.reason_,
    }
    settings: list[dict[str, Any]] = [{}]
    for key, values in sweeps.items():
        settings = [{key: v} for v in values]
    def search(q: np.ndarray, kk: int) -> Any:
        if fixed.get("refine"):
            return index.search(q, kk, vectors=xb.__getitem__)
        return index.search(q, kk)

    rows = []
    for setting in [{}, *settings] if sweeps else [{}]:
        for key, value in setting.items():
            setattr(index, key, value)
        if not setting:  # the preset's defaults
            index.nprobe, index.ef_search = fixed.get("nprobe"), fixed.get("ef_search")
        faiss.omp_set_num_threads(threads)
        _, I = search(xq, k)  # noqa: E741
        row = {
            **base,
            "setting": ", ".join(f"{a}={b}" for a, b in setting.items()) or "default",
            "recall@10": round(recall(I, truth), 4),
            "latency_ms": round(latency_ms(search, xq, k), 3),
        }
        rows.append(row)
        log.info("%s %s: recall %.3f, %.3f ms", name, row["setting"], row["recall@10"],
                 row["latency_ms"])
    return rows


def report() -> str:
    """One markdown table per saved sweep (``--report``): every measured setting."""
    import json

    cols = ["preset", "factory", "setting", "recall@10", "latency_ms", "build_s",
            "bytes_per_vector"]
    parts = []
    for path in sorted(OUT.glob("index_sweep_*.json"), key=lambda p: int(p.stem.split("_")[-1])):
        doc = json.loads(path.read_text())
        order = {name: i for i, name in enumerate(PRESETS)}
        rows = sorted(doc["rows"], key=lambda r: order.get(r["preset"], 99))
        parts.append(f"**N = {int(path.stem.split('_')[-1]):,}** ({path.name})\n\n"
                     + markdown_table(rows, cols))
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="base vectors")
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--presets", nargs="*", default=list(PRESETS), choices=list(PRESETS))
    ap.add_argument("--images", type=Path, default=SHARED / "datasets" / "caltech101-dev")
    ap.add_argument("--threads", type=int, default=2, help="Faiss threads to train and add")
    ap.add_argument("--cache", type=Path, default=OUT / "index_sweep")
    ap.add_argument("--report", action="store_true", help="only print the saved tables")
    args = ap.parse_args(argv)
    if args.report:
        sys.stdout.write(report() + "\n")
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    k = 10
    xb, xq = extract(args.images, args.n, args.queries, args.cache)
    xb = np.ascontiguousarray(xb, dtype=np.float32)
    truth = exact_top(xb, xq, k)
    out = OUT / f"index_sweep_{args.n}.json"
    import json

    previous = json.loads(out.read_text())["rows"] if out.is_file() else []
    rows = [r for r in previous if r["preset"] in PRESETS and r["preset"] not in args.presets]
    for name in args.presets:
        rows += run_preset(name, xb, xq, truth, k, args.threads)
        write_json(out, {"machine": machine(), "latency_threads": 1,
                         "build_threads": args.threads, "k": k, "queries": len(xq), "rows": rows})
    cols = ["preset", "factory", "setting", "recall@10", "latency_ms", "build_s",
            "bytes_per_vector"]
    sys.stdout.write(markdown_table(rows, cols) + "\n")
    sys.stdout.write(f"written to {out}\n")


if __name__ == "__main__":
    main()
