"""Vocabulary training: Faiss k-means vs scikit-learn, and k-majority vs float-cast k-means.

Usage (from the checkout)::

    python benchmarks/vocab_speed.py                        # defaults: 300 images, 1000,10000 words
    python benchmarks/vocab_speed.py --images 60 --words 200 --train 20000   # a quick run

Part 1, SIFT (float, 128-d): :class:`~cvretrieval.features.vocabulary.KMeansVocabulary`
(Faiss k-means, 20 iterations) against scikit-learn ``KMeans`` and ``MiniBatchKMeans``
(their defaults except ``n_init=1, random_state=0``). For each: fit seconds, and the
distortion (mean squared L2 distance to the nearest centre) on held-out descriptors,
computed with the same Faiss nearest-centre code for every model.

Part 2, ORB (binary, 256 bits): :class:`~cvretrieval.features.vocabulary.HammingVocabulary`
(k-majority) against the common practice of casting the descriptor bytes to float32 and
running k-means on them. The yardstick is the held-out **mean Hamming distance to the
word's binary centre**: each held-out descriptor is assigned by the model's own rule
(Hamming nearest centre for k-majority; L2 nearest float centre for the float cast), and
its distance is measured in bits to the binary centre of that word. For k-majority the
binary centre is the centre itself; for the float cast it is the bitwise majority of the
*training* descriptors the float centre owns (the best binary summary of that cell;
held-out data never shapes a centre). Lower means tighter words in the metric binary
descriptors are matched with. Retrieval quality is measured elsewhere.

Descriptors are extracted with OpenCV directly (grayscale, long side capped at
``--max-side``), held-out descriptors come from images not used for training.
Timings are wall-clock seconds of one run, in one process, on this machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

from cvretrieval.features.vocabulary import (  # noqa: E402
    HammingVocabulary,
    KMeansVocabulary,
    _majority_update,
    sample_descriptors,
)

logger = logging.getLogger("vocab_speed")
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTS)


def extract(paths: list[Path], detector: str, max_side: int, max_features: int) -> list[np.ndarray]:
    """Descriptors of each image (an empty (0, D) array when none or unreadable)."""
    import cv2

    if detector == "sift":
        det, width, dtype = cv2.SIFT_create(nfeatures=max_features), 128, np.float32
    else:
        det, width, dtype = cv2.ORB_create(nfeatures=max_features), 32, np.uint8
    out: list[np.ndarray] = []
    failed = 0
    for p in paths:
        img = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        if img is None:
            failed += 1
            out.append(np.zeros((0, width), dtype))
            continue
        scale = max_side / max(img.shape)
        if scale < 1:
            img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        _, des = det.detectAndCompute(img, None)
        out.append(np.zeros((0, width), dtype) if des is None else des.astype(dtype, copy=False))
    if failed:
        logger.warning("%d unreadable images skipped", failed)
    return out


def split(sets: list[np.ndarray], n_heldout: int, n_train: int, seed: int):
    """Held-out descriptors from the first images (whole images), training sample from the rest."""
    taken, held = 0, []
    for i, s in enumerate(sets):
        if taken >= n_heldout:
            rest = sets[i:]
            break
        held.append(s[: n_heldout - taken])
        taken += len(held[-1])
    else:
        rest = []
    if taken < n_heldout or not rest:
        raise SystemExit(
            f"not enough descriptors: {taken} held out of {n_heldout} wanted and "
            f"{sum(len(s) for s in rest)} left for training; "
            "use more --images or a smaller --heldout"
        )
    heldout = np.concatenate(held)
    train = sample_descriptors(rest, max_descriptors=n_train, random_state=seed)
    if len(train) < n_train:
        logger.warning(
            "only %d training descriptors (wanted %d) after holding out %d: "
            "use more --images for the full sample",
            len(train),
            n_train,
            n_heldout,
        )
    return train, heldout


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def float_vocab(centers: np.ndarray) -> KMeansVocabulary:
    """Wrap any centre array so that every model is evaluated by the same Faiss code."""
    voc = KMeansVocabulary(n_words=len(centers))
    voc.centers_ = np.ascontiguousarray(centers, dtype=np.float32)
    return voc


def bench_sift(train, heldout, words, seed, skip_sklearn_above) -> list[dict[str, Any]]:
    from sklearn.cluster import KMeans, MiniBatchKMeans

    rows = []
    for k in words:
        if k > len(train):
            logger.warning("skipping %d words: only %d training descriptors", k, len(train))
            continue
        voc, t = timed(lambda k=k: KMeansVocabulary(n_words=k, random_state=seed).fit(train))
        _, t_assign = timed(lambda voc=voc: voc.assign(heldout))
        base = {"words": k, "n_train": len(train), "n_heldout": len(heldout)}
        faiss_row = {
            **base,
            "method": f"faiss k-means (KMeansVocabulary, niter={voc.niter})",
            "fit_s": t,
            "assign_heldout_s": t_assign,
            "heldout_distortion": voc.distortion(heldout),
        }
        rows.append(faiss_row)
        logger.info("sift k=%d faiss %s", k, faiss_row)
        for name, make in (
            ("sklearn KMeans(n_init=1)", lambda k=k: KMeans(k, n_init=1, random_state=seed)),
            (
                "sklearn MiniBatchKMeans(n_init=1)",
                lambda k=k: MiniBatchKMeans(k, n_init=1, random_state=seed),
            ),
        ):
            if skip_sklearn_above and k > skip_sklearn_above and "MiniBatch" not in name:
                rows.append({**base, "method": name, "skipped": f"--skip-sklearn-above {k}"})
                continue
            model, t = timed(lambda make=make: make().fit(train))
            dist = float_vocab(model.cluster_centers_).distortion(heldout)
            rows.append(
                {
                    **base,
                    "method": name,
                    "fit_s": t,
                    "n_iter": int(model.n_iter_),
                    "heldout_distortion": dist,
                    "speed_ratio_vs_faiss": t / faiss_row["fit_s"],
                    "distortion_rel_diff_vs_faiss": dist / faiss_row["heldout_distortion"] - 1,
                }
            )
            logger.info("sift k=%d %s", k, rows[-1])
    return rows


def hamming_to_binary_centres(x: np.ndarray, words: np.ndarray, centres: np.ndarray) -> float:
    """Mean Hamming distance (bits) of each descriptor to the binary centre of its word."""
    from cvretrieval.features.vocabulary import _POPCOUNT

    return float(_POPCOUNT[x ^ centres[words]].sum(axis=1).mean())


def bench_orb(train, heldout, words, seed) -> list[dict[str, Any]]:
    rows = []
    bits = np.unpackbits(train, axis=1)
    for k in words:
        if k > len(train):
            logger.warning("skipping %d words: only %d training descriptors", k, len(train))
            continue
        base = {"words": k, "n_train": len(train), "n_heldout": len(heldout)}
        ham, t_h = timed(lambda k=k: HammingVocabulary(n_words=k, random_state=seed).fit(train))
        w_h, t_ah = timed(lambda ham=ham: ham.assign(heldout))
        rows.append(
            {
                **base,
                "method": "k-majority (HammingVocabulary, niter<=10)",
                "fit_s": t_h,
                "n_iter": ham.n_iter_,
                "assign_heldout_s": t_ah,
                "heldout_hamming": hamming_to_binary_centres(heldout, w_h, ham.centers_),
            }
        )
        logger.info("orb k=%d %s", k, rows[-1])
        flt, t_f = timed(lambda k=k: KMeansVocabulary(n_words=k, random_state=seed).fit(train))
        w_f, t_af = timed(lambda flt=flt: flt.assign(heldout))
        # binary summary of each float cell, from training members only
        binary_centres, sizes = _majority_update(bits, flt.assign(train), k)
        rows.append(
            {
                **base,
                "method": "float-cast k-means (KMeansVocabulary on bytes as float32)",
                "fit_s": t_f,
                "assign_heldout_s": t_af,
                "heldout_hamming": hamming_to_binary_centres(heldout, w_f, binary_centres),
                "empty_training_cells": int((sizes == 0).sum()),
                "speed_ratio_vs_kmajority": t_f / t_h,
            }
        )
        logger.info("orb k=%d %s", k, rows[-1])
    return rows


def fmt(v: Any, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def markdown(sift_rows, orb_rows) -> str:
    lines = [
        "### SIFT: vocabulary fit time and held-out distortion (mean squared L2)",
        "",
        "| words | method | fit s | × faiss time | held-out distortion | vs faiss |",
        "| ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in sift_rows:
        if "skipped" in r:
            lines.append(f"| {r['words']} | {r['method']} | skipped | | | |")
            continue
        ratio = r.get("speed_ratio_vs_faiss")
        rel = r.get("distortion_rel_diff_vs_faiss")
        lines.append(
            f"| {r['words']} | {r['method']} | {r['fit_s']:.2f} | {fmt(ratio, '.1f')} | "
            f"{r['heldout_distortion']:.0f} | {'—' if rel is None else f'{100 * rel:+.2f}%'} |"
        )
    if not orb_rows:
        return "\n".join(lines)
    lines += [
        "",
        "### ORB: k-majority vs float-cast k-means (held-out mean Hamming bits to the word's"
        " binary centre)",
        "",
        "| words | method | fit s | assign held-out s | held-out Hamming |",
        "| ---: | --- | ---: | ---: | ---: |",
    ]
    for r in orb_rows:
        lines.append(
            f"| {r['words']} | {r['method']} | {r['fit_s']:.2f} | {r['assign_heldout_s']:.3f} | "
            f"{r['heldout_hamming']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "folder",
        nargs="?",
        type=Path,
        default=ROOT.parent / "shared" / "datasets" / "caltech101-dev",
        help="folder of images, searched recursively (default: ../shared/datasets/caltech101-dev)",
    )
    ap.add_argument("--images", type=int, default=300, help="random subset of images (300)")
    ap.add_argument("--words", default="1000,10000", help="comma-separated vocabulary sizes")
    ap.add_argument("--train", type=int, default=100_000, help="training descriptors (100000)")
    ap.add_argument("--heldout", type=int, default=20_000, help="held-out descriptors (20000)")
    ap.add_argument("--max-side", type=int, default=640, help="cap on the image's long side")
    ap.add_argument("--max-features", type=int, default=1000, help="key points per image")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--skip-sklearn-above",
        type=int,
        default=0,
        help="skip sklearn KMeans (not MiniBatch) above this many words (0: never skip)",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=0,
        help="threads for Faiss and for sklearn/BLAS alike (0: the libraries' defaults)",
    )
    ap.add_argument("--no-orb", action="store_true", help="skip the ORB part")
    ap.add_argument("--out", type=Path, default=HERE / "out" / "vocab_speed.json")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(message)s",
    )

    import cv2
    import faiss
    import sklearn
    from threadpoolctl import threadpool_limits

    if args.threads > 0:
        faiss.omp_set_num_threads(args.threads)
        threadpool_limits(limits=args.threads)

    words = [int(w) for w in args.words.split(",") if w.strip()]
    paths = list_images(args.folder)
    if not paths:
        raise SystemExit(f"no images under {args.folder}")
    rng = np.random.default_rng(args.seed)
    paths = [paths[i] for i in rng.permutation(len(paths))[: args.images]]

    (sift_sets, t_sift) = timed(lambda: extract(paths, "sift", args.max_side, args.max_features))
    sift_train, sift_held = split(sift_sets, args.heldout, args.train, args.seed)
    sift_rows = bench_sift(sift_train, sift_held, words, args.seed, args.skip_sklearn_above)
    orb_rows: list[dict[str, Any]] = []
    t_orb = 0.0
    if not args.no_orb:
        (orb_sets, t_orb) = timed(lambda: extract(paths, "orb", args.max_side, args.max_features))
        orb_train, orb_held = split(orb_sets, args.heldout, args.train, args.seed)
        orb_rows = bench_orb(orb_train, orb_held, words, args.seed)

    table = markdown(sift_rows, orb_rows)
    print(table)
    print(
        f"\n{len(paths)} images from {args.folder}; sklearn: defaults except n_init=1, "
        f"random_state={args.seed}; faiss threads: {faiss.omp_get_max_threads()}; "
        f"load average at end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    result = {
        "command": " ".join(
            ["python benchmarks/vocab_speed.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "settings": {
            **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "words": words,
            "n_images": len(paths),
            "sklearn_params": "defaults except n_init=1, random_state=seed",
            "faiss_params": "KMeansVocabulary defaults: niter=6, max_points_per_centroid=256",
            "heldout": "descriptors of images not used for training",
            "orb_measure": "mean Hamming bits to the word's binary centre; float-cast centres "
            "binarised by bitwise majority of their training members",
        },
        "environment": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "faiss": faiss.__version__,
            "sklearn": sklearn.__version__,
            "opencv": cv2.__version__,
            "faiss_threads": faiss.omp_get_max_threads(),
            "cpu_count": os.cpu_count(),
            "load_average_at_end": os.getloadavg(),
            "machine": platform.machine(),
        },
        "extraction_s": {"sift": t_sift, "orb": t_orb},
        "sift": sift_rows,
        "orb": orb_rows,
        "markdown": table,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
