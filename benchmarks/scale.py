"""Scale: throughput against raw OpenCV, peak memory of every process, bytes on disk, the
cost of adding and removing 1,000 images, and query latency, at N images.

The images are generated at run time from the ../shared photos (random crops, scales and
flips, 480 px JPEGs), so N can be 10k, 100k or 1M without shipping anything.

    python benchmarks/scale.py --n 10000 100000 --pipelines hog,bovw-orb,bovw-sift,vlad-sift
    python benchmarks/scale.py --big            # adds N = 1M for hog and bovw-orb, --index auto
    python benchmarks/scale.py --n 1000000 --side 64 --pipelines hog-32 --no-raw-gray
                                                # 1M small images: the pipeline's and bundle's
                                                # memory at 1M, in the disk 1M photos leave

``ratio`` is raw OpenCV's time over ours, raw OpenCV done as a notebook does it (decode in
colour, cvtColor, downscale, describe; joblib on every core); ``ratio_gray`` uses a raw
OpenCV that decodes the gray plane directly (``IMREAD_GRAYSCALE``), as cvretrieval does for
features that only look at gray. Every figure is a ratio or a measurement taken in this
run; nothing is hard-coded.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import OUT, SHARED, machine, markdown_table, write_json

from cvretrieval.pipeline import n_workers

logger = logging.getLogger("scale")
CVRET = [sys.executable, "-m", "cvretrieval.cli"]
PIPELINES = {
    "hog": ["--features", "hog"],
    "hog-32": ["--features", "hog", "--param", "size=32"],  # 324-d: 1M vectors in 1.3 GB
    "bovw-orb": ["--features", "bovw", "--detector", "orb", "--words", "1000"],
    "bovw-sift": ["--features", "bovw", "--detector", "sift", "--words", "1000"],
    "vlad-sift": ["--features", "vlad", "--detector", "sift"],
}


# ----------------------------------------------------------------------------- images
def _make_one(args: tuple[int, str, str, int, int]) -> None:
    import cv2

    i, src, out, seed, side = args
    rng = np.random.default_rng([seed, i])
    img = cv2.imread(src, cv2.IMREAD_COLOR)
    if img is None:
        return
    h, w = img.shape[:2]
    f = rng.uniform(0.6, 1.0)
    ch, cw = max(16, int(h * f)), max(16, int(w * f))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    crop = img[y : y + ch, x : x + cw]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    s = side / max(ch, cw)
    crop = cv2.resize(crop, (max(1, round(cw * s)), max(1, round(ch * s))),
                      interpolation=cv2.INTER_AREA)
    cv2.imwrite(out, crop, [cv2.IMWRITE_JPEG_QUALITY, 90])


def make_images(n: int, folder: Path, seed: int = 0, n_jobs: int = -1,
                photos_dir: Path | None = None, side: int = 480) -> list[Path]:
    """``n`` JPEGs of ``side`` pixels (long side) made from the shared photos (kept
    across runs in ``folder``)."""
    from joblib import Parallel, delayed

    from cvretrieval.io import list_images

    roots = [photos_dir] if photos_dir else [SHARED / "datasets" / "caltech101-dev",
                                             SHARED / "datasets" / "ukbench-56"]
    photos = [str(p) for r in roots if r.is_dir() for p in list_images(r)]
    if not photos:
        raise SystemExit(f"no photos under {', '.join(map(str, roots))}")
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{i // 1000:04d}" / f"{i:07d}.jpg" for i in range(n)]
    todo = [i for i, p in enumerate(paths) if not p.exists()]
    for d in {p.parent for p in paths}:
        d.mkdir(exist_ok=True)
    rnd = random.Random(seed)
    srcs = [rnd.choice(photos) for _ in range(n)]
    Parallel(n_jobs=n_jobs, batch_size=64)(
        delayed(_make_one)((i, srcs[i], str(paths[i]), seed, side)) for i in todo)
    return paths


# ----------------------------------------------------------------------------- raw OpenCV
def _raw(kind: str, paths: list[str], gray: bool = False) -> int:
    """Decode, downscale and describe, as a notebook would: colour decode + cvtColor
    (``gray``: decode the luma plane directly, as cvretrieval does for gray features)."""
    import cv2

    cv2.setNumThreads(1)
    det = (cv2.ORB_create(1000) if kind == "bovw-orb" else cv2.SIFT_create(1000)
           if kind in ("bovw-sift", "vlad-sift") else None)
    size = 32 if kind == "hog-32" else 128
    hog = cv2.HOGDescriptor((size, size), (16, 16), (8, 8), (8, 8), 9) if det is None else None
    n = 0
    for p in paths:
        img = cv2.imread(p, cv2.IMREAD_GRAYSCALE if gray else cv2.IMREAD_COLOR)
        if img is None:
            continue
        h, w = img.shape[:2]
        s = 640 / max(h, w)
        if s < 1:
            img = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
        g = img if gray else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        if det is None:
            hog.compute(cv2.resize(g, (size, size), interpolation=cv2.INTER_AREA))
        else:
            det.detectAndCompute(g, None)
        n += 1
    return n


def raw_seconds(kind: str, paths: list[Path], n_jobs: int, gray: bool = False) -> float:
    from joblib import Parallel, delayed

    chunks = [[str(p) for p in paths[i : i + 64]] for i in range(0, len(paths), 64)]
    t0 = time.perf_counter()
    Parallel(n_jobs=n_jobs)(delayed(_raw)(kind, c, gray) for c in chunks)
    return time.perf_counter() - t0


def warm_cache(paths: list[Path]) -> None:
    """Read every file once, so that the raw loop, which runs first, does not pay the
    disk reads that our run after it would then skip."""
    for p in paths:
        with open(p, "rb") as f:
            while f.read(1 << 20):
                pass


# ----------------------------------------------------------------------------- ours
def _link(link: Path, target: Path) -> None:
    """A hard link (a folder of ordinary files, as a user's), a symbolic one across
    file systems."""
    if link.exists() or link.is_symlink():
        return
    try:
        os.link(target, link)
    except OSError:
        link.symlink_to(target.resolve())


def run_measured(cmd: list[str]) -> dict[str, Any]:
    """Run ``cmd``; wall time and the peak RSS of the main process and of each child."""
    import psutil

    t0 = time.perf_counter()
    proc = psutil.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peaks: dict[int, int] = {}
    while proc.poll() is None:
        try:
            for p in [proc, *proc.children(recursive=True)]:
                try:
                    peaks[p.pid] = max(peaks.get(p.pid, 0), p.memory_info().rss)
                except psutil.Error:
                    pass
        except psutil.Error:
            pass
        time.sleep(0.2)
    out, err = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed: {err.decode()[-2000:]}")
    main = peaks.pop(proc.pid, 0)
    return {"seconds": time.perf_counter() - t0, "peak_main_mb": round(main / 2**20),
            "peak_worker_mb": round(max(peaks.values(), default=0) / 2**20)}


def folder_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def search_recall(ret: Any, X: Any, I: np.ndarray, k: int = 10) -> float:  # noqa: E741, N803
    """recall@k of the bundle's results ``I`` against brute force over every live stored
    vector (nan for sparse rows and ASMK, whose stored rows are not dense vectors)."""
    from cvretrieval.bundle.build import exact_knn

    if ret.items or ret.sparse:
        return float("nan")
    removed = ret.bundle_.catalog.ids_with_status("removed")
    _, truth = exact_knn(ret.bundle_.segments, np.ascontiguousarray(X, np.float32), k,
                         ret.metric, removed)
    return float(np.mean([len(set(a) & set(b)) / k for a, b in
                          zip(I[:, :k].tolist(), truth.tolist(), strict=True)]))


def query_latency(bundle: Path, queries: list[Path]) -> dict[str, float]:
    from cvretrieval.retriever import Retriever

    ret = Retriever.load(bundle, n_jobs=1)
    ret.search(queries[0], k=10)  # warm up
    times = []
    for q in queries:
        t0 = time.perf_counter()
        ret.search(q, k=10)
        times.append((time.perf_counter() - t0) * 1000)
    X, _, _ = ret.embed_queries(queries[:100])
    t_search = []
    for i in range(X.shape[0]):
        t0 = time.perf_counter()
        ret.search_vectors(X[i : i + 1], 10)
        t_search.append((time.perf_counter() - t0) * 1000)
    _, I = ret.search_vectors(X, 10)  # noqa: E741
    return {"query_p50_ms": round(float(np.percentile(times, 50)), 1),
            "query_p90_ms": round(float(np.percentile(times, 90)), 1),
            "search_only_p50_ms": round(float(np.percentile(t_search, 50)), 2),
            "search_recall@10": round(search_recall(ret, X, I), 3)}


def bench(kind: str, paths: list[Path], extra: list[Path], scratch: Path, n_jobs: int,
          index: str, max_memory: str, raw_gray: bool = True) -> dict[str, Any]:
    src = scratch / f"list-{len(paths)}"
    src.mkdir(parents=True, exist_ok=True)
    for i, p in enumerate(paths):  # the folder `cvret index` reads: links, nothing copied
        _link(src / f"{i:07d}.jpg", p)
    bundle = scratch / f"{kind}-{len(paths)}.cvret"
    shutil.rmtree(bundle, ignore_errors=True)
    cvret = CVRET
    warm_cache(paths)  # no side pays the first disk read (a 1M raw run did: 111 s, 62 warm)
    t_raw = raw_seconds(kind, paths, n_jobs)
    t_raw_gray = raw_seconds(kind, paths, n_jobs, gray=True) if raw_gray else float("nan")
    build = run_measured([*cvret, "index", str(src), "-o", str(bundle), *PIPELINES[kind],
                          "--index", index, "--max-memory", max_memory, "--n-jobs", str(n_jobs),
                          "-q"])
    add_dir = scratch / f"add-1000-{len(paths)}"  # images not in this bundle
    add_dir.mkdir(exist_ok=True)
    for i, p in enumerate(extra):
        _link(add_dir / f"a{i:05d}.jpg", p)
    add = run_measured([*cvret, "index", str(add_dir), "-o", str(bundle), "--add",
                        "--n-jobs", str(n_jobs), "-q"])
    fresh = scratch / f"{kind}-fresh.cvret"  # the same 1,000 into a new bundle
    shutil.rmtree(fresh, ignore_errors=True)
    vocab = []
    if kind.startswith("bovw"):
        emb = json.loads((bundle / "manifest.json").read_text())["embedder"]["dir"]
        vocab = ["--vocab", str(bundle / emb / "vocabulary")] if (
            bundle / emb / "vocabulary").is_dir() else []
    new = run_measured([*cvret, "index", str(add_dir), "-o", str(fresh), *PIPELINES[kind],
                        *vocab, "--n-jobs", str(n_jobs), "-q"])
    removed = [str(p) for p in sorted(add_dir.iterdir())]
    remove = run_measured([*cvret, "remove", str(bundle), *removed, "-q"])
    lat = query_latency(bundle, paths[:: max(1, len(paths) // 200)][:200])
    return {
        "pipeline": kind, "images": len(paths), "workers": n_workers(n_jobs),
        "raw_s": round(t_raw, 1), "raw_gray_s": round(t_raw_gray, 1),
        "ours_s": round(build["seconds"], 1), "ratio": round(t_raw / build["seconds"], 3),
        "ratio_gray": round(t_raw_gray / build["seconds"], 3),
        "peak_main_mb": build["peak_main_mb"], "peak_worker_mb": build["peak_worker_mb"],
        "disk_mb": round(folder_bytes(bundle) / 2**20, 1),
        "add_1000_s": round(add["seconds"], 1), "new_1000_s": round(new["seconds"], 1),
        "add_vs_new": round(add["seconds"] / new["seconds"], 2),
        "remove_1000_s": round(remove["seconds"], 1), **lat,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--big", action="store_true", help="also 1M images (hog, bovw-orb)")
    ap.add_argument("--pipelines", default="hog,bovw-orb,bovw-sift,vlad-sift")
    ap.add_argument("--index", default="auto")
    ap.add_argument("--max-memory", default="2G", help="Budget of --index auto.")
    ap.add_argument("--n-jobs", type=int, default=-1)
    ap.add_argument("--no-raw-gray", action="store_true",
                    help="Skip the second raw baseline (gray decode): saves its run time.")
    ap.add_argument("--images", type=Path, default=Path(tempfile.gettempdir()) / "cvret-scale")
    ap.add_argument("--photos", type=Path, default=None,
                    help="Source photos (default: ../shared/datasets).")
    ap.add_argument("--side", type=int, default=480,
                    help="Long side of the generated images (pool-SIDE unless 480).")
    ap.add_argument("--out", type=Path, default=OUT / "scale.json")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    kinds = [k.strip() for k in args.pipelines.split(",") if k.strip()]
    runs = [(n, k) for n in args.n for k in kinds]
    if args.big:
        runs += [(1_000_000, k) for k in ("hog", "bovw-orb")]
    n_max = max(n for n, _ in runs)
    t0 = time.perf_counter()
    pool_dir = args.images / ("pool" if args.side == 480 else f"pool-{args.side}")
    pool = make_images(n_max + 1000, pool_dir, n_jobs=args.n_jobs, photos_dir=args.photos,
                       side=args.side)
    logger.info("%d images ready in %.0f s", len(pool), time.perf_counter() - t0)
    extra = pool[n_max : n_max + 1000]
    rows = []
    scratch = args.images / ("work" if args.side == 480 else f"work-{args.side}")
    for n, kind in runs:
        logger.info("%s at %d images", kind, n)
        rows.append(bench(kind, pool[:n], extra, scratch, args.n_jobs, args.index,
                          args.max_memory, raw_gray=not args.no_raw_gray))
        logger.info("%s", rows[-1])
    cols = list(rows[0])
    print(markdown_table(rows, cols))
    write_json(args.out, {"machine": machine(), "cores": os.cpu_count(), "rows": rows,
                                    "command": " ".join(["python", *sys.argv])})


if __name__ == "__main__":
    main()
