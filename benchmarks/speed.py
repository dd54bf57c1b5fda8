"""Speed ratios, in one run, each against a baseline measured in the same process.

    python benchmarks/speed.py                                  # everything, defaults below
    python benchmarks/speed.py --parts index --n-images 300     # one part, smaller

Parts (``--parts``, default all):

``index``
    The whole ``cvret index IMAGES --features bovw --detector sift --words 1000`` (a
    subprocess: import, vocabulary, extraction, TF-IDF, index, bundle written) against raw
    OpenCV on the same images and settings: ``cv2.imread`` + INTER_AREA downscale to a long
    side of 640 + ``SIFT_create(1000).detectAndCompute``, on all cores with joblib. The ratio
    is our throughput over raw OpenCV's (target >= 0.8); each pipeline runs ``--repeat`` times,
    alternated, and the medians are compared.
``kmeans``
    :class:`~cvretrieval.features.vocabulary.KMeansVocabulary` (Faiss) against scikit-learn
    ``KMeans`` and ``MiniBatchKMeans`` on the same SIFT descriptors: fit seconds and the
    distortion on held-out descriptors (``benchmarks/vocab_speed.py`` does the work).
``hamming``
    k-majority Hamming vocabulary against float-cast k-means on ORB descriptors (held-out
    Hamming distortion; also from ``vocab_speed.py``).
``assign``
    Hard assignment of one image's SIFT descriptors to its nearest word, as indexing does it
    in each worker (one thread): :meth:`KMeansVocabulary.assign` (one GEMM per chunk,
    :func:`~cvretrieval.features.vocabulary.nearest_centers`) against a Faiss
    ``IndexFlatL2`` search with ``k=1`` on the same vocabulary and descriptors, for 1k and
    10k words: ms per image and the fraction of descriptors given the same word.
``hog``
    Our HOG (``cv2.HOGDescriptor``) against ``skimage.feature.hog`` with the same window,
    cells, blocks and bins: ms per image, and agreement measured independently of the
    vectors' layouts: the correlation of the two pairwise-similarity matrices over the
    images, and the mAP each gives on ukbench-56.

Images: ``--images`` (default ``../shared/datasets/caltech101-dev``), a deterministic
random subset of ``--n-images``. Scratch files go under ``benchmarks/out/speed_tmp`` and
are removed at the end.
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
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import OUT, SHARED, machine, markdown_table, write_json

logger = logging.getLogger("speed")
BIN = Path(sys.executable).parent


def pick_images(root: Path, n: int, seed: int) -> list[Path]:
    from cvretrieval.io import list_images

    paths = list_images(root)
    random.Random(seed).shuffle(paths)
    if len(paths) < n:
        logger.warning("only %d images under %s (asked for %d)", len(paths), root, n)
    return sorted(paths[:n])


# ----------------------------------------------------------------------------- index
def _raw_sift(path: str, max_side: int, n_features: int) -> np.ndarray:
    import cv2

    cv2.setNumThreads(1)
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        return np.zeros((0, 128), np.float32)
    h, w = img.shape[:2]
    s = max_side / max(h, w)
    if s < 1:
        img = cv2.resize(
            img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA
        )
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    _, desc = cv2.SIFT_create(n_features).detectAndCompute(gray, None)
    return desc if desc is not None else np.zeros((0, 128), np.float32)


def bench_index(
    paths: list[Path], scratch: Path, words: int, n_jobs: int, repeat: int = 1
) -> list[dict[str, Any]]:
    from joblib import Parallel, delayed

    # the folder `cvret index` reads: links to the chosen images, nothing copied
    src = scratch / "images"
    src.mkdir(parents=True)
    for i, p in enumerate(paths):
        (src / f"{i:05d}_{p.parent.name}_{p.name}").symlink_to(p.resolve())
    cores = os.cpu_count() or 1

    def raw() -> tuple[float, int]:
        t0 = time.perf_counter()
        out = Parallel(n_jobs=n_jobs, batch_size=8)(
            delayed(_raw_sift)(str(p), 640, 1000) for p in paths
        )
        return time.perf_counter() - t0, sum(len(d) for d in out)

    cmd = [
        str(BIN / "cvret"),
        "index",
        str(src),
        "--features",
        "bovw",
        "--detector",
        "sift",
        "--words",
        str(words),
        "-o",
        str(scratch / "bundle"),
        "--n-jobs",
        str(n_jobs),
        "--random-state",
        "0",
        "-q",
        "--json",
        str(scratch / "index.json"),
    ]

    def ours() -> float:
        shutil.rmtree(scratch / "bundle", ignore_errors=True)
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        return time.perf_counter() - t0

    # alternate the two so that a slow spell of the machine hits both; medians
    raws, ourses = [], []
    for _ in range(max(1, repeat)):
        t, n_desc = raw()
        raws.append(t)
        ourses.append(ours())
    t_raw, t_ours = float(np.median(raws)), float(np.median(ourses))
    logger.warning("raw runs %s s, ours %s s", [round(t, 1) for t in raws],
                   [round(t, 1) for t in ourses])
    info = json.loads((scratch / "index.json").read_text())
    n = len(paths)
    return [
        {
            "pipeline": f"raw OpenCV: imread + resize + SIFT(1000), joblib {cores} cores",
            "images": n,
            "seconds": round(t_raw, 1),
            "images_per_s": round(n / t_raw, 2),
            "descriptors": n_desc,
            "runs": len(raws),
            "ratio": 1.0,
        },
        {
            "pipeline": f"cvret index --features bovw --detector sift --words {words}",
            "images": n,
            "seconds": round(t_ours, 1),
            "images_per_s": round(n / t_ours, 2),
            "indexed": info.get("n_indexed", info.get("indexed")),
            "runs": len(ourses),
            "ratio": round(t_raw / t_ours, 3),
        },
    ]


# ----------------------------------------------------------------------------- vocabularies
def bench_vocab(
    paths: list[Path],
    parts: set[str],
    words: list[int],
    n_train: int,
    n_heldout: int,
    skip_above: int | None,
    seed: int,
) -> dict[str, list]:
    import vocab_speed as vs

    rows: dict[str, list] = {}
    if "kmeans" in parts:
        sets = vs.extract(paths, "sift", 640, 1000)
        train, held = vs.split(sets, n_heldout, n_train, seed)
        rows["kmeans"] = vs.bench_sift(train, held, words, seed, skip_above)
    if "hamming" in parts:
        sets = vs.extract(paths, "orb", 640, 1000)
        train, held = vs.split(sets, n_heldout, n_train, seed)
        rows["hamming"] = vs.bench_orb(train, held, words, seed)
    return rows


# ----------------------------------------------------------------------------- assignment
def bench_assign(paths: list[Path], words: list[int], seed: int) -> list[dict[str, Any]]:
    import faiss
    import vocab_speed as vs
    from threadpoolctl import threadpool_limits

    from cvretrieval.features.vocabulary import KMeansVocabulary

    sets = [d for d in vs.extract(paths, "sift", 640, 1000) if len(d)]
    train = np.concatenate(sets)
    rows = []
    for k in words:
        voc = KMeansVocabulary(k, random_state=seed).fit(train)
        flat = faiss.IndexFlatL2(voc.dim)
        flat.add(voc.centers_)
        with threadpool_limits(1):
            faiss.omp_set_num_threads(1)
            timings = {}
            for name, fn in (
                ("Faiss IndexFlatL2, k=1", lambda d, f=flat: f.search(d, 1)[1][:, 0]),
                ("KMeansVocabulary.assign (ours)", voc.assign),
            ):
                fn(sets[0])  # warm-up (and the cached centre terms)
                t0 = time.process_time()
                out = [fn(d) for d in sets]
                timings[name] = (time.process_time() - t0, np.concatenate(out))
            faiss.omp_set_num_threads(os.cpu_count() or 1)
        (t_f, w_f), (t_o, w_o) = timings.values()
        for name, t in (("Faiss IndexFlatL2, k=1", t_f), ("KMeansVocabulary.assign (ours)", t_o)):
            rows.append({
                "words": k,
                "assignment": name,
                "images": len(sets),
                "descriptors_per_image": round(len(train) / len(sets)),
                "ms_per_image": round(1000 * t / len(sets), 2),
                "speed_vs_faiss": round(t_f / t, 2),
                "same_word": round(float((w_f == w_o).mean()), 5),
            })
    return rows


# ----------------------------------------------------------------------------- HOG
def _sk_hog(image: np.ndarray, size: int = 128, cell: int = 8, block: int = 2, bins: int = 9):
    import cv2
    from skimage.feature import hog as sk_hog

    from cvretrieval.features.local import to_gray

    window = cv2.resize(to_gray(image), (size, size), interpolation=cv2.INTER_AREA)
    return sk_hog(
        window,
        orientations=bins,
        pixels_per_cell=(cell, cell),
        cells_per_block=(block, block),
        block_norm="L2-Hys",
        feature_vector=True,
    ).astype(np.float32)


def bench_hog(paths: list[Path], ukbench: Path | None) -> list[dict[str, Any]]:
    from cvretrieval.embedders.base import l2_normalize
    from cvretrieval.features.hog import hog
    from cvretrieval.io import read_image

    images = [read_image(p) for p in paths[:300]]
    results = {}
    for name, fn in (("cv2.HOGDescriptor (ours)", hog), ("skimage.feature.hog", _sk_hog)):
        fn(images[0])  # warm-up
        t0 = time.perf_counter()
        vecs = np.stack([fn(im) for im in images])
        results[name] = (time.perf_counter() - t0, l2_normalize(vecs))
    (t_cv, a), (t_sk, b) = results.values()
    iu = np.triu_indices(len(images), 1)
    corr = float(np.corrcoef((a @ a.T)[iu], (b @ b.T)[iu])[0, 1])
    maps = {}
    if ukbench is not None:
        from cvretrieval.datasets import load_dataset
        from cvretrieval.evaluation import compute_metrics

        data = load_dataset(ukbench)
        ims = [read_image(p) for p in data.image_paths()]
        for name, fn in (("cv2.HOGDescriptor (ours)", hog), ("skimage.feature.hog", _sk_hog)):
            x = l2_normalize(np.stack([fn(im) for im in ims]))
            rankings = [np.argsort(-(x @ x[i]), kind="stable") for i in range(len(ims))]
            metrics, _ = compute_metrics(rankings, data, self_index=data.query_self_index())
            maps[name] = metrics["mAP"]
    n = len(images)
    return [
        {
            "hog": name,
            "images": n,
            "ms_per_image": round(1000 * t / n, 3),
            "speed_vs_skimage": round(t_sk / t, 2),
            "similarity_corr": round(corr, 4),
            "ukbench_mAP": None if name not in maps else round(maps[name], 4),
        }
        for name, t in (("cv2.HOGDescriptor (ours)", t_cv), ("skimage.feature.hog", t_sk))
    ]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--images", type=Path, default=SHARED / "datasets" / "caltech101-dev")
    ap.add_argument("--n-images", type=int, default=1000, help="images for the index part (1000)")
    ap.add_argument("--parts", default="index,assign,kmeans,hamming,hog")
    ap.add_argument("--words", default="1000,10000", help="vocabulary sizes for kmeans/hamming")
    ap.add_argument("--index-words", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3,
                    help="index part: runs of each pipeline, alternated; medians (3)")
    ap.add_argument("--train", type=int, default=100_000, help="training descriptors")
    ap.add_argument("--heldout", type=int, default=20_000, help="held-out descriptors")
    ap.add_argument("--vocab-images", type=int, default=300, help="images to draw descriptors from")
    ap.add_argument(
        "--skip-sklearn-above",
        type=int,
        default=None,
        help="skip sklearn KMeans (not MiniBatch) above this many words",
    )
    ap.add_argument("--n-jobs", type=int, default=-1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=OUT / "speed.json")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    words = [int(w) for w in args.words.split(",")]
    result: dict[str, Any] = {
        "machine": machine(),
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    scratch = OUT / "speed_tmp"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        if "index" in parts:
            paths = pick_images(args.images, args.n_images, args.seed)
            rows = bench_index(paths, scratch, args.index_words, args.n_jobs, args.repeat)
            result["index"] = rows
            print("\n## Indexing throughput\n")
            print(markdown_table(
                rows, ["pipeline", "images", "runs", "seconds", "images_per_s", "ratio"]
            ))
        if parts & {"kmeans", "hamming"}:
            import vocab_speed as vs

            paths = pick_images(args.images, args.vocab_images, args.seed + 1)
            vrows = bench_vocab(
                paths, parts, words, args.train, args.heldout, args.skip_sklearn_above, args.seed
            )
            result.update(vrows)
            print("\n## Vocabularies\n")
            print(vs.markdown(vrows.get("kmeans", []), vrows.get("hamming", [])))
        if "assign" in parts:
            rows = bench_assign(pick_images(args.images, 300, args.seed + 3), words, args.seed)
            result["assign"] = rows
            print("\n## Word assignment, one thread\n")
            print(markdown_table(rows, ["words", "assignment", "descriptors_per_image",
                                        "ms_per_image", "speed_vs_faiss", "same_word"]))
        if "hog" in parts:
            uk = SHARED / "datasets" / "ukbench-56"
            rows = bench_hog(
                pick_images(args.images, 300, args.seed + 2), uk if uk.is_dir() else None
            )
            result["hog"] = rows
            print("\n## HOG: OpenCV vs scikit-image\n")
            print(
                markdown_table(
                    rows,
                    [
                        "hog",
                        "images",
                        "ms_per_image",
                        "speed_vs_skimage",
                        "similarity_corr",
                        "ukbench_mAP",
                    ],
                )
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"\nwritten {write_json(args.out, result)}")


if __name__ == "__main__":
    main()
